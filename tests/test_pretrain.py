"""Controller pretraining: losses, Adam, one iteration, checkpoints, the loop."""

import glob
import itertools
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import causal_controller.config as cc_flags
import nonfinite
from causal_controller.CausalController import CausalController
from causal_controller.models import (
    Critics,
    DiscriminatorW,
    controller_loss,
    critic_loss,
    gradient_penalty,
)
from causal_controller.pretrain import (
    NONFINITE_NAMES,
    Adam,
    CheckpointWriter,
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


def test_the_compiled_checkpoint_write_writes_what_the_eager_one_does(tmp_path):
    cfg = config(**FAST)
    cc, pt = build(cfg, seed=0)
    writer = CheckpointWriter(cc, pt)
    real = tf.constant(toy_labels(4 * 16).to_numpy(np.float32).reshape(4, 16, 4))
    save_controller(cc, pt, str(tmp_path / "compiled"), 0, writer=writer)  # traced here
    for _ in range(2):  # values change after the trace: the writes must follow them
        pt.train_iteration(real)
    compiled = save_controller(cc, pt, str(tmp_path / "compiled"), 2, writer=writer)
    eager = save_controller(cc, pt, str(tmp_path / "eager"), 2)
    a, b = tf.train.load_checkpoint(compiled), tf.train.load_checkpoint(eager)
    keys = sorted(a.get_variable_to_shape_map())
    assert keys == sorted(b.get_variable_to_shape_map())
    assert len(keys) > 50 and any("critic_optimizer" in key for key in keys)
    for key in keys:
        assert np.array_equal(a.get_tensor(key), b.get_tensor(key)), key
    assert a.get_tensor("controller/step/.ATTRIBUTES/VARIABLE_VALUE") == 2
    files = sorted(os.listdir(tmp_path / "compiled"))  # no leftovers of the writes
    assert all(name.startswith(("CC-Model-0.", "CC-Model-2.")) for name in files), files
    assert {"CC-Model-0.index", "CC-Model-2.index"} <= set(files)
    cc2, pt2 = build(cfg, seed=7)
    load_controller(cc2, compiled, pt2)
    noise = cc.draw_noise(50, seed=1)
    np.testing.assert_array_equal(cc2.sample(noise=noise)[0].numpy(),
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


# ---------------------------------------------------------------- non-finite values
def block(n_rows, k, seed=0):
    """Real labels [k, 16, 4] of the toy SCM."""
    return toy_labels(k * 16, seed=seed).to_numpy(np.float32).reshape(k, 16, 4).copy()


def snapshot(module):
    return [v.numpy().copy() for v in module.variables]


@pytest.mark.parametrize("jit", [False, True])
def test_nan_in_a_batch_skips_that_update_only(jit):
    cfg = config(**FAST)
    cc, pt = build(cfg, jit=jit)
    k = cfg.n_critic + 1
    real = block(16, k)
    real[1, 3, 2] = np.nan  # the second critic update's batch
    out = pt.train_iteration(tf.constant(real))
    masks = out["nonfinite"].numpy()
    assert masks.shape == (k,)
    assert masks[1] != 0 and masks[0] == masks[2] == masks[3] == 0
    assert "dcc_loss" in nonfinite.describe(masks[1], NONFINITE_NAMES)
    assert int(pt.critic_optimizer.iterations.numpy()) == k - 1  # one critic update skipped
    assert int(pt.cc_optimizer.iterations.numpy()) == 1
    assert all(np.isfinite(v).all() for v in snapshot(pt) + snapshot(cc))

    before_cc = [v.numpy().copy() for v in cc.trainable_variables]
    before_pt = snapshot(pt)
    real = block(16, k, seed=1)
    real[-1, 0, 0] = np.inf  # the joint update's batch: neither network may move
    out = pt.train_iteration(tf.constant(real))
    masks = out["nonfinite"].numpy()
    assert masks[-1] != 0 and not masks[:-1].any()
    assert int(pt.cc_optimizer.iterations.numpy()) == 1
    assert int(pt.critic_optimizer.iterations.numpy()) == 2 * k - 2
    changed = [not np.array_equal(a, b) for a, b in zip(before_pt, snapshot(pt), strict=True)]
    assert any(changed)  # the critic updates before it were applied...
    for a, v in zip(before_cc, cc.trainable_variables, strict=True):
        np.testing.assert_array_equal(a, v.numpy())  # ...the controller's weights did not
    assert int(cc.step.numpy()) == 2  # iterations are counted, skipped or not


def test_chunks_of_iterations_equal_single_iterations():
    cfg = config(**FAST)
    k = cfg.n_critic + 1
    blocks = np.stack([block(16, k, seed=s) for s in range(3)])
    cc1, pt1 = build(cfg, seed=3)
    for b in blocks[:2]:
        last = pt1.train_iteration(tf.constant(b))
    cc2, pt2 = build(cfg, seed=3)
    out = pt2.train_iterations(tf.constant(blocks), 2)  # the third block is not used
    assert int(cc2.step.numpy()) == 2
    assert out["nonfinite"].shape == (3, k) and not out["nonfinite"].numpy().any()
    np.testing.assert_allclose(float(out["c_loss"]), float(last["c_loss"]), rtol=1e-5)
    for a, b in zip(snapshot(pt1) + snapshot(cc1), snapshot(pt2) + snapshot(cc2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_nonfinite_counter_counts_streaks_across_calls():
    names = ("a", "b")
    counter = nonfinite.NonFiniteCounter(4, names, what="Testing")
    assert counter.update(np.array([[0, 1], [2, 0]]), 10) == 2 and counter.streak == 0
    assert counter.update(np.array([[0, 1], [1, 1]]), 12) == 3 and counter.streak == 3
    assert counter.skipped == 5
    with pytest.raises(nonfinite.NonFiniteError) as info:
        counter.update(np.array([[2, 0]]), 14)
    text = str(info.value)
    assert "step 14" in text and "since step 12" in text and " b held NaN or Inf" in text
    assert isinstance(info.value, UserError)
    one = nonfinite.NonFiniteCounter(2, names)
    one.update(1, 5)
    with pytest.raises(nonfinite.NonFiniteError, match="stopped at step 6.*since step 5.*a and b held"):
        one.update(3, 6)


def test_check_names_each_nonfinite_value():
    finite, bad = nonfinite.check({"x": tf.constant(1.0), "grads": [tf.constant([0.0, np.inf]),
                                                                   None]}, ["grads", "x", "y"])
    assert not bool(finite) and nonfinite.describe(int(bad), ["grads", "x", "y"]) == ["grads"]
    finite, bad = nonfinite.check({"y": tf.constant(np.nan)}, ["grads", "x", "y"])
    assert int(bad) == 4
    assert bool(nonfinite.check({"x": [tf.ones([3])]})[0])


def test_nan_in_a_weight_stops_the_loop_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = config(**FAST, pretrain_iter=20, min_pretrain_iter=0, min_tvd=0.0)
    frame = toy_labels(500)
    cc, pt = build(cfg)
    pretrain_loop(cc, pt, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                  log_step=2, progress=False, tvd_samples=5000)
    good = (tmp_path / "checkpoints" / "CC-Model-20.index").read_bytes()
    cc.Male.weights[0].assign(tf.tensor_scatter_nd_update(cc.Male.weights[0], [[0, 0]],
                                                          [np.nan]))
    moments = [m.numpy().copy() for m in pt.cc_optimizer.m + pt.critic_optimizer.v]
    cfg.pretrain_iter = 60
    writer = tf.summary.create_file_writer(str(tmp_path / "summaries"))
    with pytest.raises(nonfinite.NonFiniteError) as info:
        pretrain_loop(cc, pt, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                      summary_writer=writer, log_step=2, progress=False, tvd_samples=5000,
                      max_nonfinite=9)
    text = str(info.value)
    assert "dcc_loss" in text and "stopped at step 23" in text and "since step 21" in text
    # 21, 22: 4 updates each (n_critic 3 + joint) skipped; the 9th in a row is in step 23
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == [
        "CC-Model-20.index"]
    assert (tmp_path / "checkpoints" / "CC-Model-20.index").read_bytes() == good
    for before, m in zip(moments, pt.cc_optimizer.m + pt.critic_optimizer.v, strict=True):
        np.testing.assert_array_equal(before, m.numpy())  # no optimizer state was touched
    writer.flush()


def test_skipped_updates_are_counted_in_summaries(tmp_path):
    cfg = config(**FAST, pretrain_iter=4, min_pretrain_iter=0, min_tvd=0.0)
    frame = toy_labels(500)
    cc, pt = build(cfg)
    k = cfg.n_critic + 1

    def batches():  # the 2nd batch of each block has a NaN: one skipped update per block
        for i in itertools.count():
            b = frame.sample(16, random_state=i).to_numpy(np.float32).copy()
            if i % k == 1:
                b[0, 0] = np.nan
            yield b

    writer = tf.summary.create_file_writer(str(tmp_path / "summaries"))
    result = pretrain_loop(cc, pt, batches(), frame, cfg, str(tmp_path), summary_writer=writer,
                           log_step=2, progress=False, tvd_samples=5000, max_nonfinite=3)
    assert result["skipped_updates"] == 4 and result["step"] == 4
    assert "pretrain/skipped_updates" in read_tags(tmp_path / "summaries")


# ---------------------------------------------------------------- stopping and resuming
class Stop:
    signum = None


def test_a_stop_request_ends_the_loop_with_a_checkpoint_and_resume_continues(tmp_path):
    cfg = config(**FAST, pretrain_iter=100, min_pretrain_iter=0, min_tvd=0.0)
    frame = toy_labels(500)
    cc, pt = build(cfg)
    stop = Stop()

    def batches():
        for i, b in enumerate(stream(frame, cc.label_names)):
            if i == 4 * (cfg.n_critic + 1):  # while the 5th iteration is drawn
                stop.signum = 15
            yield b.numpy()

    result = pretrain_loop(cc, pt, batches(), frame, cfg, str(tmp_path), log_step=1,
                           progress=False, tvd_samples=5000, stop=stop)
    assert result["stopped_by"] == 15 and result["step"] == 5 and not result["stopped_early"]
    assert result["checkpoint"].endswith("CC-Model-5")
    cfg.pretrain_iter = 12
    cc2, pt2 = build(cfg, seed=9)  # a fresh process: resumes from the newest checkpoint
    result = pretrain_loop(cc2, pt2, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                           log_step=1, progress=False, tvd_samples=5000)
    assert result["step"] == 12 and int(pt2.cc_optimizer.iterations.numpy()) == 12


def test_half_written_checkpoints_are_never_taken(tmp_path, caplog):
    cfg = config(**FAST)
    cc, pt = build(cfg)
    save_controller(cc, pt, str(tmp_path), 10)
    good = tmp_path / "CC-Model-10.index"
    # what a kill leaves: a newer index cut short (TensorFlow writes it in place), a data
    # file without an index, and the temporary folder of our own interrupted write
    (tmp_path / "CC-Model-30.index").write_bytes(good.read_bytes()[:40])
    for data in tmp_path.glob("CC-Model-10.data-*"):
        (tmp_path / data.name.replace("-10.", "-30.")).write_bytes(data.read_bytes())
        (tmp_path / data.name.replace("-10.", "-40.")).write_bytes(data.read_bytes()[:10])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    partial = tmp_path / f".CC-Model-20.partial-{dead}"
    partial.mkdir()
    (partial / "junk").write_text("x")
    from causal_controller.pretrain import latest_controller_checkpoint

    with caplog.at_level("WARNING"):
        assert latest_controller_checkpoint(str(tmp_path)) == str(tmp_path / "CC-Model-10")
    assert "CC-Model-30" in caplog.text
    with pytest.raises(UserError, match="Cannot read"):
        load_controller(cc, str(tmp_path / "CC-Model-30"))
    save_controller(cc, pt, str(tmp_path), 11)  # the next save clears the dead write's folder
    assert not partial.exists()
    assert latest_controller_checkpoint(str(tmp_path)) == str(tmp_path / "CC-Model-11")


def test_full_disk_while_saving_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    cfg = config(**FAST)
    cc, pt = build(cfg)
    real_write = tf.train.Checkpoint.write

    def full_disk(self, prefix, options=None):
        real_write(self, prefix)  # the files are there, then the disk is full
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}: "
                                               f"{os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full_disk)
    with pytest.raises(UserError, match="disk is full"):
        save_controller(cc, pt, str(tmp_path), 7)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the TVD fast path
def test_histogram_tvd_and_crosstab_equal_the_reference_computation(tmp_path):
    from causal_controller.pretrain import expand_counts, tvd_of_counts
    from figure_scripts import pairwise

    cfg = config(**FAST)
    cc, pt = build(cfg)
    frame = toy_labels(3000)
    counts = pt.label_counts(25_000, seed=4)
    assert counts.sum() == 25_000 and len(counts) == 16
    np.testing.assert_array_equal(counts, pt.label_counts(25_000, seed=4))
    samples = expand_counts(counts, cc.label_names)
    data_counts = np.bincount(pairwise.encode(frame[cc.label_names].to_numpy()), minlength=16)
    assert tvd_of_counts(counts, data_counts) == pairwise.calc_tvd(samples, frame)
    # the crosstab from the histogram is the crosstab of the samples, character for character
    assert pairwise.crosstab_of_counts(counts, frame, cc.label_names, step=3) == \
        pairwise.crosstab(samples, frame, step=3)
    # the same distribution as the controller's own sampler (same noise law)
    labels = cc.sample(25_000, seed=1)[0].numpy()
    other = np.bincount(pairwise.encode(labels), minlength=16)
    assert tvd_of_counts(counts, other) < 0.03
    cfg.pretrain_iter, cfg.min_pretrain_iter, cfg.min_tvd = 10, 0, 0.0
    result = pretrain_loop(cc, pt, stream(frame, cc.label_names), frame, cfg, str(tmp_path),
                           log_step=1, progress=False, tvd_samples=25_000)
    text = (tmp_path / "10_glabel_crosstab.txt").read_text()
    assert text.startswith("Step: 10\nSamples: 25000") and f"TVD: {result['tvd']:.6f}" in text
    assert not list(tmp_path.glob(".*tmp*"))


def test_the_counters_transposed_forward_is_the_controllers_forward():
    from causal_controller.pretrain import LabelCounter

    for graph in (SMALL, [(n, p) for n, p in __import__("causal_graph").get_causal_graph(
            "big_causal_graph")]):
        cc = CausalController(graph, config(cc_n_layers=3, cc_n_hidden=5), seed=2)
        noise = tf.random.uniform([len(cc), 300, 5], -1.0, 1.0)
        expected = cc.forward(tf.unstack(noise))[0].numpy()
        got = LabelCounter(cc).forward_transposed([tf.transpose(z) for z in tf.unstack(noise)])
        np.testing.assert_allclose(got.numpy().T, expected, atol=1e-6)
