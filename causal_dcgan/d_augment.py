"""Differentiable augmentation of D's inputs (--d_augment; Zhao et al. 2020, "DiffAugment").

D sees every image, real or generated, changed by the same random transformations, and
G's gradient passes through them. D then cannot learn the few real images of a rare
combination (20 bald women among the 20,000 toy faces, shown again and again by
--rare_pair_rate) by heart: it has to judge what a bald crown looks like, whatever the
shift or the missing patch. Because both sides are changed alike, G is not taught to draw
the changes.

    policy "translation,cutout"   parse_policy -> ("translation", "cutout")
    augment(x, policy, rng, p)    x [B, S, S, C] in [-1, 1] -> the same shape, each image
                                  changed with probability p (--d_augment_p), else kept

- translation: each image shifted by up to S / 8 pixels each way (whole pixels), the
  border filled by reflection (a toy face's flat background stays flat);
- cutout: a square of side S / 2, anywhere, set to 0 (grey);
- color: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), per image.
"""

from __future__ import annotations

import tensorflow as tf

from errors import UserError

POLICIES = ("color", "translation", "cutout")  # also the order they are applied in
SHIFT_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(text) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' -> (); unknown names refused."""
    names = tuple(p.strip() for p in str(text or "").split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise UserError(f"--d_augment {text!r}: unknown {', '.join(unknown)}; give a "
                        f"comma-separated list of {', '.join(POLICIES)} (empty: off).")
    return names


def translate(x, rng, ratio: float = SHIFT_RATIO):
    """Each image shifted by its own whole-pixel offset in [-S ratio, S ratio] on both
    axes, reflected at the border."""
    side_h, side_w = int(x.shape[1]), int(x.shape[2])
    pad = max(1, int(round(side_h * ratio)))
    batch = tf.shape(x)[0]
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    offsets = rng.uniform([2, batch], 0, 2 * pad + 1, dtype=tf.int32)
    rows = offsets[0][:, None] + tf.range(side_h)[None, :]
    cols = offsets[1][:, None] + tf.range(side_w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def cutout(x, rng, ratio: float = CUTOUT_RATIO):
    """A square of side S ratio, centred anywhere in the image, set to 0 in each image."""
    side_h, side_w = int(x.shape[1]), int(x.shape[2])
    cut_h, cut_w = int(side_h * ratio + 0.5), int(side_w * ratio + 0.5)
    batch = tf.shape(x)[0]
    centre = rng.uniform([2, batch], 0, 1)
    top = tf.cast(centre[0] * (side_h + 1 - cut_h % 2), tf.int32) - cut_h // 2
    left = tf.cast(centre[1] * (side_w + 1 - cut_w % 2), tf.int32) - cut_w // 2
    ys = tf.range(side_h)[None, :]
    xs = tf.range(side_w)[None, :]
    inside_y = (ys >= top[:, None]) & (ys < top[:, None] + cut_h)   # [B, H]
    inside_x = (xs >= left[:, None]) & (xs < left[:, None] + cut_w)  # [B, W]
    keep = 1.0 - tf.cast(inside_y[:, :, None] & inside_x[:, None, :], x.dtype)
    return x * keep[:, :, :, None]


def color(x, rng):
    """Brightness, saturation and contrast changed per image (DiffAugment's ranges)."""
    batch = tf.shape(x)[0]
    u = rng.uniform([3, batch, 1, 1, 1], dtype=x.dtype)
    x = x + (u[0] - 0.5)
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    x = (x - mean) * (2.0 * u[1]) + mean
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * (u[2] + 0.5) + mean


_FUNCTIONS = {"translation": translate, "cutout": cutout, "color": color}


def augment(x, policy, rng, p: float = 1.0):
    """x [B, S, S, C] with each change of ``policy`` applied in POLICIES' order (as
    DiffAugment) to each image with probability ``p`` (one draw per image for all the
    changes; the others pass unchanged); ``rng`` a tf.random.Generator."""
    changed = x
    for name in sorted(policy, key=POLICIES.index):
        changed = _FUNCTIONS[name](changed, rng)
    if p >= 1.0:
        return changed
    chosen = rng.uniform([tf.shape(x)[0], 1, 1, 1], dtype=x.dtype) < p
    return tf.where(chosen, changed, x)
