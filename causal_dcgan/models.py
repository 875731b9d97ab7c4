"""The networks of CausalGAN (ORIGINAL.md 5.3): generator, discriminator, labelers, z-estimator.

Widths: ``gf_dim`` (g) for the generator, ``df_dim`` (d) for the rest. Sides follow a
'SAME' stride-2 pyramid: ``s, s/2, s/4, s/8, s/16`` (rounded up). Every network takes and
returns NHWC tensors; batch statistics are per group of ``group`` rows (causal_dcgan/ops.py).

    Generator     linear -> s/16 x s/16 x 8g, BN, relu; transposed convs to 4g, 2g, g
                  (BN, relu each) and to ``channels`` with tanh (``upsample="resize"``:
                  nearest-neighbour doubling + 3x3 convolution in their place;
                  ``n_cond > 0``: every BN's scale and offset also follow the labels).
    Discriminator conv d + lrelu (or a fixed random projection to n_stab_proj channels);
                  conv 2d + BN + lrelu (the z-estimator's input); minibatch features;
                  conv 4d, conv 8d (BN + lrelu); linear to one logit.
    ConvStack     conv d + lrelu; conv 2d, 4d, 8d (BN + lrelu); linear to ``out_dim``:
                  the labeler, the anti-labeler and (on D's features, then tanh) the
                  z-estimator.
"""

from __future__ import annotations

import tensorflow as tf

from causal_dcgan.ops import (
    NORMS,
    BatchNorm,
    Conv,
    Deconv,
    SNConv,
    SNDense,
    minibatch_similarity,
    minibatch_stddev,
    out_size,
)
from nets import Dense, lrelu, normal

MB_KERNELS = 300   # minibatch-discrimination kernels
MB_DIMS = 50       # dimensions per kernel


def pyramid(size: int, steps: int = 4) -> list[int]:
    """[size, size/2, ..., size/2**steps] with 'SAME' rounding."""
    sides = [int(size)]
    for _ in range(steps):
        sides.append(out_size(sides[-1]))
    return sides


class ResizeConv(tf.Module):
    """Nearest-neighbour upsampling to ``out_side``, then a 3x3 stride-1 convolution over
    reflected borders (--g_upsample resize; the reference's Deconv overlaps its 5x5
    kernels unevenly at stride 2, the source of checkerboard noise)."""

    def __init__(self, in_ch: int, out_ch: int, rng=None, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.kernel = tf.Variable(normal([3, 3, in_ch, out_ch], 0.02, rng), name="kernel")
        self.bias = tf.Variable(tf.zeros([out_ch]), name="bias") if bias else None

    def __call__(self, x, out_side: int):
        x = tf.image.resize(x, [out_side, out_side], method="nearest")
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        y = tf.nn.conv2d(x, self.kernel, 1, "VALID")
        return tf.nn.bias_add(y, self.bias) if self.bias is not None else y


UPSAMPLERS = {"deconv": Deconv, "resize": ResizeConv}  # --g_upsample


class LabelAffine(tf.Module):
    """The labels' share of a conditional batch norm (--g_cond_bn): a batch-normalised map
    y [B, H, W, C] becomes y * (1 + a(c)) + b(c), a and b linear in the labels c [B, n] in
    [-1, 1], zero at the start (so G begins as the plain one). The label's signal then
    reaches every scale of G after its batch statistics are taken, which a batch that
    shares a condition (all Bald=1) cannot subtract."""

    def __init__(self, n_labels: int, channels: int, name: str | None = None):
        super().__init__(name=name)
        self.kernel = tf.Variable(tf.zeros([int(n_labels), 2 * int(channels)]), name="kernel")

    def __call__(self, y, cond):
        scale, offset = tf.split(tf.matmul(cond, self.kernel), 2, axis=1)
        return y * (1.0 + scale[:, None, None, :]) + offset[:, None, None, :]


class Generator(tf.Module):
    """concat(z_gen, label inputs) -> images in [-1, 1], [B, size, size, channels].

    ``n_cond > 0`` (--g_cond_bn): the last ``n_cond`` inputs are the labels, given as
    logits (``cond_logits``) or as values in [0, 1]; every batch norm gains a LabelAffine
    of them, read as 2 value - 1.
    """

    def __init__(self, in_dim: int, gf_dim: int, size: int, channels: int, group: int,
                 rng=None, upsample: str = "deconv", n_cond: int = 0,
                 cond_logits: bool = True):
        super().__init__(name="generator")
        g = int(gf_dim)
        self.sides = pyramid(size)                  # s, s2, s4, s8, s16
        self.base = (self.sides[4], 8 * g)
        self.fc = Dense(in_dim, self.sides[4] ** 2 * 8 * g, stddev=0.02, rng=rng, bias=False,
                        name="h0_lin")
        self.bn0 = BatchNorm(8 * g, group, name="bn0")
        widths = [8 * g, 4 * g, 2 * g, g, channels]
        layer = UPSAMPLERS[upsample]
        self.deconvs = [layer(widths[i], widths[i + 1], rng, bias=i == 3, name=f"h{i + 1}")
                        for i in range(4)]
        self.bns = [BatchNorm(widths[i + 1], group, name=f"bn{i + 1}") for i in range(3)]
        self.n_cond, self.cond_logits = int(n_cond), bool(cond_logits)
        self.affines = ([LabelAffine(n_cond, widths[i], name=f"cbn{i}") for i in range(4)]
                        if self.n_cond else [])

    def conditions(self, z):
        """The labels among G's inputs, as 2 value - 1 in [-1, 1] (None without n_cond)."""
        if not self.n_cond:
            return None
        tail = z[:, -self.n_cond:]
        return 2.0 * (tf.sigmoid(tail) if self.cond_logits else tail) - 1.0

    def _norm(self, i, bn, h, cond, stats=None, moments=None):
        if moments is not None:
            moments.append(bn.group_moments(h))
        h = bn(h) if stats is None else bn.normalize(h, *stats[i])
        return self.affines[i](h, cond) if cond is not None else h

    def __call__(self, z, stats=None, moments=None):
        """Images for G's inputs z; ``stats``: a (mean, variance) per batch norm, in
        order, to normalise with instead of the batch's own (--draw_bn_batches), so each
        row's image depends on that row alone; ``moments``: a list that receives each
        batch norm's batch statistics (BatchNorm.group_moments)."""
        side, ch = self.base
        cond = self.conditions(z)
        h = tf.nn.relu(self._norm(0, self.bn0, tf.reshape(self.fc(z), [-1, side, side, ch]),
                                  cond, stats, moments))
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h, self.sides[3 - i])
            if i < 3:
                h = tf.nn.relu(self._norm(i + 1, self.bns[i], h, cond, stats, moments))
            else:
                h = tf.tanh(h)
        return h

    def batch_norms(self):
        """G's batch norms in the order of ``stats``."""
        return [self.bn0, *self.bns]


class Discriminator(tf.Module):
    """images [-1, 1] -> (logit [B, 1], second-layer features [B, s/4, s/4, 2d], label
    logits [B, n_labels] of the auxiliary head, or None without one).

    ``minibatch=False`` drops the minibatch features; ``n_labels > 0`` adds a linear
    label head beside the logit (ACGAN's auxiliary classifier); ``n_projection > 0`` makes
    D judge (image, labels) pairs: the logit gains <embed(2 labels - 1), last features>
    (a projection discriminator, Miyato & Koyama 2018), given ``labels`` [B, n] in {0, 1};
    ``pairs`` adds the products of every two labels' signs to what is embedded, so D can
    judge a combination (bald and a woman) apart from its two parts;
    ``norm`` "layer" or "none" replaces the batch norms after h1-h3 (those convs then keep
    a bias), "joint" takes their statistics over every row of a call (CausalGAN then calls
    D once on real and generated images together); ``stddev`` gives h3 one more input channel, the batch's spread
    (ops.minibatch_stddev). All are differences from the reference (--minibatch_features,
    --labeler_shares_D, --projection_D, --d_norm, --minibatch_stddev).
    """

    def __init__(self, df_dim: int, size: int, channels: int, group: int,
                 stab_proj: bool = False, n_stab_proj: int = 256, rng=None,
                 minibatch: bool = True, n_labels: int = 0, n_projection: int = 0,
                 norm: str = "batch", stddev: bool = False, pairs: bool = False):
        super().__init__(name="discriminator")
        self.pairs = bool(pairs) and n_projection > 1
        if self.pairs:  # every product of two labels' signs joins the projection's input
            n = int(n_projection)
            self.pair_index = [(i, j) for i in range(n) for j in range(i + 1, n)]
            n_projection = n + len(self.pair_index)
        self.stddev = bool(stddev)
        # without batch norm each conv keeps a bias; spectral: every weight of D's path
        # (not the minibatch features') divided by its largest singular value
        Norm, bias = NORMS[norm], norm not in ("batch", "joint")
        spectral = norm == "spectral"
        conv, dense = (SNConv, SNDense) if spectral else (Conv, Dense)
        d, self.group = int(df_dim), int(group)
        self.minibatch = bool(minibatch)
        sides = pyramid(size)
        self.stab_proj = bool(stab_proj)
        first = int(n_stab_proj) if stab_proj else d
        # with stab_proj the first layer is a fixed random projection, never trained
        self.h0 = (Conv if stab_proj else conv)(channels, first, rng, trainable=not stab_proj,
                                                name="stab_proj" if stab_proj else "h0")
        self.h1 = conv(first, 2 * d, rng, bias=bias, name="h1")
        self.bn1 = Norm(2 * d, group, name="bn1")
        if self.minibatch:
            self.mb0 = Conv(2 * d, d, rng, name="mb0")
            self.mb1 = Conv(d, d, rng, name="mb1")
            self.mb_lin = Dense(sides[4] ** 2 * d, MB_KERNELS * MB_DIMS, stddev=0.02,
                                rng=rng, name="mb_lin")
        self.h2 = conv(2 * d + (MB_KERNELS if self.minibatch else 0), 4 * d, rng, bias=bias,
                       name="h2")
        self.bn2 = Norm(4 * d, group, name="bn2")
        self.h3 = conv(4 * d + int(self.stddev), 8 * d, rng, bias=bias, name="h3")
        self.bn3 = Norm(8 * d, group, name="bn3")
        self.out = dense(sides[4] ** 2 * 8 * d, 1, stddev=0.02, rng=rng, name="h4_lin")
        self.label_head = (dense(sides[4] ** 2 * 8 * d, int(n_labels), stddev=0.02, rng=rng,
                                 name="label_lin") if n_labels else None)
        self.embed = (dense(int(n_projection), sides[4] ** 2 * 8 * d, stddev=0.02, rng=rng,
                            bias=False, name="label_embed") if n_projection else None)

    def minibatch_features(self, h1):
        """h1 with MB_KERNELS similarity channels appended (tiled over its positions)."""
        m = self.mb1(lrelu(self.mb0(h1)))
        m = tf.reshape(m, [-1, m.shape[1] * m.shape[2] * m.shape[3]])
        activation = tf.reshape(self.mb_lin(m), [-1, MB_KERNELS, MB_DIMS])
        features = minibatch_similarity(activation, self.group)
        tiled = tf.tile(features[:, None, None, :], [1, h1.shape[1], h1.shape[2], 1])
        return tf.concat([h1, tiled], axis=3)

    def __call__(self, x, labels=None):
        h0 = self.h0(x)
        if not self.stab_proj:
            h0 = lrelu(h0)
        h1 = lrelu(self.bn1(self.h1(h0)))
        h = self.minibatch_features(h1) if self.minibatch else h1
        h = lrelu(self.bn2(self.h2(h)))
        if self.stddev:
            h = minibatch_stddev(h, self.group)
        h = lrelu(self.bn3(self.h3(h)))
        flat = tf.reshape(h, [-1, h.shape[1] * h.shape[2] * h.shape[3]])
        logit = self.out(flat)
        if self.embed is not None and labels is not None:  # no labels: D's plain logit
            signs = 2.0 * tf.cast(labels, flat.dtype) - 1.0
            if self.pairs:
                first, second = zip(*self.pair_index, strict=True)
                signs = tf.concat([signs, tf.gather(signs, list(first), axis=1)
                                   * tf.gather(signs, list(second), axis=1)], axis=1)
            logit += tf.reduce_sum(self.embed(signs) * flat, axis=1, keepdims=True)
        head = self.label_head(flat) if self.label_head is not None else None
        return logit, h1, head


class ConvStack(tf.Module):
    """The four-conv stack with a linear head: labeler, anti-labeler, z-estimator."""

    def __init__(self, df_dim: int, in_size: int, in_channels: int, out_dim: int, group: int,
                 rng=None, name: str | None = None):
        super().__init__(name=name)
        d = int(df_dim)
        sides = pyramid(in_size)
        self.h0 = Conv(in_channels, d, rng, name="h0")
        self.convs = [Conv(d * 2 ** i, d * 2 ** (i + 1), rng, bias=False, name=f"h{i + 1}")
                      for i in range(3)]
        self.bns = [BatchNorm(d * 2 ** (i + 1), group, name=f"bn{i + 1}") for i in range(3)]
        self.out = Dense(sides[4] ** 2 * 8 * d, out_dim, stddev=0.02, rng=rng, name="lin")

    def __call__(self, x):
        h = lrelu(self.h0(x))
        for conv, bn in zip(self.convs, self.bns, strict=True):
            h = lrelu(bn(conv(h)))
        return self.out(tf.reshape(h, [-1, h.shape[1] * h.shape[2] * h.shape[3]]))
