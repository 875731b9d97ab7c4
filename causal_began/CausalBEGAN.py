"""CausalBEGAN (ORIGINAL.md 5.2): a BEGAN conditioned on causal-controller labels.

``CausalBEGAN`` owns the generator, the autoencoder discriminator, the labeler, the three
margins k_t, l_t, z_t, the step counter, two Keras Adam optimizers (slots made at
construction so a checkpoint restores them) and their learning rates. The maths lives in
the small pure functions at the top of this file; ``train_step`` strings them together for
one replica's batch and applies one G and one D update.

Distribution: ``train_step`` runs in a replica context (plain code under the default
strategy, or inside ``strategy.run``). Losses are averaged over replicas with one
all-reduce, so every replica holds identical values; each Adam applies the replica-mean
of its gradients to every device's copy (``nets.apply_mean_gradients_if_finite``), and
one ``merge_call`` applies the margin updates, the step increment and the learning-rate
halving. With equal per-replica batches this is the same update as one device on the
concatenated batch.

Non-finite values: when d_loss, g_loss or their replica-mean gradients hold NaN or Inf,
the step's update is skipped as a whole: the weights, both Adams' slots and iteration
counts and the margins k_t, l_t, z_t stay as they were. The step counter still grows
(as in controller pretraining), and with it the learning-rate schedule. The step
returns ``nonfinite``, the mask of ``NONFINITE_NAMES`` that held NaN/Inf (0: applied).
"""

from __future__ import annotations

import functools
import math

import tensorflow as tf

from causal_began.models import Discriminator, Generator, Labeler, default_data_format
from errors import UserError
from nets import (
    ControllerInputs,
    apply_mean_gradients_if_finite,
    gradient_name,
    make_adam,
    to_pixels,
    to_unit,
)

LABEL_LOSSES = ("squarediff", "absdiff", "xe")
# what the bits of a step's non-finite mask stand for (nonfinite.py)
NONFINITE_NAMES = ("d_loss", "g_loss", gradient_name("d_loss"), gradient_name("g_loss"))
_LOGIT_EPS = 1e-4  # rounded fake labels are clipped to [eps, 1-eps] before taking logit


# ----------------------------------------------------------------------------- losses
def l1_loss(reconstruction, target):
    """BEGAN's image loss: mean absolute difference."""
    return tf.reduce_mean(tf.abs(reconstruction - target))


def label_losses(kind: str, real_logits, real_labels, fake_logits, fake_labels):
    """(d_loss_real_label, d_loss_fake_label, g_loss_label) for label_loss ``kind``.

    squarediff / absdiff compare sigmoid(labeler logits) with the labels; xe is sigmoid
    cross-entropy, and for G the labeler's probabilities are the targets of the fake
    labels' logits, sxe(logit(fake), sigmoid(labeler(G))).
    """
    real_p = tf.sigmoid(real_logits)
    fake_p = tf.sigmoid(fake_logits)
    if kind == "squarediff":
        return (tf.reduce_mean(tf.square(real_p - real_labels)),
                tf.reduce_mean(tf.square(fake_p - fake_labels)),
                tf.reduce_mean(tf.square(fake_labels - fake_p)))
    if kind == "absdiff":
        return (tf.reduce_mean(tf.abs(real_p - real_labels)),
                tf.reduce_mean(tf.abs(fake_p - fake_labels)),
                tf.reduce_mean(tf.abs(fake_labels - fake_p)))
    if kind == "xe":
        sxe = tf.nn.sigmoid_cross_entropy_with_logits
        clipped = tf.clip_by_value(fake_labels, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
        fake_label_logits = tf.math.log(clipped) - tf.math.log1p(-clipped)
        return (tf.reduce_mean(sxe(labels=real_labels, logits=real_logits)),
                tf.reduce_mean(sxe(labels=fake_labels, logits=fake_logits)),
                tf.reduce_mean(sxe(labels=fake_p, logits=fake_label_logits)))
    raise UserError(f"--label_loss {kind!r} is unknown: use one of {', '.join(LABEL_LOSSES)}.")


def d_loss_fn(d_loss_real, d_loss_fake, d_loss_real_label, d_loss_fake_label, k_t, l_t):
    """Discriminator + labeler objective."""
    return (d_loss_real - k_t * d_loss_fake) + (d_loss_real_label - l_t * d_loss_fake_label)


def g_loss_fn(g_loss_image, g_loss_label, z_t, no_third_margin: bool = False):
    """Generator objective; without the third margin the label term has weight 1."""
    return g_loss_image + (1.0 if no_third_margin else z_t) * g_loss_label


def balances(d_loss_real, g_loss_image, d_loss_real_label, d_loss_fake_label,
             gamma, gamma_label, zeta):
    """(balance_k, balance_l, balance_z) that drive the three margins."""
    balance_k = gamma * d_loss_real - g_loss_image
    balance_l = gamma_label * d_loss_real_label - d_loss_fake_label
    balance_z = zeta * tf.nn.relu(balance_k) - tf.nn.relu(balance_l)
    return balance_k, balance_l, balance_z


def update_margin(value, lam, balance):
    """value + lam * balance, clipped to [0, 1]."""
    return tf.clip_by_value(value + lam * balance, 0.0, 1.0)


def measures(d_loss_real, d_loss_real_label, balance_k, balance_l, balance_z):
    """(measure, measure_complete): the BEGAN convergence measure and its label version."""
    measure = d_loss_real + tf.abs(balance_k)
    complete = (d_loss_real + d_loss_real_label + tf.abs(balance_k) + tf.abs(balance_l)
                + tf.abs(balance_z))
    return measure, complete


# ----------------------------------------------------------------------------- model
class CausalBEGAN(ControllerInputs, tf.Module):
    """The image model. Build it inside ``strategy.scope()`` when distributing.

    Args:
      config: the began flags (ORIGINAL 2.3 names).
      label_names: the graph's labels, in the controller's order.
      image_size: side of the square images (power of two >= 8).
      channels: image channels (3, or 1 for grayscale).
      controller: the causal controller; its labels feed G during training (frozen).
      data_format: 'channels_first' / 'channels_last'; None = NCHW on GPU, NHWC on CPU.
      jit_compile: compile the forward/backward pass with XLA.
    """

    def __init__(self, config, label_names, image_size: int, channels: int = 3,
                 controller=None, data_format: str | None = None, jit_compile: bool = False,
                 seed: int | None = None):
        super().__init__(name="CausalBEGAN")
        if config.label_loss not in LABEL_LOSSES:
            raise UserError(f"--label_loss {config.label_loss!r} is unknown: use one of "
                            f"{', '.join(LABEL_LOSSES)}.")
        self.config = config
        self.label_names = list(label_names)
        self.n_labels = len(self.label_names)
        if not config.separate_labeler and config.z_num < self.n_labels:
            raise UserError(f"--separate_labeler False reads the {self.n_labels} label logits "
                            f"from the code, but --z_num is {config.z_num}: raise --z_num.")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.z_dim = int(config.z_dim)
        self.controller = controller
        self.data_format = data_format or default_data_format()
        n = int(config.conv_hidden_num)
        self.G = Generator(self.n_labels + self.z_dim, n, self.image_size, self.channels,
                           self.data_format)
        self.D = Discriminator(n, self.image_size, self.channels, int(config.z_num),
                               self.data_format)
        self.labeler = (Labeler(n, self.image_size, self.channels, self.n_labels,
                                self.data_format) if config.separate_labeler else None)
        margin = dict(trainable=False, dtype=tf.float32)
        self.k_t = tf.Variable(0.0, name="k_t", **margin)
        self.l_t = tf.Variable(0.0, name="l_t", **margin)
        self.z_t = tf.Variable(0.0, name="z_t", **margin)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.g_optimizer = make_adam(self.g_vars, config.g_lr, config.beta1, config.beta2,
                                     name="g_opt")
        self.d_optimizer = make_adam(self.d_vars, config.d_lr, config.beta1, config.beta2,
                                     name="d_opt")
        self.rng = (tf.random.Generator.from_seed(seed) if seed is not None
                    else tf.random.Generator.from_non_deterministic_state())
        self._compute = tf.function(self._losses_and_grads, jit_compile=bool(jit_compile))

    # -- variables
    @property
    def g_vars(self):
        return list(self.G.trainable_variables)

    @property
    def d_vars(self):
        labeler = list(self.labeler.trainable_variables) if self.labeler is not None else []
        return list(self.D.trainable_variables) + labeler

    @property
    def g_lr(self):
        return self.g_optimizer.learning_rate.value

    @property
    def d_lr(self):
        return self.d_optimizer.learning_rate.value

    # -- building blocks
    def label_logits(self, images_unit, code):
        if self.labeler is not None:
            return self.labeler(images_unit)
        return code[:, : self.n_labels]

    def generate(self, labels, z_gen=None, round_labels: bool | None = None):
        """Images in [0, 255] (NHWC) for controller labels [B, n] and noise z_gen [B, z_dim]."""
        labels = tf.convert_to_tensor(labels, tf.float32)
        if round_labels is None:
            labels = self.prepare_labels(labels)
        elif round_labels:
            labels = tf.round(labels)
        if z_gen is None:
            z_gen = self.draw_z(tf.shape(labels)[0])
        return to_pixels(self.G(tf.concat([labels, tf.cast(z_gen, tf.float32)], 1)))

    def reconstruct(self, images):
        """AE(x) in [0, 255] for images in [0, 255]."""
        return to_pixels(self.D(to_unit(images))[0])

    def diagnostics(self, images, real_labels, controller_labels, z_gen):
        """Images and label histograms for summaries: G, AE(G), AE(x), labeler outputs."""
        x = to_unit(images)
        fake_labels = self.prepare_labels(controller_labels)
        g = self.G(tf.concat([fake_labels, z_gen], 1))
        recon, code = self.D(tf.concat([x, g], 0))
        logits = self.label_logits(tf.concat([x, g], 0), code)
        batch = tf.shape(x)[0]
        return {"images": {"G": to_pixels(g), "AE_G": to_pixels(recon[batch:]),
                           "AE_x": to_pixels(recon[:batch])},
                "histograms": {"real_prob": tf.sigmoid(logits[:batch]),
                               "fake_prob": tf.sigmoid(logits[batch:]),
                               "fake_labels": fake_labels, "real_labels": real_labels}}

    # -- what the Trainer shows and summarises
    progress_keys = {"d": "d_loss", "g": "g_loss", "k_t": "k_t", "M": "measure"}
    nonfinite_names = NONFINITE_NAMES

    @staticmethod
    def summary_group(key: str) -> str:
        """The TensorBoard group of a metric."""
        return ("margins" if key in ("k_t", "l_t", "z_t") else
                "balance" if key.startswith("balance") else
                "learning_rate" if key.endswith("_lr") else
                "measure" if key.startswith("measure") else "loss")

    # -- training
    def _losses_and_grads(self, images, real_labels, fake_labels, z_gen, k_t, l_t, z_t):
        cfg = self.config
        x = to_unit(images)
        batch = tf.shape(x)[0]
        with tf.GradientTape(persistent=True) as tape:
            g = self.G(tf.concat([fake_labels, z_gen], 1))
            both = tf.concat([x, g], 0)
            recon, code = self.D(both)
            d_loss_real = l1_loss(recon[:batch], x)
            d_loss_fake = l1_loss(recon[batch:], g)
            g_loss_image = d_loss_fake
            logits = self.label_logits(both, code)
            real_logits, fake_logits = logits[:batch], logits[batch:]
            d_real_label, d_fake_label, g_label = label_losses(
                cfg.label_loss, real_logits, real_labels, fake_logits, fake_labels)
            d_loss = d_loss_fn(d_loss_real, d_loss_fake, d_real_label, d_fake_label, k_t, l_t)
            g_loss = g_loss_fn(g_loss_image, g_label, z_t, cfg.no_third_margin)
        g_grads = tape.gradient(g_loss, self.g_vars)
        d_grads = tape.gradient(d_loss, self.d_vars)
        del tape

        def accuracy(logits, labels):
            hit = tf.cast(tf.equal(logits > 0.0, labels > 0.5), tf.float32)
            return tf.reduce_mean(hit, axis=0)

        metrics = {"d_loss": d_loss, "g_loss": g_loss, "d_loss_real": d_loss_real,
                   "d_loss_fake": d_loss_fake, "g_loss_image": g_loss_image,
                   "d_loss_real_label": d_real_label, "d_loss_fake_label": d_fake_label,
                   "g_loss_label": g_label,
                   "accuracy_real": accuracy(real_logits, real_labels),
                   "accuracy_fake": accuracy(fake_logits, fake_labels)}
        return metrics, g_grads, d_grads

    def train_step(self, images, real_labels, fake_labels=None, z_gen=None):
        """One G and one D update from one replica's batch; returns the replica-averaged
        metrics (losses, balances, measures, margins after the update, learning rates)
        and ``nonfinite`` (int32, 0 when the update was applied; see the module doc)."""
        cfg = self.config
        images = tf.convert_to_tensor(images, tf.float32)
        real_labels = tf.convert_to_tensor(real_labels, tf.float32)
        batch = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
        fake_labels = (self.draw_fake_labels(batch) if fake_labels is None
                       else self.prepare_labels(fake_labels))
        z_gen = self.draw_z(batch) if z_gen is None else tf.convert_to_tensor(z_gen, tf.float32)
        metrics, g_grads, d_grads = self._compute(
            images, real_labels, fake_labels, z_gen,
            tf.identity(self.k_t), tf.identity(self.l_t), tf.identity(self.z_t))
        ctx = tf.distribute.get_replica_context()
        metrics = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, metrics)
        finite, bad = apply_mean_gradients_if_finite(
            [("g_loss", self.g_optimizer, g_grads, self.g_vars),
             ("d_loss", self.d_optimizer, d_grads, self.d_vars)],
            {"d_loss": metrics["d_loss"], "g_loss": metrics["g_loss"]}, NONFINITE_NAMES)
        bk, bl, bz = balances(metrics["d_loss_real"], metrics["g_loss_image"],
                              metrics["d_loss_real_label"], metrics["d_loss_fake_label"],
                              cfg.gamma, cfg.gamma_label, cfg.zeta)
        measure, complete = measures(metrics["d_loss_real"], metrics["d_loss_real_label"],
                                     bk, bl, bz)
        metrics.update(balance_k=bk, balance_l=bl, balance_z=bz, measure=measure,
                       measure_complete=complete)
        ctx.merge_call(self._apply_updates, args=(bk, bl, bz, finite))
        metrics.update(k_t=tf.identity(self.k_t), l_t=tf.identity(self.l_t),
                       z_t=tf.identity(self.z_t), g_lr=tf.identity(self.g_lr),
                       d_lr=tf.identity(self.d_lr), nonfinite=bad)
        return metrics

    def _apply_updates(self, strategy, bk, bl, bz, finite):
        cfg = self.config
        ext = strategy.extended

        def margin(v, b, ok, lam):  # a skipped update leaves the margin as it was
            return v.assign(tf.where(ok, update_margin(v, lam, b), v))

        for var, lam, bal in ((self.k_t, cfg.lambda_k, bk), (self.l_t, cfg.lambda_l, bl),
                              (self.z_t, cfg.lambda_z, bz)):
            ext.update(var, functools.partial(margin, lam=lam), args=(bal, finite),
                       group=False)
        ext.update(self.step, lambda v: v.assign_add(1), group=False)
        new_step = tf.identity(self.step)  # read after the increment above
        every = tf.constant(int(cfg.lr_update_step), tf.int64)

        def halve(v, s):
            return v.assign(tf.where(tf.equal(s % every, 0), v * 0.5, v))

        for lr in (self.g_lr, self.d_lr):
            ext.update(lr, halve, args=(new_step,), group=False)

    def make_train_function(self, strategy=None):
        """A compiled ``fn(batch)`` running ``train_step`` on every replica of ``strategy``.

        ``batch`` is a (distributed) tuple ``(images, labels[, fake_labels, z_gen])``;
        the result is the replica-averaged metrics as plain tensors.
        """
        strategy = strategy or tf.distribute.get_strategy()

        @tf.function
        def train(batch):
            out = strategy.run(self.train_step, args=tuple(batch))
            return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0],
                                         out)

        return train


def flops_per_step_estimate(image_size: int, n: int, z_num: int, z_dim: int, n_labels: int,
                            batch: int, channels: int = 3, separate_labeler: bool = True):
    """Multiply-add FLOPs (x2) of one train step, counted analytically (forward + backward).

    Forward: G on B, the AE and the labeler on 2B. Backward: weight and input gradients
    (2x forward) for G, the AE on real and fake (the fake half twice: d_loss and g_loss),
    the labeler likewise.
    """
    repeat = int(math.log2(image_size)) - 2

    def decoder(in_dim):
        f = 2 * in_dim * 64 * n
        size = 8
        for i in range(repeat):
            f += 2 * (2 * 9 * n * n * size * size)
            if i < repeat - 1:
                size *= 2
        return f + 2 * 9 * n * channels * size * size

    def encoder(out_dim):
        size = image_size
        f = 2 * 9 * channels * n * size * size
        prev = n
        for i in range(repeat):
            c = n * (i + 1)
            f += 2 * 9 * (prev * c + c * c) * size * size
            if i < repeat - 1:
                size //= 2
                f += 2 * 9 * c * c * size * size
            prev = c
        return f + 2 * 64 * prev * out_dim

    g = decoder(n_labels + z_dim)
    ae = encoder(z_num) + decoder(z_num)
    lab = encoder(n_labels) if separate_labeler else 0
    forward = batch * (g + 2 * ae + 2 * lab)
    backward = batch * (2 * g + 2 * ae + 2 * ae + ae + 2 * lab + 2 * lab + lab)
    return forward + backward
