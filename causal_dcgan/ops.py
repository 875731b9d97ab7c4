"""Layers of CausalGAN's networks (ORIGINAL.md 5.3), NHWC, plain tf.Variable weights.

    Conv(in_ch, out_ch)          5x5 stride-2 'SAME' convolution, weights N(0, 0.02) truncated
    Deconv(in_ch, out_ch)        5x5 stride-2 transposed convolution, weights N(0, 0.02)
    conv_transpose(x, kernel, side)   that transposed convolution in sub-pixel form
    BatchNorm(channels, group)   batch statistics (eps 1e-5, with scale), per group of rows
    minibatch_similarity(a, group)   exp(-L1) similarity to the other rows of the group

Batch statistics are taken over groups of ``group`` consecutive rows: one group is one
tower's batch in the reference (and one call of a network there: D on real images and D
on generated ones had their own statistics). So a batch of two groups on one device
computes exactly what two towers of one group each compute. The reference never used
its moving averages (batch norm always ran in training mode), so none are kept.

A layer whose output goes straight into batch norm has no bias (``bias=False``): batch
norm subtracts it again, so the reference's such biases had a zero gradient, which Adam
turned into updates of size learning_rate driven by rounding noise. The functions the
networks compute are the same.
"""

from __future__ import annotations

import tensorflow as tf

from nets import Dense, normal

WEIGHT_STDDEV = 0.02  # every conv, transposed conv and linear layer (the DCGAN recipe)
BN_EPSILON = 1e-5
KERNEL = 5
STRIDE = 2
SMALL_SIDE = 0  # maps this small take the sub-pixel transposed convolution (below); 0: none


def out_size(size: int, stride: int = STRIDE) -> int:
    """Side after a 'SAME' convolution of this stride (the ceiling of size / stride)."""
    return -(-int(size) // stride)


class Conv(tf.Module):
    """5x5 stride-2 'SAME' convolution (plus bias); ``trainable=False`` keeps it fixed."""

    def __init__(self, in_ch: int, out_ch: int, rng=None, trainable: bool = True,
                 bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.kernel = tf.Variable(
            normal([KERNEL, KERNEL, in_ch, out_ch], WEIGHT_STDDEV, rng, truncated=True),
            trainable=trainable, name="kernel")
        self.bias = (tf.Variable(tf.zeros([out_ch]), trainable=trainable, name="bias")
                     if bias else None)

    def __call__(self, x):
        if out_size(x.shape[1]) <= SMALL_SIDE and x.shape[1] == x.shape[2]:
            y = _conv_small(x, tf.identity(self.kernel))
        else:
            y = tf.nn.conv2d(x, self.kernel, STRIDE, "SAME")
        return tf.nn.bias_add(y, self.bias) if self.bias is not None else y


class Deconv(tf.Module):
    """5x5 stride-2 'SAME' transposed convolution (side doubled, or to ``out_side``)."""

    def __init__(self, in_ch: int, out_ch: int, rng=None, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        # filter layout of conv2d_transpose: [h, w, out_channels, in_channels]
        self.kernel = tf.Variable(normal([KERNEL, KERNEL, out_ch, in_ch], WEIGHT_STDDEV, rng),
                                  name="kernel")
        self.bias = tf.Variable(tf.zeros([out_ch]), name="bias") if bias else None
        self.out_ch = int(out_ch)

    def __call__(self, x, out_side: int):
        if 2 <= x.shape[1] <= SMALL_SIDE and x.shape[1] == x.shape[2]:
            y = _deconv_small(x, tf.identity(self.kernel), int(out_side))
        else:
            shape = tf.stack([tf.shape(x)[0], out_side, out_side, self.out_ch])
            y = tf.nn.conv2d_transpose(x, self.kernel, shape, STRIDE, "SAME")
        if self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        return tf.ensure_shape(y, [None, out_side, out_side, self.out_ch])


# -------------------------------------------------- transposed convolution on small maps
# TensorFlow's CPU kernel for the input gradient of a strided convolution
# (Conv2DBackpropInput, which is also conv2d_transpose) was slow on tiny maps on a 2-core
# AVX2 CPU: many times the layer's forward pass for a 4x4 -> 2x2 layer of 128 -> 256
# channels (docs/SPEED.md, "CausalGAN training"). Every backward pass through D, the
# labeler and the anti-labeler runs it, and G's first transposed convolution is one. On
# maps of side <= SMALL_SIDE the same linear map is computed instead as four stride-1
# convolutions, one per output parity (row, column), interleaved: the sub-pixel form.
# Same numbers (to float rounding), faster there where that kernel is slow; larger maps
# keep TensorFlow's. With TensorFlow 2.21 on a 2-core AVX-512 CPU (oneDNN's kernels, also
# capped at AVX2 by ONEDNN_MAX_CPU_ISA) TensorFlow's own kernels were as fast or faster
# at every layer of the demo's networks, and the demo's every_step iteration faster with
# them (bench_dcgan --demo; docs/SPEED.md), so SMALL_SIDE is 0: set it to 4 where the
# slow kernel returns.


def conv_transpose(x, kernel, out_side: int):
    """The 5x5 stride-2 'SAME' transposed convolution of square maps x [B, n, n, in] with
    ``kernel`` [5, 5, out, in] to [B, out_side, out_side, out], as conv2d_transpose
    computes it, from four stride-1 convolutions.

    Output row i gets input row p through tap a when i = 2p - top + a (top: the 'SAME'
    padding before the first row of the forward convolution). With q = i + top = 2m + r,
    the taps of parity r give row m of a stride-1 correlation of x with the flipped
    kernel rows r, r + 2, ...; the same holds for columns.
    """
    n, side = int(x.shape[1]), int(out_side)
    top = max((n - 1) * STRIDE + KERNEL - side, 0) // 2
    k = tf.transpose(kernel, [0, 1, 3, 2])                      # [5, 5, in, out]
    parities = []
    for r in (0, 1):
        row = []
        for c in (0, 1):
            sub = k[r::2, c::2][::-1, ::-1]
            padded = tf.pad(x, [[0, 0], [sub.shape[0] - 1, 1], [sub.shape[1] - 1, 1], [0, 0]])
            row.append(tf.nn.conv2d(padded, sub, 1, "VALID"))    # [B, n + 1, n + 1, out]
        parities.append(tf.stack(row, axis=3))                    # [B, n + 1, n + 1, 2, out]
    z = tf.stack(parities, axis=2)                                # [B, n + 1, 2, n + 1, 2, out]
    z = tf.reshape(z, [-1, 2 * n + 2, 2 * n + 2, kernel.shape[2]])
    return z[:, top:top + side, top:top + side, :]


def _filter_gradient(x, kernel, dy):
    """d loss / d kernel of conv2d(x, kernel, 2, 'SAME') given dy = d loss / d output."""
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
        strides=[1, STRIDE, STRIDE, 1], padding="SAME")


@tf.custom_gradient
def _conv_small(x, kernel):
    """conv2d(x, kernel, 2, 'SAME') whose input gradient is ``conv_transpose``."""

    def grad(dy):
        return conv_transpose(dy, kernel, x.shape[1]), _filter_gradient(x, kernel, dy)

    return tf.nn.conv2d(x, kernel, STRIDE, "SAME"), grad


def _deconv_small(x, kernel, out_side: int):
    """``conv_transpose`` whose gradients are a forward convolution and a filter gradient
    (as TensorFlow's own for conv2d_transpose)."""

    @tf.custom_gradient
    def deconv(x, kernel):
        def grad(dy):
            return tf.nn.conv2d(dy, kernel, STRIDE, "SAME"), _filter_gradient(dy, kernel, x)

        return conv_transpose(x, kernel, out_side), grad

    return deconv(x, kernel)


def group_rows(x, group: int):
    """[G*group, ...] -> [G, group, ...] (``group`` rows share their batch statistics)."""
    return tf.reshape(x, tf.concat([[-1, group], tf.shape(x)[1:]], 0))


class BatchNorm(tf.Module):
    """Batch normalisation with the statistics of each group of ``group`` rows (NHWC);
    ``group`` 0: of every row of the call (--d_norm joint, where D takes real and generated
    images in one call)."""

    def __init__(self, channels: int, group: int, name: str | None = None):
        super().__init__(name=name)
        self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
        self.beta = tf.Variable(tf.zeros([channels]), name="beta")
        self.group = int(group)

    def __call__(self, x):
        shape = tf.shape(x)
        if self.group == 0 or (x.shape[0] is not None and x.shape[0] == self.group):
            y, _, _, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=self.gamma, offset=self.beta, mean=tf.zeros([0]),
                variance=tf.zeros([0]), epsilon=BN_EPSILON, is_training=True)
            return y
        g = group_rows(x, self.group)
        mean, var = tf.nn.moments(g, axes=[1, 2, 3], keepdims=True)
        y = (g - mean) * (tf.math.rsqrt(var + BN_EPSILON) * self.gamma) + self.beta
        return tf.reshape(y, shape)

    def group_moments(self, x):
        """(mean, variance) [C] of x's channels: each group's batch statistics (what
        ``__call__`` normalises with), averaged over the groups."""
        g = group_rows(x, self.group) if self.group else x[None]
        mean, var = tf.nn.moments(g, axes=[1, 2, 3])
        return tf.reduce_mean(mean, axis=0), tf.reduce_mean(var, axis=0)

    def normalize(self, x, mean, var):
        """x normalised with the given statistics [C] instead of its batch's."""
        return (x - mean) * (tf.math.rsqrt(var + BN_EPSILON) * self.gamma) + self.beta


class LayerNorm(tf.Module):
    """Normalisation of each image's map by its own mean and variance over (H, W, C), with
    a scale and offset per channel: no batch statistics (--d_norm layer)."""

    def __init__(self, channels: int, group: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
        self.beta = tf.Variable(tf.zeros([channels]), name="beta")

    def __call__(self, x):
        mean, var = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + BN_EPSILON) * self.gamma + self.beta


class NoNorm(tf.Module):
    """The identity in a normalisation's place (--d_norm none)."""

    def __init__(self, channels: int = 0, group: int = 0, name: str | None = None):
        super().__init__(name=name)

    def __call__(self, x):
        return x


def JointBatchNorm(channels: int, group: int = 0, name: str | None = None):
    """Batch norm over every row of a call (--d_norm joint)."""
    return BatchNorm(channels, 0, name=name)


NORMS = {"batch": BatchNorm, "joint": JointBatchNorm, "layer": LayerNorm,
         "none": NoNorm, "spectral": NoNorm}  # --d_norm (spectral: see SpectralNorm)


class SpectralNorm(tf.Module):
    """A weight divided by its largest singular value (Miyato et al. 2018; --d_norm
    spectral): ``sn(w)`` reshapes w to [-1, out], takes one power-iteration step from the
    stored estimate ``u`` of its top singular vector on the output side, stores the new
    one and returns w / sigma. The estimate gets no gradient; each call refines it, so after a
    few training steps sigma is the true largest singular value (to within a step of the
    weight's change)."""

    def __init__(self, out_dim: int, name: str | None = None):
        super().__init__(name=name)
        init = tf.math.l2_normalize(tf.ones([1, int(out_dim)]), axis=1)
        self.u = tf.Variable(init, trainable=False, name="u",
                             aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def sigma(self, w):
        """The estimate of w's largest singular value after one more power step (stored)."""
        mat = tf.reshape(w, [-1, w.shape[-1]])
        u = tf.stop_gradient(self.u)
        v = tf.math.l2_normalize(tf.matmul(u, mat, transpose_b=True), axis=1)   # [1, in]
        u = tf.math.l2_normalize(tf.matmul(v, mat), axis=1)                     # [1, out]
        self.u.assign(tf.stop_gradient(u))
        v, u = tf.stop_gradient(v), tf.stop_gradient(u)
        return tf.reduce_sum(tf.matmul(v, mat) * u)

    def __call__(self, w):
        return w / self.sigma(w)


class SNConv(Conv):
    """Conv whose kernel is spectrally normalised at every call."""

    def __init__(self, in_ch: int, out_ch: int, rng=None, trainable: bool = True,
                 bias: bool = True, name: str | None = None):
        super().__init__(in_ch, out_ch, rng, trainable, bias, name)
        self.sn = SpectralNorm(out_ch, name="sn")

    def __call__(self, x):
        y = tf.nn.conv2d(x, self.sn(self.kernel), STRIDE, "SAME")
        return tf.nn.bias_add(y, self.bias) if self.bias is not None else y


class SNDense(Dense):
    """Dense whose weight is spectrally normalised at every call."""

    def __init__(self, in_dim: int, out_dim: int, stddev: float | None = None, rng=None,
                 bias: bool = True, name: str | None = None):
        super().__init__(in_dim, out_dim, stddev, rng, bias, name)
        self.sn = SpectralNorm(out_dim, name="sn")

    def __call__(self, x):
        y = tf.matmul(x, self.sn(self.w))
        return y + self.b if self.b is not None else y


def minibatch_stddev(x, group: int):
    """x [B, H, W, C] with one channel appended: per group of ``group`` rows, the standard
    deviation over the group's rows of every feature, averaged over features and
    positions (Karras et al. 2018), so D sees how alike the images of a batch are."""
    g = group_rows(x, group)                                        # [G, group, H, W, C]
    _, var = tf.nn.moments(g, axes=[1], keepdims=True)
    spread = tf.reduce_mean(tf.sqrt(var + 1e-8), axis=[2, 3, 4], keepdims=True)
    spread = tf.tile(spread, tf.concat([[1, group], tf.shape(x)[1:3], [1]], 0))
    return tf.concat([x, tf.reshape(spread, tf.concat([tf.shape(x)[:3], [1]], 0))], axis=3)


@tf.function(jit_compile=True)
def _pair_similarity(at):
    """[G, D, K, g] (dims, kernels, rows) -> exp(-L1 distance) [G, K, g, g], zero diagonal."""
    l1 = tf.reduce_sum(tf.abs(at[..., :, None] - at[..., None, :]), axis=1)
    return tf.exp(-l1) * (1.0 - tf.eye(at.shape[-1]))


@tf.function(jit_compile=True)
def _pair_similarity_grad(at, w):
    """The gradient w.r.t. ``at`` of -sum(w * L1) for symmetric weights w [G, K, g, g]."""
    return -tf.reduce_sum(w[:, None] * tf.sign(at[..., :, None] - at[..., None, :]), axis=-1)


def minibatch_similarity(activation, group: int):
    """Minibatch-discrimination features (Salimans et al. 2016) per group of rows.

    ``activation`` is [B, kernels, dims]; row i's feature for kernel k is
    sum over the other rows j of its group of exp(-||a_ik - a_jk||_1), divided by
    group * (group - 1): the reference's normaliser (the sum of its off-diagonal mask),
    i.e. the mean over the other rows, scaled by 1 / group.

    The pairwise distances are B x B x kernels x dims numbers (61 M for a batch of 64),
    so forward and gradient are each one XLA-fused pass that never stores them, with the
    gradient written out: d f / d a_i = -sum_j w_ij sign(a_i - a_j), w_ij = s_ij (u_i +
    u_j) / n. Faster than TensorFlow's own gradient of the plain formula (measured in
    docs/SPEED.md, "CausalGAN training").
    """
    kernels, norm = activation.shape[1], float(max(group * (group - 1), 1))

    @tf.custom_gradient
    def features(a):
        at = tf.transpose(group_rows(a, group), [0, 3, 2, 1])     # [G, D, K, g]
        similarity = _pair_similarity(at)                          # [G, K, g, g]

        def grad(upstream):                                        # [B, K]
            u = tf.transpose(group_rows(upstream, group), [0, 2, 1])  # [G, K, g]
            w = similarity * (u[..., :, None] + u[..., None, :]) / norm
            da = tf.transpose(_pair_similarity_grad(at, w), [0, 3, 2, 1])  # [G, g, K, D]
            return tf.reshape(da, tf.shape(a))

        total = tf.transpose(tf.reduce_sum(similarity, axis=-1), [0, 2, 1])  # [G, g, K]
        return tf.reshape(total, [-1, kernels]) / norm, grad

    return features(activation)
