"""The Trainer: devices, data, controller, image model, checkpoints, summaries, loops, figures.

``main.py`` builds ``Trainer(config, cc_config, model_config, graph)`` and then calls
``pretrain_loop()`` and/or ``train_loop()``. Everything that belongs to one run lives in
``config.model_dir``:

    checkpoints/                     tf.train.CheckpointManager (ckpt-<overall step>)
    summaries/                       TensorBoard events
    controller/                      the controller's own CC-Model-<step> and crosstabs
    label_conditioning/ label_intervention/ label_intv_v_conditioning/
    label_interpolation/ image_diversity/     the periodic figures (ORIGINAL.md 6)

Devices (one place for all of it, ``make_strategy``): ``--num_gpu 0`` the CPU, ``1`` the
first GPU (the CPU with a warning when there is none), ``k`` a MirroredStrategy over the
first k GPUs; ``--num_cpu_devices k`` splits the CPU into k logical devices and, with
``--num_gpu 0``, runs k replicas on them; ``TF_CONFIG`` in the environment selects the
multi-worker strategy. Every replica draws ``batch_size`` examples and its own controller
labels; gradients and losses are averaged over replicas.

Image models (``image_models.make_model`` maps ``--model_type`` to a class):
CausalBEGAN (began) and CausalGAN (dcgan) offer the same interface, and the Trainer uses
nothing else: ``make_train_function(strategy) -> fn(batch) -> metrics``, ``generate(labels,
z_gen=None, round_labels=None)``, ``prepare_labels``, ``diagnostics(images, labels,
controller_labels, z_gen) -> {"images": ..., "histograms": ...}``, ``summary_group(key)``,
``progress_keys``, ``nonfinite_names`` (the bits of the ``nonfinite`` metric), ``name``,
``step``, ``z_dim``, ``channels``.

Stopping: Ctrl-C (SIGINT) or SIGTERM during ``train_loop`` finishes the current step,
writes a checkpoint and then leaves with ``KeyboardInterrupt`` (main.py: exit 130) or
``SystemExit(143)``; ``--load_path <run>`` continues from that checkpoint.

Non-finite values: an image-model update whose losses or gradients hold NaN or Inf is
skipped inside the train step (its ``nonfinite`` mask says so); ``train_loop`` counts the
skipped updates (``skipped=`` on the progress bar, ``misc/skipped_updates`` in
TensorBoard) and after ``--max_nonfinite`` of them in a row raises
``nonfinite.NonFiniteError`` (main.py: exit 2) without writing another checkpoint.
Periodic checkpoints wait while updates are being skipped, and weights holding NaN/Inf
are never saved.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import data_loader
import nonfinite
from errors import UserError
from image_models import IMAGE_MODELS, generate_images, make_model  # noqa: F401 (IMAGE_MODELS: re-exported)
from utils import save_grid

log = logging.getLogger("trainer")

FIXED_COUNT = 256  # individuals drawn once for all figures
FIGURE_BATCH = 64  # images generated per call for the figures
CHECKPOINTS_KEPT = 5
KEEP_EVERY_HOURS = 2.0
SIGTERM_EXIT = 128 + signal.SIGTERM
JIT_COMPILE = False  # XLA made the CPU step many times slower (docs/SPEED.md)


# ----------------------------------------------------------------------------- devices
def split_cpu(count: int) -> None:
    """Make ``count`` logical CPU devices; must happen before TensorFlow initialises them."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as err:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == count:
            return
        raise UserError(
            f"--num_cpu_devices {count}: TensorFlow had already set up its devices ({have} "
            "logical CPU) before the Trainer could split the CPU. Build the Trainer before "
            "running any TensorFlow operation in this process (e.g. start a fresh Python or "
            "IPython session).") from err


def is_multi_worker() -> bool:
    """True when TF_CONFIG describes a cluster with more than one task."""
    spec = os.environ.get("TF_CONFIG")
    if not spec:
        return False
    try:
        cluster = json.loads(spec).get("cluster", {})
    except ValueError as err:
        raise UserError(f"TF_CONFIG is not valid JSON ({err}); fix or unset it.") from err
    return sum(len(tasks) for tasks in cluster.values()) > 1


def gpu_count() -> int:
    """The GPUs replicas can use: each physical GPU, or the logical devices it was split
    into before the Trainer was built (``benchmarks/gpu_check.py`` splits one GPU in two to
    run two replicas on it). Reads the configuration only: TensorFlow is not initialised."""
    count = 0
    for gpu in tf.config.list_physical_devices("GPU"):
        logical = tf.config.get_logical_device_configuration(gpu)
        count += len(logical) if logical else 1
    return count


def make_strategy(config):
    """The tf.distribute strategy that the flags ask for (see the module docstring)."""
    num_gpu = int(getattr(config, "num_gpu", 1))
    num_cpu = int(getattr(config, "num_cpu_devices", 1) or 1)
    if is_multi_worker():
        split_cpu(num_cpu)
        return tf.distribute.MultiWorkerMirroredStrategy()
    split_cpu(num_cpu)
    gpus = gpu_count()
    if num_gpu == 0:
        if num_cpu >= 2:
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_cpu)])
        return cpu_strategy()
    if num_gpu == 1:
        if not gpus:
            log.warning("--num_gpu 1 but TensorFlow finds no GPU: training on the CPU "
                        "(pass --num_gpu 0 to choose the CPU explicitly).")
            return cpu_strategy()
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if gpus < num_gpu:
        raise UserError(f"--num_gpu {num_gpu} asks for {num_gpu} GPUs but TensorFlow finds "
                        f"{gpus}. Use --num_gpu {gpus} or fewer (0 = the CPU).")
    return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(num_gpu)])


def cpu_strategy():
    """One replica on the CPU: TensorFlow's default strategy. OneDeviceStrategy("/cpu:0")
    computes the same but took much longer per CausalGAN step on a 2-core CPU (measured
    in docs/SPEED.md, "CausalGAN training"), so it is kept for the GPU alone."""
    return tf.distribute.get_strategy()


def devices_of(strategy) -> tuple[str, ...]:
    """The devices that hold the replicas (the CPU for the default strategy)."""
    try:
        return tuple(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list: it is cpu_strategy()
        return ("/device:CPU:0",)


def uses_gpu(strategy) -> bool:
    return any("GPU" in d.upper() for d in devices_of(strategy))


def is_chief() -> bool:
    """The task that writes checkpoints, summaries and figures (always, without TF_CONFIG)."""
    if not is_multi_worker():
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if "chief" in cluster:
        return kind == "chief"
    return kind == "worker" and index == 0


# ----------------------------------------------------------------------------- signals
class StopRequest:
    """Context manager: SIGINT / SIGTERM set ``signum`` instead of killing the loop.

    A second signal of the same kind gets the default behaviour (so a stuck save can
    still be interrupted). Outside the main thread nothing is installed.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# ----------------------------------------------------------------------------- summaries
def write_scalar(name: str, value, step: int) -> None:
    tf.summary.scalar(name, float(value), step=step)


def write_images(name: str, images, step: int, max_outputs: int = 8) -> None:
    """Images [N, H, W, C] in [0, 255], rounded to uint8 (TensorBoard's image format)."""
    images = tf.cast(tf.clip_by_value(tf.round(images[:max_outputs]), 0, 255), tf.uint8)
    tf.summary.image(name, images, step=step, max_outputs=max_outputs)


# ----------------------------------------------------------------------------- fixed inputs
class FixedInputs(tf.Module):
    """Noise drawn once (controller noise of every node, and z_gen) so that figures at
    different steps show the same individuals. Stored in the checkpoints."""

    def __init__(self, n_nodes: int, n_hidden: int, z_dim: int | None, seed: int,
                 count: int = FIXED_COUNT):
        super().__init__(name="fixed_inputs")
        rng = tf.random.Generator.from_seed(seed)
        self.cc_noise = tf.Variable(rng.uniform([count, n_nodes, n_hidden], -1.0, 1.0),
                                    trainable=False, name="cc_noise")
        self.z_gen = (tf.Variable(rng.uniform([count, z_dim], -1.0, 1.0), trainable=False,
                                  name="z_gen") if z_dim else None)


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Builds and runs one experiment; see the module docstring for what lands where."""

    def __init__(self, config, cc_config, model_config, graph, figure_metrics=None):
        """figure_metrics: None, or a callable(trainer) -> {TensorBoard tag: value} measured
        at every figure step (main.py passes the fidelity report's label consistency)."""
        self.config, self.cc_config, self.model_config = config, cc_config, model_config
        self.figure_metrics = figure_metrics
        self.graph = [(node, list(parents)) for node, parents in graph]
        model_type = getattr(config, "model_type", "") or ""
        if model_config is None and model_type:
            raise UserError(f"--model_type {model_type} needs its flags (model_config).")
        self.model_dir = Path(config.model_dir)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.controller_dir = self.model_dir / "controller"
        self.checkpoint_dir = self.model_dir / "checkpoints"
        self.summary_dir = self.model_dir / "summaries"
        self.seed = int(getattr(config, "seed", 22) or 0)
        self.figure_ext = getattr(config, "figure_ext", "pdf")
        self.chief = is_chief()

        self.strategy = make_strategy(config)
        self.num_replicas = int(self.strategy.num_replicas_in_sync)
        batch_size = int(model_config.batch_size if model_config is not None
                         else cc_config.batch_size)
        cc_config.batch_size = batch_size
        self.batch_size = batch_size

        # data: the attribute table (images are read only when training the image model)
        # the bundled default set is always the same one (seed 0), whatever --seed says
        self.dataset_dir = data_loader.resolve_dataset_dir(config.data_dir, config.dataset)
        self.attr = data_loader.read_attributes(data_loader.find_attribute_file(self.dataset_dir))

        # controller: plain (unmirrored) variables; frozen while the image model trains
        from causal_controller.CausalController import CausalController
        from causal_controller.pretrain import ControllerPretrainer

        self.cc = CausalController(self.graph, cc_config, seed=self.seed)
        self.label_names = list(self.cc.label_names)
        data_loader.check_labels(self.attr, self.label_names)
        wants_pretrainer = cc_config.is_pretrain or getattr(config, "build_pretrain", False)
        self.pretrainer = (ControllerPretrainer(self.cc, cc_config, seed=self.seed + 7)
                           if wants_pretrainer else None)

        self.model = None
        self.row_repeats = None  # --rare_label_rate: each data row's repeats per epoch
        if model_config is not None:
            data_loader.check_images(self.dataset_dir, self.attr)
            channels = 1 if getattr(config, "grayscale", False) else int(model_config.c_dim)
            with self.strategy.scope():
                self.model = make_model(
                    model_type, model_config, self.label_names, config.input_scale_size,
                    channels, controller=self.cc,
                    data_format="channels_first" if uses_gpu(self.strategy) else "channels_last",
                    jit_compile=bool(getattr(config, "jit_compile", JIT_COMPILE)),
                    seed=self.seed + 11)
            self.row_repeats = self._weigh_rare_labels(
                float(getattr(config, "rare_label_rate", 0.0)),
                float(getattr(config, "rare_pair_rate", 0.0)))
            self._train_fn = self.model.make_train_function(self.strategy)
            self._diagnostics_fn = tf.function(self.model.diagnostics, reduce_retracing=True)
        self.fixed = FixedInputs(len(self.label_names), self.cc.n_hidden,
                                 self.model.z_dim if self.model is not None else None,
                                 seed=self.seed + 3)

        # checkpoints: everything, in one object graph
        parts = {"controller": self.cc, "fixed_inputs": self.fixed}
        if self.model is not None:
            parts["model"] = self.model
        self._core = parts
        self.checkpoint = tf.train.Checkpoint(
            **parts, **({"pretrainer": self.pretrainer} if self.pretrainer is not None else {}))
        ckpt_dir = self.checkpoint_dir if self.chief else Path(tempfile.mkdtemp(prefix="ckpt-"))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(ckpt_dir), max_to_keep=CHECKPOINTS_KEPT,
            keep_checkpoint_every_n_hours=KEEP_EVERY_HOURS, checkpoint_name="ckpt")
        self.summary_writer = (tf.summary.create_file_writer(str(self.summary_dir))
                               if self.chief else tf.summary.create_noop_writer())

        if getattr(config, "load_path", ""):
            self.load(config.load_path)
        elif getattr(cc_config, "pt_load_path", ""):
            self.load_controller(cc_config.pt_load_path)
        self._last_save = time.monotonic()
        self._last_batch = None

    # -- steps and persistence
    @property
    def model_step(self) -> int:
        return int(self.model.step.numpy()) if self.model is not None else 0

    def overall_step(self) -> int:
        """The controller's step plus the image model's step (ORIGINAL.md 6)."""
        return int(self.cc.step.numpy()) + self.model_step

    def save(self) -> str:
        """Write a checkpoint of everything, numbered by the overall step."""
        path = self.manager.save(checkpoint_number=self.overall_step())
        self._last_save = time.monotonic()
        log.info("checkpoint %s", path)
        return path

    def load(self, load_path) -> str:
        """Restore the newest checkpoint of the run folder ``load_path`` (UserError if none
        or if it does not fit the model built from the flags)."""
        folder = Path(load_path)
        if (folder / "checkpoints").is_dir():
            folder = folder / "checkpoints"
        path = tf.train.latest_checkpoint(str(folder))
        if path is None:
            raise UserError(f"--load_path {load_path}: no checkpoint found in {folder}. Give a "
                            "run folder written by this program (it holds checkpoints/), or "
                            "start a new run.")
        try:
            status = tf.train.Checkpoint(**self._core).read(path)
            status.assert_existing_objects_matched()
            status.expect_partial()
            if self.pretrainer is not None:
                tf.train.Checkpoint(pretrainer=self.pretrainer).read(path).expect_partial()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise UserError(f"--load_path {load_path}: the checkpoint {path} does not fit the "
                            f"model these flags build ({str(err).splitlines()[0][:300]}). Use "
                            "the run's own flags (architecture flags cannot change).") from err
        log.info("restored %s (overall step %d)", path, self.overall_step())
        return path

    def load_controller(self, path) -> None:
        """--pt_load_path: load the controller alone, report its TVD, copy it into this run."""
        from causal_controller.pretrain import load_controller, measure_tvd, save_controller

        prefix = load_controller(self.cc, path)
        data = self.attr[self.label_names].to_numpy()
        tvd = measure_tvd(self.cc, data, n_samples=100_000)[0]
        log.info("controller loaded from %s (step %d): TVD %.4f", prefix,
                 int(self.cc.step.numpy()), tvd)
        print(f"controller {prefix}: step {int(self.cc.step.numpy())}, TVD {tvd:.4f}")
        if self.chief:
            save_controller(self.cc, None, str(self.controller_dir / "checkpoints"),
                            int(self.cc.step.numpy()))

    # -- data
    def _weigh_rare_labels(self, rate: float, pair_rate: float = 0.0):
        """--rare_label_rate (and --rare_pair_rate): the model's label weights and each
        data row's repeats (None when off), with a line saying which labels and pairs are
        shown more often."""
        table = self.attr[self.label_names].to_numpy(np.float32)
        weights = data_loader.rare_weights(table, rate, pair_rate)
        if weights is None:
            return None
        self.model.label_weights = tf.constant(weights, tf.float32)
        repeats = data_loader.row_repeats(table, weights).numpy().astype(np.int64)
        values = (table > 0.5).astype(np.int64)

        def shares(has):
            return f"{has.mean():.3f} -> {repeats[has].sum() / repeats.sum():.3f}"

        n = len(self.label_names)
        paired = weights.ndim == 4
        single = [f"{self.label_names[j]}={v} {shares(values[:, j] == v)}"
                  for j in range(n) for v in (0, 1)
                  if (weights[j, v, j, v] if paired else weights[j, v]) != 1.0]
        print("--rare_label_rate: rows shown more often while the image model trains: "
              + (", ".join(single) or "none"))
        if paired:
            pairs = sorted((((values[:, i] == a) & (values[:, j] == c), i, a, j, c)
                            for i, a, j, c in np.argwhere(weights != 1.0) if i < j),
                           key=lambda p: p[0].mean())
            print(f"--rare_pair_rate: {len(pairs)} pairs of values shown more often, the "
                  "rarest: " + ", ".join(
                      f"{self.label_names[i]}={a} & {self.label_names[j]}={c} {shares(has)}"
                      for has, i, a, j, c in pairs[:4]))
        return repeats

    def label_stream(self):
        return data_loader.label_dataset(self.attr, self.label_names, self.batch_size,
                                         seed=self.seed, shuffle=self.config.do_shuffle)

    def image_stream(self):
        """The (images, labels) stream split over replicas: each gets batch_size examples."""
        cfg = self.config
        ds = data_loader.image_dataset(
            self.dataset_dir, self.attr, self.label_names, self.batch_size * self.num_replicas,
            scale_size=cfg.input_scale_size, is_crop=cfg.is_crop,
            resize_method=cfg.resize_method, grayscale=cfg.grayscale,
            num_worker=cfg.num_worker, seed=self.seed + self.model_step,
            shuffle=cfg.do_shuffle, repeats=self.row_repeats)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(ds.with_options(options))

    # -- loops
    def pretrain_loop(self) -> dict:
        """Controller pretraining (causal_controller.pretrain.pretrain_loop) with summaries
        in <model_dir>/summaries; a full checkpoint at the end."""
        from causal_controller.pretrain import pretrain_loop

        if self.model_step > 0:
            # a resumed run whose image model has started: its controller stays frozen
            log.info("the image model is already at step %d; the controller it was trained "
                     "with stays as it is (no further pretraining)", self.model_step)
            return {"step": int(self.cc.step.numpy()), "skipped": True}
        if self.pretrainer is None:
            from causal_controller.pretrain import ControllerPretrainer

            self.pretrainer = ControllerPretrainer(self.cc, self.cc_config, seed=self.seed + 7)
            self.checkpoint = tf.train.Checkpoint(**self._core, pretrainer=self.pretrainer)
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, self.manager.directory, max_to_keep=CHECKPOINTS_KEPT,
                keep_checkpoint_every_n_hours=KEEP_EVERY_HOURS, checkpoint_name="ckpt")
        if self.manager.latest_checkpoint is None:
            self.save()  # resumable even if killed before the first controller checkpoint
        with StopRequest() as stop:  # Ctrl-C / SIGTERM: checkpoints, then exit 130 / 143
            result = pretrain_loop(
                self.cc, self.pretrainer, self.label_stream(), self.attr[self.label_names],
                self.cc_config, str(self.controller_dir), summary_writer=self.summary_writer,
                log_step=int(self.config.log_step), step_offset=self.model_step, progress=True,
                stop=stop, max_nonfinite=int(getattr(self.config, "max_nonfinite", 50)))
        self.save()
        if stop.signum is not None:
            print(f"Stopped at controller step {result['step']}: checkpoints saved; resume "
                  f"with --load_path {self.model_dir}")
            raise KeyboardInterrupt if stop.signum == signal.SIGINT else SystemExit(SIGTERM_EXIT)
        return result

    def train_loop(self) -> None:
        """Train the image model up to num_iter steps (ORIGINAL.md 6)."""
        from tqdm import tqdm

        if self.model is None:
            raise UserError("--is_train True needs an image model: --model_type began "
                            "(CausalBEGAN) or --model_type dcgan (CausalGAN).")
        cfg = self.model_config
        log_step = int(getattr(cfg, "log_step", self.config.log_step))
        save_secs = float(getattr(self.config, "save_secs", 300))
        start, end = self.model_step, int(cfg.num_iter)
        if start >= end:
            log.info("the image model is already at step %d >= num_iter %d", start, end)
            return
        iterator = iter(self.image_stream())
        self._last_save = time.monotonic()
        counter = self._nonfinite_counter()
        bar = tqdm(total=end, initial=start, desc=self.model.name, dynamic_ncols=True,
                   disable=not self.chief)
        postfix = {}
        with StopRequest() as stop, bar:
            for _ in range(start, end):
                batch = next(iterator)
                metrics = self._train_fn(batch)
                step = self.model_step
                skipped = self._count_skipped(counter, metrics, step)
                bar.update(1)
                if step % log_step == 0 or step == start + 1 or skipped:
                    postfix.update({short: f"{float(metrics[key]):.4f}"
                                    for short, key in self.model.progress_keys.items()})
                    postfix["skipped"] = counter.skipped
                    bar.set_postfix(postfix)
                if self.chief and step % log_step == 0:
                    self._last_batch = batch
                    self.write_summaries(metrics, batch, skipped=counter.skipped)
                if self.chief and step % (50 * log_step) == 0:
                    self.write_figures(with_small_grids=step % (100 * log_step) == 0)
                if stop.signum is not None:
                    break
                if time.monotonic() - self._last_save >= save_secs and not counter.streak:
                    self._save_good(counter)
            if self.chief and stop.signum is None and self.model_step % (100 * log_step):
                # the run's final state always leaves its figures, whatever the cadence
                self.write_figures(with_small_grids=True)
            self._save_good(counter)
        self.summary_writer.flush()
        if stop.signum == signal.SIGINT:
            print(f"Interrupted at step {self.model_step}: checkpoint saved in "
                  f"{self.checkpoint_dir}; resume with --load_path {self.model_dir}")
            raise KeyboardInterrupt
        if stop.signum == signal.SIGTERM:
            print(f"Terminated at step {self.model_step}: checkpoint saved in "
                  f"{self.checkpoint_dir}; resume with --load_path {self.model_dir}")
            raise SystemExit(SIGTERM_EXIT)

    def _nonfinite_counter(self) -> nonfinite.NonFiniteCounter:
        """The count of the image model's skipped updates for ``train_loop``."""
        counter = nonfinite.NonFiniteCounter(
            int(getattr(self.config, "max_nonfinite", nonfinite.DEFAULT_LIMIT)),
            getattr(self.model, "nonfinite_names", ()), what=self.model.name)
        self._checkpoint_advice(counter, self.manager.latest_checkpoint)
        return counter

    def _checkpoint_advice(self, counter, path) -> None:
        """What the stop message says about checkpoints, given the newest one."""
        counter.advice = (f"The last good checkpoint is {path}: resume from it with "
                          f"--load_path {self.model_dir}." if path else
                          "This run has written no checkpoint yet.")

    def _count_skipped(self, counter, metrics, step: int) -> int:
        """Count the step's skipped updates (its ``nonfinite`` masks, taken out of
        ``metrics``); at the limit, a ``NonFiniteError`` after a last summary."""
        masks = metrics.pop("nonfinite", None)
        if masks is None:
            return 0
        masks = np.asarray(masks).reshape(1, -1)  # one row: this step's updates
        if not masks.any() and not counter.streak:
            return 0
        try:
            return counter.update(masks, step)
        except nonfinite.NonFiniteError:
            if self.chief:
                with self.summary_writer.as_default():
                    write_scalar("misc/skipped_updates", counter.skipped, self.overall_step())
                self.summary_writer.flush()
            raise

    def _weights_finite(self) -> bool:
        """Whether every float variable of the image model is finite."""
        values = [v for v in self.model.variables if v.dtype.is_floating]
        return bool(nonfinite.all_finite(values))

    def _save_good(self, counter) -> str | None:
        """``save()`` unless the image model's weights hold NaN or Inf (then a warning)."""
        if not self._weights_finite():
            log.warning("step %d: the image model's weights hold NaN or Inf; no checkpoint "
                        "is written (the last good one stays)", self.model_step)
            return None
        path = self.save()
        self._checkpoint_advice(counter, path)
        return path

    def write_figures(self, with_small_grids: bool) -> None:
        """The periodic figures: causal_sampling([8, 16]), label_interpolation(),
        sample_diversity(), and with_small_grids also causal_sampling([2, 10])."""
        self.causal_sampling([8, 16])
        self.label_interpolation()
        self.sample_diversity()
        if with_small_grids:
            self.causal_sampling([2, 10])
        self.write_figure_metrics()

    def write_figure_metrics(self) -> dict:
        """The figure-step metrics that the Trainer was given (``figure_metrics``, e.g. the
        fidelity report's label consistency, which main.py passes) as TensorBoard
        scalars; {tag: value}, empty when none were given or they could not be measured."""
        if self.figure_metrics is None:
            return {}
        try:
            values = dict(self.figure_metrics(self))
        except Exception as err:  # a figure step must never end a long run
            log.warning("figure-step metrics not measured: %s", str(err).splitlines()[0][:200])
            return {}
        step = self.overall_step()
        with self.summary_writer.as_default():
            for tag, value in values.items():
                write_scalar(tag, value, step)
        return values

    # -- summaries
    def write_summaries(self, metrics, batch=None, skipped: int | None = None) -> None:
        """The model's metrics as scalars, grouped as the model says (a per-label vector
        as one scalar per label), ``misc/skipped_updates`` (when ``skipped`` is given),
        and its diagnostic images and histograms for the first replica's batch, at the
        overall step."""
        step = self.overall_step()
        with self.summary_writer.as_default():
            if skipped is not None:
                write_scalar("misc/skipped_updates", skipped, step)
            for key, value in metrics.items():
                if key == "nonfinite":  # the masks of the step's updates: counted instead
                    continue
                value = np.asarray(value)
                if value.ndim == 1 and len(value) == len(self.label_names):
                    for name, v in zip(self.label_names, value, strict=True):
                        write_scalar(f"{key}/{name}", v, step)
                else:
                    write_scalar(f"{self.model.summary_group(key)}/{key}", value, step)
            if batch is not None:
                local = self.strategy.experimental_local_results
                images, labels = local(batch[0])[0], local(batch[1])[0]
                k = min(int(images.shape[0]), FIXED_COUNT)
                cc_labels = self.cc.sample(noise=self.fixed.cc_noise[:k])[0]
                out = self._diagnostics_fn(images, labels, cc_labels, self.fixed.z_gen[:k])
                for key, value in out["images"].items():
                    write_images(f"images/{key}", value, step)
                for key, value in out["histograms"].items():
                    tf.summary.histogram(f"labels/{key}", value, step=step, buckets=20)
        self.summary_writer.flush()

    # -- figures
    def _generate(self, labels, z):
        """Images [N, S, S, C] as numpy for controller labels [N, n] and z_gen [N, z_dim]."""
        return generate_images(self.model, labels, z, FIGURE_BATCH)

    def _figure_path(self, folder: str, name: str) -> Path:
        return self.model_dir / folder / f"{name}.{self.figure_ext}"

    def _matrix(self, label_dict, count: int) -> np.ndarray:
        cols = [np.asarray(label_dict[n], np.float32).reshape(-1)[:count] for n in self.label_names]
        labels = np.stack(cols, axis=1)
        if len(labels) < count:  # a (nearly) impossible condition: pad by repetition
            log.warning("conditioning found only %d of %d samples", len(labels), count)
            labels = (np.resize(labels, (count, labels.shape[1])) if len(labels)
                      else np.full((count, labels.shape[1]), np.nan, np.float32))
        return labels

    def causal_sampling(self, shape) -> list[Path]:
        """For each node: cond(node=1/0) and do(node=1/0) samples as four grids (ORIGINAL 6)."""
        rows, cols = int(shape[0]), int(shape[1])
        half = (rows // 2) * cols
        step = self.overall_step()
        z = self.fixed.z_gen.numpy()
        z = np.resize(z, (half, z.shape[1]))
        tag = f"{rows}x{cols}"
        written = []
        for node in self.label_names:
            images = {}
            for v in (1, 0):
                cond = self._matrix(self.cc.sample_label(cond_dict={node: v}, N=half), half)
                do = self._matrix(self.cc.sample_label(do_dict={node: v}, N=half), half)
                images["cond", v] = (self._generate(cond, z) if not np.isnan(cond).any()
                                     else np.zeros((half, *self._image_shape()), np.float32))
                images["do", v] = self._generate(do, z)
            pairs = [("label_conditioning", f"{step}_condition_{node}_{tag}", ("cond", 1), ("cond", 0)),
                     ("label_intervention", f"{step}_interv_{node}_{tag}", ("do", 1), ("do", 0))]
            for v in (0, 1):
                pairs.append(("label_intv_v_conditioning", f"{step}_intvcond_{node}={v}_{tag}",
                              ("do", v), ("cond", v)))
            for folder, name, top, bottom in pairs:
                grid = np.concatenate([images[top], images[bottom]])
                written.append(save_grid(grid, self._figure_path(folder, name), rows, cols))
        return written

    def _image_shape(self):
        size = int(self.config.input_scale_size)
        return (size, size, self.model.channels)

    def label_interpolation(self, n: int = 8) -> list[Path]:
        """For each node an n x n grid: rows are fixed individuals, the node's label swept
        0 -> 1 over the columns with its descendants recomputed."""
        step = self.overall_step()
        noise = np.repeat(self.fixed.cc_noise.numpy()[:n], n, axis=0)
        z = np.repeat(self.fixed.z_gen.numpy()[:n], n, axis=0)
        sweep = np.tile(np.linspace(0.0, 1.0, n, dtype=np.float32), n)
        written = []
        for node in self.label_names:
            labels, _ = self.cc.sample(noise=noise, do_labels={node: sweep})
            images = self._generate(labels.numpy(), z)
            path = self._figure_path("label_interpolation", f"{step}_G_interp_{node}")
            written.append(save_grid(images, path, n, n))
        return written

    def sample_diversity(self, side: int = 16) -> Path:
        """A side x side grid of the fixed individuals."""
        count = side * side
        labels, _ = self.cc.sample(noise=self.fixed.cc_noise[:count])
        images = self._generate(labels.numpy(), self.fixed.z_gen.numpy()[:count])
        path = self._figure_path("image_diversity", f"{self.overall_step()}_G_diversity")
        return save_grid(images, path, side, side)

