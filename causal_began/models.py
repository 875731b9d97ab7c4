"""The networks of CausalBEGAN (ORIGINAL.md 5.2): generator, autoencoder discriminator, labeler.

All three are ``tf.Module`` trees of plain ``tf.Variable`` weights built eagerly in
``__init__``, so checkpoints and optimizers see every variable before the first step.
They take and return images in NHWC order whatever their internal layout; with
``data_format='channels_first'`` (the GPU layout) they transpose once on the way in and
once on the way out. The variables (names, shapes, order) do not depend on the layout,
so a checkpoint written on a GPU loads on a CPU and back.

Sizes: ``image_size`` is a power of two >= 8, ``repeat_num = log2(image_size) - 2``
blocks of two 3x3 ELU convolutions; the decoders start from 8x8 and upsample by nearest
neighbour, the encoders downsample with stride-2 convolutions.
"""

from __future__ import annotations

import math

import tensorflow as tf

from errors import UserError
from nets import Dense, glorot_uniform

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"


def default_data_format() -> str:
    """NCHW when a GPU is visible (faster there), NHWC on the CPU."""
    return CHANNELS_FIRST if tf.config.list_logical_devices("GPU") else CHANNELS_LAST


def repeat_num_for(image_size: int) -> int:
    """Number of conv blocks for a square image side; UserError unless a power of two >= 8."""
    size = int(image_size)
    if size < 8 or size & (size - 1):
        raise UserError(
            f"--input_scale_size {image_size} is not supported by CausalBEGAN: use a power "
            "of two of at least 8 (8, 16, 32, 64, 128, ...)."
        )
    return int(math.log2(size)) - 2


class Conv(tf.Module):
    """3x3 'SAME' convolution (kernel layout HWIO in both data formats), optional ELU."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, activation: bool = True,
                 data_format: str = CHANNELS_LAST, name: str | None = None):
        super().__init__(name=name)
        self.kernel = tf.Variable(glorot_uniform([3, 3, in_ch, out_ch], 9 * in_ch, 9 * out_ch),
                                  name="kernel")
        self.bias = tf.Variable(tf.zeros([out_ch]), name="bias")
        self.stride = stride
        self.activation = activation
        self.data_format = data_format

    def __call__(self, x):
        fmt = "NCHW" if self.data_format == CHANNELS_FIRST else "NHWC"
        y = tf.nn.conv2d(x, self.kernel, self.stride, "SAME", data_format=fmt)
        y = tf.nn.bias_add(y, self.bias, data_format=fmt)
        return tf.nn.elu(y) if self.activation else y


def upsample_nearest(x, data_format: str):
    """Nearest-neighbour 2x upsampling in either layout (a reshape and a broadcast)."""
    shape = tf.shape(x)
    if data_format == CHANNELS_FIRST:
        b, c, h, w = shape[0], x.shape[1], x.shape[2], x.shape[3]
        y = tf.reshape(x, [b, c, h, 1, w, 1])
        y = tf.broadcast_to(y, [b, c, h, 2, w, 2])
        return tf.reshape(y, [b, c, 2 * h, 2 * w])
    b, h, w, c = shape[0], x.shape[1], x.shape[2], x.shape[3]
    y = tf.reshape(x, [b, h, 1, w, 1, c])
    y = tf.broadcast_to(y, [b, h, 2, w, 2, c])
    return tf.reshape(y, [b, 2 * h, 2 * w, c])


def _to_internal(x, data_format):
    return tf.transpose(x, [0, 3, 1, 2]) if data_format == CHANNELS_FIRST else x


def _to_nhwc(x, data_format):
    return tf.transpose(x, [0, 2, 3, 1]) if data_format == CHANNELS_FIRST else x


class Decoder(tf.Module):
    """Vector -> image: linear to 8x8xn, repeat_num blocks of two convs (upsampling between
    blocks), a final linear conv to ``out_channels``. Used as the generator and as the
    discriminator's decoder."""

    def __init__(self, in_dim: int, hidden_num: int, repeat_num: int, out_channels: int,
                 data_format: str = CHANNELS_LAST, name: str | None = None):
        super().__init__(name=name)
        self.hidden_num = hidden_num
        self.repeat_num = repeat_num
        self.data_format = data_format
        self.fc = Dense(in_dim, 8 * 8 * hidden_num, name="fc")
        self.convs = []
        for i in range(repeat_num):
            for j in range(2):
                self.convs.append(Conv(hidden_num, hidden_num, data_format=data_format,
                                       name=f"conv{i}_{j}"))
        self.out = Conv(hidden_num, out_channels, activation=False, data_format=data_format,
                        name="out")

    def __call__(self, z):
        x = tf.reshape(self.fc(z), [-1, 8, 8, self.hidden_num])  # NHWC, layout-independent
        x = _to_internal(x, self.data_format)
        for i in range(self.repeat_num):
            x = self.convs[2 * i](x)
            x = self.convs[2 * i + 1](x)
            if i < self.repeat_num - 1:
                x = upsample_nearest(x, self.data_format)
        return _to_nhwc(self.out(x), self.data_format)


class Encoder(tf.Module):
    """Image -> vector: conv n; blocks i = 0..repeat_num-1 of two convs of n(i+1) channels
    and (between blocks) a stride-2 conv; flatten (in NHWC order); linear to ``out_dim``."""

    def __init__(self, in_channels: int, hidden_num: int, repeat_num: int, out_dim: int,
                 data_format: str = CHANNELS_LAST, name: str | None = None):
        super().__init__(name=name)
        self.repeat_num = repeat_num
        self.data_format = data_format
        self.first = Conv(in_channels, hidden_num, data_format=data_format, name="first")
        self.convs = []
        prev = hidden_num
        for i in range(repeat_num):
            ch = hidden_num * (i + 1)
            block = [Conv(prev, ch, data_format=data_format, name=f"conv{i}_0"),
                     Conv(ch, ch, data_format=data_format, name=f"conv{i}_1")]
            if i < repeat_num - 1:
                block.append(Conv(ch, ch, stride=2, data_format=data_format, name=f"down{i}"))
            self.convs.append(block)
            prev = ch
        self.flat_dim = 8 * 8 * prev
        self.fc = Dense(self.flat_dim, out_dim, name="fc")

    def __call__(self, images):
        x = self.first(_to_internal(images, self.data_format))
        for block in self.convs:
            for conv in block:
                x = conv(x)
        x = _to_nhwc(x, self.data_format)
        return self.fc(tf.reshape(x, [-1, self.flat_dim]))


class Generator(tf.Module):
    """concat(labels, z_gen) -> image in (roughly) [-1, 1], NHWC."""

    def __init__(self, input_dim: int, hidden_num: int, image_size: int, channels: int,
                 data_format: str = CHANNELS_LAST):
        super().__init__(name="generator")
        self.decoder = Decoder(input_dim, hidden_num, repeat_num_for(image_size), channels,
                               data_format, name="decoder")

    def __call__(self, inputs):
        return self.decoder(inputs)


class Discriminator(tf.Module):
    """The BEGAN autoencoder: returns (reconstruction NHWC, code [B, z_num])."""

    def __init__(self, hidden_num: int, image_size: int, channels: int, z_num: int,
                 data_format: str = CHANNELS_LAST):
        super().__init__(name="discriminator")
        repeat = repeat_num_for(image_size)
        self.encoder = Encoder(channels, hidden_num, repeat, z_num, data_format, name="encoder")
        self.decoder = Decoder(z_num, hidden_num, repeat, channels, data_format, name="decoder")

    def __call__(self, images):
        code = self.encoder(images)
        return self.decoder(code), code


class Labeler(tf.Module):
    """The encoder's shape with one output logit per label."""

    def __init__(self, hidden_num: int, image_size: int, channels: int, n_labels: int,
                 data_format: str = CHANNELS_LAST):
        super().__init__(name="labeler")
        self.encoder = Encoder(channels, hidden_num, repeat_num_for(image_size), n_labels,
                               data_format, name="encoder")

    def __call__(self, images):
        return self.encoder(images)
