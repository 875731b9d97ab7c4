"""Training augmentation of the attribute readers: what an image shows, not its texture.

Generated faces are blurrier, noisier and off in colour compared with real ones; a reader
that learnt "sharp edges mean eyeglasses" would read such an image by its texture. Each
training batch is therefore changed, every change applied to a random half of its images:

- a left-right flip (the faces' attributes are symmetric);
- a shift of up to ``size / 16`` pixels each way, sub-pixel (reflect padding at the border);
- colour jitter: brightness +-20, contrast and saturation x0.8 to x1.25 (no hue change:
  lipstick is red and hair colour carries Young);
- a Gaussian blur of sigma 0.3 to 1.2 pixels at 32x32 (scaled with the size), one sigma
  per batch;
- Gaussian noise of standard deviation up to 20 (on the 0..255 scale), one per image.

Everything works on float batches [B, S, S, C] in [0, 255] and is clipped back into it.
"""

from __future__ import annotations

import math

import tensorflow as tf

PROBABILITY = 0.5  # each change is applied to this share of the images
BRIGHTNESS = 20.0
CONTRAST = (0.8, 1.25)
SATURATION = (0.8, 1.25)
BLUR_SIGMA_32 = (0.3, 1.2)  # pixels at 32x32
NOISE_STD = 20.0


def _chosen(batch, seed: int):
    return tf.random.uniform([batch, 1, 1, 1], seed=seed) < PROBABILITY


def _shift(x, size: int, seed: int):
    pad = max(1, size // 16)
    batch = tf.shape(x)[0]
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    full = float(size + 2 * pad - 1)
    offset = tf.random.uniform([batch, 2], -pad, pad, seed=seed) + pad
    start = offset / full
    end = (offset + size - 1) / full
    boxes = tf.concat([start[:, :1], start[:, 1:], end[:, :1], end[:, 1:]], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(batch), [size, size])


def _colour(x, seed: int):
    batch = tf.shape(x)[0]
    uniform = lambda low, high, k: tf.random.uniform([batch, 1, 1, 1], low, high,  # noqa: E731
                                                     seed=seed + k)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * uniform(*CONTRAST, 1) + mean + uniform(-BRIGHTNESS, BRIGHTNESS, 2)
    if x.shape[-1] == 3:
        gray = tf.reduce_mean(x, axis=3, keepdims=True)
        x = gray + (x - gray) * uniform(*SATURATION, 3)
    return x


def _blur(x, size: int, seed: int):
    scale = size / 32.0
    low, high = BLUR_SIGMA_32[0] * scale, BLUR_SIGMA_32[1] * scale
    radius = max(1, math.ceil(3 * high))
    sigma = tf.random.uniform([], low, high, seed=seed)
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(t / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = x.shape[-1]
    padded = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "VALID")


def augment(x, seed: int = 0):
    """The augmented batch (see the module doc); ``seed`` fixes the op seeds."""
    x = tf.cast(x, tf.float32)
    size = int(x.shape[1])
    batch = tf.shape(x)[0]
    x = tf.where(_chosen(batch, seed), tf.reverse(x, axis=[2]), x)
    x = tf.where(_chosen(batch, seed + 1), _shift(x, size, seed + 2), x)
    x = tf.where(_chosen(batch, seed + 3), _colour(x, seed + 4), x)
    x = tf.where(_chosen(batch, seed + 8), _blur(x, size, seed + 9), x)
    noise = tf.random.normal(tf.shape(x), seed=seed + 10) * tf.random.uniform(
        [batch, 1, 1, 1], 0.0, NOISE_STD, seed=seed + 11)
    x = tf.where(_chosen(batch, seed + 12), x + noise, x)
    return tf.clip_by_value(x, 0.0, 255.0)
