"""CausalGAN (ORIGINAL.md 5.3): a DCGAN conditioned on causal-controller labels.

``CausalGAN`` owns five networks (generator G, discriminator D, labeler on real images,
anti-labeler on generated images, z-estimator on D's features), their five Adam
optimizers, k_t and the step counter. The maths lives in the small pure functions at the
top of this file; the class strings them together.

One training iteration (``iteration_kind``): while ``--pretrain_LabelerR`` lasts, one
labeler update; then on iterations divisible by 3 one G update followed by one update of
all five networks (gradients from one forward pass), on the others two G updates. Each
update draws fresh controller labels, label noise and z_gen; k_t decays once per
iteration (as the reference's ``k_t_update``); the step counts iterations.

Distribution: the update functions run in a replica context. Gradients and losses are
averaged over replicas with one all-reduce, then a ``merge_call`` applies Adam to each
device's copy. Batch statistics (batch norm, minibatch features) are taken per group of
``batch_size`` rows, one tower's batch, so two towers make the same update as one device
on the concatenated batch.
"""

from __future__ import annotations

import math

import tensorflow as tf

from causal_dcgan import d_augment
from causal_dcgan.models import ConvStack, Discriminator, Generator, pyramid
from errors import UserError
from nets import (
    ControllerInputs,
    apply_mean_gradients_if_finite,
    gradient_name,
    make_adam,
    to_pixels,
    to_unit,
)

LOSS_FUNCTIONS = range(6)
TINY = 1e-6  # logit(p) = -log(1 / (p + TINY) - 1), the reference's guard
LOW, HIGH = 0.3, 0.7  # label 0 -> 0.3, label 1 -> 0.7
NOISE_TOWARD_MIDDLE = (5.0, 0.2)  # TruncExp(rate, right) pulling toward 0.5
NOISE_TOWARD_TAILS = (15.0, 0.3)  # TruncExp(rate, right) pushing toward 0 and 1
# the loss each network minimises; they and their gradients are the bits of an update's
# non-finite mask (nonfinite.py)
NETWORK_LOSSES = {"G": "g_loss", "D": "d_loss", "labeler": "d_loss_real_label",
                  "anti_labeler": "g_loss_labelerG", "z_estimator": "g_loss_on_z"}
NONFINITE_NAMES = (*NETWORK_LOSSES.values(), *map(gradient_name, NETWORK_LOSSES.values()))


# ----------------------------------------------------------------------------- labels
def truncated_exponential(uniform, rate: float, right: float):
    """An Exp(rate) sample truncated to [0, right] from ``uniform`` ~ U[0, 1):
    -log(U) / rate with U ~ U[exp(-rate * right), 1]."""
    low = math.exp(-rate * right)
    return -tf.math.log(1.0 - (1.0 - low) * uniform) / rate


def label_values(labels01, s=None, t=None):
    """Labels in [0, 1] -> 0.3 + 0.4 l, plus (continuous) the noise of one row:
    l + ((0.5 - l) / 0.2) s + ((l - 0.5) / 0.2) t, with s, t of shape [B, 1]."""
    values = (1.0 - labels01) * LOW + labels01 * HIGH  # exactly 0.3 and 0.7 at 0 and 1
    if s is None:
        return values
    return values + ((0.5 - values) / 0.2) * s + ((values - 0.5) / 0.2) * t


def logit(p):
    """The reference's logit of a label value: -log(1 / (p + TINY) - 1)."""
    return -tf.math.log(1.0 / (p + TINY) - 1.0)


# ----------------------------------------------------------------------------- losses
def sxe(logits, targets):
    """Sigmoid cross-entropy, elementwise."""
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)


def gan_loss(kind: int, d_fake_logits):
    """G's adversarial term: 0/3 -sxe(D(G),0)+sxe(D(G),1), 1/4 sxe(D(G),1), 2/5 -sxe(D(G),0)."""
    ones, zeros = tf.ones_like(d_fake_logits), tf.zeros_like(d_fake_logits)
    part = kind % 3
    if part == 0:
        return tf.reduce_mean(-sxe(d_fake_logits, zeros) + sxe(d_fake_logits, ones))
    if part == 1:
        return tf.reduce_mean(sxe(d_fake_logits, ones))
    return tf.reduce_mean(-sxe(d_fake_logits, zeros))


def labeler_loss_for_g(kind: int, fake_values, labeler_fake_logits):
    """G's label term: 0-2 sxe(logit(noisy labels), sigmoid(labeler(G)));
    3-5 sxe(labeler(G), noisy labels)."""
    if kind < 3:
        return tf.reduce_mean(sxe(logit(fake_values), tf.sigmoid(labeler_fake_logits)))
    return tf.reduce_mean(sxe(labeler_fake_logits, fake_values))


def anti_labeler_loss(fake_values, anti_fake_logits):
    """g_lossLabels_GLabeler = mean sxe(logit(noisy labels), sigmoid(anti_labeler(G)));
    the anti-labeler minimises it, G maximises it (weight k_t)."""
    return tf.reduce_mean(sxe(logit(fake_values), tf.sigmoid(anti_fake_logits)))


def d_loss_fn(d_real_logits, d_fake_logits):
    """(d_loss, d_loss_real, d_loss_fake): mean sxe(D(x), 1) + mean sxe(D(G), 0)."""
    real = tf.reduce_mean(sxe(d_real_logits, tf.ones_like(d_real_logits)))
    fake = tf.reduce_mean(sxe(d_fake_logits, tf.zeros_like(d_fake_logits)))
    return real + fake, real, fake


def g_loss_fn(gan, labels_r, labels_g, on_z, k_t, off_label_losses=False, reconstr_loss=False):
    """gan - k_t labels_g + labels_r (only gan with off_label_losses), + on_z with
    reconstr_loss."""
    loss = gan if off_label_losses else gan - k_t * labels_g + labels_r
    return loss + on_z if reconstr_loss else loss


def r1_penalty(slope, gamma: float):
    """(gamma / 2) * mean over rows of ||slope||^2, slope = dD(x)/dx on real images."""
    return 0.5 * gamma * tf.reduce_mean(tf.reduce_sum(tf.square(slope), axis=[1, 2, 3]))


def z_loss(z_gen, z_estimate):
    """The z-estimator's loss, mean (z_gen - z_estimate)^2."""
    return tf.reduce_mean(tf.square(z_gen - z_estimate))


def decay_k(k_t, tau: float):
    """k_t * exp(-1 / tau)."""
    return k_t * math.exp(-1.0 / float(tau))


def accuracy(logits, labels):
    """Per-label fraction of rows where sign(logit) matches the rounded label."""
    return tf.reduce_mean(tf.cast(tf.equal(logits > 0.0, labels > 0.5), tf.float32), axis=0)


# ----------------------------------------------------------------------------- model
class CausalGAN(ControllerInputs, tf.Module):
    """The image model. Build it inside ``strategy.scope()`` when distributing.

    Args (the same as CausalBEGAN's):
      config: the dcgan flags (ORIGINAL 2.4 names).
      label_names: the graph's labels, in the controller's order.
      image_size: side of the square images; must equal --gf_dim (the reference's
        generator draws gf_dim x gf_dim images).
      channels: image channels (3, or 1 for grayscale).
      controller: the causal controller; its labels feed G during training (frozen).
      data_format: accepted for the common interface; CausalGAN is NHWC everywhere.
      jit_compile: compile the forward/backward passes with XLA.
      seed: initial weights and the model's random stream.
    """

    def __init__(self, config, label_names, image_size: int, channels: int = 3,
                 controller=None, data_format: str | None = None, jit_compile: bool = False,
                 seed: int | None = None):
        super().__init__(name="CausalGAN")
        if getattr(config, "label_specific_noise", False):
            raise UserError("--label_specific_noise True is not implemented (nor was it in "
                            "the reference); leave it False.")
        if int(config.loss_function) not in LOSS_FUNCTIONS:
            raise UserError(f"--loss_function {config.loss_function} is unknown: use 0..5.")
        if int(image_size) != int(config.gf_dim):
            raise UserError(
                f"CausalGAN draws images of side --gf_dim ({config.gf_dim}) but "
                f"--input_scale_size is {image_size}: give both the same value (e.g. "
                f"--gf_dim {image_size}, or --input_scale_size {config.gf_dim}).")
        if int(image_size) < 8:
            raise UserError(f"--gf_dim {config.gf_dim}: CausalGAN needs images of side >= 8.")
        self.config = config
        self.label_names = list(label_names)
        self.n_labels = len(self.label_names)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.z_dim = int(config.z_dim)
        self.batch_size = int(config.batch_size)  # rows that share batch statistics
        self.controller = controller
        self.continuous = config.label_type == "continuous"
        init = (tf.random.Generator.from_seed(seed + 1) if seed is not None
                else tf.random.Generator.from_non_deterministic_state())
        group, d, size = self.batch_size, int(config.df_dim), self.image_size
        upsample = str(getattr(config, "g_upsample", "deconv"))
        # --g_cond_bn: G's batch norms also take their scale and offset from the labels
        cond = dict(n_cond=self.n_labels if getattr(config, "g_cond_bn", False) else 0,
                    cond_logits=config.type_input_to_generator == "logits")
        self.G = Generator(self.z_dim + self.n_labels, int(config.gf_dim), size, self.channels,
                           group, init, upsample, **cond)
        # --g_ema: a moving average of G's weights draws every image shown (not trained)
        self.ema_decay = float(getattr(config, "g_ema", 0.0) or 0.0)
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"--g_ema {self.ema_decay}: give a decay in [0, 1) (0: off).")
        self.G_ema = None
        if self.ema_decay > 0.0:
            self.G_ema = Generator(self.z_dim + self.n_labels, int(config.gf_dim), size,
                                   self.channels, group, init, upsample, **cond)
            for average, weight in zip(self.G_ema.variables, self.G.variables, strict=True):
                average.assign(weight)
        self.set_draw_rows(getattr(config, "draw_rows", 0))
        self._draw_stats = None
        self.set_draw_bn_batches(getattr(config, "draw_bn_batches", 0))
        self.lr_decay_start = int(getattr(config, "lr_decay_start", 0) or 0)
        if self.lr_decay_start < 0:
            raise UserError(f"--lr_decay_start {self.lr_decay_start}: give an iteration >= 0 "
                            "(0: no decay).")
        self._rate_set = float(config.learning_rate)
        self.schedule = getattr(config, "schedule", "reference")
        self.shared_labeler = bool(getattr(config, "labeler_shares_D", False))
        self.labeler_on_fakes = bool(getattr(config, "labeler_on_fakes", False))
        self.projection = bool(getattr(config, "projection_D", False))
        self.r1_gamma = float(getattr(config, "r1_gamma", 0.0) or 0.0)
        if self.r1_gamma < 0.0:
            raise UserError(f"--r1_gamma {self.r1_gamma}: give a weight >= 0 (0: off).")
        # --d_augment: D judges real and generated images alike changed (training only)
        self.d_augment = d_augment.parse_policy(getattr(config, "d_augment", ""))
        self.d_augment_p = float(getattr(config, "d_augment_p", 1.0))
        if not 0.0 < self.d_augment_p <= 1.0:
            raise UserError(f"--d_augment_p {self.d_augment_p}: give a probability in (0, 1].")
        # --d_norm joint: one call of D on real and generated images, one batch's statistics
        self.joint_d = str(getattr(config, "d_norm", "batch")) == "joint"
        if self.joint_d and self.schedule != "every_step":
            raise UserError("--d_norm joint needs --schedule every_step: the reference "
                            "schedule's G-only steps have no real batch to share D's "
                            "statistics with.")
        self.D = Discriminator(d, size, self.channels, group, bool(config.stab_proj),
                               int(config.n_stab_proj), init,
                               minibatch=bool(getattr(config, "minibatch_features", True)),
                               n_labels=self.n_labels if self.shared_labeler else 0,
                               n_projection=self.n_labels if self.projection else 0,
                               norm=str(getattr(config, "d_norm", "batch")),
                               stddev=bool(getattr(config, "minibatch_stddev", False)),
                               pairs=bool(getattr(config, "projection_pairs", False)))
        if getattr(config, "projection_pairs", False) and not self.projection:
            raise UserError("--projection_pairs True needs --projection_D True: the pairs "
                            "are part of D's projection of the labels.")
        # --labeler_shares_D: the labeler is D's label head (D's optimizer trains it)
        self.labeler = (None if self.shared_labeler else
                        ConvStack(d, size, self.channels, self.n_labels, group, init,
                                  name="labeler"))
        self.anti_labeler = ConvStack(d, size, self.channels, self.n_labels, group, init,
                                      name="anti_labeler")
        self.z_estimator = ConvStack(d, pyramid(size)[2], 2 * d, self.z_dim, group, init,
                                     name="z_estimator")
        self.k_t = tf.Variable(1.0, trainable=False, name="k_t")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        adam = dict(learning_rate=config.learning_rate, beta1=config.beta1, beta2=0.999)
        self.g_optimizer = make_adam(self.G.trainable_variables, name="g_opt", **adam)
        self.d_optimizer = make_adam(self.D.trainable_variables, name="d_opt", **adam)
        self.labeler_optimizer = (None if self.shared_labeler else
                                  make_adam(self.labeler.trainable_variables, name="dl_opt",
                                            **adam))
        self.anti_labeler_optimizer = make_adam(self.anti_labeler.trainable_variables,
                                                name="dgl_opt", **adam)
        self.z_optimizer = make_adam(self.z_estimator.trainable_variables, name="dz_opt",
                                     **adam)
        # padding for generation: full batches of fixed individuals (see ``generate``)
        self.pad_z = tf.Variable(init.uniform([group, self.z_dim], -1.0, 1.0),
                                 trainable=False, name="pad_z")
        n_hidden = getattr(controller, "n_hidden", None)
        nodes = len(getattr(controller, "node_names", self.label_names))
        self.pad_noise = tf.Variable(
            init.uniform([group, nodes, int(n_hidden or 1)], -1.0, 1.0), trainable=False,
            name="pad_noise")
        self.pad_bits = tf.Variable(tf.round(init.uniform([group, self.n_labels])),
                                    trainable=False, name="pad_bits")
        self.rng = (tf.random.Generator.from_seed(seed) if seed is not None
                    else tf.random.Generator.from_non_deterministic_state())
        jit = bool(jit_compile)
        self._g_grads = tf.function(self._g_losses_and_grads, jit_compile=jit)
        self._all_grads = tf.function(self._all_losses_and_grads, jit_compile=jit)
        self._labeler_grads = tf.function(self._labeler_loss_and_grads, jit_compile=jit)

    def set_draw_rows(self, rows) -> None:
        """--draw_rows: requested rows per batch when drawing images (0: the whole batch)."""
        rows = int(rows or 0)
        if not 0 <= rows <= self.batch_size:
            raise UserError(f"--draw_rows {rows}: give 0 (every row of a batch) or 1 to "
                            f"--batch_size ({self.batch_size}).")
        self.draw_rows = rows or self.batch_size

    def set_draw_bn_batches(self, batches) -> None:
        """--draw_bn_batches: drawn images take G's batch-norm statistics averaged over
        this many training-like batches (0: each drawn batch's own)."""
        batches = int(batches or 0)
        if batches < 0:
            raise UserError(f"--draw_bn_batches {batches}: give a number of batches >= 0 "
                            "(0: off).")
        self.draw_bn_batches = batches
        if batches and self._draw_stats is None:
            self._draw_stats = _DrawStatistics([bn.gamma.shape[0]
                                                for bn in self.drawing_G.batch_norms()])

    @property
    def drawing_G(self):
        """The generator that draws every image shown: G's moving average (--g_ema) or G."""
        return self.G_ema if self.G_ema is not None else self.G

    def population_statistics(self):
        """G's (mean, variance) per batch norm over --draw_bn_batches batches of
        --batch_size rows drawn as in training (``draw_fake_labels``: the controller's
        labels in ``label_weights``' mix; the label noise of --label_type continuous) from
        a fixed seed, each batch's statistics as in training, averaged. A model without
        ``label_weights`` where training had them (--rare_label_rate) gets other
        statistics: the Trainer and saved_run set them. Measured again only when the step
        has moved since (the weights change only with the step), so drawing many batches
        costs one measurement; the same weights give the same statistics in every process."""
        state = self._draw_stats
        G = self.drawing_G

        def measure():
            state.rng.reset_from_seed(DRAW_STATS_SEED)
            n = self.draw_bn_batches * self.batch_size
            labels = (self.draw_fake_labels(n, rng=state.rng) if self.controller is not None
                      else tf.round(state.rng.uniform([n, self.n_labels])))  # as pad_bits
            values = label_values(labels)
            if self.continuous:  # the label noise of training, from this stream
                u = state.rng.uniform([2, n, 1])
                values = label_values(labels, truncated_exponential(u[0], *NOISE_TOWARD_MIDDLE),
                                      truncated_exponential(u[1], *NOISE_TOWARD_TAILS))
            z = state.rng.uniform([n, self.z_dim], -1.0, 1.0)
            moments = []
            G(self.generator_inputs(values, z), moments=moments)
            writes = [v.assign(m) for pair, values in zip(moments, state.values, strict=True)
                      for m, v in zip(pair, values, strict=True)]
            with tf.control_dependencies(writes):
                return state.step.assign(self.step)

        tf.cond(tf.not_equal(state.step, self.step), measure, lambda: tf.identity(state.step))
        return [(mean.read_value(), var.read_value()) for mean, var in state.values]

    # -- what the Trainer shows and summarises
    progress_keys = {"d": "d_loss", "g": "g_loss", "k_t": "k_t"}
    nonfinite_names = NONFINITE_NAMES

    @staticmethod
    def summary_group(key: str) -> str:
        """The TensorBoard group of a metric."""
        return "margins" if key == "k_t" else "loss"

    # -- labels and inputs
    def draw_label_noise(self, batch_size):
        """(s, t) [B, 1] each: the continuous label noise of each row."""
        u = self.rng.uniform([2, batch_size, 1])
        return (truncated_exponential(u[0], *NOISE_TOWARD_MIDDLE),
                truncated_exponential(u[1], *NOISE_TOWARD_TAILS))

    def noisy_values(self, labels01):
        """Prepared labels -> the values G is conditioned on in training (5.3)."""
        if not self.continuous:
            return label_values(labels01)
        s, t = self.draw_label_noise(tf.shape(labels01)[0])
        return label_values(labels01, s, t)

    def generator_inputs(self, values, z_gen):
        """concat(z_gen, logit(values) or values): noise first, as the reference."""
        labels_in = logit(values) if self.config.type_input_to_generator == "logits" else values
        return tf.concat([z_gen, labels_in], axis=1)

    def judge(self, x, labels01):
        """D's outputs for images x in [-1, 1] (with --projection_D, of the pairs of x and
        their labels in {0, 1})."""
        return self.D(x, labels01 if self.projection else None)

    def judge_in_training(self, x, labels01):
        """``judge`` of x changed by --d_augment (each call its own random changes)."""
        if self.d_augment:
            x = d_augment.augment(x, self.d_augment, self.rng, self.d_augment_p)
        return self.judge(x, labels01)

    def read_labels(self, x, d_out=None):
        """The labeler's logits for images x in [-1, 1] (from D's outputs ``d_out`` of x
        when the labeler is D's head)."""
        if self.shared_labeler:
            return (d_out if d_out is not None else self.D(x))[2]
        return self.labeler(x)

    # -- generation
    def _padding_values(self, count):
        """Label values of ``count`` fixed padding individuals (noise-free)."""
        cc = self.controller
        if cc is not None and getattr(cc, "n_hidden", None) is not None:
            labels, _ = cc.sample(noise=self.pad_noise)
            labels = self.prepare_labels(labels)
        else:
            labels = self.pad_bits
        return label_values(labels)[:count]

    def generate(self, labels, z_gen=None, round_labels: bool | None = None):
        """Images in [0, 255] (NHWC) for controller labels [N, n] and noise z_gen [N, z_dim].

        Deterministic given z_gen (no label noise: labels map to 0.3 + 0.4 l), and
        differentiable w.r.t. labels and z_gen when round_labels is False. round_labels
        None follows --round_fake_labels. Batch norm takes batch statistics, so the rows
        are padded to a multiple of batch_size with fixed individuals (controller labels
        of fixed noise, fixed z_gen), which are dropped again: one image or a full batch
        come from the same distribution.
        """
        labels = tf.convert_to_tensor(labels, tf.float32)
        if round_labels is None:
            labels = self.prepare_labels(labels)
        elif round_labels:
            labels = tf.round(labels)
        n = tf.shape(labels)[0]
        if z_gen is None:
            z_gen = self.draw_z(n)
        return to_pixels(self._generate_padded(labels, z_gen)[:n])

    def _generate_padded(self, labels01, z_gen, rows: int | None = None):
        """G's images in [-1, 1] for the rows padded to a multiple of batch_size (with
        --draw_rows k, or ``rows``: of k, each group of k rows then completed to a batch by
        the fixed individuals, whose images are dropped again)."""
        G = self.drawing_G
        if rows is None and self.draw_bn_batches:  # each row alone, no padding
            return G(self.generator_inputs(label_values(labels01), tf.cast(z_gen, tf.float32)),
                     stats=self.population_statistics())
        k = int(rows or self.draw_rows)
        n = tf.shape(labels01)[0]
        pad = (-n) % k
        fixed = self._padding_values(self.batch_size)  # the fixed individuals, drawn once
        values = tf.concat([label_values(labels01), fixed[:pad]], axis=0)
        z_all = tf.concat([tf.cast(z_gen, tf.float32), self.pad_z[:pad]], axis=0)
        if k == self.batch_size:
            return G(self.generator_inputs(values, z_all))
        groups = tf.shape(values)[0] // k

        def complete(rows, fixed):
            rows = tf.reshape(rows, [groups, k, -1])
            fixed = tf.tile(fixed[None, k:], [groups, 1, 1])
            return tf.reshape(tf.concat([rows, fixed], axis=1), [groups * self.batch_size, -1])

        out = G(self.generator_inputs(complete(values, fixed), complete(z_all, self.pad_z)))
        out = tf.reshape(out, tf.concat([[groups, self.batch_size], tf.shape(out)[1:]], 0))
        return tf.reshape(out[:, :k], tf.concat([[-1], tf.shape(out)[2:]], 0))

    def diagnostics(self, images, real_labels, controller_labels, z_gen):
        """Images and label histograms for summaries: G, and the labeler's and D's
        outputs on one replica's batch of real images and on generated images."""
        x = to_unit(tf.convert_to_tensor(images, tf.float32))
        fake01 = self.prepare_labels(controller_labels)
        n = tf.shape(fake01)[0]
        g = self._generate_padded(fake01, z_gen, rows=self.batch_size)  # D takes full batches
        d_real = self.judge(x, real_labels)
        d_fake = self.judge(g, tf.concat([fake01, tf.zeros([tf.shape(g)[0] - n, self.n_labels])],
                                         axis=0))
        return {"images": {"G": to_pixels(g[:n])},
                "histograms": {"real_prob": tf.sigmoid(self.read_labels(x, d_real)),
                               "fake_prob": tf.sigmoid(self.read_labels(g, d_fake)[:n]),
                               "fake_labels": fake01, "real_labels": real_labels,
                               "d_real": tf.sigmoid(d_real[0]),
                               "d_fake": tf.sigmoid(d_fake[0][:n])}}

    # -- losses and gradients (one replica's batch)
    def _g_side(self, values, z_gen, k_t, fake01, g=None, d_fake=None):
        """G's forward and its losses from label values (of the labels fake01) and z_gen
        (G's images ``g`` and D's outputs ``d_fake`` of them when the caller has them)."""
        cfg = self.config
        kind = int(cfg.loss_function)
        if g is None:
            g = self.G(self.generator_inputs(values, z_gen))
        if d_fake is None:
            d_fake = self.judge_in_training(g, fake01)
        d_fake_logits, features = d_fake[0], d_fake[1]
        labeler_fake = self.read_labels(g, None if self.d_augment else d_fake)
        anti_fake = self.anti_labeler(g)
        on_z = z_loss(z_gen, tf.tanh(self.z_estimator(features)))
        parts = {"g_lossGAN": gan_loss(kind, d_fake_logits),
                 "g_loss_labelerR": labeler_loss_for_g(kind, values, labeler_fake),
                 "g_loss_labelerG": anti_labeler_loss(values, anti_fake),
                 "g_loss_on_z": on_z}
        parts["g_loss"] = g_loss_fn(parts["g_lossGAN"], parts["g_loss_labelerR"],
                                    parts["g_loss_labelerG"], on_z, k_t,
                                    cfg.off_label_losses, cfg.reconstr_loss)
        return g, d_fake_logits, labeler_fake, parts

    def _g_losses_and_grads(self, values, z_gen, k_t, fake01):
        with tf.GradientTape() as tape:
            _, _, _, parts = self._g_side(values, z_gen, k_t, fake01)
        return parts, tape.gradient(parts["g_loss"], self.G.trainable_variables)

    def _all_losses_and_grads(self, images, real_labels, fake01, values, z_gen, k_t):
        x = to_unit(images)
        with tf.GradientTape(persistent=True) as tape:
            if self.joint_d:
                d_real_out, r1, g, d_fake = self._judge_jointly(x, real_labels, values, z_gen,
                                                                fake01)
                g, d_fake_logits, labeler_fake, parts = self._g_side(
                    values, z_gen, k_t, fake01, g, d_fake)
            else:
                g, d_fake_logits, labeler_fake, parts = self._g_side(values, z_gen, k_t,
                                                                     fake01)
                if self.r1_gamma > 0.0:
                    d_real_out, r1 = self._judge_with_r1(x, real_labels)
                else:
                    d_real_out = self.judge_in_training(x, real_labels)
            d_loss, d_real, d_fake = d_loss_fn(d_real_out[0], d_fake_logits)
            if self.r1_gamma > 0.0:
                d_loss = d_loss + r1
            labeler_real = self.read_labels(x, None if self.d_augment else d_real_out)
            labeler_loss = tf.reduce_mean(sxe(labeler_real, real_labels))
            labeler_total = labeler_loss
            if self.labeler_on_fakes:  # ACGAN: G's images read as the labels asked for
                fake_label_loss = tf.reduce_mean(sxe(labeler_fake, fake01))
                labeler_total = labeler_total + fake_label_loss
            if self.shared_labeler:
                d_total = d_loss + labeler_total
        losses = [parts["g_loss"], d_total if self.shared_labeler else d_loss]
        if not self.shared_labeler:
            losses.append(labeler_total)
        losses += [parts["g_loss_labelerG"], parts["g_loss_on_z"]]
        grads = [tape.gradient(loss, net.trainable_variables)
                 for loss, (net, _) in zip(losses, self.networks(), strict=True)]
        del tape
        metrics = dict(parts, d_loss=d_loss, d_loss_real=d_real, d_loss_fake=d_fake,
                       d_loss_real_label=labeler_loss,
                       accuracy_real=accuracy(labeler_real, real_labels),
                       accuracy_fake=accuracy(labeler_fake, fake01))
        if self.labeler_on_fakes:
            metrics["d_loss_fake_label"] = fake_label_loss
        if self.r1_gamma > 0.0:
            metrics["d_loss_r1"] = r1
        return metrics, grads

    def _judge_jointly(self, x, real_labels, values, z_gen, fake01):
        """--d_norm joint: G's images, then one call of D on the real images x and G's
        together, so D's batch norms take one set of statistics over both; D's outputs
        (real part, generated part) and the R1 penalty on the real part (None when off)."""
        g = self.G(self.generator_inputs(values, z_gen))
        n = tf.shape(x)[0]
        labels = tf.concat([tf.cast(real_labels, fake01.dtype), fake01], axis=0)
        if self.d_augment:
            x = d_augment.augment(x, self.d_augment, self.rng, self.d_augment_p)
            g_seen = d_augment.augment(g, self.d_augment, self.rng, self.d_augment_p)
        else:
            g_seen = g
        with tf.GradientTape() as tape:
            tape.watch(x)
            both = self.judge(tf.concat([x, g_seen], axis=0), labels)
            real_logits = both[0][:n]
        r1 = (r1_penalty(tape.gradient(real_logits, x), self.r1_gamma)
              if self.r1_gamma > 0.0 else None)

        def part(rows):
            return tuple(None if t is None else t[rows] for t in both)

        return part(slice(None, n)), r1, g, part(slice(n, None))

    def _judge_with_r1(self, x, real_labels):
        """D's outputs on real images x and the R1 penalty (gamma / 2) mean ||dD(x)/dx||^2
        of its logit (recorded by the caller's tape, so D's update includes its gradient);
        with --d_augment, x changed as D sees it and the slope at what D sees."""
        if self.d_augment:
            x = d_augment.augment(x, self.d_augment, self.rng, self.d_augment_p)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self.judge(x, real_labels)
        slope = tape.gradient(out[0], x)
        return out, r1_penalty(slope, self.r1_gamma)

    def _labeler_loss_and_grads(self, images, real_labels):
        net, _ = self._labeler_and_optimizer()
        with tf.GradientTape() as tape:
            logits = self.read_labels(to_unit(images))
            loss = tf.reduce_mean(sxe(logits, real_labels))
        metrics = {"d_loss_real_label": loss, "accuracy_real": accuracy(logits, real_labels)}
        return metrics, tape.gradient(loss, net.trainable_variables)

    # -- updates (replica context)
    def _inputs(self, batch, fake_labels, z_gen):
        fake01 = (self.draw_fake_labels(batch) if fake_labels is None
                  else self.prepare_labels(fake_labels))
        z = self.draw_z(batch) if z_gen is None else tf.convert_to_tensor(z_gen, tf.float32)
        return fake01, self.noisy_values(fake01), z

    @staticmethod
    def _reduce(value):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, value)

    def networks(self):
        """(network, its optimizer) for G, D, labeler (absent when it is D's head),
        anti-labeler, z-estimator."""
        labeler = () if self.shared_labeler else ((self.labeler, self.labeler_optimizer),)
        return ((self.G, self.g_optimizer), (self.D, self.d_optimizer), *labeler,
                (self.anti_labeler, self.anti_labeler_optimizer),
                (self.z_estimator, self.z_optimizer))

    def _labeler_and_optimizer(self):
        """The network that holds the labeler's weights, and its optimizer."""
        if self.shared_labeler:
            return self.D, self.d_optimizer
        return self.labeler, self.labeler_optimizer

    def _apply_if_finite(self, updates, metrics):
        """Apply one update's ``(loss name, optimizer, gradients, variables)`` unless those
        losses (in the replica-averaged ``metrics``) or their replica-mean gradients hold
        NaN or Inf: then nothing changes, weights, Adam slots and iteration counts alike.
        Returns the update's mask of NONFINITE_NAMES (0: applied). Either way k_t decays
        and the step grows on schedule (``_finish``), as the controller's step does."""
        losses = {loss: metrics[loss] for loss, *_ in updates}
        return apply_mean_gradients_if_finite(updates, losses, NONFINITE_NAMES)[1]

    def _loss_of(self, net):
        """The name of the loss that ``net`` minimises (NETWORK_LOSSES)."""
        return next(loss for attr, loss in NETWORK_LOSSES.items() if getattr(self, attr) is net)

    def g_update(self, batch, fake_labels=None, z_gen=None):
        """One G update; returns G's replica-averaged losses and its ``nonfinite`` mask."""
        fake01, values, z = self._inputs(batch, fake_labels, z_gen)
        parts, grads = self._g_grads(values, z, tf.identity(self.k_t), fake01)
        parts = self._reduce(parts)
        parts["nonfinite"] = self._apply_if_finite(
            [("g_loss", self.g_optimizer, grads, self.G.trainable_variables)], parts)
        return parts

    def all_update(self, images, real_labels, fake_labels=None, z_gen=None):
        """One update of all five networks from one forward pass."""
        images = tf.convert_to_tensor(images, tf.float32)
        real_labels = tf.convert_to_tensor(real_labels, tf.float32)
        fake01, values, z = self._inputs(_rows(images), fake_labels, z_gen)
        metrics, grads = self._all_grads(images, real_labels, fake01, values, z,
                                         tf.identity(self.k_t))
        metrics = self._reduce(metrics)
        metrics["nonfinite"] = self._apply_if_finite(
            [(self._loss_of(net), optimizer, g, net.trainable_variables)
             for (net, optimizer), g in zip(self.networks(), grads, strict=True)], metrics)
        return metrics

    def labeler_update(self, images, real_labels):
        """One update of the labeler alone on real images."""
        images = tf.convert_to_tensor(images, tf.float32)
        real_labels = tf.convert_to_tensor(real_labels, tf.float32)
        metrics, grads = self._labeler_grads(images, real_labels)
        net, optimizer = self._labeler_and_optimizer()
        metrics = self._reduce(metrics)
        metrics["nonfinite"] = self._apply_if_finite(
            [("d_loss_real_label", optimizer, grads, net.trainable_variables)], metrics)
        return metrics

    def _finish(self, decay: bool):
        """Step + 1, (decay) k_t * exp(-1/tau) and the --g_ema step, on every device."""
        tau = float(self.config.tau)

        def apply(strategy):
            ext = strategy.extended
            if decay:
                ext.update(self.k_t, lambda v: v.assign(decay_k(v, tau)), group=False)
            if self.G_ema is not None:
                for average, weight in zip(self.G_ema.variables, self.G.variables, strict=True):
                    ext.update(average, self._move_average, args=(weight,), group=False)
            ext.update(self.step, lambda v: v.assign_add(1), group=False)

        tf.distribute.get_replica_context().merge_call(apply)
        return {"k_t": tf.identity(self.k_t)}

    def _move_average(self, average, weight):
        """One --g_ema step of one variable: average <- d average + (1 - d) weight."""
        return average.assign(self.ema_decay * average + (1.0 - self.ema_decay) * weight)

    # -- iterations (replica context); each returns replica-averaged metrics
    def iteration_kind(self, step: int) -> str:
        """'labeler' (pretraining the labeler), then with --schedule reference 'g_all'
        (step divisible by 3) or 'g_g', with --schedule every_step 'all'."""
        cfg = self.config
        if cfg.pretrain_LabelerR and step < int(cfg.pretrain_LabelerR_no_of_iters):
            return "labeler"
        if self.schedule == "every_step":
            return "all"
        return "g_all" if step % 3 == 0 else "g_g"

    def iteration(self, kind: str, images, real_labels, fake_labels=None, z_gen=None):
        """One training iteration of ``kind`` on one replica's batch.

        Explicit fake_labels / z_gen (tests) are used by every update of the iteration.
        """
        if kind == "labeler":
            metrics = self.labeler_update(images, real_labels)
            metrics.update(self._finish(decay=False))
            return metrics
        if kind == "all":
            metrics = self.all_update(images, real_labels, fake_labels, z_gen)
            metrics.update(self._finish(decay=True))
            return metrics
        rows = _rows(tf.convert_to_tensor(images))
        first = self.g_update(rows, fake_labels, z_gen)
        if kind == "g_all":
            metrics = self.all_update(images, real_labels, fake_labels, z_gen)
        else:
            metrics = self.g_update(rows, fake_labels, z_gen)
        metrics["nonfinite"] = tf.stack([first["nonfinite"], metrics["nonfinite"]])
        metrics.update(self._finish(decay=True))
        return metrics

    def learning_rate_at(self, step: int) -> float:
        """--lr_decay_start: the learning rate of every network at iteration ``step``:
        --learning_rate until that iteration, then falling linearly to 0 at --num_iter."""
        base, start = float(self.config.learning_rate), int(self.lr_decay_start)
        end = int(self.config.num_iter)
        if start <= 0 or step < start or end <= start:
            return base
        return base * max(end - step, 0) / (end - start)

    def set_learning_rates(self, step: int) -> None:
        """Every optimizer's learning rate for iteration ``step`` (assigned only when it
        changes, so a run without --lr_decay_start never touches them)."""
        rate = self.learning_rate_at(step)
        if rate == self._rate_set:
            return
        for _, optimizer in self.networks():
            optimizer.learning_rate.assign(rate)
        self._rate_set = rate

    def metric_template(self):
        """Every metric an iteration may return, as NaN (shown until first computed)."""
        nan = float("nan")
        names = ("d_loss", "d_loss_real", "d_loss_fake", "d_loss_real_label", "g_loss",
                 "g_lossGAN", "g_loss_labelerR", "g_loss_labelerG", "g_loss_on_z", "k_t")
        if self.labeler_on_fakes:
            names += ("d_loss_fake_label",)
        if self.r1_gamma > 0.0:
            names += ("d_loss_r1",)
        out = {k: tf.constant(nan) for k in names}
        out["accuracy_real"] = tf.fill([self.n_labels], nan)
        out["accuracy_fake"] = tf.fill([self.n_labels], nan)
        return out

    def make_train_function(self, strategy=None):
        """``fn(batch)`` running one iteration on every replica of ``strategy``.

        ``batch`` is a (distributed) tuple ``(images, labels[, fake_labels, z_gen])``. The
        iteration's kind is chosen from the step (``iteration_kind``); each kind is one
        compiled function. The result holds every metric: those the iteration did not
        compute keep their last values (NaN before the first). ``nonfinite`` holds the
        mask of each update of the iteration (int32, one for a labeler or all-networks
        iteration, two for the reference's G+all or G+G; 0: applied, else skipped).
        """
        strategy = strategy or tf.distribute.get_strategy()

        def compiled(kind):
            @tf.function
            def run(batch):
                out = strategy.run(lambda *b: self.iteration(kind, *b), args=tuple(batch))
                return tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], out)
            return run

        functions = {kind: compiled(kind) for kind in ("labeler", "g_all", "g_g", "all")}
        last = self.metric_template()

        def train(batch):
            step = int(self.step.numpy())
            self.set_learning_rates(step)
            kind = self.iteration_kind(step)
            last.update(functions[kind](batch))
            return dict(last)

        train.functions = functions
        return train


DRAW_STATS_SEED = 20171  # --draw_bn_batches: the labels and z_gen its statistics come from


class _DrawStatistics:
    """--draw_bn_batches' state, outside the model's checkpoint (measured again after a
    restore): per batch norm of G a (mean, variance) pair of variables, the step they were
    measured at (-1: never) and the random stream of their inputs."""

    def __init__(self, channels):
        self.values = [(tf.Variable(tf.zeros([c]), trainable=False),
                        tf.Variable(tf.ones([c]), trainable=False)) for c in channels]
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.rng = tf.random.Generator.from_seed(DRAW_STATS_SEED)


def _rows(x):
    """The static number of rows when known, else the dynamic one."""
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
