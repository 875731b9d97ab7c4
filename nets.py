"""Building blocks shared by the image models (CausalBEGAN, CausalGAN).

    to_unit(images) / to_pixels(x)       [0, 255] <-> [-1, 1]
    lrelu(x)                              max(x, 0.2 x)
    glorot_uniform(shape, fan_in, fan_out, rng=None)
    Dense(in_dim, out_dim, stddev=None)   x @ w + b (Glorot-uniform w, or N(0, stddev))
    Adam(variables, learning_rate, ...)   apply(strategy.extended, grads) in a merge_call

Everything is a ``tf.Module`` of plain ``tf.Variable`` made at construction, so
checkpoints and optimizers see every variable (and every slot) before the first step.
"""

from __future__ import annotations

import math

import tensorflow as tf


def to_unit(images):
    """[0, 255] -> [-1, 1], the scale the networks see."""
    return images / 127.5 - 1.0


def to_pixels(x):
    """[-1, 1] -> [0, 255], clipped."""
    return tf.clip_by_value((x + 1.0) * 127.5, 0.0, 255.0)


def lrelu(x):
    """Leaky ReLU of the reference, max(x, 0.2 x)."""
    return tf.maximum(x, 0.2 * x)


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
    """x @ w + b; w Glorot-uniform (slim's default) or N(0, stddev) (DCGAN's), b zero."""

    def __init__(self, in_dim: int, out_dim: int, stddev: float | None = None,
                 rng: tf.random.Generator | None = None, name: str | None = None):
        super().__init__(name=name)
        shape = [int(in_dim), int(out_dim)]
        init = (glorot_uniform(shape, in_dim, out_dim, rng) if stddev is None
                else normal(shape, stddev, rng))
        self.w = tf.Variable(init, name="w")
        self.b = tf.Variable(tf.zeros([out_dim]), name="b")

    def __call__(self, x):
        return tf.matmul(x, self.w) + self.b


class Adam(tf.Module):
    """Adam (Kingma & Ba; the TF1 formula) whose slots exist from construction.

    ``apply`` runs in a cross-replica context (inside ``merge_call``) and updates each
    device's copy with that device's (already averaged) gradient.
    """

    def __init__(self, variables, learning_rate: float, beta1: float = 0.9,
                 beta2: float = 0.999, epsilon: float = 1e-8, name: str | None = None):
        super().__init__(name=name)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False,
                                         name="learning_rate")
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)
        self._vars = list(variables)
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in self._vars]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in self._vars]

    def apply(self, extended, grads):
        t = tf.cast(self.iterations + 1, tf.float32)
        lr = (self.learning_rate * tf.sqrt(1.0 - tf.pow(self.beta2, t))
              / (1.0 - tf.pow(self.beta1, t)))
        b1, b2, eps = self.beta1, self.beta2, self.epsilon

        def one(var, g, m, v, lr):
            m_new = m.assign(b1 * m + (1.0 - b1) * g)
            v_new = v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            return var.assign_sub(lr * m_new / (tf.sqrt(v_new) + eps))

        updates = [extended.update(var, one, args=(g, m, v, lr), group=False)
                   for var, g, m, v in zip(self._vars, grads, self.m, self.v, strict=True)]
        with tf.control_dependencies(tf.nest.flatten(updates)):
            return extended.update(self.iterations, lambda it: it.assign_add(1), group=False)


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
