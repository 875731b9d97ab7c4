"""Three CausalGAN options measured for #19: --d_augment (the changes by hand, their place
in the update), --d_norm spectral, --draw_bn_batches (drawing each row alone)."""

import numpy as np
import pytest
import tensorflow as tf
from test_dcgan import NAMES, batch, cg_config_parse, dcgan_config

from causal_dcgan import CausalGAN as cg
from causal_dcgan import d_augment
from errors import UserError


def rng(seed=0):
    return tf.random.Generator.from_seed(seed)


def test_policy_is_parsed_and_unknown_names_refused():
    assert d_augment.parse_policy("") == ()
    assert d_augment.parse_policy(" translation, cutout ") == ("translation", "cutout")
    with pytest.raises(UserError, match="--d_augment.*zoom"):
        d_augment.parse_policy("translation,zoom")
    assert cg_config_parse(["--d_augment", "color,cutout"])[0].d_augment == "color,cutout"


def test_translation_shifts_each_image_by_whole_pixels_with_reflected_borders():
    x = tf.random.stateless_uniform([6, 16, 16, 3], seed=[1, 2], minval=-1, maxval=1)
    out = d_augment.translate(x, rng(3)).numpy()
    pad = 2  # 16 / 8
    padded = np.pad(x.numpy(), [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
    shifts = set()
    for b in range(6):  # each image is one window of its reflected padding
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if np.allclose(out[b], padded[b, dy:dy + 16, dx:dx + 16])]
        assert found, f"image {b} is no shift of its input"
        shifts.add(found[0])
    assert len(shifts) > 1  # images get their own offsets
    flat = tf.fill([2, 16, 16, 3], 0.25)  # a flat background stays flat
    np.testing.assert_allclose(d_augment.translate(flat, rng(4)).numpy(), 0.25)


def test_cutout_greys_one_square_of_half_the_side():
    x = tf.ones([8, 16, 16, 3])
    out = d_augment.cutout(x, rng(5)).numpy()
    for b in range(8):
        zero = out[b, :, :, 0] == 0.0
        assert (out[b][~zero] == 1.0).all()
        rows, cols = np.nonzero(zero)
        # a square of side 8, clipped only where it leaves the image
        assert 0 < zero.sum() <= 64
        assert rows.max() - rows.min() + 1 <= 8 and cols.max() - cols.min() + 1 <= 8
        assert zero.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert (out[b, zero] == 0).all()  # every channel


def test_color_changes_images_and_keeps_grey_grey_in_saturation():
    x = tf.random.stateless_uniform([4, 8, 8, 3], seed=[3, 4], minval=-1, maxval=1)
    out = d_augment.color(x, rng(6)).numpy()
    assert out.shape == (4, 8, 8, 3) and not np.allclose(out, x.numpy())
    grey = tf.tile(tf.random.stateless_uniform([4, 8, 8, 1], seed=[5, 6]), [1, 1, 1, 3])
    g = d_augment.color(grey, rng(7)).numpy()
    np.testing.assert_allclose(g[..., 0], g[..., 2], atol=1e-6)  # no colour appears


def test_gradient_passes_through_every_change():
    x = tf.Variable(tf.random.stateless_uniform([4, 16, 16, 3], seed=[7, 8]))
    with tf.GradientTape() as tape:
        y = d_augment.augment(x, ("color", "translation", "cutout"), rng(8))
        loss = tf.reduce_sum(y * y)
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_causalgan_judges_augmented_images_in_training_only():
    images, real, fake, z = batch(16)
    common = dict(schedule="every_step", label_type="discrete", projection_D=True,
                  minibatch_features=False, r1_gamma=1.0)
    plain = cg.CausalGAN(dcgan_config(**common), NAMES, 16, seed=3)
    aug = cg.CausalGAN(dcgan_config(d_augment="translation,cutout", **common), NAMES, 16,
                       seed=3)
    assert aug.d_augment == ("translation", "cutout")
    # the same weights: generation is untouched, training's D outputs differ
    np.testing.assert_allclose(plain.generate(fake, z).numpy(), aug.generate(fake, z).numpy(),
                               atol=1e-3)
    metrics = {}
    for name, model in (("plain", plain), ("aug", aug)):
        fake01, values, zz = model._inputs(4, fake, z)
        metrics[name], grads = model._all_losses_and_grads(
            tf.constant(images), tf.constant(real), fake01, values, zz, tf.identity(model.k_t))
        assert all(g is not None for gs in grads for g in gs)
    assert not np.isclose(float(metrics["plain"]["d_loss"]), float(metrics["aug"]["d_loss"]))
    # the labeler reads the real images as they are
    np.testing.assert_allclose(float(metrics["plain"]["d_loss_real_label"]),
                               float(metrics["aug"]["d_loss_real_label"]), rtol=1e-5)
    out = aug.make_train_function()((images, real, fake, z))
    assert np.isfinite(float(out["d_loss"])) and np.isfinite(float(out["g_loss"]))
    with pytest.raises(UserError, match="--d_augment"):
        cg.CausalGAN(dcgan_config(d_augment="flip"), NAMES, 16, seed=3)


def test_spectral_norm_divides_a_weight_by_its_largest_singular_value():
    from causal_dcgan.ops import SNConv, SpectralNorm
    w = tf.random.stateless_normal([5, 5, 3, 8], seed=[1, 1])
    sn = SpectralNorm(8)
    for _ in range(30):  # power steps, one a call
        normalised = sn(w)
    top = np.linalg.svd(w.numpy().reshape(-1, 8), compute_uv=False)[0]
    np.testing.assert_allclose(np.linalg.svd(normalised.numpy().reshape(-1, 8),
                                             compute_uv=False)[0], 1.0, rtol=1e-3)
    np.testing.assert_allclose(float(sn.sigma(w)), top, rtol=1e-3)
    conv = SNConv(3, 8, tf.random.Generator.from_seed(2))
    with tf.GradientTape() as tape:
        y = conv(tf.ones([2, 8, 8, 3]))
        total = tf.reduce_sum(y)
    assert y.shape == (2, 4, 4, 8)
    grads = tape.gradient(total, conv.trainable_variables)
    assert len(grads) == 2 and all(g is not None for g in grads)  # kernel and bias, not u


def test_spectral_discriminator_judges_each_image_alone_and_trains():
    from causal_dcgan.ops import SNConv, SNDense
    images, real, fake, z = batch(16)
    cfg = dcgan_config(schedule="every_step", label_type="discrete", projection_D=True,
                       minibatch_features=False, d_norm="spectral", r1_gamma=1.0)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=3)
    D = model.D
    assert all(isinstance(layer, SNConv) for layer in (D.h0, D.h1, D.h2, D.h3))
    assert isinstance(D.out, SNDense) and isinstance(D.embed, SNDense)
    x = cg.to_unit(images)
    changed = tf.concat([x[:1], x[1:] * 0.5], axis=0)
    estimates = [v.numpy() for v in D.variables if v.name.startswith("u")]
    assert len(estimates) == 6  # h0-h3, the logit and the projection's embedding
    a, _, _ = D(x, real)
    for v, value in zip([v for v in D.variables if v.name.startswith("u")], estimates,
                        strict=True):
        v.assign(value)  # the same power step in both calls
    b, _, _ = D(changed, real)
    np.testing.assert_allclose(float(a[0, 0]), float(b[0, 0]), atol=1e-5)
    u_before = D.h1.sn.u.numpy().copy()
    out = model.make_train_function()((images, real, fake, z))
    assert np.isfinite(float(out["d_loss"]))
    assert not np.allclose(u_before, D.h1.sn.u.numpy())  # the estimate moves in training


def test_augment_probability_changes_only_that_share_of_images():
    x = tf.random.stateless_uniform([400, 8, 8, 3], seed=[9, 9], minval=-1, maxval=1)
    out = d_augment.augment(x, ("cutout",), rng(10), p=0.3).numpy()
    kept = np.all(out == x.numpy(), axis=(1, 2, 3))
    assert 0.6 < kept.mean() < 0.8  # about 70% pass unchanged
    changed = out[~kept]
    assert (np.sum(changed == 0.0, axis=(1, 2, 3)) > 0).all()  # the others carry a cutout
    with pytest.raises(UserError, match="--d_augment_p"):
        cg.CausalGAN(dcgan_config(d_augment="cutout", d_augment_p=0.0), NAMES, 16, seed=3)


def test_draw_bn_batches_draws_each_row_alone_with_averaged_statistics():
    model = cg.CausalGAN(dcgan_config(draw_bn_batches=3, g_ema=0.5, label_type="discrete"),
                         NAMES, 16, seed=5)
    model.controller = _FixedController()
    rng_np = np.random.default_rng(1)
    labels = rng_np.integers(0, 2, (6, 3)).astype(np.float32)
    z = rng_np.uniform(-1, 1, (6, 4)).astype(np.float32)
    images = model.generate(labels, z).numpy()
    # each row alone: the same image whatever else is drawn beside it
    np.testing.assert_allclose(model.generate(labels[2:3], z[2:3]).numpy(), images[2:3],
                               atol=1e-3)
    same = np.tile(labels[:1], (6, 1))
    np.testing.assert_allclose(model.generate(same, z).numpy()[0], images[0], atol=1e-3)
    # by hand: the batch statistics of 3 batches of 4 rows, averaged, per batch norm
    state = model._draw_stats
    assert int(state.step.numpy()) == int(model.step.numpy())
    state.rng.reset_from_seed(cg.DRAW_STATS_SEED)
    pool = model.prepare_labels(model.controller.draw(state.rng, 12))
    zz = state.rng.uniform([12, 4], -1.0, 1.0)
    h = model.G_ema.fc(model.generator_inputs(cg.label_values(pool), zz))
    h = tf.reshape(h, [12, 1, 1, -1]).numpy().reshape(3, 4, -1)
    mean, var = state.values[0]
    np.testing.assert_allclose(mean.numpy(), h.mean(axis=1).mean(axis=0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(var.numpy(), h.var(axis=1).mean(axis=0), rtol=1e-3,
                               atol=1e-5)
    # measured again once the step moves, not before
    before = mean.numpy().copy()
    model.G_ema.fc.w.assign(model.G_ema.fc.w * 2.0)
    model.generate(labels, z)
    np.testing.assert_allclose(mean.numpy(), before)
    model.step.assign_add(1)
    model.generate(labels, z)
    np.testing.assert_allclose(mean.numpy(), 2.0 * before, rtol=1e-4, atol=1e-6)
    # not part of the checkpoint: a run saved without it opens with it and back
    names = {v.name for v in model.variables}
    assert not any(v is state.step for v in model.variables) and names
    with pytest.raises(UserError, match="--draw_bn_batches"):
        model.set_draw_bn_batches(-1)
    # without a controller (as the padding): random label bits
    alone = cg.CausalGAN(dcgan_config(draw_bn_batches=2), NAMES, 16, seed=6)
    assert alone.generate(labels, z).numpy().shape == (6, 16, 16, 3)


class _FixedController:
    """A controller stand-in: labels from its noise (the first hidden unit's sign)."""
    n_hidden = 1
    node_names = NAMES

    def sample(self, noise=None, batch_size=None):
        return tf.cast(noise[:, :, 0] > 0, tf.float32), None

    def draw(self, rng, n):
        return self.sample(noise=rng.uniform([n, len(NAMES), 1], -1.0, 1.0))[0]
