"""Pretraining the causal controller as a WGAN-GP against the data's label vectors.

* ``ControllerPretrainer``: the critic(s) and the two Adam optimizers; ``train_iteration``
  runs one reference iteration (n_critic critic updates, then one joint update of
  controller and critic) as ONE compiled call, ``train_iterations`` runs several in one
  call (what the loop uses). An update whose loss or gradients hold NaN or Inf is
  skipped (``nonfinite.py``): the weights and the optimizers' state stay as they were.
* ``pretrain_loop``: the reference's loop with summaries, TVD checks, crosstab reports,
  checkpoints and early stopping; it also stops on a stop request (Ctrl-C, SIGTERM) and
  after ``--max_nonfinite`` skipped updates in a row.

The loop's outputs cost little next to its iterations (benchmarks/bench_pretrain_loop.py):
it runs up to ``CHUNK`` iterations per compiled call (chunks end at every ``log_step``),
takes the TVD from a histogram of the 500,000 samples counted inside TensorFlow, and
writes the crosstab report in a background thread.

The concerns live apart, and their public names are importable from here as before:
``adam.py`` (TF1's Adam), ``checkpoints.py`` (``save_controller`` / ``load_controller``:
the controller's own checkpoints), ``measure.py`` (the TVD checks, the label counter and
the step summaries); this module holds the pretrainer and the loop.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

import nonfinite
from causal_controller.adam import Adam
from causal_controller.checkpoints import (  # noqa: F401 (importable from here too)
    CheckpointWriter,
    checkpoint_step,
    latest_controller_checkpoint,
    load_controller,
    resume_newer_checkpoint,
    save_controller,
)
from causal_controller.measure import (  # noqa: F401 (importable from here too)
    HISTOGRAM_BITS,
    LOSS_KEYS,
    TVD_SAMPLES,
    LabelCounter,
    Shadow,
    StepSummaries,
    TvdChecks,
    expand_counts,
    measure_tvd,
    tvd_of_counts,
)
from causal_controller.models import Critics
from errors import UserError
from utils import remove_leftovers

log = logging.getLogger(__name__)

CHUNK = 100  # most iterations per compiled call of the loop (a divisor of log_step)
# what the bits of an update's non-finite mask stand for
NONFINITE_NAMES = ("c_loss", "dcc_loss", "gradients of c_loss", "gradients of dcc_loss")


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

    def step_summaries(self, writer) -> StepSummaries:
        """The compiled summaries of a log step for ``writer`` (traced once per writer)."""
        if self._summaries is None or self._summaries.writer is not writer:
            object.__setattr__(self, "_summaries", StepSummaries(self.cc.label_names, writer))
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
        # to a minute (benchmarks/bench_pretrain_loop.py saw it at the end of a loop; see
        # docs/SPEED.md); this pipeline only slices label rows anyway.
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


def _weights_finite(pretrainer) -> bool:
    """Whether the controller's and the pretrainer's variables are all finite."""
    return bool(pretrainer.weights_finite())


class _LoopRun:
    """One pretrain_loop call's state: the checkpoints saved, the TVD checks, bar and summaries."""

    def __init__(self, cc, pretrainer, data, cc_config, controller_dir, writer, log_step,
                 step_offset, progress, tvd_samples, max_nonfinite, background):
        self.cc, self.pretrainer, self.writer, self.step_offset = cc, pretrainer, writer, step_offset
        self.total = int(cc_config.pretrain_iter)
        self.min_iter = int(cc_config.min_pretrain_iter)
        self.min_tvd = float(cc_config.min_tvd)
        self.log_step = max(int(log_step), 1)
        self.tvd_step = 10 * self.log_step
        self.ckpt_dir = ckpt_dir = os.path.join(controller_dir, "checkpoints")
        os.makedirs(ckpt_dir, exist_ok=True)
        remove_leftovers(controller_dir)  # what a killed run was writing
        remove_leftovers(ckpt_dir)
        path = resume_newer_checkpoint(cc, pretrainer, ckpt_dir)
        self.saved = {checkpoint_step(path): path} if path else {}
        self.counter = nonfinite.NonFiniteCounter(
            max_nonfinite, NONFINITE_NAMES, what="Controller pretraining",
            advice=f"Checkpoints written before stay as they were (the controller's in {ckpt_dir}).")
        self.checks = TvdChecks(pretrainer, data, controller_dir, tvd_samples, writer, step_offset,
                                background=background)
        self.summaries = pretrainer.step_summaries(writer) if writer is not None else None
        self.tvd, self.last_check = float("nan"), None
        self.bar = tqdm(total=max(self.total - int(cc.step.numpy()), 0), initial=0,
                        disable=not progress, desc="pretrain controller", dynamic_ncols=True)
        self.ckpt_writer = pretrainer.checkpoint_writer()

    def save(self, step: int) -> None:
        """A checkpoint of step, unless the weights hold NaN or Inf."""
        if not _weights_finite(self.pretrainer):
            log.warning("step %d: the weights hold NaN or Inf; no checkpoint is written", step)
            return
        self.saved[step] = save_controller(self.cc, self.pretrainer, self.ckpt_dir, step,
                                           writer=self.ckpt_writer)

    def collect(self) -> int | None:
        """Take the result of the check in flight; its step if pretraining should stop."""
        result = self.checks.result()
        if result is None:
            return None
        self.last_check, self.tvd = result
        log.info("controller step %d: TVD %.4f", self.last_check, self.tvd)
        self.bar.set_postfix(tvd=f"{self.tvd:.4f}", skipped=self.counter.skipped)
        if (self.last_check >= self.min_iter and self.tvd < self.min_tvd
                and self.last_check in self.saved):
            return self.last_check
        return None

    def train(self, block, count: int, step: int) -> int:
        """Run count iterations of block from step; log them on a log step; the new step."""
        out = self.pretrainer.train_iterations(block, count)
        self.counter.update(out["nonfinite"].numpy()[:count], step + 1)
        step += count
        self.bar.update(count)
        if step % self.log_step == 0:
            losses = {k: float(out[k]) for k in LOSS_KEYS}
            self.bar.set_postfix(c_loss=f"{losses['c_loss']:.4f}",
                                 dcc_loss=f"{losses['dcc_loss']:.4f}", tvd=f"{self.tvd:.4f}",
                                 skipped=self.counter.skipped)
            log.debug("step %d %s", step, losses)
            if self.summaries is not None:
                self.summaries(step + self.step_offset, out, self.counter.skipped,
                               block[count - 1][-1])
        return step

    def check(self, step: int) -> int | None:
        """Collect a finished TVD check; on a TVD step save and start the next one."""
        early = self.collect() if self.checks.ready() else None
        if early is None and step % self.tvd_step == 0:
            early = self.collect()  # the previous check, before the shadow is reused
            if early is None:
                self.save(step)
                self.checks.start(step)
        return early

    def finish(self, step: int, early, stopped_by) -> tuple[int, int | None]:
        """The last checkpoint and TVD (or back to the early stop's step); (step, early)."""
        if early is None:
            early = self.collect()
        if early is not None:
            if int(self.cc.step.numpy()) != early:  # trained on meanwhile: back to that step
                load_controller(self.cc, self.saved[early], self.pretrainer)
            step = early
            log.info("TVD %.4f < min_tvd %.4f after %d iterations: pretraining stops",
                     self.tvd, self.min_tvd, step)
        elif stopped_by is not None:
            if step not in self.saved:
                self.save(step)
        elif self.last_check != step:
            self.save(step)
            self.checks.start(step)
            self.collect()
            log.info("controller final step %d: TVD %.4f", step, self.tvd)
        return step, early

    def close(self) -> None:
        """Close the bar and the checks, flush the summaries."""
        self.bar.close()
        self.checks.close()
        if self.writer is not None:
            self.writer.flush()


def _next_chunk(chunks):
    """The next chunk of real labels; a clear error when the stream has run out."""
    try:
        return next(chunks)
    except StopIteration:
        raise UserError("The real-label stream ran out before --pretrain_iter "
                        "iterations; give an endless (repeated) dataset.") from None


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
    data = _data_matrix(data_labels, list(cc.label_names))
    run = _LoopRun(cc, pretrainer, data, cc_config, controller_dir, summary_writer, log_step,
                   step_offset, progress, tvd_samples, max_nonfinite, background)
    t0 = time.perf_counter()
    m = chunk_size(run.log_step)
    chunks = _chunks(real_labels, pretrainer.n_critic + 1, m)
    step = int(cc.step.numpy())
    early, stopped_by = None, None
    try:
        while step < run.total and early is None:
            if stop is not None and stop.signum is not None:
                stopped_by = stop.signum
                break
            block = _next_chunk(chunks)
            count = min(m - step % m, run.total - step, len(block))
            step = run.train(block, count, step)
            early = run.check(step)
        step, early = run.finish(step, early, stopped_by)
    finally:
        run.close()
    saved = run.saved
    path = saved.get(step) or (saved[max(saved)] if saved else None)
    return {"step": step, "tvd": float(run.tvd), "stopped_early": early is not None,
            "checkpoint": path, "seconds": time.perf_counter() - t0,
            "skipped_updates": run.counter.skipped, "stopped_by": stopped_by}
