"""Updates whose losses or gradients hold NaN or Inf are skipped; too many in a row stop the run.

A NaN or Inf never reaches the weights or the optimizer state: inside the compiled train
step, ``check`` says whether every named loss and gradient is finite and ``apply_if``
runs the optimizer step only then. The step returns the ``check`` mask; on the host a
``NonFiniteCounter`` counts the skipped updates (for the progress bar and a TensorBoard
scalar) and raises ``NonFiniteError`` (a ``UserError``: main.py prints it, exit code 2)
after ``--max_nonfinite`` skipped updates in a row, naming the losses and the step. The
caller must not write a checkpoint after that, so the last good one is kept.

Inside a ``tf.function`` (XLA or not)::

    NAMES = ("d_loss", "g_loss", "gradients of d_loss", "gradients of g_loss")
    finite, bad = nonfinite.check({"d_loss": d_loss, "g_loss": g_loss,
                                   "gradients of d_loss": d_grads,
                                   "gradients of g_loss": g_grads}, NAMES)
    nonfinite.apply_if(finite, lambda: optimizer.apply_gradients(zip(d_grads, d_vars)))
    return {..., "nonfinite": bad}      # int32: bit i set when NAMES[i] held NaN/Inf

On the host, after each step::

    counter = nonfinite.NonFiniteCounter(config.max_nonfinite, NAMES, what="CausalBEGAN")
    counter.update(metrics["nonfinite"], step)   # raises NonFiniteError at the limit
    counter.skipped                               # total skipped updates so far

Under a ``tf.distribute`` strategy, check the gradients after they are reduced across
replicas (every replica then takes the same decision), and build the optimizer's slots
before tracing (Keras optimizers create them on first use, which ``tf.cond`` forbids).

Who uses it: every training loop skips through ``apply_if``: controller pretraining
(``causal_controller/pretrain.py``: one ``apply_if`` per critic update and one around the
joint update of controller and critic) and both image models through
``nets.apply_mean_gradients_if_finite`` (the check on the replica-mean gradients, one
``apply_if`` around every variable's update in the cross-replica context). The one
exception is ``synthetic.models.RunsAdam``: R runs trained side by side share each
variable (leading axis R) and each run decides alone (``check_runs``), which a branch
over the whole update cannot express, so it selects per run with ``tf.where``. Each
trainer counts with a ``NonFiniteCounter``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from config import MAX_NONFINITE
from errors import UserError

DEFAULT_LIMIT = MAX_NONFINITE  # skipped updates in a row that stop a run (--max_nonfinite)


class NonFiniteError(UserError):
    """Too many updates in a row were skipped because of NaN or Inf values."""


def _tensors(value) -> list[tf.Tensor]:
    """The float tensors of a tensor, an IndexedSlices or a nested list of them (None ignored)."""
    out = []
    for item in tf.nest.flatten(value, expand_composites=False):
        if item is None:
            continue
        if isinstance(item, tf.IndexedSlices):
            item = item.values
        item = tf.convert_to_tensor(item)
        if item.dtype.is_floating:
            out.append(item)
    return out


def all_finite(value) -> tf.Tensor:
    """Scalar bool tensor: every element of every float tensor in ``value`` is finite.

    The tensors are flattened into one vector and tested at once: for the controller's
    ~130 small gradients that cut XLA's compile time against one test per tensor.
    """
    tensors = [tf.reshape(tf.cast(t, tf.float32), [-1]) for t in _tensors(value)]
    if not tensors:
        return tf.constant(True)
    flat = tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis=0)
    return tf.reduce_all(tf.math.is_finite(flat))


def _mask_names(named: Mapping[str, object], names: Sequence[str] | None) -> list[str]:
    """The names that give the mask's bits (default: ``named``'s order), checked."""
    names = list(named) if names is None else list(names)
    if len(names) > 31:
        raise ValueError(f"at most 31 named values fit in the mask; got {len(names)}")
    unknown = [key for key in named if key not in names]
    if unknown:
        raise ValueError(f"{unknown} are not among the names {names}")
    return names


def check(named: Mapping[str, object], names: Sequence[str] | None = None):
    """(finite, bad) for named losses and gradients, inside or outside a tf.function.

    named: name -> a tensor, or a (nested) list of tensors such as gradients.
    names: the fixed order that gives each name its bit (default: the order of
        ``named``); names absent from ``named`` count as finite, so several kinds of
        update can share one list of names. At most 31 names.
    Returns a scalar bool tensor (everything finite) and an int32 mask, bit i set when
    ``names[i]`` holds a NaN or Inf.
    """
    names = _mask_names(named, names)
    bad = tf.constant(0, tf.int32)
    for bit, name in enumerate(names):
        if name in named:
            not_finite = tf.logical_not(all_finite(named[name]))
            bad += tf.cast(not_finite, tf.int32) * (1 << bit)
    return tf.equal(bad, 0), bad


def check_runs(named: Mapping[str, object], names: Sequence[str] | None = None):
    """``check`` for tensors whose leading axis holds R independent runs trained side by
    side (losses [R], gradients [R, ...]): (finite [R] bool, bad [R] int32), one per run."""
    names = _mask_names(named, names)
    bad = None
    for bit, name in enumerate(names):
        if name not in named:
            continue
        rows = [tf.reshape(tf.cast(t, tf.float32), [tf.shape(t)[0], -1])
                for t in _tensors(named[name])]
        flat = rows[0] if len(rows) == 1 else tf.concat(rows, axis=1)
        not_finite = tf.logical_not(tf.reduce_all(tf.math.is_finite(flat), axis=1))
        term = tf.cast(not_finite, tf.int32) * (1 << bit)
        bad = term if bad is None else bad + term
    if bad is None:
        raise ValueError("check_runs needs at least one named value (for the run count)")
    return tf.equal(bad, 0), bad


def apply_if(finite, apply_fn) -> tf.Tensor:
    """Run ``apply_fn()`` (an optimizer step) only when ``finite``; returns ``finite``.

    In a tf.function this is a ``tf.cond``: the skipped branch touches no variable, so
    neither the weights nor the optimizer's moments or iteration count change.
    """

    def apply():
        apply_fn()
        return tf.constant(True)

    return tf.cond(finite, apply, lambda: tf.constant(False))


def describe(mask: int, names: Sequence[str]) -> list[str]:
    """The names whose bits are set in ``mask``."""
    return [name for bit, name in enumerate(names) if int(mask) >> bit & 1]


class NonFiniteCounter:
    """Host-side count of skipped updates; ``NonFiniteError`` after ``limit`` in a row.

    ``update(bad, first_step)`` takes the masks returned by ``check`` for consecutive
    updates, in order: a scalar (one update at ``first_step``), a vector (one update per
    step from ``first_step`` on), or a [steps, updates per step] array (several updates
    per step, e.g. the controller's critic updates and its joint update). It returns the
    number of skipped updates among them.
    """

    def __init__(self, limit: int, names: Sequence[str], what: str = "training",
                 advice: str = ""):
        if int(limit) < 1:
            raise UserError(f"--max_nonfinite must be at least 1; got {limit}.")
        self.limit = int(limit)       # skipped updates in a row that stop the run
        self.names = tuple(names)     # what each bit of a mask stands for
        self.what = what              # e.g. "controller pretraining", for the message
        self.advice = advice          # appended to the message (where to resume from)
        self.skipped = 0              # skipped updates in all
        self.streak = 0               # skipped updates in a row, up to the last one seen
        self.streak_start = None      # step of the first update of the current streak

    def update(self, bad, first_step: int) -> int:
        masks = np.asarray(bad)
        steps = masks.reshape(1, -1) if masks.ndim == 0 else masks.reshape(len(masks), -1)
        flat = steps.reshape(-1)
        skipped = flat != 0
        count = int(skipped.sum())
        if count == 0:
            self.streak, self.streak_start = 0, None
            return 0
        per_step = steps.shape[1]
        position = np.arange(len(flat))
        last_good = np.maximum.accumulate(np.where(skipped, -1, position))
        run = np.where(last_good >= 0, position - last_good, position + 1 + self.streak)
        run = np.where(skipped, run, 0)
        start = self.streak_start
        if not skipped[0] or self.streak == 0:
            start = None
        hits = np.flatnonzero(run >= self.limit)
        if hits.size:
            where = int(hits[0])
            step = int(first_step) + where // per_step
            begin = where - int(run[where]) + 1
            first = start if begin < 0 else int(first_step) + begin // per_step
            self.skipped += int(skipped[: where + 1].sum())
            self.streak = int(run[where])
            raise NonFiniteError(self._message(int(flat[where]), step, first))
        self.skipped += count
        self.streak = int(run[-1])
        if self.streak == 0:
            self.streak_start = None
        else:
            begin = len(flat) - self.streak
            self.streak_start = start if begin < 0 else int(first_step) + begin // per_step
        return count

    def _message(self, mask: int, step: int, first: int | None) -> str:
        culprits = describe(mask, self.names) or ["a loss or gradient"]
        since = f" (since step {first})" if first is not None and first != step else ""
        text = (f"{self.what} stopped at step {step}: {self.limit} updates in a row were "
                f"skipped{since} because {' and '.join(culprits)} held NaN or Inf. The weights "
                "and optimizer state are those of the last good update, and no checkpoint "
                "was written after it. Lower the learning rates, check the data, or raise "
                "--max_nonfinite.")
        return f"{text} {self.advice}".strip()
