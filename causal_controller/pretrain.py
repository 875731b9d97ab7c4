"""Pretraining the causal controller as a WGAN-GP against the data's label vectors.

* ``ControllerPretrainer``: the critic(s) and the two Adam optimizers; ``train_iteration``
  runs one reference iteration (n_critic critic updates, then one joint update of
  controller and critic) as ONE compiled call, ``train_iterations`` runs several in one
  call (what the loop uses). An update whose loss or gradients hold NaN or Inf is
  skipped (``nonfinite.py``): the weights and the optimizers' state stay as they were.
* ``save_controller`` / ``load_controller``: the controller's own checkpoints,
  ``<dir>/CC-Model-<step>.index`` / ``.data-*``, renamed into place once complete, so an
  ``.index`` file always belongs to a whole checkpoint.
* ``pretrain_loop``: the reference's loop with summaries, TVD checks, crosstab reports,
  checkpoints and early stopping; it also stops on a stop request (Ctrl-C, SIGTERM) and
  after ``--max_nonfinite`` skipped updates in a row.

The loop's outputs cost little next to its iterations (benchmarks/bench_pretrain_loop.py):
it runs up to ``CHUNK`` iterations per compiled call (chunks end at every ``log_step``),
takes the TVD from a histogram of the 500,000 samples counted inside TensorFlow, and
writes the crosstab report in a background thread.
"""

from __future__ import annotations

import concurrent.futures
import functools
import glob
import itertools
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

import label_stats
import nonfinite
from causal_controller.models import Critics
from errors import UserError
from utils import remove_leftovers, write_failure, write_text

log = logging.getLogger(__name__)

TVD_SAMPLES = 500_000  # controller samples per TVD measurement, as in the reference
CHUNK = 100  # most iterations per compiled call of the loop (a divisor of log_step)
HISTOGRAM_BITS = 16  # graphs of up to this many nodes: TVD and crosstab from a histogram
COUNT_BATCH = 100_000  # samples per call when counting label vectors (fastest measured)
# what the bits of an update's non-finite mask stand for
NONFINITE_NAMES = ("c_loss", "dcc_loss", "gradients of c_loss", "gradients of dcc_loss")


class Adam(tf.Module):
    """Adam exactly as TF1's AdamOptimizer (the reference's): epsilon 1e-8 added to
    sqrt(v), bias correction folded into the step size. Slots are created at build."""

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float,
                 beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8,
                 name: str = "adam"):
        super().__init__(name=name)
        self.learning_rate = float(learning_rate)  # step size
        self.beta1 = float(beta1)                  # decay of the first moment
        self.beta2 = float(beta2)                  # decay of the second moment
        self.epsilon = float(epsilon)              # added to sqrt(v)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """One step. A step that must be skipped when a loss or gradient is not finite
        goes inside ``nonfinite.apply_if`` (the pretraining loop's updates do)."""
        t = tf.cast(self.iterations.assign_add(1), tf.float32)
        lr_t = self.learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v, strict=True):
            m_new = m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v_new = v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(g))
            var.assign(var - lr_t * m_new / (tf.sqrt(v_new) + self.epsilon))


class ControllerPretrainer(tf.Module):
    """Owns the critic(s) and the optimizers of controller pretraining.

    ``train_iteration(real)`` takes real labels [n_critic + 1, batch, n_nodes] (node order
    of ``cc.label_names``), runs n_critic critic updates on real[0..n_critic-1] and one
    joint update on real[n_critic], increments ``cc.step`` and returns scalar losses
    (c_loss, dcc_loss, gp, w_dist) of the joint update, its fake batch ("fake") and
    "nonfinite", int32 [n_critic + 1]: one mask per update, 0 when it was applied, else
    the bits of NONFINITE_NAMES that held NaN or Inf (the update was skipped).
    ``train_iterations(blocks, count)`` runs the first ``count`` blocks of [m, n_critic + 1,
    batch, n_nodes] in one call and returns the last iteration's outputs, with
    "nonfinite" [m, n_critic + 1] (rows from ``count`` on are 0).
    ``label_counts(n, seed)``: how often each rounded label vector (bit i = node i) occurs
    among n controller samples. ``shadow()``: a second controller that takes a copy of
    the weights, to measure them while training goes on.
    """

    # the controller is used, not owned, and the shadow is scratch: keep both out of this
    # module's variables and checkpoints
    _TF_MODULE_IGNORED_PROPERTIES = (tf.Module._TF_MODULE_IGNORED_PROPERTIES
                                     | {"_cc", "_shadow", "_finite_fn", "_summaries",
                                        "_checkpoint_writer"})

    def __init__(self, cc, cc_config, seed: int | None = None, jit_compile: bool = True):
        super().__init__(name="controller_pretrainer")
        object.__setattr__(self, "_cc", cc)  # not tracked: checkpoints name cc themselves
        object.__setattr__(self, "_shadow", None)
        object.__setattr__(self, "_finite_fn", None)
        object.__setattr__(self, "_summaries", None)
        object.__setattr__(self, "_checkpoint_writer", None)
        self.n_critic = int(cc_config.n_critic)
        self.lambda_W = float(cc_config.lambda_W)
        self.factorized = bool(cc_config.pt_factorized)
        if self.n_critic < 0:
            raise UserError(f"--n_critic must be at least 0; got {self.n_critic}.")
        rng = (tf.random.Generator.from_seed(seed) if seed is not None
               else tf.random.Generator.from_non_deterministic_state())
        self.critics = Critics(cc.graph, int(cc_config.critic_hidden_size),
                               int(cc_config.critic_layers), self.factorized, rng)
        self._rng = (tf.random.Generator.from_seed(seed + 1) if seed is not None
                     else tf.random.Generator.from_non_deterministic_state())
        self.cc_vars = list(cc.trainable_variables)
        self.critic_vars = list(self.critics.trainable_variables)
        self.cc_optimizer = Adam(self.cc_vars, cc_config.pt_cc_lr, name="cc_adam")
        self.critic_optimizer = Adam(self.critic_vars, cc_config.pt_dcc_lr, name="dcc_adam")
        k, n = self.n_critic + 1, len(cc)
        self.train_iteration = tf.function(
            self._train_iteration,
            input_signature=[tf.TensorSpec([k, None, n], tf.float32)],
            jit_compile=jit_compile)
        self.train_iterations = tf.function(
            self._train_iterations,
            input_signature=[tf.TensorSpec([None, k, None, n], tf.float32),
                             tf.TensorSpec([], tf.int32)],
            jit_compile=jit_compile)
        self.label_counts = LabelCounter(cc)

    @property
    def cc(self):
        return self._cc

    def _draw(self, k: int, batch):
        """Noise [k, n_nodes, B, cc_n_hidden] ~ U[-1, 1] and alpha [k, B, 1] ~ U[0, 1]."""
        seeds = self._rng.make_seeds(2)
        noise = tf.random.stateless_uniform([k, len(self.cc), batch, self.cc.n_hidden],
                                            seeds[:, 0], minval=-1.0, maxval=1.0)
        alpha = tf.random.stateless_uniform([k, batch, 1], seeds[:, 1])
        return noise, alpha

    def _fake(self, noise):
        return self.cc.forward(tf.unstack(noise), stop_parent_gradients=self.factorized)[0]

    def _train_iteration(self, real):
        batch = tf.shape(real)[1]
        noise, alpha = self._draw(self.n_critic + 1, batch)
        masks = []

        if self.n_critic > 0:
            # The controller does not change during the critic updates, so the fake labels
            # of all n_critic updates come from one batched forward pass (same values as
            # n_critic separate passes on the same noise).
            k = self.n_critic
            flat = tf.reshape(tf.transpose(noise[:k], [1, 0, 2, 3]),
                              [len(self.cc), k * batch, self.cc.n_hidden])
            fakes = tf.reshape(tf.stop_gradient(self._fake(flat)), [k, batch, len(self.cc)])
            critic_masks = tf.TensorArray(tf.int32, size=k)
            for i in tf.range(k):
                with tf.GradientTape() as tape:
                    d_loss, _, _, _ = self.critics.losses(real[i], fakes[i], alpha[i],
                                                          self.lambda_W)
                grads = tape.gradient(d_loss, self.critic_vars)
                finite, bad = nonfinite.check(
                    {"dcc_loss": d_loss, "gradients of dcc_loss": grads}, NONFINITE_NAMES)
                nonfinite.apply_if(finite, functools.partial(
                    self.critic_optimizer.apply, grads, self.critic_vars))
                critic_masks = critic_masks.write(i, bad)
            masks.append(critic_masks.stack())

        last = self.n_critic
        with tf.GradientTape(persistent=True) as tape:
            fake = self._fake(noise[last])
            d_loss, c_loss, gp, w_dist = self.critics.losses(
                real[last], fake, alpha[last], self.lambda_W, stop_parent_gradients=self.factorized)
        cc_grads = tape.gradient(c_loss, self.cc_vars)
        critic_grads = tape.gradient(d_loss, self.critic_vars)
        del tape
        finite, bad = nonfinite.check(
            {"c_loss": c_loss, "dcc_loss": d_loss, "gradients of c_loss": cc_grads,
             "gradients of dcc_loss": critic_grads}, NONFINITE_NAMES)


        def joint_update():
            self.cc_optimizer.apply(cc_grads, self.cc_vars)
            self.critic_optimizer.apply(critic_grads, self.critic_vars)

        nonfinite.apply_if(finite, joint_update)
        self.cc.step.assign_add(1)
        masks.append(tf.reshape(bad, [1]))
        return {"c_loss": c_loss, "dcc_loss": d_loss, "gp": gp, "w_dist": w_dist, "fake": fake,
                "nonfinite": tf.concat(masks, axis=0)}

    def _train_iterations(self, blocks, count):
        shape = tf.shape(blocks)
        out = {key: tf.constant(0.0) for key in ("c_loss", "dcc_loss", "gp", "w_dist")}
        out["fake"] = tf.zeros([shape[2], len(self.cc)])
        masks = tf.zeros([shape[0], self.n_critic + 1], tf.int32)
        for i in tf.range(count):
            step_out = self._train_iteration(blocks[i])
            masks = tf.tensor_scatter_nd_update(masks, tf.reshape(i, [1, 1]),
                                                step_out["nonfinite"][None])
            out = {key: step_out[key] for key in out}
        return {**out, "nonfinite": masks}

    def weights_finite(self) -> tf.Tensor:
        """Scalar bool: every variable of the controller and of this module is finite."""
        if self._finite_fn is None:
            variables = list(self.cc.variables) + list(self.variables)
            object.__setattr__(self, "_finite_fn",
                               tf.function(lambda: nonfinite.all_finite(variables)))
        return self._finite_fn()

    def step_summaries(self, writer) -> _StepSummaries:
        """The compiled summaries of a log step for ``writer`` (traced once per writer)."""
        if self._summaries is None or self._summaries.writer is not writer:
            object.__setattr__(self, "_summaries", _StepSummaries(self.cc.label_names, writer))
        return self._summaries

    def checkpoint_writer(self) -> CheckpointWriter:
        """The compiled writer of this controller's and pretrainer's checkpoints (traced
        on its first write, then reused)."""
        if self._checkpoint_writer is None:
            object.__setattr__(self, "_checkpoint_writer", CheckpointWriter(self.cc, self))
        return self._checkpoint_writer

    def shadow(self) -> Shadow:
        """The controller's shadow (made on first use, then reused)."""
        if self._shadow is None:
            object.__setattr__(self, "_shadow", Shadow(self.cc))
        return self._shadow


class LabelCounter:
    """``counter(n, seed)``: int64 [2 ** n_nodes], entry c counting the controller samples
    whose labels rounded at 0.5 read c in binary (bit i = node i, as ``label_stats.encode``
    numbers them). For graphs of up to HISTOGRAM_BITS nodes; deterministic given the seed.

    Made cheap because a TVD check's CPU time comes out of the training step's (which
    keeps every core busy). For 500,000 samples of big_causal_graph, in CPU seconds: the
    noise U[-1, 1] is drawn by numpy's PCG64 and handed to TensorFlow without a copy,
    0.12 s against 0.27 s for TensorFlow's Philox; the controller runs on transposed
    activations ([features, samples]: the same weights, the same function as
    ``cc.forward``, checked by a test) compiled by XLA, 0.19 s against 0.27 s without XLA
    and 0.53 s in the controller's own layout. The samples themselves never reach numpy.
    """

    def __init__(self, cc):
        self.cc = cc
        self._codes = tf.function(self._codes_of, jit_compile=True)
        self._fn = tf.function(self._count, input_signature=[
            tf.TensorSpec([len(cc), cc.n_hidden, None], tf.float32)])

    def forward_transposed(self, noise: Sequence[tf.Tensor]) -> tf.Tensor:
        """Labels [n_nodes, N] for per-node noise [cc_n_hidden, N] (node order)."""
        index = {name: i for i, name in enumerate(self.cc.node_names)}
        labels: list[tf.Tensor] = []
        for i, (_, parents) in enumerate(self.cc.graph):
            x = tf.concat([noise[i], *[labels[index[p]] for p in parents]], axis=0)
            node = self.cc.nodes[i]
            last = len(node.weights) - 1
            for j, (w, b) in enumerate(zip(node.weights, node.biases, strict=True)):
                x = tf.matmul(w, x, transpose_a=True) + b[:, None]
                if j < last:
                    x = tf.nn.leaky_relu(x, 0.2)  # lrelu, max(x, 0.2 x), as one op
            labels.append(tf.sigmoid(x))
        return tf.concat(labels, axis=0)

    def _codes_of(self, uniform):
        """Label codes [N] for uniform [n_nodes, cc_n_hidden, N] in [0, 1)."""
        n = len(self.cc)
        labels = self.forward_transposed([2.0 * u - 1.0 for u in tf.unstack(uniform)])
        bits = tf.cast(labels > 0.5, tf.int32)
        return tf.reduce_sum(bits * tf.constant([[1 << i] for i in range(n)], tf.int32), axis=0)

    def _count(self, uniform):
        n = len(self.cc)
        return tf.math.bincount(self._codes(uniform), minlength=1 << n, maxlength=1 << n)

    def __call__(self, n_samples: int, seed: int = 0) -> np.ndarray:
        n = len(self.cc)
        if n > HISTOGRAM_BITS:
            raise ValueError(f"label counts need at most {HISTOGRAM_BITS} nodes; got {n}")
        rng = np.random.default_rng([int(seed), n])
        counts = np.zeros(1 << n, np.int64)
        for start in range(0, int(n_samples), COUNT_BATCH):
            size = min(COUNT_BATCH, int(n_samples) - start)
            uniform = rng.random((n, self.cc.n_hidden, size), dtype=np.float32)
            # handed over without a copy (converting 36 MB took 30 ms of CPU)
            counts += self._fn(tf.experimental.dlpack.from_dlpack(uniform.__dlpack__())).numpy()
        return counts


class Shadow:
    """A second controller of the same shape: ``take()`` copies the weights into it (one
    compiled call), ``counts`` counts its samples, so a TVD check measures the weights of
    its step in a background thread while the controller trains on."""

    def __init__(self, cc):
        from causal_controller.CausalController import CausalController

        self.cc = CausalController(cc.graph, cc.config, seed=0)
        pairs = list(zip(self.cc.trainable_variables, cc.trainable_variables, strict=True))

        def copy():
            for target, source in pairs:
                target.assign(source)

        self._copy = tf.function(copy)
        self.counts = LabelCounter(self.cc)

    def take(self) -> None:
        self._copy()


# ---------------------------------------------------------------------- checkpoints
_GRAPH_KEY = "graph/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = "CC-Model"


def _checkpoint(cc, pretrainer=None, graph_spec=None) -> tf.train.Checkpoint:
    parts = {"controller": cc}
    if pretrainer is not None:
        parts["pretrainer"] = pretrainer
    if graph_spec is not None:
        parts["graph"] = tf.Variable(graph_spec, trainable=False)
    return tf.train.Checkpoint(**parts)


class CheckpointWriter:
    """Writes the controller's checkpoint (as ``_checkpoint(cc, pretrainer)`` would, the
    same files) with one compiled call: 6 ms for big_causal_graph's 367 variables against
    220 ms for ``tf.train.Checkpoint.write`` run eagerly, which reads each variable with
    its own op and walks the object graph anew each time. Tracing it costs about a
    second once, so it pays for loops that save often (``pretrain_loop``). The objects'
    structure must not change after the first call (their variables are all built at
    construction)."""

    def __init__(self, cc, pretrainer=None):
        self._checkpoint = _checkpoint(cc, pretrainer, cc.graph_spec)
        self._write = tf.function(self._checkpoint.write,
                                  input_signature=[tf.TensorSpec([], tf.string)])

    def __call__(self, file_prefix: str) -> str:
        return self._write(tf.constant(file_prefix)).numpy().decode()


def save_controller(cc, pretrainer, directory: str, step: int,
                    writer: CheckpointWriter | None = None) -> str:
    """Write ``<directory>/CC-Model-<step>`` (.index + .data files) and return the prefix.

    Holds the controller, its step, the graph description and, when a pretrainer is
    given, the critic(s) and both optimizers' slots. The files are written in a hidden
    temporary folder and renamed into place, the .index last, so a run killed during the
    write leaves no checkpoint that looks complete (the next save removes the leftovers).
    A full disk or a read-only folder is a UserError. ``writer``: a CheckpointWriter of
    the same cc and pretrainer, to write with one compiled call.
    """
    name = f"{_PREFIX}-{int(step)}"
    prefix = os.path.join(directory, name)
    partial = os.path.join(directory, f".{name}.partial-{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        remove_leftovers(directory)
        os.makedirs(partial, exist_ok=True)
        write = writer or _checkpoint(cc, pretrainer, cc.graph_spec).write
        written = write(os.path.join(partial, name))
        if os.path.exists(prefix + ".index"):
            os.remove(prefix + ".index")  # an older write of this step stops counting first
        for data in glob.glob(glob.escape(written) + ".data-*"):
            os.replace(data, prefix + data[len(written):])
        os.replace(written + ".index", prefix + ".index")
    except (OSError, tf.errors.OpError) as err:
        failure = write_failure(err, f"the controller checkpoint {prefix}")
        if failure is None:
            raise
        raise failure from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return prefix


def checkpoint_step(prefix: str) -> int:
    """The step of a CC-Model-<step> prefix."""
    return int(os.path.basename(prefix).rsplit("-", 1)[1])


def _readable(prefix: str) -> bool:
    """Whether every tensor of a checkpoint can be read (a half-written one cannot)."""
    if not glob.glob(glob.escape(prefix) + ".data-*"):
        return False
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError):
        return False
    return True


def latest_controller_checkpoint(directory: str) -> str | None:
    """The prefix of the highest-step readable CC-Model-<step> in a folder (or its
    checkpoints/); unreadable ones (half-written by an older version) are skipped."""
    found = []
    for folder in (directory, os.path.join(directory, "checkpoints")):
        for index in glob.glob(os.path.join(glob.escape(folder), f"{_PREFIX}-*.index")):
            match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", os.path.basename(index))
            if match:
                found.append((int(match.group(1)), index[: -len(".index")]))
        if found:
            break
    for _, prefix in sorted(found, reverse=True):
        if _readable(prefix):
            return prefix
        log.warning("skipping the controller checkpoint %s: it cannot be read", prefix)
    return None


def load_controller(cc, path: str, pretrainer=None) -> str:
    """Restore ``cc`` (and the pretrainer's critics/optimizers if given) from a checkpoint
    prefix ``.../CC-Model-20000`` or a folder (its newest CC-Model). Returns the prefix."""
    path = os.fspath(path)
    prefix = latest_controller_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None or not os.path.exists(prefix + ".index"):
        raise UserError(
            f"No controller checkpoint at {path!r}: expected a prefix such as "
            f"'.../controller/checkpoints/{_PREFIX}-20000' (with its .index file) or a folder "
            f"holding {_PREFIX}-<step>.index files. Check --pt_load_path.")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f"Cannot read the controller checkpoint {prefix!r}: {err}") from err
    if reader.has_tensor(_GRAPH_KEY):
        saved = reader.get_tensor(_GRAPH_KEY)
        saved = saved.decode() if isinstance(saved, bytes) else str(saved)
        if saved != cc.graph_spec:
            raise UserError(
                f"The controller checkpoint {prefix!r} was trained on another causal graph or "
                f"controller shape.\n  checkpoint: {saved}\n  this run:   {cc.graph_spec}\n"
                "Use the same --causal_model, --cc_n_layers and --cc_n_hidden, or pretrain anew.")
    status = _checkpoint(cc, pretrainer).read(prefix)
    try:
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        raise UserError(
            f"The controller checkpoint {prefix!r} does not hold every variable of this "
            f"controller{' and pretrainer' if pretrainer is not None else ''} ({err}). "
            "Was it written by another model or version?") from err
    status.expect_partial()
    return prefix


def resume_newer_checkpoint(cc, pretrainer, directory: str) -> str | None:
    """Load the newest controller checkpoint in ``directory`` if it is ahead of ``cc.step``.

    A run killed between its run checkpoints left its controller checkpoints (written at
    every TVD check) further on: pretraining continues from there. Returns the prefix
    loaded, or None.
    """
    if not os.path.isdir(directory):
        return None
    prefix = latest_controller_checkpoint(directory)
    if prefix is None or checkpoint_step(prefix) <= int(cc.step.numpy()):
        return None
    load_controller(cc, prefix, pretrainer)
    log.info("pretraining continues from %s (step %d), newer than the run's checkpoint",
             prefix, checkpoint_step(prefix))
    return prefix


# ---------------------------------------------------------------------- the loop
def _data_matrix(data_labels, names: Sequence[str]) -> np.ndarray:
    if isinstance(data_labels, pd.DataFrame):
        missing = [n for n in names if n not in data_labels.columns]
        if missing:
            raise UserError(f"The data labels have no columns {missing}; the causal graph's "
                            "nodes must be attributes of the data set.")
        return data_labels[list(names)].to_numpy()
    data = np.asarray(data_labels)
    if data.ndim != 2 or data.shape[1] != len(names):
        raise UserError(f"data_labels must be [rows, {len(names)}] in node order {list(names)}; "
                        f"got shape {data.shape}.")
    return data


def _iteration_blocks(it, k: int) -> Iterator[np.ndarray]:
    """Blocks [k, batch, n] from an iterator of [batch, n] arrays (stacked k at a time)
    or of [k, batch, n] arrays (used as they are)."""
    while True:
        block = []
        try:
            first = np.asarray(next(it), np.float32)
            if first.ndim == 3:
                yield first
                continue
            block.append(first)
            for _ in range(k - 1):
                block.append(np.asarray(next(it), np.float32))
        except StopIteration:
            return
        yield np.stack(block)


def _chunks(real_labels, k: int, m: int) -> Iterator:
    """Yield [m, k, batch, n] float32 chunks (fewer rows when a finite stream ends): a
    tf.data.Dataset of [batch, n] is batched by k then m, one of [k, batch, n] by m; any
    other iterator is stacked on the host."""
    if isinstance(real_labels, tf.data.Dataset):
        ds = real_labels
        if ds.element_spec.shape.rank == 2:
            ds = ds.batch(k, drop_remainder=True)
        # No autotuning: deleting an iterator waits for its autotuning thread to wake, up
        # to a minute (34 s measured at the end of a 10,000-iteration loop, in about half
        # of the benchmark's rounds); this pipeline only slices label rows anyway.
        options = tf.data.Options()
        options.autotune.enabled = False
        ds = ds.map(lambda x: tf.cast(x, tf.float32)).batch(m).prefetch(2)
        yield from ds.with_options(options)
        return
    blocks = _iteration_blocks(iter(real_labels), k)
    while True:
        group = list(itertools.islice(blocks, m))
        if not group:
            return
        yield np.stack(group)


def chunk_size(log_step: int) -> int:
    """Iterations per compiled call: the largest divisor of log_step up to CHUNK, so that
    chunks end at every log step (and so at every TVD check)."""
    log_step = max(int(log_step), 1)
    return max(d for d in range(1, min(CHUNK, log_step) + 1) if log_step % d == 0)


def measure_tvd(cc, data: np.ndarray, n_samples: int = TVD_SAMPLES):
    """(TVD, label_dict) of n_samples controller samples against the data rows."""
    labels, _ = cc.sample(n_samples)
    labels = labels.numpy()
    label_dict = {name: labels[:, i:i + 1] for i, name in enumerate(cc.label_names)}
    frame = pd.DataFrame(data, columns=cc.label_names)
    return label_stats.calc_tvd(label_dict, frame), label_dict, frame


def tvd_of_counts(counts: np.ndarray, data_counts: np.ndarray) -> float:
    """TVD between two histograms of label vectors (as ``label_stats.calc_tvd`` computes it)."""
    p = counts.astype(np.float64)
    q = data_counts.astype(np.float64)
    return float(0.5 * np.abs(p / max(p.sum(), 1.0) - q / max(q.sum(), 1.0)).sum())


def expand_counts(counts: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The label vectors of a histogram as {name: uint8 (N, 1)}, each vector repeated as
    often as it was counted (what ``label_stats.crosstab`` takes; the loop itself writes its
    crosstabs from the histogram, ``label_stats.crosstab_of_counts``)."""
    codes = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    bits = ((codes[:, None] >> np.arange(len(names), dtype=np.int32)) & 1).astype(np.uint8)
    return {name: bits[:, i:i + 1] for i, name in enumerate(names)}


class _TvdChecks:
    """The loop's TVD checks, one in flight at a time.

    ``start(step)`` copies the controller's weights into its shadow and hands the rest to
    a background thread (or, with ``background=False``, does it at once): the TVD of
    ``n_samples`` shadow samples, ``misc/tvd`` and the crosstab report
    ``<step>_glabel_crosstab.txt``. ``result()`` waits for the check in flight and returns
    (step, tvd), or None when there is none; ``ready()`` says whether it has finished.
    Graphs of more than HISTOGRAM_BITS nodes are measured at ``start`` from samples.
    """

    def __init__(self, pretrainer, data: np.ndarray, controller_dir: str, n_samples: int,
                 writer, step_offset: int, background: bool = True):
        self.cc = pretrainer.cc
        self.names = list(self.cc.label_names)
        self.data = (np.asarray(data) > 0.5).astype(np.uint8)
        self.controller_dir, self.n_samples = controller_dir, int(n_samples)
        self.writer, self.step_offset = writer, step_offset
        self.shadow = pretrainer.shadow() if len(self.names) <= HISTOGRAM_BITS else None
        if self.shadow is not None:
            self.data_counts = np.bincount(label_stats.encode(self.data),
                                           minlength=1 << len(self.names))
        self._pool = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tvd-check")
                      if background else None)
        self._future: concurrent.futures.Future | None = None

    def start(self, step: int) -> None:
        if self._future is not None:
            raise RuntimeError("collect the previous TVD check first")
        if self.shadow is not None:
            self.shadow.take()
            job = functools.partial(self._from_counts, step)
        else:
            tvd, label_dict, _ = measure_tvd(self.cc, self.data, self.n_samples)
            job = functools.partial(self._finish, step, tvd, lambda: label_stats.crosstab(
                label_dict, self.data, step=step))
        if self._pool is not None:
            self._future = self._pool.submit(job)
        else:
            self._future = concurrent.futures.Future()
            self._future.set_result(job())

    def _from_counts(self, step: int):
        counts = self.shadow.counts(self.n_samples, seed=step)
        tvd = tvd_of_counts(counts, self.data_counts)
        return self._finish(step, tvd, lambda: label_stats.crosstab_of_counts(
            counts, self.data, self.names, step=step))

    def _finish(self, step: int, tvd: float, report):
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.scalar("misc/tvd", tvd, step=step + self.step_offset)
        path = os.path.join(self.controller_dir, f"{step}_glabel_crosstab.txt")
        write_text(path, report())
        return step, tvd

    @property
    def pending(self) -> bool:
        return self._future is not None

    def ready(self) -> bool:
        return self._future is not None and self._future.done()

    def result(self):
        if self._future is None:
            return None
        future, self._future = self._future, None
        return future.result()

    def close(self) -> None:
        """Let a check in flight finish (its files stay whole) and stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


LOSS_KEYS = ("c_loss", "dcc_loss", "gp", "w_dist")


class _StepSummaries:
    """The summaries of a log step, tf.summary ops traced into one compiled call (54 eager
    writes per step for big_causal_graph cost 7 ms of the loop's own thread):
    ``pretrain/<loss>``, ``pretrain/skipped_updates`` and, per node, the mean, std and
    histogram of the fake and of the real labels. Bound to one summary writer."""

    def __init__(self, names: Sequence[str], writer, buckets: int = 20):
        self.names, self.writer, self.buckets = list(names), writer, buckets
        self._fn = tf.function(self._write)

    def __call__(self, step: int, out: dict, skipped: int, real) -> None:
        with self.writer.as_default():
            self._fn(tf.constant(step, tf.int64), tf.stack([out[k] for k in LOSS_KEYS]),
                     tf.constant(float(skipped)), out["fake"], tf.convert_to_tensor(real))

    def _write(self, step, losses, skipped, fake, real):
        for key, value in zip(LOSS_KEYS, tf.unstack(losses), strict=True):
            tf.summary.scalar(f"pretrain/{key}", value, step=step)
        tf.summary.scalar("pretrain/skipped_updates", skipped, step=step)
        for i, name in enumerate(self.names):
            for kind, values in (("fake", fake[:, i]), ("real", tf.cast(real[:, i], tf.float32))):
                mean, variance = tf.nn.moments(values, axes=[0])
                tf.summary.scalar(f"{name}/{name}_{kind}_mean", mean, step=step)
                tf.summary.scalar(f"{name}/{name}_{kind}_std", tf.sqrt(variance), step=step)
                # the finite values only: NaN/Inf of a diverged run would break the bins
                finite = tf.boolean_mask(values, tf.math.is_finite(values))
                tf.summary.histogram(f"{name}/{name}_{kind}", finite, step=step,
                                     buckets=self.buckets)


def _weights_finite(pretrainer) -> bool:
    """Whether the controller's and the pretrainer's variables are all finite."""
    return bool(pretrainer.weights_finite())


def pretrain_loop(cc, pretrainer: ControllerPretrainer, real_labels, data_labels, cc_config,
                  controller_dir: str, summary_writer=None, log_step: int = 100,
                  step_offset: int = 0, progress: bool = True,
                  tvd_samples: int = TVD_SAMPLES, stop=None,
                  max_nonfinite: int = nonfinite.DEFAULT_LIMIT, background: bool = True) -> dict:
    """The reference's pretraining loop, from ``cc.step`` up to ``cc_config.pretrain_iter``.

    real_labels: a tf.data.Dataset of [batch, n] float label batches (node order of
        ``cc.label_names``; the loop batches it by n_critic + 1), or a dataset / iterator
        already yielding [n_critic + 1, batch, n], or any iterator of [batch, n] arrays
        (stacked n_critic + 1 at a time). It must not run out before pretrain_iter.
    data_labels: the data set's 0/1 labels for the graph nodes ([rows, n] array in node
        order, or a DataFrame with those columns), for the TVD and crosstabs.
    Every log_step: summaries (losses, skipped updates; per-node mean, std, histogram of
    fake and real labels) at step ``cc.step + step_offset``. Every 10 * log_step: a
    checkpoint in ``controller_dir/checkpoints``, the TVD of 500,000 samples, ``misc/tvd``,
    ``<step>_glabel_crosstab.txt`` in controller_dir; pretraining stops once cc.step >=
    min_pretrain_iter and TVD < min_tvd. At the end: final checkpoint, TVD and crosstab.
    The TVD of step s is measured in a background thread while training goes on
    (``background``); when it says stop, the controller and pretrainer are restored from
    the checkpoint of step s, so the outcome is the same as measuring at once.
    Starts from the newest checkpoint in ``controller_dir/checkpoints`` when it is ahead
    of ``cc.step`` (a resumed run killed between its run checkpoints).
    tvd_samples: controller samples per TVD (500,000 as in the reference).
    stop: an object whose ``signum`` becomes set on a stop request (trainer.StopRequest):
        the loop ends after the current chunk of iterations with a checkpoint.
    max_nonfinite: skipped updates in a row (NaN/Inf) that end the run with a
        ``nonfinite.NonFiniteError``, writing no further checkpoint.
    Returns {"step", "tvd", "stopped_early", "checkpoint", "seconds", "skipped_updates",
    "stopped_by" (the signal number or None)}.
    """
    names = list(cc.label_names)
    data = _data_matrix(data_labels, names)
    total = int(cc_config.pretrain_iter)
    min_iter = int(cc_config.min_pretrain_iter)
    min_tvd = float(cc_config.min_tvd)
    log_step = max(int(log_step), 1)
    tvd_step = 10 * log_step
    ckpt_dir = os.path.join(controller_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    remove_leftovers(controller_dir)  # what a killed run was writing
    remove_leftovers(ckpt_dir)
    writer = summary_writer
    path = resume_newer_checkpoint(cc, pretrainer, ckpt_dir)
    saved = {checkpoint_step(path): path} if path else {}
    counter = nonfinite.NonFiniteCounter(
        max_nonfinite, NONFINITE_NAMES, what="Controller pretraining",
        advice=f"Checkpoints written before stay as they were (the controller's in {ckpt_dir}).")
    checks = _TvdChecks(pretrainer, data, controller_dir, tvd_samples, writer, step_offset,
                        background=background)
    summaries = pretrainer.step_summaries(writer) if writer is not None else None
    tvd, last_check = float("nan"), None
    bar = tqdm(total=max(total - int(cc.step.numpy()), 0), initial=0, disable=not progress,
               desc="pretrain controller", dynamic_ncols=True)

    ckpt_writer = pretrainer.checkpoint_writer()

    def save(step: int) -> None:
        if not _weights_finite(pretrainer):
            log.warning("step %d: the weights hold NaN or Inf; no checkpoint is written", step)
            return
        saved[step] = save_controller(cc, pretrainer, ckpt_dir, step, writer=ckpt_writer)

    def collect() -> int | None:
        """Take the result of the check in flight; its step if pretraining should stop."""
        nonlocal tvd, last_check
        result = checks.result()
        if result is None:
            return None
        last_check, tvd = result
        log.info("controller step %d: TVD %.4f", last_check, tvd)
        bar.set_postfix(tvd=f"{tvd:.4f}", skipped=counter.skipped)
        if last_check >= min_iter and tvd < min_tvd and last_check in saved:
            return last_check
        return None

    t0 = time.perf_counter()
    m = chunk_size(log_step)
    chunks = _chunks(real_labels, pretrainer.n_critic + 1, m)
    step = int(cc.step.numpy())
    early, stopped_by = None, None
    try:
        while step < total and early is None:
            if stop is not None and stop.signum is not None:
                stopped_by = stop.signum
                break
            try:
                block = next(chunks)
            except StopIteration:
                raise UserError("The real-label stream ran out before --pretrain_iter "
                                "iterations; give an endless (repeated) dataset.") from None
            count = min(m - step % m, total - step, len(block))
            out = pretrainer.train_iterations(block, count)
            counter.update(out["nonfinite"].numpy()[:count], step + 1)
            step += count
            bar.update(count)
            if step % log_step == 0:
                losses = {k: float(out[k]) for k in LOSS_KEYS}
                bar.set_postfix(c_loss=f"{losses['c_loss']:.4f}",
                                dcc_loss=f"{losses['dcc_loss']:.4f}", tvd=f"{tvd:.4f}",
                                skipped=counter.skipped)
                log.debug("step %d %s", step, losses)
                if summaries is not None:
                    summaries(step + step_offset, out, counter.skipped, block[count - 1][-1])
            if checks.ready():
                early = collect()
            if early is None and step % tvd_step == 0:
                early = collect()  # the previous check, before the shadow is reused
                if early is None:
                    save(step)
                    checks.start(step)
        if early is None:
            early = collect()
        if early is not None:
            if int(cc.step.numpy()) != early:  # trained on meanwhile: back to that step
                load_controller(cc, saved[early], pretrainer)
            step, path = early, saved[early]
            log.info("TVD %.4f < min_tvd %.4f after %d iterations: pretraining stops",
                     tvd, min_tvd, step)
        elif stopped_by is not None:
            if step not in saved:
                save(step)
        elif last_check != step:
            save(step)
            checks.start(step)
            collect()
            log.info("controller final step %d: TVD %.4f", step, tvd)
    finally:
        bar.close()
        checks.close()
        if writer is not None:
            writer.flush()
    path = saved.get(step) or (saved[max(saved)] if saved else None)
    return {"step": step, "tvd": float(tvd), "stopped_early": early is not None,
            "checkpoint": path, "seconds": time.perf_counter() - t0,
            "skipped_updates": counter.skipped, "stopped_by": stopped_by}
