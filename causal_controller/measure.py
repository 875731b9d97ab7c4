"""What the controller's pretraining measures while it trains: its TVD against the data
(``measure_tvd``; ``LabelCounter`` counts the rounded label vectors of 500,000 samples
inside TensorFlow, ``Shadow`` a copy of the weights so that ``TvdChecks`` measure in a
background thread and write the crosstab reports) and the step summaries
(``StepSummaries``, one compiled call of tf.summary ops)."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

import label_stats
from utils import write_text

log = logging.getLogger(__name__)

TVD_SAMPLES = 500_000  # controller samples per TVD measurement, as in the reference
HISTOGRAM_BITS = 16  # graphs of up to this many nodes: TVD and crosstab from a histogram
COUNT_BATCH = 100_000  # samples per call when counting label vectors (fastest measured)


class LabelCounter:
    """``counter(n, seed)``: int64 [2 ** n_nodes], entry c counting the controller samples
    whose labels rounded at 0.5 read c in binary (bit i = node i, as ``label_stats.encode``
    numbers them). For graphs of up to HISTOGRAM_BITS nodes; deterministic given the seed.

    Made cheap because a TVD check's CPU time comes out of the training step's (which
    keeps every core busy): the noise U[-1, 1] is drawn by numpy's PCG64 (cheaper than
    TensorFlow's Philox) and handed to TensorFlow without a copy; the controller runs on
    transposed activations ([features, samples]: the same weights, the same function as
    ``cc.forward``, checked by a test) compiled by XLA, cheaper than without XLA or in
    the controller's own layout. The samples themselves never reach numpy. The CPU times
    of a check are in docs/SPEED.md ("The whole pretraining loop against its bare step").
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
            # handed over without a copy (DLPack): converting the noise would cost CPU
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


class TvdChecks:
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


class StepSummaries:
    """The summaries of a log step, tf.summary ops traced into one compiled call instead
    of 54 eager writes per step for big_causal_graph on the loop's own thread (a log
    step's cost: docs/SPEED.md, "The whole pretraining loop against its bare step"):
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
