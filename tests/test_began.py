"""CausalBEGAN: networks (shapes, ranges, layouts), losses, margins, learning rates, Adam."""

import argparse

import numpy as np
import pytest
import tensorflow as tf

from causal_began import CausalBEGAN as cb
from causal_began.models import Discriminator, Generator, Labeler, repeat_num_for
from errors import UserError
from nets import apply_mean_gradients, make_adam


def began_config(**overrides):
    """The began flags of ORIGINAL.md 2.3 (beta1 0.9 as the reference ran), tiny sizes."""
    values = dict(c_dim=3, conv_hidden_num=4, separate_labeler=True, z_dim=4, z_num=8,
                  batch_size=4, beta1=0.9, beta2=0.999, d_lr=0.00008, g_lr=0.00008,
                  label_loss="squarediff", lr_update_step=100000, max_step=50000,
                  num_iter=250000, optimizer="adam", round_fake_labels=True, gamma=0.5,
                  gamma_label=0.5, lambda_k=0.001, lambda_l=0.00008, lambda_z=0.01,
                  no_third_margin=False, zeta=0.5, is_train=True, build_all=False, log_step=100)
    values.update(overrides)
    return argparse.Namespace(**values)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def batch(size=16, b=4, n=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, [b, size, size, 3]).astype(np.float32)
    real = rng.integers(0, 2, [b, n]).astype(np.float32)
    fake = rng.uniform(0, 1, [b, n]).astype(np.float32)
    z = rng.uniform(-1, 1, [b, 4]).astype(np.float32)
    return images, real, fake, z


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size,n", [(8, 4), (16, 5), (32, 4)])
def test_network_shapes_and_generate_range(size, n):
    cfg = began_config(conv_hidden_num=n)
    model = cb.CausalBEGAN(cfg, ["a", "b", "c"], size, data_format="channels_last", seed=1)
    images, real, fake, z = batch(size)
    out = model.generate(fake, z)
    assert out.shape == (4, size, size, 3)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    recon, code = model.D(cb.to_unit(images))
    assert recon.shape == (4, size, size, 3) and code.shape == (4, 8)
    assert model.labeler(cb.to_unit(images)).shape == (4, 3)
    assert model.reconstruct(images).shape == (4, size, size, 3)
    # the encoder's width grows by n per block and ends at 8x8
    repeat = repeat_num_for(size)
    assert model.D.encoder.fc.w.shape == (8 * 8 * n * repeat, 8)
    assert model.G.decoder.fc.w.shape == (3 + 4, 8 * 8 * n)


def test_generate_maps_outputs_to_pixels_and_clips():
    x = tf.constant([-3.0, -1.0, 0.0, 1.0, 4.0])
    np.testing.assert_allclose(cb.to_pixels(x).numpy(), [0, 0, 127.5, 255, 255])
    np.testing.assert_allclose(cb.to_unit(tf.constant([0.0, 127.5, 255.0])).numpy(), [-1, 0, 1])


@pytest.mark.parametrize("size", [0, 4, 12, 48])
def test_bad_image_size_is_a_user_error(size):
    with pytest.raises(UserError, match="power of two"):
        repeat_num_for(size)


def test_labels_from_the_code_without_a_separate_labeler():
    cfg = began_config(separate_labeler=False, z_num=8)
    model = cb.CausalBEGAN(cfg, ["a", "b", "c"], 8, data_format="channels_last", seed=1)
    assert model.labeler is None
    images, *_ = batch(8)
    x = cb.to_unit(images)
    _, code = model.D(x)
    np.testing.assert_allclose(model.label_logits(x, code).numpy(), code[:, :3].numpy())
    with pytest.raises(UserError, match="z_num"):
        cb.CausalBEGAN(began_config(separate_labeler=False, z_num=2), ["a", "b", "c"], 8)


def _copy(dst, src):
    for d, s in zip(dst.trainable_variables, src.trainable_variables, strict=True):
        d.assign(s)


def test_layouts_share_variables_and_outputs(tmp_path):
    nets = {}
    for fmt in ("channels_first", "channels_last"):
        nets[fmt] = (Generator(7, 4, 16, 3, fmt), Discriminator(4, 16, 3, 8, fmt),
                     Labeler(4, 16, 3, 3, fmt))
    for first, last in zip(nets["channels_first"], nets["channels_last"], strict=True):
        a = [(v.name, tuple(v.shape)) for v in first.trainable_variables]
        b = [(v.name, tuple(v.shape)) for v in last.trainable_variables]
        assert a == b and len(a) > 4
    # a checkpoint of the NCHW nets restores into the NHWC nets
    path = tf.train.Checkpoint(g=nets["channels_first"][0], d=nets["channels_first"][1]).write(
        str(tmp_path / "nchw"))
    tf.train.Checkpoint(g=nets["channels_last"][0], d=nets["channels_last"][1]).read(
        path).assert_existing_objects_matched()
    _copy(nets["channels_last"][2], nets["channels_first"][2])
    z = tf.random.uniform([2, 7], -1, 1)
    images = tf.random.uniform([2, 16, 16, 3], -1, 1)
    try:
        out_first = [nets["channels_first"][0](z), nets["channels_first"][1](images)[0],
                     nets["channels_first"][2](images)]
    except (tf.errors.OpError, tf.errors.InvalidArgumentError) as err:  # no NCHW kernels
        pytest.skip(f"this CPU build has no NCHW convolutions: {err}")
    out_last = [nets["channels_last"][0](z), nets["channels_last"][1](images)[0],
                nets["channels_last"][2](images)]
    for a, b in zip(out_first, out_last, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- losses
def test_l1_loss():
    a, b = np.array([[1.0, -2.0]]), np.array([[0.5, 1.0]])
    assert np.isclose(float(cb.l1_loss(a, b)), (0.5 + 3.0) / 2)


@pytest.mark.parametrize("kind", ["squarediff", "absdiff", "xe"])
def test_label_losses_match_numpy(kind):
    rng = np.random.default_rng(3)
    real_logits = rng.normal(size=(5, 3)).astype(np.float32) * 2
    fake_logits = rng.normal(size=(5, 3)).astype(np.float32) * 2
    real = rng.integers(0, 2, (5, 3)).astype(np.float32)
    fake = np.round(rng.uniform(size=(5, 3))).astype(np.float32)
    fake[0, 0] = 0.3  # a non-rounded value too
    got = [float(v) for v in cb.label_losses(kind, real_logits, real, fake_logits, fake)]
    rp, fp = sigmoid(real_logits), sigmoid(fake_logits)
    if kind == "squarediff":
        want = [np.mean((rp - real) ** 2), np.mean((fp - fake) ** 2), np.mean((fake - fp) ** 2)]
    elif kind == "absdiff":
        want = [np.mean(np.abs(rp - real)), np.mean(np.abs(fp - fake)), np.mean(np.abs(fake - fp))]
    else:
        def sxe(logits, targets):
            return np.mean(targets * -np.log(sigmoid(logits))
                           + (1 - targets) * -np.log(1 - sigmoid(logits)))

        clipped = np.clip(fake, 1e-4, 1 - 1e-4)
        want = [sxe(real_logits, real), sxe(fake_logits, fake),
                sxe(np.log(clipped / (1 - clipped)), fp)]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_unknown_label_loss_is_a_user_error():
    with pytest.raises(UserError, match="label_loss"):
        cb.CausalBEGAN(began_config(label_loss="l2"), ["a"], 8)


def test_d_and_g_losses():
    assert np.isclose(float(cb.d_loss_fn(0.4, 0.3, 0.2, 0.1, 0.5, 0.25)),
                      (0.4 - 0.5 * 0.3) + (0.2 - 0.25 * 0.1))
    assert np.isclose(float(cb.g_loss_fn(0.3, 0.2, 0.1)), 0.3 + 0.1 * 0.2)
    assert np.isclose(float(cb.g_loss_fn(0.3, 0.2, 0.1, no_third_margin=True)), 0.5)


def test_balances_margins_and_measures_by_hand():
    d_real, g_image, d_real_label, d_fake_label = 0.30, 0.05, 0.20, 0.02
    bk, bl, bz = (float(v) for v in cb.balances(d_real, g_image, d_real_label, d_fake_label,
                                                 gamma=0.5, gamma_label=0.5, zeta=0.5))
    assert np.isclose(bk, 0.5 * 0.30 - 0.05)          # 0.10
    assert np.isclose(bl, 0.5 * 0.20 - 0.02)          # 0.08
    assert np.isclose(bz, 0.5 * 0.10 - 0.08)          # -0.03
    # negative balance_k: relu cuts it from balance_z
    _, _, bz2 = cb.balances(0.1, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5)
    assert np.isclose(float(bz2), 0.0)
    assert np.isclose(float(cb.update_margin(0.2, 0.001, bk)), 0.2 + 0.0001)
    assert float(cb.update_margin(0.0, 0.01, -5.0)) == 0.0      # clipped at 0
    assert float(cb.update_margin(0.999, 1.0, 5.0)) == 1.0      # clipped at 1
    m, mc = (float(v) for v in cb.measures(d_real, d_real_label, bk, bl, bz))
    assert np.isclose(m, 0.30 + 0.10)
    assert np.isclose(mc, 0.30 + 0.20 + 0.10 + 0.08 + 0.03)


def test_train_step_updates_margins_from_its_losses():
    cfg = began_config(lambda_k=0.5, lambda_l=0.5, lambda_z=0.5)
    model = cb.CausalBEGAN(cfg, ["a", "b", "c"], 8, data_format="channels_last", seed=2)
    images, real, fake, z = batch(8)
    step = model.make_train_function()
    for _ in range(3):
        k, l_, zt = (float(v.numpy()) for v in (model.k_t, model.l_t, model.z_t))
        out = step((images, real, fake, z))
        # balances come from the losses of this step, margins clip into [0, 1]
        bk = 0.5 * float(out["d_loss_real"]) - float(out["g_loss_image"])
        bl = 0.5 * float(out["d_loss_real_label"]) - float(out["d_loss_fake_label"])
        bz = 0.5 * max(bk, 0) - max(bl, 0)
        assert np.isclose(float(out["balance_k"]), bk, atol=1e-6)
        assert np.isclose(float(model.k_t), np.clip(k + 0.5 * bk, 0, 1), atol=1e-6)
        assert np.isclose(float(model.l_t), np.clip(l_ + 0.5 * bl, 0, 1), atol=1e-6)
        assert np.isclose(float(model.z_t), np.clip(zt + 0.5 * bz, 0, 1), atol=1e-6)
        assert np.isclose(float(out["k_t"]), float(model.k_t))
    assert int(model.step) == 3
    assert float(model.k_t) > 0  # the margins moved


def test_learning_rates_halve_every_lr_update_step():
    cfg = began_config(lr_update_step=2, g_lr=0.001, d_lr=0.002)
    model = cb.CausalBEGAN(cfg, ["a", "b", "c"], 8, data_format="channels_last", seed=2)
    step = model.make_train_function()
    images, real, fake, z = batch(8)
    seen = []
    for _ in range(5):
        out = step((images, real, fake, z))
        seen.append((float(out["g_lr"]), float(model.d_lr)))
    np.testing.assert_allclose(seen, [(0.001, 0.002), (0.0005, 0.001), (0.0005, 0.001),
                                      (0.00025, 0.0005), (0.00025, 0.0005)], rtol=1e-6)


def test_adam_matches_the_formula_with_beta1_taking_effect():
    var = tf.Variable([1.0, -2.0])
    opt = make_adam([var], 0.1, beta1=0.5, beta2=0.9)
    assert len(opt.variables) == 4  # iterations, learning rate, m, v: before any step
    m = v = np.zeros(2)
    x = np.array([1.0, -2.0])
    for t, g in enumerate([np.array([0.5, 1.0]), np.array([-1.0, 0.25])], start=1):
        apply_mean_gradients(opt, [tf.constant(g, tf.float32)], [var])
        m = 0.5 * m + 0.5 * g
        v = 0.9 * v + 0.1 * g * g
        x = x - 0.1 * np.sqrt(1 - 0.9 ** t) / (1 - 0.5 ** t) * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(var.numpy(), x, rtol=1e-5)
    assert int(opt.iterations.numpy()) == 2


def test_train_step_changes_every_network_and_draws_its_own_inputs():
    class FakeController:
        def sample(self, batch_size=None, noise=None):
            labels = tf.fill([batch_size, 3], 0.7)
            return labels, labels

    cfg = began_config()
    model = cb.CausalBEGAN(cfg, ["a", "b", "c"], 8, controller=FakeController(),
                           data_format="channels_last", seed=2)
    before = [v.numpy().copy() for v in model.g_vars + model.d_vars]
    images, real, *_ = batch(8)
    out = model.make_train_function()((images, real))
    after = [v.numpy() for v in model.g_vars + model.d_vars]
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    assert all(changed[: len(model.g_vars)]) and any(changed[len(model.g_vars):])
    assert out["accuracy_fake"].shape == (3,)
    assert np.all(np.isfinite([float(out[k]) for k in ("d_loss", "g_loss", "measure")]))


def test_flop_estimate_grows_with_size():
    small = cb.flops_per_step_estimate(32, 32, 64, 64, 9, 16)
    big = cb.flops_per_step_estimate(64, 128, 64, 64, 9, 16)
    assert big > 10 * small > 0


def test_controller_noise_comes_from_the_model_generator():
    class RecordingController:
        node_names, n_hidden = ["a", "b", "c"], 5

        def __init__(self):
            self.noise = []

        def sample(self, batch_size=None, noise=None):
            self.noise.append(noise)
            return tf.sigmoid(noise[:, :, 0]), noise[:, :, 0]

    cc = RecordingController()
    model = cb.CausalBEGAN(began_config(), ["a", "b", "c"], 8, controller=cc,
                           data_format="channels_last", seed=4)
    first = model.draw_fake_labels(6)
    second = model.draw_fake_labels(6)
    assert cc.noise[0].shape == (6, 3, 5)
    assert set(np.unique(first.numpy())) <= {0.0, 1.0}  # rounded (round_fake_labels)
    assert not np.allclose(cc.noise[0].numpy(), cc.noise[1].numpy())
    assert float(tf.reduce_max(tf.abs(cc.noise[0]))) <= 1.0
    assert first.shape == second.shape == (6, 3)
