"""Controller pretraining: losses, Adam, one iteration, checkpoints, the loop."""

import glob
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import causal_controller.config as cc_flags
from causal_controller.CausalController import CausalController
from causal_controller.models import (
    Critics,
    DiscriminatorW,
    controller_loss,
    critic_loss,
    gradient_penalty,
)
from causal_controller.pretrain import (
    Adam,
    ControllerPretrainer,
    load_controller,
    pretrain_loop,
    save_controller,
)
from errors import UserError
from toy_faces import default_scm

SMALL = [("Young", []), ("Male", []), ("Bald", ["Male", "Young"]),
         ("Wearing_Lipstick", ["Male", "Young"])]


def toy_labels(n_rows, seed=0):
    """Rows of the bundled toy SCM over SMALL's nodes, a 0/1 DataFrame."""
    return default_scm().sample(n_rows, seed=seed)[[node for node, _ in SMALL]]


def config(**kw):
    """The controller's flags at their defaults (causal_controller/config.py), overridden."""
    cfg = cc_flags.get_config([])[0]
    vars(cfg).update(kw)
    return cfg


FAST = dict(n_critic=3, critic_layers=3, critic_hidden_size=8, cc_n_layers=2, cc_n_hidden=4)


def stream(frame, names, batch=16, seed=0):
    values = frame[list(names)].to_numpy(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(values).repeat().shuffle(4096, seed=seed)
    return ds.batch(batch, drop_remainder=True)


def build(cfg, seed=0, graph=SMALL, jit=False):
    cc = CausalController(graph, cfg, seed=seed)
    return cc, ControllerPretrainer(cc, cfg, seed=seed, jit_compile=jit)


# ---------------------------------------------------------------- losses and optimizer
def test_gradient_penalty_of_a_linear_critic_is_exact():
    rng = tf.random.Generator.from_seed(0)
    critic = DiscriminatorW(3, 4, 1, rng)  # one layer: linear, gradient = w everywhere
    critic.weights[0].assign([[0.5], [1.0], [2.0]])
    real, fake = tf.random.uniform([8, 3]), tf.random.uniform([8, 3])
    alpha = tf.random.uniform([8, 1])
    expected = 0.1 * (np.sqrt(0.25 + 1 + 4) - 1) ** 2
    assert float(gradient_penalty(critic, real, fake, alpha, 0.1)) == pytest.approx(expected,
                                                                                    rel=1e-5)
    assert float(critic_loss(tf.constant([[1.0], [3.0]]), tf.constant([[0.0], [1.0]]),
                             tf.constant(0.5))) == pytest.approx(-1.5 + 0.5)
    assert float(controller_loss(tf.constant([[1.0], [3.0]]))) == pytest.approx(-2.0)


def test_critic_shapes():
    rng = tf.random.Generator.from_seed(0)
    critic = DiscriminatorW(9, 15, 6, rng)
    assert [tuple(w.shape) for w in critic.weights] == [(9, 15)] + [(15, 15)] * 4 + [(15, 1)]
    assert critic(tf.zeros([5, 9])).shape == (5, 1)
    factorized = Critics(SMALL, 15, 6, True, rng)
    assert [c.weights[0].shape[0] for c in factorized.critics] == [1, 1, 3, 3]


def test_adam_matches_the_tf1_update():
    var = tf.Variable([1.0, -2.0])
    opt = Adam([var], 0.1)
    m = v = np.zeros(2)
    x = np.array([1.0, -2.0])
    for t, g in enumerate([np.array([0.5, -1.0]), np.array([0.2, 3.0]), np.array([-1.0, 0.0])], 1):
        opt.apply([tf.constant(g, tf.float32)], [var])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        x = x - 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(var.numpy(), x, rtol=1e-5)
    assert int(opt.iterations.numpy()) == 3


# ---------------------------------------------------------------- one iteration
@pytest.mark.parametrize("jit", [True, False])
def test_one_iteration_updates_everything_once(jit):
    cfg = config(**FAST)
    cc, pt = build(cfg, jit=jit)
    real = tf.constant(toy_labels(4 * 16).to_numpy(np.float32).reshape(4, 16, 4))
    before_cc = [v.numpy().copy() for v in pt.cc_vars]
    out = pt.train_iteration(real)
    assert int(cc.step.numpy()) == 1
    assert int(pt.critic_optimizer.iterations.numpy()) == cfg.n_critic + 1
    assert int(pt.cc_optimizer.iterations.numpy()) == 1
    for key in ("c_loss", "dcc_loss", "gp", "w_dist"):
        assert out[key].shape == () and np.isfinite(float(out[key]))
    assert out["fake"].shape == (16, 4)
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before_cc, pt.cc_vars, strict=True))
    pt.train_iteration(real)
    assert int(cc.step.numpy()) == 2
    assert pt.train_iteration.experimental_get_tracing_count() == 1


def test_factorized_critics_train_each_node_alone():
    cfg = config(**FAST, pt_factorized=True)
    cc, pt = build(cfg)
    assert len(pt.critics.critics) == len(SMALL)
    noise = tf.unstack(tf.random.uniform([4, 16, 4], -1, 1))
    real = tf.constant(toy_labels(16).to_numpy(np.float32))
    alpha = tf.random.uniform([16, 1])
    with tf.GradientTape(persistent=True) as tape:
        fake = cc.forward(noise, stop_parent_gradients=True)[0]
        _, c_loss, _, _ = pt.critics.losses(real, fake, alpha, 0.1, stop_parent_gradients=True)
        bald_only = -tf.reduce_mean(pt.critics.critics[2](
            tf.concat([tf.stop_gradient(fake[:, :2]), fake[:, 2:3]], axis=1)))
    # the Male node gets gradient from its own critic only, not from Bald's
    male_vars = cc.Male.trainable_variables
    grads = tape.gradient(bald_only, male_vars, unconnected_gradients="zero")
    assert all(float(tf.reduce_sum(tf.abs(g))) == 0 for g in grads)
    assert all(g is not None for g in tape.gradient(c_loss, male_vars))


def test_factorized_pretraining_runs_and_lowers_its_loss(tmp_path):
    cfg = config(**FAST, pt_factorized=True, pt_cc_lr=2e-3, pt_dcc_lr=2e-3)
    cc, pt = build(cfg)
    frame = toy_labels(4000)
    it = iter(stream(frame, cc.label_names).batch(cfg.n_critic + 1))
    first = [float(pt.train_iteration(next(it))["c_loss"]) for _ in range(20)]
    for _ in range(300):
        out = pt.train_iteration(next(it))
    last = [float(pt.train_iteration(next(it))["c_loss"]) for _ in range(20)]
    assert np.isfinite(out["dcc_loss"])
    assert np.mean(last) < np.mean(first)


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_samples_identically(tmp_path):
    cfg = config(**FAST)
    cc, pt = build(cfg, seed=0)
    real = tf.constant(toy_labels(4 * 16).to_numpy(np.float32).reshape(4, 16, 4))
    for _ in range(3):
        pt.train_iteration(real)
    path = save_controller(cc, pt, str(tmp_path), 3)
    assert path == os.path.join(str(tmp_path), "CC-Model-3")
    assert os.path.exists(path + ".index") and glob.glob(path + ".data-*")
    save_controller(cc, pt, str(tmp_path), 1)  # an older one in the same folder
    noise = cc.draw_noise(100, seed=9)

    cc2, pt2 = build(cfg, seed=123)
    assert not np.allclose(cc2.sample(noise=noise)[0].numpy(), cc.sample(noise=noise)[0].numpy())
    assert load_controller(cc2, str(tmp_path), pt2) == path  # folder: newest checkpoint
    np.testing.assert_array_equal(cc2.sample(noise=noise)[0].numpy(),
                                  cc.sample(noise=noise)[0].numpy())
    assert int(cc2.step.numpy()) == 3
    for a, b in zip(pt.critic_optimizer.m + pt.cc_optimizer.v,
                    pt2.critic_optimizer.m + pt2.cc_optimizer.v, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    cc3 = CausalController(SMALL, cfg, seed=5)  # the controller alone
    load_controller(cc3, path)
    np.testing.assert_array_equal(cc3.sample(noise=noise)[0].numpy(),
                                  cc.sample(noise=noise)[0].numpy())


def test_loading_bad_checkpoints_is_a_user_error(tmp_path):
    cfg = config(**FAST)
    cc = CausalController(SMALL, cfg, seed=0)
    with pytest.raises(UserError, match="No controller checkpoint"):
        load_controller(cc, str(tmp_path))
    with pytest.raises(UserError, match="No controller checkpoint"):
        load_controller(cc, str(tmp_path / "CC-Model-5"))
    save_controller(cc, None, str(tmp_path), 0)
    other = CausalController([("Young", []), ("Male", []), ("Bald", ["Male"]),
                              ("Wearing_Lipstick", ["Male", "Young"])], cfg)
    with pytest.raises(UserError, match="another causal graph"):
        load_controller(other, str(tmp_path))
    wider = CausalController(SMALL, config(**{**FAST, "cc_n_hidden": 5}))
    with pytest.raises(UserError, match="another causal graph"):
        load_controller(wider, str(tmp_path / "CC-Model-0"))


# ---------------------------------------------------------------- the loop
def read_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_loop_resumes_counting_and_writes_outputs(tmp_path):
    cfg = config(**FAST, pretrain_iter=30, min_pretrain_iter=0, min_tvd=0.0)
    frame = toy_labels(2000)
    cc, pt = build(cfg)
    writer = tf.summary.create_file_writer(str(tmp_path / "summaries"))
    result = pretrain_loop(cc, pt, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                           summary_writer=writer, log_step=10, progress=False,
                           tvd_samples=20_000)
    assert result["step"] == 30 and not result["stopped_early"]
    assert result["checkpoint"].endswith(os.path.join("checkpoints", "CC-Model-30"))
    assert os.path.exists(tmp_path / "30_glabel_crosstab.txt")
    tags = read_tags(tmp_path / "summaries")
    assert {"pretrain/c_loss", "pretrain/dcc_loss", "misc/tvd", "Bald/Bald_fake_mean",
            "Bald/Bald_real_std", "Bald/Bald_fake"} <= tags

    cfg.pretrain_iter = 60
    cc2, pt2 = build(cfg, seed=7)
    load_controller(cc2, str(tmp_path / "checkpoints"), pt2)
    assert int(cc2.step.numpy()) == 30
    # a plain iterator of [batch, n] arrays is stacked n_critic + 1 at a time
    batches = (b.numpy() for b in stream(frame, cc.label_names))
    result = pretrain_loop(cc2, pt2, batches, frame.to_numpy(), cfg, str(tmp_path),
                           log_step=10, progress=False,
                           tvd_samples=20_000)
    assert result["step"] == 60 == int(cc2.step.numpy())
    assert int(pt2.cc_optimizer.iterations.numpy()) == 60
    assert os.path.exists(tmp_path / "checkpoints" / "CC-Model-60.index")
    assert os.path.exists(tmp_path / "60_glabel_crosstab.txt")


def test_loop_stops_early_once_tvd_is_below_min_tvd(tmp_path):
    cfg = config(**FAST, pretrain_iter=1000, min_pretrain_iter=20, min_tvd=1.0)
    frame = toy_labels(500)
    cc, pt = build(cfg)
    result = pretrain_loop(cc, pt, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                           log_step=2, progress=False,
                           tvd_samples=20_000)
    assert result["stopped_early"] and result["step"] == 20 and result["tvd"] < 1.0
    cfg.min_tvd = 0.0  # an unreachable TVD runs every iteration
    cfg.pretrain_iter = 30
    result = pretrain_loop(cc, pt, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                           log_step=2, progress=False,
                           tvd_samples=20_000)
    assert not result["stopped_early"] and result["step"] == 30


def test_loop_rejects_bad_data_labels(tmp_path):
    cfg = config(**FAST, pretrain_iter=1)
    cc, pt = build(cfg)
    with pytest.raises(UserError, match="no columns"):
        pretrain_loop(cc, pt, iter([]), pd.DataFrame({"Young": [1]}), cfg, str(tmp_path),
                      progress=False)
    with pytest.raises(UserError, match="ran out"):
        pretrain_loop(cc, pt, iter([np.zeros((16, 4))]), np.zeros((3, 4)), cfg, str(tmp_path),
                      progress=False, tvd_samples=20_000)


def test_short_pretraining_reduces_tvd(tmp_path):
    cfg = config(n_critic=5, critic_layers=4, critic_hidden_size=15, cc_n_layers=3,
                 cc_n_hidden=8, pt_cc_lr=1e-3, pt_dcc_lr=1e-3, pretrain_iter=250,
                 min_pretrain_iter=250, batch_size=64)
    frame = toy_labels(5000)
    cc, pt = build(cfg, seed=0, jit=True)
    from figure_scripts.pairwise import calc_tvd

    def tvd():
        return calc_tvd(cc.sample_label(N=20000, seed=1), frame)

    before = tvd()
    result = pretrain_loop(cc, pt, stream(frame, cc.label_names, batch=64), frame, cfg,
                           str(tmp_path), log_step=1000, progress=False,
                           tvd_samples=20_000)
    after = tvd()
    assert result["step"] == 250
    assert after < 0.7 * before, (before, after)
