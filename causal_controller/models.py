"""The controller's critic (DiscriminatorW), the gradient penalty and the WGAN-GP losses.

The critic looks at label vectors (real ones from the data, fake ones from the
controller) and is trained as a Wasserstein critic with the gradient penalty of
"Improved Training of Wasserstein GANs"; the controller is trained to raise the critic's
score of its samples. Everything here is small and pure so it can be tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from causal_controller.CausalController import dense_stack
from nets import glorot_uniform


class DiscriminatorW(tf.Module):
    """critic_layers dense layers: (critic_layers - 1) x [width critic_hidden_size, lrelu],
    then a linear layer to one score. No batch norm. Glorot-uniform weights, zero biases."""

    def __init__(self, n_in: int, n_hidden: int, n_layers: int, rng: tf.random.Generator,
                 name: str = "DiscriminatorW"):
        super().__init__(name=name)
        widths = [n_in] + [n_hidden] * (n_layers - 1) + [1]
        self.weights = [
            tf.Variable(glorot_uniform([a, b], a, b, rng), name=f"w{i}")
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        ]
        self.biases = [tf.Variable(tf.zeros([b]), name=f"b{i}") for i, b in enumerate(widths[1:])]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """[B, n_in] label vectors -> [B, 1] critic scores (the reference's logits)."""
        return dense_stack(x, self.weights, self.biases)


def interpolate(real: tf.Tensor, fake: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """x_hat = alpha * real + (1 - alpha) * fake, alpha [B, 1] ~ U[0, 1] per row."""
    return alpha * real + (1.0 - alpha) * fake


def gradient_penalty(critic, real: tf.Tensor, fake: tf.Tensor, alpha: tf.Tensor,
                     lambda_W: float) -> tf.Tensor:
    """lambda_W * mean((||d critic(x_hat) / d x_hat||_2 - 1)^2) over the rows."""
    x_hat = interpolate(real, fake, alpha)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        score = critic(x_hat)
    grad = tape.gradient(score, x_hat)
    return penalty_from_gradients(grad, lambda_W)


def penalty_from_gradients(grad: tf.Tensor, lambda_W: float) -> tf.Tensor:
    """lambda_W * mean((||grad row||_2 - 1)^2); grad is [B, n]."""
    slopes = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=1) + 1e-12)
    return lambda_W * tf.reduce_mean(tf.square(slopes - 1.0))


def critic_loss(real_score: tf.Tensor, fake_score: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """The critic minimises mean(critic(fake) - critic(real)) + gradient penalty."""
    return tf.reduce_mean(fake_score - real_score) + penalty


def controller_loss(fake_score: tf.Tensor) -> tf.Tensor:
    """The controller minimises -mean(critic(fake))."""
    return -tf.reduce_mean(fake_score)


class Critics(tf.Module):
    """The critic(s) of pretraining and their combined losses.

    Not factorized: one DiscriminatorW over all labels in node order. Factorized
    (pt_factorized): one DiscriminatorW per node over (its parents' labels, its label);
    losses and penalties are sums over nodes.
    """

    def __init__(self, graph: Sequence[tuple[str, Sequence[str]]], n_hidden: int, n_layers: int,
                 factorized: bool, rng: tf.random.Generator):
        super().__init__(name="critics")
        names = [node for node, _ in graph]
        index = {n: i for i, n in enumerate(names)}
        self.factorized = bool(factorized)
        if self.factorized:
            # columns each critic sees: parents first, then the node itself
            self.columns = [[index[p] for p in parents] + [index[node]] for node, parents in graph]
            self.critics = [DiscriminatorW(len(cols), n_hidden, n_layers, rng, name=f"dcc_{node}")
                            for cols, (node, _) in zip(self.columns, graph, strict=True)]
        else:
            self.columns = [list(range(len(names)))]
            self.critics = [DiscriminatorW(len(names), n_hidden, n_layers, rng)]

    def losses(self, real: tf.Tensor, fake: tf.Tensor, alpha: tf.Tensor, lambda_W: float,
               stop_parent_gradients: bool = False):
        """(critic loss, controller loss, gradient penalty, wasserstein estimate) summed over
        critics. One pass per critic over [real; fake; x_hat] stacked into one batch.

        stop_parent_gradients (factorized): a node's critic passes gradients to that node's
        label only, so each node learns from its own critic as in the reference.
        """
        batch = tf.shape(real)[0]
        frozen = tf.stop_gradient(fake) if stop_parent_gradients else fake
        d_total = c_total = gp_total = w_total = 0.0
        for cols, critic in zip(self.columns, self.critics, strict=True):
            if self.factorized:
                own = cols[-1]
                r = tf.gather(real, tf.constant(list(cols), tf.int32), axis=1)
                f = fake[:, own:own + 1]
                if len(cols) > 1:
                    parents = tf.gather(frozen, tf.constant(list(cols[:-1]), tf.int32), axis=1)
                    f = tf.concat([parents, f], axis=1)
            else:
                r, f = real, fake
            x = interpolate(r, f, alpha)
            with tf.GradientTape() as tape:
                tape.watch(x)
                scores = critic(tf.concat([r, f, x], axis=0))
                hat_score = scores[2 * batch:]
            grad = tape.gradient(hat_score, x)
            gp = penalty_from_gradients(grad, lambda_W)
            real_score, fake_score = scores[:batch], scores[batch:2 * batch]
            d_total += critic_loss(real_score, fake_score, gp)
            c_total += controller_loss(fake_score)
            gp_total += gp
            w_total += tf.reduce_mean(real_score - fake_score)
        return d_total, c_total, gp_total, w_total
