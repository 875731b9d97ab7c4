"""Pretraining the causal controller as a WGAN-GP against the data's label vectors.

* ``ControllerPretrainer``: the critic(s) and the two Adam optimizers; ``train_iteration``
  runs one reference iteration (n_critic critic updates, then one joint update of
  controller and critic) as ONE compiled call.
* ``save_controller`` / ``load_controller``: the controller's own checkpoints,
  ``<dir>/CC-Model-<step>.index`` / ``.data-*``.
* ``pretrain_loop``: the reference's loop with summaries, TVD checks, crosstab reports,
  checkpoints and early stopping.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tqdm import tqdm

from causal_controller.models import Critics
from errors import UserError
from figure_scripts import pairwise

log = logging.getLogger(__name__)

TVD_SAMPLES = 500_000  # controller samples per TVD measurement, as in the reference


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
        t = tf.cast(self.iterations.assign_add(1), tf.float32)
        lr_t = self.learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v, strict=True):
            m_new = m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v_new = v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(g))
            var.assign_sub(lr_t * m_new / (tf.sqrt(v_new) + self.epsilon))


class ControllerPretrainer(tf.Module):
    """Owns the critic(s) and the optimizers of controller pretraining.

    ``train_iteration(real)`` takes real labels [n_critic + 1, batch, n_nodes] (node order
    of ``cc.label_names``), runs n_critic critic updates on real[0..n_critic-1] and one
    joint update on real[n_critic], increments ``cc.step`` and returns scalar losses
    (c_loss, dcc_loss, gp, w_dist) plus the last fake batch ("fake").
    """

    # the controller is used, not owned: keep it out of this module's variables
    _TF_MODULE_IGNORED_PROPERTIES = tf.Module._TF_MODULE_IGNORED_PROPERTIES | {"_cc"}

    def __init__(self, cc, cc_config, seed: int | None = None, jit_compile: bool = True):
        super().__init__(name="controller_pretrainer")
        object.__setattr__(self, "_cc", cc)  # not tracked: checkpoints name cc themselves
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
        n = len(cc)
        self.train_iteration = tf.function(
            self._train_iteration,
            input_signature=[tf.TensorSpec([self.n_critic + 1, None, n], tf.float32)],
            jit_compile=jit_compile)

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

        if self.n_critic > 0:
            # The controller does not change during the critic updates, so the fake labels
            # of all n_critic updates come from one batched forward pass (same values as
            # n_critic separate passes on the same noise).
            k = self.n_critic
            flat = tf.reshape(tf.transpose(noise[:k], [1, 0, 2, 3]),
                              [len(self.cc), k * batch, self.cc.n_hidden])
            fakes = tf.reshape(tf.stop_gradient(self._fake(flat)), [k, batch, len(self.cc)])
        for i in tf.range(self.n_critic):
            with tf.GradientTape() as tape:
                d_loss, _, _, _ = self.critics.losses(real[i], fakes[i], alpha[i], self.lambda_W)
            grads = tape.gradient(d_loss, self.critic_vars)
            self.critic_optimizer.apply(grads, self.critic_vars)

        last = self.n_critic
        with tf.GradientTape(persistent=True) as tape:
            fake = self._fake(noise[last])
            d_loss, c_loss, gp, w_dist = self.critics.losses(
                real[last], fake, alpha[last], self.lambda_W, stop_parent_gradients=self.factorized)
        cc_grads = tape.gradient(c_loss, self.cc_vars)
        critic_grads = tape.gradient(d_loss, self.critic_vars)
        del tape
        self.cc_optimizer.apply(cc_grads, self.cc_vars)
        self.critic_optimizer.apply(critic_grads, self.critic_vars)
        self.cc.step.assign_add(1)
        return {"c_loss": c_loss, "dcc_loss": d_loss, "gp": gp, "w_dist": w_dist, "fake": fake}


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


def save_controller(cc, pretrainer, directory: str, step: int) -> str:
    """Write ``<directory>/CC-Model-<step>`` (.index + .data files; TF writes to a temporary
    name and renames). Holds the controller, its step, the graph description and, when a
    pretrainer is given, the critic(s) and both optimizers' slots. Returns the prefix."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, f"{_PREFIX}-{int(step)}")
    return _checkpoint(cc, pretrainer, cc.graph_spec).write(prefix)


def latest_controller_checkpoint(directory: str) -> str | None:
    """The prefix of the highest-step CC-Model-<step> in a folder (or its checkpoints/)."""
    found = []
    for folder in (directory, os.path.join(directory, "checkpoints")):
        for index in glob.glob(os.path.join(folder, f"{_PREFIX}-*.index")):
            match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", os.path.basename(index))
            if match:
                found.append((int(match.group(1)), index[: -len(".index")]))
        if found:
            break
    return max(found)[1] if found else None


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


def _iteration_batches(real_labels, k: int) -> Iterable:
    """Yield [k, batch, n] blocks: a tf.data.Dataset of [batch, n] is batched by k; one
    already yielding rank-3 blocks is used as is; any other iterator is stacked k at a time."""
    if isinstance(real_labels, tf.data.Dataset):
        spec = real_labels.element_spec
        if spec.shape.rank == 2:
            real_labels = real_labels.batch(k, drop_remainder=True)
        real_labels = real_labels.map(lambda x: tf.cast(x, tf.float32))
        yield from real_labels.prefetch(2)
        return
    it = iter(real_labels)
    while True:
        block = []
        try:
            first = next(it)
            first = np.asarray(first, np.float32)
            if first.ndim == 3:
                yield first
                continue
            block.append(first)
            for _ in range(k - 1):
                block.append(np.asarray(next(it), np.float32))
        except StopIteration:
            return
        yield np.stack(block)


def measure_tvd(cc, data: np.ndarray, n_samples: int = TVD_SAMPLES):
    """(TVD, label_dict) of n_samples controller samples against the data rows."""
    labels, _ = cc.sample(n_samples)
    labels = labels.numpy()
    label_dict = {name: labels[:, i:i + 1] for i, name in enumerate(cc.label_names)}
    frame = pd.DataFrame(data, columns=cc.label_names)
    return pairwise.calc_tvd(label_dict, frame), label_dict, frame


def _metadata(plugin: str) -> summary_pb2.SummaryMetadata:
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    return meta


def summary_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written with core TF only (tf.summary.scalar needs the
    tensorboard package, which is not a dependency)."""
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                     metadata=_metadata("scalars"))


def summary_histogram(name: str, values: np.ndarray, step: int, buckets: int = 20) -> None:
    """A TensorBoard histogram ([buckets, 3] of left edge, right edge, count)."""
    values = np.asarray(values, np.float64).reshape(-1)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(values, bins=buckets, range=(lo, hi))
    table = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    tf.summary.write(name, tf.constant(table), step=step, metadata=_metadata("histograms"))


def _write_label_summaries(names, fake: np.ndarray, real: np.ndarray, step: int) -> None:
    for i, name in enumerate(names):
        for kind, values in (("fake", fake[:, i]), ("real", real[:, i])):
            summary_scalar(f"{name}/{name}_{kind}_mean", values.mean(), step)
            summary_scalar(f"{name}/{name}_{kind}_std", values.std(), step)
            summary_histogram(f"{name}/{name}_{kind}", values, step)


def pretrain_loop(cc, pretrainer: ControllerPretrainer, real_labels, data_labels, cc_config,
                  controller_dir: str, summary_writer=None, log_step: int = 100,
                  step_offset: int = 0, progress: bool = True,
                  tvd_samples: int = TVD_SAMPLES) -> dict:
    """The reference's pretraining loop, from ``cc.step`` up to ``cc_config.pretrain_iter``.

    real_labels: a tf.data.Dataset of [batch, n] float label batches (node order of
        ``cc.label_names``; the loop batches it by n_critic + 1), or a dataset / iterator
        already yielding [n_critic + 1, batch, n], or any iterator of [batch, n] arrays
        (stacked n_critic + 1 at a time). It must not run out before pretrain_iter.
    data_labels: the data set's 0/1 labels for the graph nodes ([rows, n] array in node
        order, or a DataFrame with those columns), for the TVD and crosstabs.
    Every log_step: summaries (losses; per-node mean, std, histogram of fake and real
    labels) at step ``cc.step + step_offset``. Every 10 * log_step: TVD of 500,000 samples,
    ``<step>_glabel_crosstab.txt`` in controller_dir, ``misc/tvd``, a checkpoint in
    ``controller_dir/checkpoints``; stop once cc.step >= min_pretrain_iter and TVD <
    min_tvd. At the end: final TVD, crosstab and checkpoint.
    tvd_samples: controller samples per TVD (500,000 as in the reference).
    Returns {"step", "tvd", "stopped_early", "checkpoint", "seconds"}.
    """
    names = list(cc.label_names)
    data = _data_matrix(data_labels, names)
    total = int(cc_config.pretrain_iter)
    min_iter = int(cc_config.min_pretrain_iter)
    min_tvd = float(cc_config.min_tvd)
    tvd_step = 10 * int(log_step)
    ckpt_dir = os.path.join(controller_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    writer = summary_writer

    def evaluate(step: int):
        tvd, label_dict, frame = measure_tvd(cc, data, tvd_samples)
        pairwise.crosstab(label_dict, frame, step=step,
                          path=os.path.join(controller_dir, f"{step}_glabel_crosstab.txt"))
        if writer is not None:
            with writer.as_default():
                summary_scalar("misc/tvd", tvd, step + step_offset)
        path = save_controller(cc, pretrainer, ckpt_dir, step)
        return tvd, path

    start = int(cc.step.numpy())
    tvd, path, stopped = float("nan"), None, False
    last_eval = None
    t0 = time.perf_counter()
    bar = tqdm(total=max(total - start, 0), initial=0, disable=not progress,
               desc="pretrain controller", dynamic_ncols=True)
    batches = _iteration_batches(real_labels, pretrainer.n_critic + 1)
    try:
        step = start
        while step < total:
            try:
                real = next(batches)
            except StopIteration:
                raise UserError("The real-label stream ran out before --pretrain_iter "
                                "iterations; give an endless (repeated) dataset.") from None
            out = pretrainer.train_iteration(real)
            step += 1
            bar.update(1)
            if step % log_step == 0:
                losses = {k: float(v) for k, v in out.items() if k != "fake"}
                bar.set_postfix(c_loss=f"{losses['c_loss']:.4f}",
                                dcc_loss=f"{losses['dcc_loss']:.4f}", tvd=f"{tvd:.4f}")
                log.debug("step %d %s", step, losses)
                if writer is not None:
                    with writer.as_default():
                        s = step + step_offset
                        for k, v in losses.items():
                            summary_scalar(f"pretrain/{k}", v, s)
                        _write_label_summaries(names, out["fake"].numpy(),
                                               np.asarray(real)[-1], s)
            if step % tvd_step == 0:
                tvd, path = evaluate(step)
                last_eval = step
                log.info("controller step %d: TVD %.4f", step, tvd)
                bar.set_postfix(c_loss=f"{float(out['c_loss']):.4f}",
                                dcc_loss=f"{float(out['dcc_loss']):.4f}", tvd=f"{tvd:.4f}")
                if step >= min_iter and tvd < min_tvd:
                    stopped = True
                    log.info("TVD %.4f < min_tvd %.4f after %d iterations: pretraining stops",
                             tvd, min_tvd, step)
                    break
    finally:
        bar.close()
    step = int(cc.step.numpy())
    if last_eval != step:
        tvd, path = evaluate(step)
        log.info("controller final step %d: TVD %.4f", step, tvd)
    if writer is not None:
        writer.flush()
    return {"step": step, "tvd": float(tvd), "stopped_early": stopped, "checkpoint": path,
            "seconds": time.perf_counter() - t0}
