"""A plain conditional DCGAN with an auxiliary label head (ACGAN-style): the baseline that
benchmarks/bench_dcgan.py times CausalGAN against, in the same run.

    G: concat(z, labels) -> image [-1, 1]      CausalGAN's generator (causal_dcgan/models.py)
    D: image -> (real/fake logit, label logits)  CausalGAN's discriminator without
                                                 minibatch features, with its label head

One training step is one D update (real images with their labels, G's images with the
labels they were drawn for: sxe(D(x), 1) + sxe(D(G), 0) + the label head's sxe on both)
and then one G update (fresh z: sxe(D(G), 1) + the label head's sxe on G's images), each
with its own Adam, in one compiled function. Same widths, batch and layers as CausalGAN
at that size, so the two differ by what CausalGAN's iteration does on top of a GAN step:
the labeler, the anti-labeler, the z-estimator, the projection term, the non-finite
check, k_t and the EMA of G.
"""

from __future__ import annotations

import tensorflow as tf

from causal_dcgan.models import Discriminator, Generator
from nets import make_adam, to_unit


def _sxe(logits, targets):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


class PlainCDCGAN(tf.Module):
    """G and D of side ``size`` (gf_dim = size as in CausalGAN), ``n_labels`` labels."""

    def __init__(self, n_labels: int, size: int = 32, gf_dim: int = 32, df_dim: int = 32,
                 z_dim: int = 100, batch_size: int = 64, learning_rate: float = 2e-4,
                 beta1: float = 0.5, channels: int = 3, seed: int = 0,
                 upsample: str = "deconv"):
        super().__init__(name="plain_cdcgan")
        init = tf.random.Generator.from_seed(seed)
        self.z_dim, self.n_labels = int(z_dim), int(n_labels)
        self.G = Generator(self.z_dim + self.n_labels, gf_dim, size, channels, batch_size, init,
                           upsample)
        self.D = Discriminator(df_dim, size, channels, batch_size, rng=init, minibatch=False,
                               n_labels=self.n_labels)
        adam = dict(learning_rate=learning_rate, beta1=beta1, beta2=0.999)
        self.g_optimizer = make_adam(self.G.trainable_variables, name="g_opt", **adam)
        self.d_optimizer = make_adam(self.D.trainable_variables, name="d_opt", **adam)
        self.rng = tf.random.Generator.from_seed(seed + 1)
        self.train_step = tf.function(self._train_step)

    def generate(self, labels, z):
        """G's images in [-1, 1] for labels [B, n] in {0, 1} and z [B, z_dim]."""
        return self.G(tf.concat([z, 2.0 * labels - 1.0], axis=1))

    def d_losses_and_grads(self, x, labels):
        """D's loss and gradients on real images x in [-1, 1] with their labels and on G's
        images drawn for the same labels."""
        with tf.GradientTape() as tape:
            fake = self.generate(labels, self.rng.uniform([tf.shape(x)[0], self.z_dim], -1.0, 1.0))
            real_logit, _, real_labels = self.D(x)
            fake_logit, _, fake_labels = self.D(fake)
            loss = (_sxe(real_logit, tf.ones_like(real_logit))
                    + _sxe(fake_logit, tf.zeros_like(fake_logit))
                    + _sxe(real_labels, labels) + _sxe(fake_labels, labels))
        return loss, tape.gradient(loss, self.D.trainable_variables)

    def g_losses_and_grads(self, labels):
        """G's loss and gradients on fresh z for ``labels``."""
        with tf.GradientTape() as tape:
            fake = self.generate(labels, self.rng.uniform([tf.shape(labels)[0], self.z_dim],
                                                          -1.0, 1.0))
            fake_logit, _, fake_labels = self.D(fake)
            loss = _sxe(fake_logit, tf.ones_like(fake_logit)) + _sxe(fake_labels, labels)
        return loss, tape.gradient(loss, self.G.trainable_variables)

    def _train_step(self, images, labels):
        """One D update then one G update on (images in [0, 255], their labels); G draws
        for the same labels. Returns (d_loss, g_loss)."""
        d_loss, grads = self.d_losses_and_grads(to_unit(images), labels)
        self.d_optimizer.apply(grads, self.D.trainable_variables)
        g_loss, grads = self.g_losses_and_grads(labels)
        self.g_optimizer.apply(grads, self.G.trainable_variables)
        return d_loss, g_loss
