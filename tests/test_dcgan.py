"""CausalGAN: networks, label noise, losses, k_t, the 3-iteration schedule, labeler
pretraining, stab_proj, padded generation, and two towers against one device."""

import argparse
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from causal_dcgan import CausalGAN as cg
from causal_dcgan import ops
from causal_dcgan.models import MB_KERNELS
from causal_dcgan.ops import BatchNorm, Conv, Deconv, conv_transpose, minibatch_similarity
from errors import UserError
from nets import to_pixels

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["a", "b", "c"]


def dcgan_config(**overrides):
    """The dcgan flags of ORIGINAL.md 2.4, tiny sizes (16x16 images, widths 4)."""
    values = dict(batch_size=4, label_specific_noise=False, fakeLabels_distribution="real_joint",
                  label_type="continuous", round_fake_labels=True,
                  type_input_to_generator="logits", df_dim=4, gf_dim=16, c_dim=3, z_dim=4,
                  loss_function=1, critic_hidden_size=10, reconstr_loss=False, stab_proj=False,
                  n_stab_proj=256, num_iter=10, learning_rate=0.0002, beta1=0.5,
                  off_label_losses=False, pretrain_LabelerR=False,
                  pretrain_LabelerR_no_of_iters=15000, lambda_m=0.05, lambda_k=0.05,
                  lambda_l=0.001, gamma_m=-1.0, gamma_k=-1.0, gamma_l=-1.0, tau=3000.0,
                  is_train=True, log_step=1)
    values.update(overrides)
    return argparse.Namespace(**values)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_sxe(logits, targets):
    return -(targets * np.log(sigmoid(logits)) + (1 - targets) * np.log(1 - sigmoid(logits)))


def np_logit(p):
    return -np.log(1.0 / (p + 1e-6) - 1.0)


def batch(size=16, b=4, n=3, z_dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, [b, size, size, 3]).astype(np.float32),
            rng.integers(0, 2, [b, n]).astype(np.float32),
            rng.uniform(0, 1, [b, n]).astype(np.float32),
            rng.uniform(-1, 1, [b, z_dim]).astype(np.float32))


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size,stab", [(16, False), (32, True)])
def test_network_shapes_and_ranges(size, stab):
    cfg = dcgan_config(gf_dim=size, stab_proj=stab, n_stab_proj=6)
    model = cg.CausalGAN(cfg, NAMES, size, seed=1)
    images, real, fake, z = batch(size)
    out = model.generate(fake, z)
    assert out.shape == (4, size, size, 3)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    x = cg.to_unit(images)
    g = model.G(model.generator_inputs(cg.label_values(fake), z))
    assert g.shape == (4, size, size, 3) and float(tf.reduce_max(tf.abs(g))) <= 1.0  # tanh
    logits, features, _ = model.D(x)
    assert logits.shape == (4, 1) and features.shape == (4, size // 4, size // 4, 8)
    assert model.labeler(x).shape == (4, 3) and model.anti_labeler(x).shape == (4, 3)
    assert model.z_estimator(features).shape == (4, 4)
    # generator: linear to s/16 x s/16 x 8g, then 8g -> 4g -> 2g -> g -> channels
    g_dim = size
    assert model.G.fc.w.shape == (4 + 3, (size // 16) ** 2 * 8 * g_dim)
    assert [d.kernel.shape[2:] for d in model.G.deconvs] == [
        (4 * g_dim, 8 * g_dim), (2 * g_dim, 4 * g_dim), (g_dim, 2 * g_dim), (3, g_dim)]
    # discriminator: the second conv sees the 300 minibatch channels appended to 2d
    assert model.D.h2.kernel.shape[2] == 8 + MB_KERNELS
    assert model.D.h0.kernel.shape[-1] == (6 if stab else 4)


def test_weights_are_normal_with_stddev_002():
    model = cg.CausalGAN(dcgan_config(gf_dim=32, df_dim=8), NAMES, 32, seed=3)
    w = model.G.deconvs[1].kernel.numpy()
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002
    conv = model.D.h3.kernel.numpy()  # truncated at two standard deviations
    assert np.abs(conv).max() <= 0.04 + 1e-6
    assert model.D.h3.bias is None and np.all(model.D.mb0.bias.numpy() == 0)  # BN follows h3


def test_bad_flags_are_user_errors():
    with pytest.raises(UserError, match="label_specific_noise"):
        cg.CausalGAN(dcgan_config(label_specific_noise=True), NAMES, 16)
    with pytest.raises(UserError, match="--gf_dim 32"):
        cg.CausalGAN(dcgan_config(gf_dim=16), NAMES, 32)
    with pytest.raises(UserError, match="loss_function"):
        cg.CausalGAN(dcgan_config(loss_function=6), NAMES, 16)
    with pytest.raises(UserError, match="--g_ema"):
        cg.CausalGAN(dcgan_config(g_ema=1.0), NAMES, 16)


def test_batch_norm_uses_the_statistics_of_each_group():
    bn = BatchNorm(2, group=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 2, 2)).astype(np.float32) * 3 + 1
    got = bn(tf.constant(x)).numpy()
    for rows in (slice(0, 3), slice(3, 6)):
        part = x[rows]
        mean, var = part.mean(axis=(0, 1, 2)), part.var(axis=(0, 1, 2))
        np.testing.assert_allclose(got[rows], (part - mean) / np.sqrt(var + 1e-5), atol=1e-4)
    # the fused kernel (one group) agrees with the grouped computation
    np.testing.assert_allclose(bn(tf.constant(x[:3])).numpy(), got[:3], atol=1e-5)


def test_minibatch_similarity_by_hand():
    a = np.random.default_rng(1).normal(size=(6, 2, 3)).astype(np.float32)
    got = minibatch_similarity(tf.constant(a), group=3).numpy()
    want = np.zeros((6, 2))
    for start in (0, 3):
        for i in range(start, start + 3):
            for j in range(start, start + 3):
                if i != j:
                    want[i] += np.exp(-np.abs(a[i] - a[j]).sum(axis=1))
    np.testing.assert_allclose(got, want / (3 * 2), rtol=1e-5)


def test_minibatch_similarity_gradient_matches_autodiff_of_the_formula():
    a = tf.constant(np.random.default_rng(2).normal(size=(6, 4, 5)).astype(np.float32) * 0.3)
    u = tf.constant(np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32))

    def plain(x):
        g = tf.reshape(x, [2, 3, 4, 5])
        s = tf.exp(-tf.reduce_sum(tf.abs(g[:, :, None] - g[:, None, :]), -1))
        s = s * (1.0 - tf.eye(3))[None, :, :, None]
        return tf.reshape(tf.reduce_sum(s, 2), [6, 4]) / 6.0

    grads = []
    for fn in (lambda x: minibatch_similarity(x, 3), plain):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(fn(a) * u)
        grads.append(tape.gradient(loss, a).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize("n, side", [(1, 2), (2, 4), (4, 8), (4, 7), (3, 5), (8, 16)])
def test_sub_pixel_transposed_convolution_equals_tensorflows(n, side):
    rng = np.random.default_rng(n * 100 + side)
    x = tf.constant(rng.normal(size=[3, n, n, 6]), tf.float32)
    kernel = tf.constant(rng.normal(size=[5, 5, 4, 6]), tf.float32)
    expected = tf.nn.conv2d_transpose(x, kernel, [3, side, side, 4], 2, "SAME")
    np.testing.assert_allclose(conv_transpose(x, kernel, side), expected, rtol=1e-4, atol=1e-4)


def _value_and_gradients(fn, inp, variables, seed):
    with tf.GradientTape() as tape:
        tape.watch(inp)
        y = fn(inp)
        w = tf.constant(np.random.default_rng(seed).normal(size=y.shape), tf.float32)
        loss = tf.reduce_sum(tf.sin(y) * w)
    return [y, *tape.gradient(loss, [inp, *variables])]


@pytest.mark.parametrize("side", [8, 7, 4, 2])
def test_small_map_layers_match_tensorflows_values_and_gradients(side, monkeypatch):
    # with SMALL_SIDE 4, Conv to maps of side <= 4 and Deconv from maps of side 2..4 take
    # the sub-pixel path (off by default: TensorFlow's kernels are faster on AVX-512)
    monkeypatch.setattr(ops, "SMALL_SIDE", 4)
    rng = np.random.default_rng(side)
    small = -(-side // 2)
    conv, deconv = Conv(5, 7, name="c"), Deconv(7, 5, name="d")
    x = tf.constant(rng.normal(size=[4, side, side, 5]), tf.float32)
    h = tf.constant(rng.normal(size=[4, small, small, 7]), tf.float32)
    pairs = (
        (conv, lambda x: tf.nn.bias_add(tf.nn.conv2d(x, conv.kernel, 2, "SAME"), conv.bias),
         x, conv.trainable_variables),
        (lambda h: deconv(h, side),
         lambda h: tf.nn.bias_add(tf.nn.conv2d_transpose(
             h, deconv.kernel, [4, side, side, 5], 2, "SAME"), deconv.bias),
         h, deconv.trainable_variables))
    for mine, native, inp, variables in pairs:
        ours = _value_and_gradients(mine, inp, variables, side)
        theirs = _value_and_gradients(native, inp, variables, side)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_discrete_mapping_is_exact():
    model = cg.CausalGAN(dcgan_config(label_type="discrete"), NAMES, 16, seed=0)
    labels = tf.constant([[0.0, 1.0, 0.2], [0.9, 0.4, 1.0]])
    prepared = model.prepare_labels(labels)  # rounded
    values = model.noisy_values(prepared).numpy()
    np.testing.assert_array_equal(values, np.float32([[0.3, 0.7, 0.3], [0.7, 0.3, 0.7]]))


def test_continuous_noise_stays_inside_and_is_shared_by_a_row():
    model = cg.CausalGAN(dcgan_config(), NAMES, 16, seed=0)
    rows = 20000
    labels = tf.constant(np.tile([[0.0, 1.0, 0.0]], (rows, 1)), tf.float32)
    values = model.noisy_values(labels).numpy()
    assert values.min() > 0.0 and values.max() < 1.0
    # one (s, t) per row: value(0) = 0.3 + s - t and value(1) = 0.7 - s + t
    np.testing.assert_allclose(values[:, 0], values[:, 2], atol=1e-7)
    np.testing.assert_allclose(values[:, 0] - 0.3, 0.7 - values[:, 1], atol=1e-6)
    assert values[:, 0].std() > 0.05  # but it differs between rows
    s, t = (v.numpy().ravel() for v in model.draw_label_noise(rows))
    for sample, rate, right in ((s, 5.0, 0.2), (t, 15.0, 0.3)):
        assert sample.min() >= 0.0 and sample.max() <= right + 1e-6
        mean = 1.0 / rate - right / math.expm1(rate * right)  # truncated exponential
        assert abs(sample.mean() - mean) < 0.004, (sample.mean(), mean)
    u = tf.constant([0.0, 0.5, 0.999999])
    np.testing.assert_allclose(cg.truncated_exponential(u, 5.0, 0.2).numpy(),
                               [0.0, -np.log(1 - (1 - np.exp(-1)) * 0.5) / 5, 0.2], atol=1e-5)


@pytest.mark.parametrize("kind", ["logits", "labels"])
def test_generator_input_is_noise_first_then_labels(kind):
    model = cg.CausalGAN(dcgan_config(type_input_to_generator=kind), NAMES, 16, seed=0)
    values = tf.constant([[0.3, 0.7, 0.45]])
    z = tf.constant([[0.1, 0.2, 0.3, 0.4]])
    got = model.generator_inputs(values, z).numpy()
    labels = np_logit(values.numpy()) if kind == "logits" else values.numpy()
    np.testing.assert_allclose(got, np.concatenate([z.numpy(), labels], 1), rtol=1e-5)


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("kind", range(6))
def test_loss_functions_by_hand(kind):
    rng = np.random.default_rng(kind)
    d_fake = rng.normal(size=(5, 1)).astype(np.float32)
    lab_fake = rng.normal(size=(5, 3)).astype(np.float32)
    values = rng.uniform(0.1, 0.9, size=(5, 3)).astype(np.float32)
    gan = {0: np.mean(-np_sxe(d_fake, 0) + np_sxe(d_fake, 1)), 1: np.mean(np_sxe(d_fake, 1)),
           2: np.mean(-np_sxe(d_fake, 0))}[kind % 3]
    labels = (np.mean(np_sxe(np_logit(values), sigmoid(lab_fake))) if kind < 3
              else np.mean(np_sxe(lab_fake, values)))
    assert np.isclose(float(cg.gan_loss(kind, d_fake)), gan, rtol=1e-5)
    assert np.isclose(float(cg.labeler_loss_for_g(kind, values, lab_fake)), labels, rtol=1e-5)


def test_the_other_losses_by_hand():
    rng = np.random.default_rng(9)
    d_real, d_fake = rng.normal(size=(4, 1)), rng.normal(size=(4, 1))
    total, real, fake = (float(v) for v in cg.d_loss_fn(d_real, d_fake))
    assert np.isclose(real, np.mean(np_sxe(d_real, 1))) and np.isclose(fake, np.mean(np_sxe(d_fake, 0)))
    assert np.isclose(total, real + fake)
    values = rng.uniform(0.1, 0.9, (4, 3)).astype(np.float32)
    anti = rng.normal(size=(4, 3)).astype(np.float32)
    assert np.isclose(float(cg.anti_labeler_loss(values, anti)),
                      np.mean(np_sxe(np_logit(values), sigmoid(anti))), rtol=1e-5)
    z, z_hat = rng.uniform(-1, 1, (4, 2)), rng.uniform(-1, 1, (4, 2))
    assert np.isclose(float(cg.z_loss(z, z_hat)), np.mean((z - z_hat) ** 2))
    assert np.isclose(float(cg.g_loss_fn(0.5, 0.3, 0.2, 0.1, 0.9)), 0.5 - 0.9 * 0.2 + 0.3)
    assert np.isclose(float(cg.g_loss_fn(0.5, 0.3, 0.2, 0.1, 0.9, off_label_losses=True)), 0.5)
    assert np.isclose(float(cg.g_loss_fn(0.5, 0.3, 0.2, 0.1, 0.9, reconstr_loss=True)),
                      0.5 - 0.9 * 0.2 + 0.3 + 0.1)
    assert np.isclose(cg.decay_k(1.0, 3000), math.exp(-1 / 3000))


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained():
    """Five iterations with two of labeler pretraining, stab_proj, tau 2; a record of each."""
    cfg = dcgan_config(stab_proj=True, n_stab_proj=5, pretrain_LabelerR=True,
                       pretrain_LabelerR_no_of_iters=2, tau=2.0, reconstr_loss=True)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=5)
    images, real, fake, z = batch(16)
    train = model.make_train_function()
    nets = {"G": model.G, "D": model.D, "labeler": model.labeler,
            "anti_labeler": model.anti_labeler, "z_estimator": model.z_estimator}
    optimizers = dict(zip(nets, (opt for _, opt in model.networks()), strict=True))
    stab_before = model.D.h0.kernel.numpy().copy()
    records = []
    for _ in range(5):
        kind = model.iteration_kind(int(model.step.numpy()))
        before = {k: [v.numpy().copy() for v in n.trainable_variables] for k, n in nets.items()}
        out = train((images, real, fake, z))
        changed = {k: any(not np.array_equal(a, v.numpy())
                          for a, v in zip(before[k], n.trainable_variables, strict=True))
                   for k, n in nets.items()}
        records.append({"kind": kind, "changed": changed, "k_t": float(model.k_t.numpy()),
                        "out": {k: v.numpy() for k, v in out.items()},
                        "updates": {k: int(o.iterations.numpy()) for k, o in optimizers.items()}})
    return model, records, stab_before


def test_schedule_counts_generator_and_discriminator_updates(trained):
    model, records, _ = trained
    assert [r["kind"] for r in records] == ["labeler", "labeler", "g_g", "g_all", "g_g"]
    assert int(model.step.numpy()) == 5
    counts = [r["updates"] for r in records]
    assert [c["G"] for c in counts] == [0, 0, 2, 4, 6]       # two G updates every iteration
    assert [c["D"] for c in counts] == [0, 0, 0, 1, 1]       # D only on steps divisible by 3
    for name in ("anti_labeler", "z_estimator"):
        assert [c[name] for c in counts] == [0, 0, 0, 1, 1]
    assert [c["labeler"] for c in counts] == [1, 2, 2, 3, 3]
    assert model.iteration_kind(6) == "g_all" and model.iteration_kind(7) == "g_g"


def test_labeler_pretraining_trains_only_the_labeler(trained):
    _, records, _ = trained
    for r in records[:2]:
        assert r["changed"] == {"G": False, "D": False, "labeler": True, "anti_labeler": False,
                                "z_estimator": False}
    assert records[3]["changed"] == dict.fromkeys(records[3]["changed"], True)
    assert records[2]["changed"]["G"] and not records[2]["changed"]["D"]
    assert np.all(np.isfinite(records[3]["out"]["d_loss"]))
    assert np.isnan(records[0]["out"]["d_loss"])  # not computed yet
    assert np.isfinite(records[0]["out"]["d_loss_real_label"])


def test_k_t_starts_at_one_and_decays_once_per_iteration(trained):
    _, records, _ = trained
    got = [r["k_t"] for r in records]
    np.testing.assert_allclose(got, [1, 1, math.exp(-1 / 2), math.exp(-2 / 2), math.exp(-3 / 2)],
                               rtol=1e-6)
    assert np.isclose(records[-1]["out"]["k_t"], got[-1])


def test_stab_proj_is_fixed_and_saved(trained, tmp_path):
    model, _, stab_before = trained
    np.testing.assert_array_equal(model.D.h0.kernel.numpy(), stab_before)
    assert not any(v is model.D.h0.kernel for v in model.D.trainable_variables)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ck"))
    names = [n for n, _ in tf.train.list_variables(path)]
    assert any("stab_proj" in n or "h0/kernel" in n for n in names)


def test_generation_pads_to_full_batches_deterministically(trained):
    model, _, _ = trained
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (22, 3)).astype(np.float32)
    z = rng.uniform(-1, 1, (22, 4)).astype(np.float32)
    many = model.generate(labels, z).numpy()
    assert many.shape == (22, 16, 16, 3)
    np.testing.assert_array_equal(model.generate(labels, z).numpy(), many)  # no label noise
    one = model.generate(labels[:1], z[:1]).numpy()
    # a full batch is generated as it is; a short one is completed by the fixed individuals
    full = model.generate(labels[:4], z[:4]).numpy()
    direct = cg.to_pixels(model.G(model.generator_inputs(cg.label_values(labels[:4]), z[:4])))
    np.testing.assert_allclose(full, direct.numpy(), atol=1e-3)
    pad_values = model._padding_values(3)
    padded = model.G(model.generator_inputs(
        tf.concat([cg.label_values(labels[:1]), pad_values], 0),
        tf.concat([z[:1], model.pad_z[:3]], 0)))
    np.testing.assert_allclose(one[0], cg.to_pixels(padded).numpy()[0], atol=1e-3)


def test_one_image_and_a_batch_of_22_come_from_the_same_distribution():
    model = cg.CausalGAN(dcgan_config(batch_size=32), NAMES, 16, seed=5)
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (22, 3)).astype(np.float32)
    z = rng.uniform(-1, 1, (22, 4)).astype(np.float32)
    many = model.generate(labels, z).numpy()
    one = model.generate(labels[:1], z[:1]).numpy()
    spread = np.mean([np.abs(many[0] - many[i]).mean() for i in range(1, 22)])
    assert np.abs(one[0] - many[0]).mean() < 0.4 * spread  # measured 0.29 (0.16 at 64)


def test_generate_is_differentiable_in_labels_and_noise(trained):
    model, _, _ = trained
    labels = tf.Variable([[0.2, 0.9, 0.5]])
    z = tf.Variable([[0.1, -0.3, 0.5, 0.0]])
    with tf.GradientTape() as tape:
        out = tf.reduce_mean(model.generate(labels, z, round_labels=False))
    g_labels, g_z = tape.gradient(out, [labels, z])
    assert g_labels is not None and g_z is not None
    assert np.all(np.isfinite(g_labels.numpy())) and np.abs(g_z.numpy()).sum() > 0


# ----------------------------------------------------------------------------- towers
TOWERS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from trainer import split_cpu
    split_cpu(2)
    from causal_dcgan.CausalGAN import CausalGAN
    from test_dcgan import dcgan_config

    cfg = dcgan_config(label_type="discrete", learning_rate=0.1, tau=5.0)
    names = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(2):  # a g_all iteration (step 0), then a g_g one
        steps.append((rng.uniform(0, 255, [8, 16, 16, 3]).astype(np.float32),
                      rng.integers(0, 2, [8, 3]).astype(np.float32),
                      rng.integers(0, 2, [8, 3]).astype(np.float32),
                      rng.uniform(-1, 1, [8, 4]).astype(np.float32)))

    single = CausalGAN(cfg, names, 16, seed=1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        towers = CausalGAN(cfg, names, 16, seed=1)
    for dst, src in zip(towers.variables, single.variables, strict=True):
        dst.assign(src)
    for model in (single, towers):  # see the test's docstring
        for _, optimizer in model.networks():
            optimizer.epsilon = 1.0
    g_init = single.G.fc.w.numpy().copy()
    one = single.make_train_function()
    two = towers.make_train_function(strategy)
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(tuple(np.stack(x) for x in zip(*steps))).unbatch()
        .batch(8))
    it = iter(data)
    for b in steps:
        out1 = one(b)
        out2 = two(next(it))

    def values(model, replica):
        return [strategy.experimental_local_results(v)[replica].numpy()
                if replica is not None else v.numpy() for v in model.variables]

    diffs = [float(np.max(np.abs(a - b))) if a.size else 0.0
             for r in (0, 1)
             for a, b in zip(values(single, None), values(towers, r), strict=True)
             if a.dtype.kind == "f"]
    print(json.dumps({{
        "max_diff": max(diffs), "n_vars": len(diffs),
        "loss1": float(out1["g_loss"]), "loss2": float(out2["g_loss"]),
        "d1": float(out1["d_loss"]), "d2": float(out2["d_loss"]),
        "steps": [int(single.step.numpy()), int(towers.step.numpy())],
        "g_updates": int(towers.g_optimizer.iterations.numpy()),
        "replicas": strategy.num_replicas_in_sync,
        "moved": float(np.max(np.abs(single.G.fc.w.numpy() - g_init))),
    }}))
""")


def test_two_towers_equal_one_device_on_the_concatenated_batch(tmp_path):
    """A g_all and a g_g iteration on two logical CPUs against one device on 2x the rows.

    Adam with epsilon 1e-8 turns rounding noise in near-zero gradient entries into steps
    of up to the learning rate (measured: 1.5e-3 apart at lr 1e-3 after one g_all
    iteration, while the gradients agreed to 1e-7). With epsilon 1 Adam's step is a
    smooth function of the gradient, so the comparison checks the distribution itself:
    batch statistics per tower, the all-reduce and every device's copy of the update.
    """
    script = tmp_path / "towers.py"
    script.write_text(TOWERS.format(root=str(ROOT), tests=str(ROOT / "tests")))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=240, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["steps"] == [2, 2] and out["g_updates"] == 4
    assert out["n_vars"] > 100
    assert out["max_diff"] < 2e-5, out
    assert abs(out["loss1"] - out["loss2"]) < 1e-5 and abs(out["d1"] - out["d2"]) < 1e-5
    assert out["moved"] > 1e-4


# ----------------------------------------------------------------------------- differences
def test_every_step_schedule_updates_each_network_once_per_iteration():
    # with --g_ema 0.75: each iteration also moves the average of G's weights
    cfg = dcgan_config(schedule="every_step", tau=2.0, g_ema=0.75)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=6)
    images, real, fake, z = batch(16)
    train = model.make_train_function()
    for a, b in zip(model.G_ema.variables, model.G.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the average starts as G
    for _ in range(3):
        assert model.iteration_kind(int(model.step.numpy())) == "all"
        average = [v.numpy().copy() for v in model.G_ema.variables]
        out = train((images, real, fake, z))
        for old, new, ema in zip(average, model.G.variables, model.G_ema.variables,
                                 strict=True):
            np.testing.assert_allclose(ema.numpy(), 0.75 * old + 0.25 * new.numpy(),
                                       rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a.numpy(), b.numpy())
               for a, b in zip(model.G_ema.variables, model.G.variables, strict=True))
    # generate() draws with the average, not with G
    values = cg.label_values(model.prepare_labels(fake))
    drawn = model.generate(fake, z).numpy()
    by_ema = to_pixels(model.G_ema(model.generator_inputs(values, z))).numpy()
    by_g = to_pixels(model.G(model.generator_inputs(values, z))).numpy()
    np.testing.assert_allclose(drawn, by_ema, atol=1e-3)
    assert np.abs(drawn - by_g).max() > 1e-3
    assert int(model.step.numpy()) == 3
    assert [int(opt.iterations.numpy()) for _, opt in model.networks()] == [3] * 5
    assert np.isclose(float(out["k_t"]), math.exp(-3 / 2), rtol=1e-6)
    assert np.isfinite(float(out["d_loss"])) and np.isfinite(float(out["g_loss"]))


def test_discriminator_without_minibatch_features():
    cfg = dcgan_config(minibatch_features=False)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=7)
    assert not hasattr(model.D, "mb_lin")
    assert model.D.h2.kernel.shape[2] == 2 * cfg.df_dim  # only h1's channels go in
    with_mb = cg.CausalGAN(dcgan_config(), NAMES, 16, seed=7)
    assert with_mb.D.h2.kernel.shape[2] == 2 * cfg.df_dim + MB_KERNELS
    logits, _, labels = model.D(cg.to_unit(batch(16)[0]))
    assert logits.shape == (4, 1) and labels is None


def test_labeler_as_discriminator_head_learns_from_real_and_generated_images():
    cfg = dcgan_config(schedule="every_step", labeler_shares_D=True, labeler_on_fakes=True)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=8)
    assert model.labeler is None and model.labeler_optimizer is None
    assert [net.name for net, _ in model.networks()] == [
        "generator", "discriminator", "anti_labeler", "z_estimator"]
    images, real, fake, z = batch(16)
    x = cg.to_unit(images)
    # before the update, by hand: the head on D's last layer reading the real images
    real_logits = model.D(x)[2].numpy()
    head_before = model.D.label_head.w.numpy().copy()
    out = model.make_train_function()((images, real, fake, z))
    np.testing.assert_allclose(float(out["d_loss_real_label"]),
                               np_sxe(real_logits, real).mean(), rtol=1e-4)
    assert np.isfinite(float(out["d_loss_fake_label"])) and float(out["d_loss_fake_label"]) > 0
    assert not np.array_equal(head_before, model.D.label_head.w.numpy())
    assert model.read_labels(x).shape == (4, 3)
    hist = model.diagnostics(images, real, fake, z)["histograms"]
    assert hist["real_prob"].shape == (4, 3) and hist["fake_prob"].shape == (4, 3)


def test_labeler_on_fakes_changes_the_labeler_update_by_the_generated_images_term():
    """Same seed and inputs: the separate labeler's gradient with --labeler_on_fakes is
    the real-image gradient plus the gradient of sxe(labeler(G), drawn labels)."""
    images, real, fake, z = batch(16)
    grads = {}
    for on_fakes in (False, True):
        cfg = dcgan_config(schedule="every_step", label_type="discrete",
                           labeler_on_fakes=on_fakes)
        model = cg.CausalGAN(cfg, NAMES, 16, seed=9)
        fake01, values, zz = model._inputs(4, fake, z)
        _, g = model._all_losses_and_grads(tf.constant(images), tf.constant(real), fake01,
                                           values, zz, tf.identity(model.k_t))
        grads[on_fakes] = g[2]
        if on_fakes:
            with tf.GradientTape() as tape:
                gen = model.G(model.generator_inputs(values, zz))
                loss = tf.reduce_mean(cg.sxe(model.labeler(gen), fake01))
            extra = tape.gradient(loss, model.labeler.trainable_variables)
    for a, b, e in zip(grads[False], grads[True], extra, strict=True):
        np.testing.assert_allclose(b.numpy(), (a + e).numpy(), rtol=1e-3, atol=1e-6)


def test_projection_discriminator_judges_image_label_pairs():
    cfg = dcgan_config(schedule="every_step", projection_D=True, minibatch_features=False)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=10)
    images, real, fake, z = batch(16)
    x = cg.to_unit(images)
    plain, _, _ = model.D(x)
    # by hand: logit(x, y) = logit(x) + <embed(2y - 1), D's last features>
    embed = model.D.embed.w.numpy()
    assert embed.shape[0] == 3 and model.D.embed.b is None
    flip = np.ones_like(real) - real
    a, _, _ = model.D(x, real)
    b, _, _ = model.D(x, flip)
    assert not np.allclose(a.numpy(), b.numpy())
    # the projection is linear in the signs: logit(y) + logit(1 - y) = 2 logit(x) (no labels)
    np.testing.assert_allclose((a + b).numpy(), 2 * plain.numpy(), rtol=1e-4, atol=1e-5)
    before = embed.copy()
    out = model.make_train_function()((images, real, fake, z))
    assert np.isfinite(float(out["d_loss"])) and not np.array_equal(before, model.D.embed.w.numpy())
    hist = model.diagnostics(images, real, fake, z)["histograms"]
    assert hist["d_real"].shape == (4, 1)


def test_label_weights_resample_the_controllers_labels():
    class RareController:  # each label 1 with probability 0.05, independently
        node_names, n_hidden = NAMES, 2

        def sample(self, batch_size=None, noise=None):
            labels = tf.cast(noise[:, :, 0] > 0.9, tf.float32)
            return labels, labels

    model = cg.CausalGAN(dcgan_config(), NAMES, 16, controller=RareController(), seed=3)
    plain = np.concatenate([model.draw_fake_labels(500).numpy() for _ in range(4)])
    model.label_weights = tf.constant([[1.0, 9.0], [1.0, 1.0], [1.0, 1.0]])
    weighted = np.concatenate([model.draw_fake_labels(500).numpy() for _ in range(4)])
    assert weighted.shape == (2000, 3)
    assert abs(plain[:, 0].mean() - 0.05) < 0.02
    # 9 x 0.05 / (9 x 0.05 + 0.95) = 0.32: the weighted label is shown about that often
    assert abs(weighted[:, 0].mean() - 0.32) < 0.05
    assert abs(weighted[:, 1].mean() - 0.05) < 0.025  # the others keep their rate
    # pair weights ([n, 2, n, 2], --rare_pair_rate): labels 0 and 1 together (0.25%)
    pairs = np.ones((3, 2, 3, 2), np.float32)
    pairs[0, 1, 1, 1] = pairs[1, 1, 0, 1] = 50.0
    model.label_weights = tf.constant(pairs)
    both = np.concatenate([model.draw_fake_labels(500).numpy() for _ in range(4)])
    # 50 x 0.0025 / (50 x 0.0025 + 0.9975) = 0.11 (from pools of 32 draws per row)
    assert abs((both[:, 0] * both[:, 1]).mean() - 0.11) < 0.04
    assert abs(both[:, 2].mean() - 0.05) < 0.025


def test_resize_generator_doubles_by_nearest_neighbour_and_a_reflected_3x3_conv():
    from causal_dcgan.models import ResizeConv

    layer = ResizeConv(2, 3, tf.random.Generator.from_seed(1), name="up")
    x = tf.random.stateless_normal([2, 4, 4, 2], seed=[1, 2])
    y = layer(x, 8).numpy()
    # by hand: repeat every pixel 2x2, reflect one pixel at the borders, 3x3 'VALID'
    up = np.repeat(np.repeat(x.numpy(), 2, axis=1), 2, axis=2)
    padded = np.pad(up, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    k = layer.kernel.numpy()
    expect = np.zeros([2, 8, 8, 3], np.float32)
    for i in range(8):
        for j in range(8):
            expect[:, i, j] = np.einsum("bhwc,hwco->bo", padded[:, i:i + 3, j:j + 3], k)
    np.testing.assert_allclose(y, expect + layer.bias.numpy(), rtol=1e-4, atol=1e-5)
    cfg = dcgan_config(g_upsample="resize", g_ema=0.5, schedule="every_step")
    model = cg.CausalGAN(cfg, NAMES, 16, seed=12)
    assert all(isinstance(layer, ResizeConv) for layer in model.G.deconvs)
    assert all(isinstance(layer, ResizeConv) for layer in model.G_ema.deconvs)
    images, real, fake, z = batch(16)
    out = model.make_train_function()((images, real, fake, z))
    assert np.isfinite(float(out["g_loss"]))
    drawn = model.generate(fake, z).numpy()
    assert drawn.shape == (4, 16, 16, 3) and 0 <= drawn.min() and drawn.max() <= 255


def test_r1_penalty_is_added_to_the_discriminator_loss_and_its_update():
    images, real, fake, z = batch(16)
    results = {}
    for gamma in (0.0, 10.0):
        cfg = dcgan_config(schedule="every_step", label_type="discrete", r1_gamma=gamma,
                           projection_D=True, minibatch_features=False)
        model = cg.CausalGAN(cfg, NAMES, 16, seed=13)
        fake01, values, zz = model._inputs(4, fake, z)
        x = tf.constant(cg.to_unit(images))
        # by hand: the squared norm of dD(x, y)/dx per row, averaged, times gamma / 2
        with tf.GradientTape() as tape:
            tape.watch(x)
            logit = model.D(x, tf.constant(real))[0]
        by_hand = 0.5 * gamma * np.mean(np.sum(tape.gradient(logit, x).numpy() ** 2,
                                               axis=(1, 2, 3)))
        metrics, grads = model._all_losses_and_grads(tf.constant(images), tf.constant(real),
                                                     fake01, values, zz, tf.identity(model.k_t))
        results[gamma] = (metrics, grads[1], by_hand)
        assert ("d_loss_r1" in metrics) == (gamma > 0)
        assert ("d_loss_r1" in model.metric_template()) == (gamma > 0)
    plain, with_r1 = results[0.0], results[10.0]
    assert with_r1[2] > 0
    np.testing.assert_allclose(float(with_r1[0]["d_loss_r1"]), with_r1[2], rtol=1e-4)
    np.testing.assert_allclose(float(with_r1[0]["d_loss"]),
                               float(plain[0]["d_loss"]) + with_r1[2], rtol=1e-4)
    # the penalty's own gradient changes D's update
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in
               zip(plain[1], with_r1[1], strict=True))
    with pytest.raises(UserError, match="--r1_gamma"):
        cg.CausalGAN(dcgan_config(r1_gamma=-1.0), NAMES, 16, seed=13)


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_discriminator_without_batch_norm_judges_each_image_alone(norm):
    x = cg.to_unit(batch(16)[0])
    plain = cg.CausalGAN(dcgan_config(minibatch_features=False), NAMES, 16, seed=7)
    model = cg.CausalGAN(dcgan_config(minibatch_features=False, d_norm=norm), NAMES, 16, seed=7)
    assert model.D.h1.bias is not None and plain.D.h1.bias is None  # no norm to undo a bias
    assert (len(model.D.trainable_variables) - len(plain.D.trainable_variables)
            == (3 if norm == "layer" else -3))  # + biases, - batch norms' scale/offset pairs
    changed = tf.concat([x[:1], x[1:] * 0.5], axis=0)  # rows 1-3 change, row 0 stays
    for net, independent in ((model.D, True), (plain.D, False)):
        a, _, _ = net(x)
        b, _, _ = net(changed)
        assert np.isclose(float(a[0, 0]), float(b[0, 0]), atol=1e-6) == independent
    with pytest.raises(SystemExit):
        cg_config_parse(["--d_norm", "group"])


def cg_config_parse(argv):
    from causal_dcgan.config import get_config
    return get_config(argv)


def test_draw_rows_completes_each_group_with_the_fixed_individuals():
    model = cg.CausalGAN(dcgan_config(draw_rows=2), NAMES, 16, seed=5)
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (5, 3)).astype(np.float32)
    z = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    images = model.generate(labels, z).numpy()
    assert images.shape == (5, 16, 16, 3)
    fixed = model._padding_values(4)
    for start in (0, 2, 4):  # groups of two requested rows (the last one padded)
        rows = cg.label_values(labels[start:start + 2])
        zs = z[start:start + 2]
        if len(rows) < 2:
            rows, zs = tf.concat([rows, fixed[:1]], 0), tf.concat([zs, model.pad_z[:1]], 0)
        batch_in = model.generator_inputs(tf.concat([rows, fixed[2:]], 0),
                                          tf.concat([zs, model.pad_z[2:]], 0))
        direct = cg.to_pixels(model.G(batch_in)).numpy()[:2]
        np.testing.assert_allclose(images[start:start + 2], direct[:len(images[start:])],
                                   atol=1e-3)
    # an image's batch holds one other requested row: it does not see the rest of the call
    again = model.generate(labels[:2], z[:2]).numpy()
    np.testing.assert_allclose(again, images[:2], atol=1e-3)
    # a batch that is all one label value keeps the training batches' statistics
    same = np.tile(labels[:1], (4, 1))
    whole = cg.CausalGAN(dcgan_config(), NAMES, 16, seed=5)
    assert not np.allclose(whole.generate(same, z[:4]).numpy(),
                           model.generate(same, z[:4]).numpy(), atol=1.0)
    for bad in (-1, 5):
        with pytest.raises(UserError, match="--draw_rows"):
            cg.CausalGAN(dcgan_config(draw_rows=bad), NAMES, 16, seed=5)
    whole.set_draw_rows(2)  # what `fidelity --draw_rows 2` does to a loaded run
    np.testing.assert_allclose(whole.generate(labels, z).numpy(), images, atol=1e-3)
    whole.set_draw_rows(0)
    assert whole.draw_rows == 4
    # training summaries judge G's images in full batches, whatever --draw_rows is
    odd = cg.CausalGAN(dcgan_config(draw_rows=3), NAMES, 16, seed=5)
    images, real, fake, zs = batch(16)
    out = odd.diagnostics(images, real, fake, zs)
    assert out["images"]["G"].shape == (4, 16, 16, 3)
    assert out["histograms"]["d_fake"].shape == (4, 1)


def test_minibatch_stddev_channel_is_the_spread_of_the_batch():
    x = tf.constant(np.random.default_rng(0).normal(size=[4, 3, 3, 2]), tf.float32)
    out = ops.minibatch_stddev(x, 2).numpy()
    assert out.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(out[..., :2], x.numpy())
    for rows in ((0, 1), (2, 3)):
        spread = np.sqrt(x.numpy()[list(rows)].var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[list(rows), :, :, 2], spread, rtol=1e-5)
    alike = ops.minibatch_stddev(tf.tile(x[:1], [4, 1, 1, 1]), 4).numpy()
    np.testing.assert_allclose(alike[..., 2], 1e-4, rtol=1e-3)  # identical images: ~0
    model = cg.CausalGAN(dcgan_config(minibatch_features=False, minibatch_stddev=True,
                                      d_norm="none"), NAMES, 16, seed=7)
    assert model.D.h3.kernel.shape[2] == 4 * 4 + 1
    logits, _, _ = model.D(cg.to_unit(batch(16)[0]))
    assert logits.shape == (4, 1)


def test_lr_decay_start_falls_linearly_to_zero_at_num_iter():
    cfg = dcgan_config(schedule="every_step", minibatch_features=False, lr_decay_start=2,
                       num_iter=6, learning_rate=0.001)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=3)
    assert [model.learning_rate_at(s) for s in (0, 1, 2, 3, 5, 6)] == pytest.approx(
        [0.001, 0.001, 0.001, 0.00075, 0.00025, 0.0])
    train = model.make_train_function()
    seen = []
    for _ in range(4):
        train(batch(16))
        seen.append(float(model.g_optimizer.learning_rate.numpy()))
    assert seen == pytest.approx([0.001, 0.001, 0.001, 0.00075])  # the rate of steps 0-3
    for _, optimizer in model.networks():
        assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.00075)
    plain = cg.CausalGAN(dcgan_config(learning_rate=0.001, num_iter=6), NAMES, 16, seed=3)
    assert plain.learning_rate_at(5) == 0.001
    with pytest.raises(UserError, match="--lr_decay_start"):
        cg.CausalGAN(dcgan_config(lr_decay_start=-1), NAMES, 16, seed=3)


def test_conditional_batch_norm_keeps_a_shared_label_that_plain_batch_norm_removes():
    from causal_dcgan.models import Generator

    z = tf.random.stateless_normal([4, 4], seed=[3, 4])

    def inputs(value):  # every row of the batch shares one label vector: logits of value
        logits = tf.fill([4, 3], float(np.log(value / (1 - value))))
        return tf.concat([z, logits], axis=1)

    plain = Generator(7, 8, 16, 3, 4, tf.random.Generator.from_seed(5), "resize")
    cond = Generator(7, 8, 16, 3, 4, tf.random.Generator.from_seed(5), "resize", n_cond=3)
    # at the start the label terms are zero: the same function as the plain G
    np.testing.assert_allclose(cond(inputs(0.9)).numpy(), plain(inputs(0.9)).numpy(),
                               atol=1e-6)
    # plain: the shared label adds the same to every row before batch norm, which takes
    # it away again, so the two batches draw the same images
    np.testing.assert_allclose(plain(inputs(0.9)).numpy(), plain(inputs(0.1)).numpy(),
                               atol=1e-5)
    for affine in cond.affines:
        affine.kernel.assign(tf.random.stateless_normal(affine.kernel.shape, seed=[6, 7]))
    np.testing.assert_allclose(cond.conditions(inputs(0.9)).numpy(), 0.8, atol=1e-5)
    assert np.abs(cond(inputs(0.9)).numpy() - cond(inputs(0.1)).numpy()).mean() > 1e-2


def test_g_cond_bn_trains_the_label_terms_and_draws():
    cfg = dcgan_config(g_cond_bn=True, g_upsample="resize", g_ema=0.5, schedule="every_step")
    model = cg.CausalGAN(cfg, NAMES, 16, seed=14)
    assert len(model.G.affines) == 4 and len(model.G_ema.affines) == 4
    assert all(float(tf.reduce_max(tf.abs(a.kernel))) == 0 for a in model.G.affines)
    images, real, fake, z = batch(16)
    out = model.make_train_function()((images, real, fake, z))
    assert np.isfinite(float(out["g_loss"]))
    assert all(float(tf.reduce_max(tf.abs(a.kernel))) > 0 for a in model.G.affines)
    drawn = model.generate(fake, z).numpy()
    assert drawn.shape == (4, 16, 16, 3)
    plain = cg.CausalGAN(dcgan_config(g_upsample="resize"), NAMES, 16, seed=14)
    assert not plain.G.affines
    assert len(model.G.trainable_variables) == len(plain.G.trainable_variables) + 4


def test_joint_d_norm_takes_one_set_of_statistics_over_real_and_generated_images():
    images, real, fake, z = batch(16)
    cfg = dcgan_config(d_norm="joint", schedule="every_step", minibatch_features=False,
                       projection_D=True, label_type="discrete", r1_gamma=1.0)
    model = cg.CausalGAN(cfg, NAMES, 16, seed=15)
    plain = cg.CausalGAN(dcgan_config(schedule="every_step", minibatch_features=False,
                                      projection_D=True, label_type="discrete", r1_gamma=1.0),
                         NAMES, 16, seed=15)
    # the same weights (batch norm's convs have no bias either way)
    assert len(model.D.variables) == len(plain.D.variables)
    for a, b in zip(model.D.variables, plain.D.variables, strict=True):
        a.assign(b)
    x = tf.constant(cg.to_unit(images))
    fake01, values, zz = model._inputs(4, fake, z)
    real_part, r1, g, fake_part = model._judge_jointly(x, tf.constant(real), values, zz, fake01)
    # by hand: the plain D's batch norms given both halves as one group of 8 rows
    for bn in (plain.D.bn1, plain.D.bn2, plain.D.bn3):
        bn.group = 8
    both = plain.D(tf.concat([x, g], axis=0), tf.concat([tf.constant(real), fake01], axis=0))
    np.testing.assert_allclose(real_part[0].numpy(), both[0][:4].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fake_part[0].numpy(), both[0][4:].numpy(), rtol=1e-4, atol=1e-5)
    assert float(r1) > 0
    # real images' logits now depend on the generated half of the call
    other, _, _, _ = model._judge_jointly(x, tf.constant(real), values, zz * 0.0, fake01)
    assert np.abs(other[0].numpy() - real_part[0].numpy()).max() > 1e-4
    out = model.make_train_function()((images, real, fake, z))
    assert np.isfinite(float(out["d_loss"])) and np.isfinite(float(out["g_loss"]))
    assert np.isfinite(float(out["d_loss_r1"]))
    with pytest.raises(UserError, match="every_step"):
        cg.CausalGAN(dcgan_config(d_norm="joint"), NAMES, 16, seed=15)


def test_projection_pairs_embeds_the_product_of_every_two_labels_signs():
    from causal_dcgan.models import Discriminator

    x = tf.constant(cg.to_unit(batch(16)[0]))
    d = Discriminator(4, 16, 3, 4, rng=tf.random.Generator.from_seed(2), minibatch=False,
                      n_projection=3, pairs=True)
    assert d.pair_index == [(0, 1), (0, 2), (1, 2)] and d.embed.w.shape[0] == 6
    labels = tf.constant([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0]], tf.float32)
    plain_logit = d(x)[0]                      # without labels: the plain logit
    logit = d(x, labels)[0]
    # by hand: signs and their pair products, embedded, dotted with D's last features
    s = 2 * labels.numpy() - 1
    inputs = np.concatenate([s, s[:, [0]] * s[:, [1]], s[:, [0]] * s[:, [2]],
                             s[:, [1]] * s[:, [2]]], axis=1)
    kernel = d.embed.w.numpy()
    last = _last_features(d, x)
    by_hand = plain_logit.numpy()[:, 0] + np.sum((inputs @ kernel) * last, axis=1)
    np.testing.assert_allclose(logit.numpy()[:, 0], by_hand, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="--projection_D"):
        cg.CausalGAN(dcgan_config(projection_pairs=True), NAMES, 16, seed=3)
    model = cg.CausalGAN(dcgan_config(projection_D=True, projection_pairs=True,
                                      schedule="every_step", minibatch_features=False,
                                      label_type="discrete"), NAMES, 16, seed=3)
    images, real, fake, z = batch(16)
    assert np.isfinite(float(model.make_train_function()((images, real, fake, z))["d_loss"]))


def _last_features(d, x):
    """D's flattened last-layer features (what the projection is dotted with)."""
    from nets import lrelu
    h = lrelu(d.h0(x))
    h = lrelu(d.bn1(d.h1(h)))
    h = lrelu(d.bn2(d.h2(h)))
    h = lrelu(d.bn3(d.h3(h)))
    return tf.reshape(h, [h.shape[0], -1]).numpy()
