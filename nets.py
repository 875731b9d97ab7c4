"""Building blocks shared by the image models (CausalBEGAN, CausalGAN).

    to_unit(images) / to_pixels(x)       [0, 255] <-> [-1, 1]
    lrelu(x)                              max(x, 0.2 x)
    glorot_uniform(shape, fan_in, fan_out, rng=None)
    Dense(in_dim, out_dim, stddev=None)   x @ w + b (Glorot-uniform w, or N(0, stddev))
    make_adam(variables, learning_rate, beta1, beta2)   a Keras Adam, slots built
    apply_mean_gradients(optimizer, grads, variables)    the replica-mean update
    apply_mean_gradients_if_finite(updates, losses, names)   ...skipped on NaN/Inf
    draw_controller_labels(controller, rng, batch_size)  the frozen controller's labels
    ControllerInputs                      prepare_labels / draw_z / draw_fake_labels

Everything is a ``tf.Module`` of plain ``tf.Variable`` made at construction, so
checkpoints and optimizers see every variable (and every slot) before the first step.
"""

from __future__ import annotations

import functools
import math

import tensorflow as tf

import nonfinite
from data_loader import row_repeats


def to_unit(images):
    """[0, 255] -> [-1, 1], the scale the networks see."""
    return images / 127.5 - 1.0


def to_pixels(x):
    """[-1, 1] -> [0, 255], clipped."""
    return tf.clip_by_value((x + 1.0) * 127.5, 0.0, 255.0)


def lrelu(x):
    """Leaky ReLU of the reference, max(x, 0.2 x), as one op: the same values, and a
    gradient in one op too (max's took a comparison and two selects; they differ only at
    exactly x = 0, where the slope is 0.2 instead of 1). The CausalGAN demo's weights
    after four iterations were the same, bit for bit, and its iteration faster (one of
    the changes measured in docs/SPEED.md by bench_dcgan --demo)."""
    return tf.nn.leaky_relu(x, 0.2)


def glorot_uniform(shape, fan_in: int, fan_out: int, rng: tf.random.Generator | None = None):
    """Glorot (Xavier) uniform initial values: U[-l, l], l = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    if rng is None:
        return tf.random.uniform(shape, -limit, limit)
    return rng.uniform(shape, -limit, limit)


def normal(shape, stddev: float, rng: tf.random.Generator | None = None, truncated=False):
    """N(0, stddev^2) initial values (truncated at two standard deviations if asked)."""
    if rng is None:
        draw = tf.random.truncated_normal if truncated else tf.random.normal
        return draw(shape, stddev=stddev)
    draw = rng.truncated_normal if truncated else rng.normal
    return draw(shape, stddev=stddev)


class Dense(tf.Module):
    """x @ w + b; w Glorot-uniform (slim's default) or N(0, stddev) (DCGAN's), b zero
    (``bias=False``: no b, for a layer whose output batch norm centres anyway)."""

    def __init__(self, in_dim: int, out_dim: int, stddev: float | None = None,
                 rng: tf.random.Generator | None = None, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        shape = [int(in_dim), int(out_dim)]
        init = (glorot_uniform(shape, in_dim, out_dim, rng) if stddev is None
                else normal(shape, stddev, rng))
        self.w = tf.Variable(init, name="w")
        self.b = tf.Variable(tf.zeros([out_dim]), name="b") if bias else None

    def __call__(self, x):
        y = tf.matmul(x, self.w)
        return y + self.b if self.b is not None else y


ADAM_EPSILON = 1e-8  # TF1's AdamOptimizer default (the reference); Keras's is 1e-7


def make_adam(variables, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
              name: str | None = None):
    """A Keras Adam for ``variables`` with its slots built now (so a checkpoint restores
    them before the first step). Build it inside the strategy's scope."""
    import keras

    optimizer = keras.optimizers.Adam(float(learning_rate), beta_1=float(beta1),
                                      beta_2=float(beta2), epsilon=ADAM_EPSILON, name=name)
    optimizer.build(list(variables))
    return optimizer


def apply_mean_gradients(optimizer, grads, variables) -> None:
    """In a replica context: apply the mean over replicas of ``grads`` (this replica's).

    Keras sums gradients over replicas (one all-reduce) and then updates every device's
    copy in a merge_call, so each replica's share is divided by the replica count here.
    """
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    scale = 1.0 / float(replicas)
    optimizer.apply([g * scale if replicas > 1 else g for g in grads], list(variables))


def gradient_name(loss: str) -> str:
    """The name of the gradients of ``loss`` in a non-finite mask."""
    return f"gradients of {loss}"


def apply_mean_gradients_if_finite(updates, losses, names):
    """In a replica context: one update of one or more Adams, skipped as a whole when a
    loss or a replica-mean gradient holds NaN or Inf (``nonfinite.py``).

    updates: ``(loss name, optimizer, this replica's gradients, variables)`` per optimizer;
        the gradients' bit in the mask is ``gradient_name(loss name)``.
    losses: {name: scalar} already averaged over replicas, so the same on every replica.
    names: the order of the mask's bits (``nonfinite.check``).
    Returns ``(finite, bad)`` as ``nonfinite.check``, the same on every replica.

    The arithmetic is ``apply_mean_gradients``'s: each replica's gradients, divided by
    the replica count, are summed in one all-reduce, and each variable gets Keras Adam's
    ``update_step`` on every device. The check is made on the reduced gradients, so
    every replica takes the same decision. A skipped update touches nothing: one
    ``tf.cond`` (``nonfinite.apply_if``) holds every variable's ``update_step`` (each
    through ``extended.update``, where no ``merge_call`` is needed) and the optimizers'
    iteration counts, so a skipped update leaves every variable, slot and count as it was. (One ``tf.cond`` per variable,
    as before, computed the same numbers with 64 conditionals per CausalGAN iteration.)
    Needs the slots built beforehand (``make_adam``); weight decay, clipping, EMA and
    gradient accumulation are not used.
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync
    scale = 1.0 / float(replicas)
    pairs = [(i, g, v) for i, (_, _, grads, variables) in enumerate(updates)
             for g, v in zip(grads, variables, strict=True) if g is not None]
    flat = [g * scale if replicas > 1 else g for _, g, _ in pairs]
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat) if flat else []
    named = dict(losses)
    for i, (loss, _, _, _) in enumerate(updates):
        named[gradient_name(loss)] = [g for (j, _, _), g in zip(pairs, reduced, strict=True)
                                      if j == i]
    finite, bad = nonfinite.check(named, names)

    def apply(strategy, finite, reduced):
        ext = strategy.extended

        def step():
            for (i, _, var), grad in zip(pairs, reduced, strict=True):
                optimizer = updates[i][1]
                ext.update(var, functools.partial(_update_step, optimizer),
                           args=(grad, optimizer.learning_rate), group=False)
            for _, optimizer, _, _ in updates:
                ext.update(_tf_variable(optimizer.iterations), lambda it: it.assign_add(1),
                           group=False)

        # the same decision on every replica (from the reduced values): the first one's
        nonfinite.apply_if(strategy.experimental_local_results(finite)[0], step)

    ctx.merge_call(apply, args=(finite, reduced))
    return finite, bad


def _update_step(optimizer, var, grad, learning_rate):
    """One device's copy of ``var``: Adam's step."""
    optimizer.update_step(grad, var, learning_rate)


def _tf_variable(variable):
    """The tf.Variable behind a Keras variable (what ``extended.update`` takes)."""
    return variable if isinstance(variable, tf.Variable) else variable.value


def draw_controller_labels(controller, rng: tf.random.Generator, batch_size):
    """Labels [B, n] from the frozen controller, its noise drawn from ``rng``.

    Drawing the controller's noise from the image model's own generator gives one stream
    per replica, and that stream's state is in the model's checkpoints.
    """
    if controller is None:
        raise ValueError("the image model needs a controller to draw labels; pass fake_labels.")
    n_hidden = getattr(controller, "n_hidden", None)
    if isinstance(batch_size, int) and n_hidden is not None:
        noise = rng.uniform([batch_size, len(controller.node_names), int(n_hidden)], -1.0, 1.0)
        labels, _ = controller.sample(noise=noise)
    else:
        labels, _ = controller.sample(batch_size=batch_size)
    return labels


RESAMPLE_POOL = 8  # controller draws per label row kept, when rows are reweighted
PAIR_RESAMPLE_POOL = 32  # the same when pairs of values are (the pairs are rarer)


class ControllerInputs:
    """What both image models feed G besides its weights: the frozen controller's labels,
    prepared, and the image noise z_gen. A mixin for a model with ``config``
    (``round_fake_labels``), ``controller``, ``rng`` (tf.random.Generator) and ``z_dim``."""

    def prepare_labels(self, labels):
        """Controller labels as the model uses them (rounded when round_fake_labels)."""
        labels = tf.stop_gradient(tf.convert_to_tensor(labels, tf.float32))
        return tf.round(labels) if self.config.round_fake_labels else labels

    def draw_z(self, batch_size):
        """Image noise z_gen ~ U[-1, 1]^z_dim from the model's own generator."""
        return self.rng.uniform([batch_size, self.z_dim], -1.0, 1.0)

    # --rare_label_rate: [n_labels, 2] (data_loader.rare_label_weights), or with
    # --rare_pair_rate [n_labels, 2, n_labels, 2] (data_loader.rare_pair_weights)
    label_weights = None

    def draw_fake_labels(self, batch_size, rng=None):
        """Labels from the frozen controller, prepared. With ``label_weights`` set
        (--rare_label_rate), ``RESAMPLE_POOL`` (pairs: ``PAIR_RESAMPLE_POOL``) times as many
        are drawn and ``batch_size`` of them picked with probability proportional to their ``row_repeats``: the
        weighting the real images' epochs get, so D sees the same label mix on both sides.
        ``rng``: another tf.random.Generator than the model's own."""
        rng = self.rng if rng is None else rng
        if self.label_weights is None:
            return self.prepare_labels(
                draw_controller_labels(self.controller, rng, batch_size))
        per_row = PAIR_RESAMPLE_POOL if self.label_weights.shape.rank == 4 else RESAMPLE_POOL
        pool = self.prepare_labels(draw_controller_labels(
            self.controller, rng, per_row * batch_size))
        log_w = tf.math.log(row_repeats(pool, self.label_weights))
        seed = rng.make_seeds(1)[:, 0]
        picks = tf.random.stateless_categorical(log_w[None, :], batch_size, seed)[0]
        return tf.gather(pool, picks)
