"""Adam exactly as TF1's AdamOptimizer (the reference's), for the controller's pretraining
and the synthetic experiments. A step to be skipped on NaN/Inf goes inside
``nonfinite.apply_if``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import tensorflow as tf

log = logging.getLogger(__name__)


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
