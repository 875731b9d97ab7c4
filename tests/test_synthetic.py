"""The synthetic experiments: data sets, generator wiring, TVD, a short run, the scripts."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nonfinite
from synthetic import collect_stats, models
from synthetic import main as synth_main
from synthetic.config import consistent_generators, get_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(gen_z_dim=10, gen_hidden_size=10, disc_hidden_size=10, lr_gen=0.0005,
              lr_disc=0.0005, batch_size=64)


def sample_data(data_type, seed, n=100_000):
    data = models.SyntheticData([models.draw_data_params(data_type,
                                                         np.random.default_rng(seed))])
    return data.sample(n, tf.random.Generator.from_seed(seed + 100)).numpy()[0]


def dependence(a, b, bins=5):
    """Mean-square contingency phi^2 = chi^2 / n of a and b cut at their quantiles:
    about (bins - 1)^2 / n for independent samples, larger for dependent ones."""
    qa = np.quantile(a, np.linspace(0, 1, bins + 1)[1:-1])
    qb = np.quantile(b, np.linspace(0, 1, bins + 1)[1:-1])
    joint = np.zeros((bins, bins))
    np.add.at(joint, (np.searchsorted(qa, a), np.searchsorted(qb, b)), 1)
    joint /= joint.sum()
    expected = np.outer(joint.sum(1), joint.sum(0))
    return float(np.sum((joint - expected) ** 2 / np.maximum(expected, 1e-12)))


def conditional_dependence(x, given, a, b, strata=20):
    """Mean over quantile strata of ``given`` of the dependence of columns a and b."""
    edges = np.quantile(x[:, given], np.linspace(0, 1, strata + 1))
    values = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        rows = x[(x[:, given] >= low) & (x[:, given] < high)]
        values.append(dependence(rows[:, a], rows[:, b]))
    return float(np.mean(values))


# ----------------------------------------------------------------------------- data sets
@pytest.mark.parametrize("data_type", models.DATA_TYPES)
def test_data_lies_in_the_rescaled_range(data_type):
    for seed in (0, 1):
        x = sample_data(data_type, seed, n=20_000)
        assert x.shape == (20_000, 3)
        assert x.min() >= 0.05 - 1e-6 and x.max() <= 0.95 + 1e-6
        assert np.all(x.max(0) - x.min(0) > 0.05)  # every variable varies


def test_graph_data_reach_both_ends_of_the_range():
    # each mechanism is scaled onto [0, 1] before the rescale: some variable hits each end
    x = sample_data("linear", 0)
    assert x.min() < 0.06 and x.max() > 0.94


def test_collider_causes_are_independent():
    for seed in range(3):
        x = sample_data("collider", seed)
        assert abs(np.corrcoef(x[:, 0], x[:, 2])[0, 1]) < 0.015
        assert dependence(x[:, 0], x[:, 2]) < 0.002        # 16 / 100,000 expected
    x = sample_data("collider", 1)  # the effect depends on its causes
    assert dependence(x[:, 0], x[:, 1]) > 0.05
    assert dependence(x[:, 2], x[:, 1]) > 0.05


def test_linear_chain_x3_independent_of_x1_given_x2():
    for seed in range(3):
        x = sample_data("linear", seed)
        assert dependence(x[:, 0], x[:, 2]) > 0.002  # a chain: X1 and X3 are dependent...
        assert conditional_dependence(x, given=1, a=0, b=2) < 0.01  # ...but not given X2
    # the same test sees the direct edge X1 -> X3 of the complete graph
    x = sample_data("complete", 0)
    assert conditional_dependence(x, given=1, a=0, b=2) > 0.03


def test_data_set_is_reloaded_from_its_saved_coefficients(tmp_path):
    params = models.draw_data_params("complete", np.random.default_rng(7))
    (tmp_path / "data.json").write_text(json.dumps(params))
    again = json.loads((tmp_path / "data.json").read_text())
    rng_a, rng_b = (tf.random.Generator.from_seed(1) for _ in range(2))
    a = models.SyntheticData([params]).sample(1000, rng_a).numpy()
    b = models.SyntheticData([again]).sample(1000, rng_b).numpy()
    np.testing.assert_array_equal(a, b)
    other = models.draw_data_params("complete", np.random.default_rng(8))
    assert other["mechanisms"]["X3"] != params["mechanisms"]["X3"]


def test_cubic_is_every_monomial_up_to_degree_three():
    coef = np.zeros((3, 3, 3), np.float32)
    coef[0, 0, 0], coef[1, 1, 2], coef[0, 2, 2] = 0.5, 2.0, -1.0   # 0.5 + 2 u^2 v - v^2
    u = np.array([[[0.3, 0.7], [1.0, 0.0]]], np.float32)
    got = models.cubic(tf.constant(u), tf.constant(coef[None])).numpy()[0, :, 0]
    want = 0.5 + 2 * u[0, :, 0] ** 2 * u[0, :, 1] - u[0, :, 1] ** 2
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- generators
# variable -> the noise chunks (1, 2, 3) it must depend on, written out by hand
DEPENDS_ON = {
    "linear": {0: {0}, 1: {0, 1}, 2: {0, 1, 2}},
    "collider": {0: {0}, 1: {0, 1, 2}, 2: {2}},
    "complete": {0: {0}, 1: {0, 1}, 2: {0, 1, 2}},
    "fc3": {0: {0}, 1: {0}, 2: {0}},
    "fc5": {0: {0}, 1: {0}, 2: {0}},
    "fc10": {0: {0}, 1: {0}, 2: {0}},
}


@pytest.mark.parametrize("name", models.GENERATORS)
def test_generator_wiring(name):
    """X_i depends on noise chunk j exactly when j is X_i's own or an ancestor's noise."""
    z_dim = 4
    gen = models.make_generator(name, z_dim, 6, [tf.random.Generator.from_seed(0)])
    z = tf.random.Generator.from_seed(1).uniform([1, 32, 3 * z_dim])
    for var in range(3):
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = gen(z)[..., var]
        grad = tape.gradient(out, z).numpy()[0]
        for chunk in range(3):
            size = np.abs(grad[:, chunk * z_dim:(chunk + 1) * z_dim]).sum()
            if chunk in DEPENDS_ON[name][var]:
                assert size > 1e-6, (name, var, chunk)
            else:
                assert size == 0.0, (name, var, chunk)
    x = gen(z).numpy()
    assert x.shape == (1, 32, 3) and 0 < x.min() and x.max() < 1


def test_graph_generator_nodes_read_only_parents_and_own_noise():
    gen = models.make_generator("collider", 10, 10, [tf.random.Generator.from_seed(0)])
    first_layer_inputs = {var: int(net[0].w.shape[1]) for var, net in gen.nets.items()}
    assert first_layer_inputs == {"X1": 10, "X3": 10, "X2": 12}


def test_consistent_generators_follow_the_causal_order():
    assert consistent_generators("linear") == ["linear", "complete"]
    assert consistent_generators("collider") == ["collider"]
    assert consistent_generators("complete") == ["complete"]
    assert consistent_generators("network") == []


# ----------------------------------------------------------------------------- networks
def test_minibatch_features_match_the_definition():
    a = np.random.default_rng(0).normal(size=(2, 7, 5, 3)).astype(np.float32)
    want = np.zeros((2, 7, 5))
    for r in range(2):
        for i in range(7):
            for k in range(5):
                want[r, i, k] = sum(np.exp(-np.abs(a[r, i, k] - a[r, j, k]).sum())
                                    for j in range(7))
    got = models.minibatch_features(tf.constant(a)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_losses():
    zero = tf.zeros([1, 8, 1])
    np.testing.assert_allclose(models.d_loss_fn(zero, zero).numpy(), [2 * np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(models.g_loss_fn(zero).numpy(), [np.log(2)], rtol=1e-6)
    sure = tf.fill([1, 8, 1], 20.0)
    assert models.d_loss_fn(sure, -sure).numpy()[0] < 1e-6
    assert models.g_loss_fn(-sure).numpy()[0] > 19


def test_runs_side_by_side_are_independent():
    """Run 0's losses give no gradient to run 1's weights."""
    params = [models.draw_data_params("linear", np.random.default_rng(s)) for s in (0, 1)]
    gans = models.GANSet(type("C", (), CONFIG), params, [0, 1], jit_compile=False)
    gan = gans.gans["complete"]
    real = gans.data.sample(16, gans.rng)
    z = gans.rng.uniform([2, 16, gans.noise_dim])
    with tf.GradientTape() as tape:
        fake_logits = gan.disc(gan.gen(z))
        loss = models.d_loss_fn(gan.disc(real), fake_logits)[0] + models.g_loss_fn(fake_logits)[0]
    variables = gan.disc.trainable_variables + gan.gen.trainable_variables
    for grad in tape.gradient(loss, variables):
        grad = grad.numpy()
        assert np.abs(grad[0]).sum() > 0 and np.abs(grad[1]).sum() == 0


def nan_at(var, index):
    var.assign(tf.tensor_scatter_nd_update(var, [index], [np.nan]))


def test_a_nan_skips_that_runs_update_of_that_gan_only():
    params = [models.draw_data_params("linear", np.random.default_rng(s)) for s in (0, 1)]
    gans = models.GANSet(type("C", (), CONFIG), params, [0, 1], jit_compile=False)
    assert not gans.train_step()["nonfinite"].numpy().any()
    nan_at(gans.gans["fc3"].disc.l0.w, [1, 0, 0])  # run 1's fc3 discriminator
    before = {path: v.numpy().copy() for path, v in gans.run_variables().items()}
    masks = gans.train_step()["nonfinite"].numpy()
    k = models.GENERATORS.index("fc3")
    assert masks.shape == (6, 2) and np.count_nonzero(masks) == 1 and masks[k, 1] != 0
    assert "gradients of d_loss" in nonfinite.describe(masks[k, 1], models.NONFINITE_NAMES)
    after = {path: v.numpy() for path, v in gans.run_variables().items()}
    fc3 = [path for path in before if path.startswith("gans/fc3/")]
    for path in fc3:  # run 1: weights, moments and iteration counts as they were
        np.testing.assert_array_equal(before[path][1], after[path][1], err_msg=path)
    assert any(not np.array_equal(before[p][0], after[p][0]) for p in fc3 if "/disc/" in p)
    assert after["gans/fc3/d_opt/iterations"].tolist() == [2, 1]
    assert after["gans/fc5/d_opt/iterations"].tolist() == [2, 2]


def test_checkpoints_with_one_adam_count_for_all_runs_still_load():
    params = [models.draw_data_params("linear", np.random.default_rng(0))]
    gans = models.GANSet(type("C", (), CONFIG), params, [0], jit_compile=False)
    state = gans.run_state(0)
    counts = [path for path in state if path.endswith("/iterations")]
    assert len(counts) == 12 and all(state[p].shape == (1,) for p in counts)
    older = {p: (np.int64(7) if p in counts else v) for p, v in state.items()}
    gans.load_run_state(older)  # as written before Adam counted per run
    assert gans.gans["fc5"].g_opt.iterations.numpy().tolist() == [7]


def test_a_gan_whose_updates_keep_failing_stops_the_process(tmp_path):
    from synthetic.trainer import Trainer

    config, given = get_config(["--data_type", "collider", "--max_step", "2", "--log_step", "1",
                                "--save_step", "1", "--scatter_step", "0", "--tvd_samples",
                                "500", "--seed", "5", "--jit_compile", "False",
                                "--max_nonfinite", "3", "--model_dir", str(tmp_path)])
    trainer = Trainer(config, given)
    trainer.train()
    run = trainer.runs[0].path
    files = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert sorted(files) == ["ckpt-1.npz", "ckpt-2.npz"]
    nan_at(trainer.gans.gans["fc5"].disc.l0.w, [0, 0, 0])
    config.max_step = 50
    with pytest.raises(nonfinite.NonFiniteError) as info:
        trainer.train()
    text = str(info.value)
    assert text.startswith(f"The fc5 GAN of {run} stopped at step 5: 3 updates in a row "
                           "were skipped (since step 3) because d_loss")
    assert f"--load_path {run}" in text and trainer.skipped == 3
    # --save_step 1, but no checkpoint is written while updates are being skipped
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == files
    tags = set()
    for path in (run / "fc5").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            tags |= {v.tag for v in tf.compat.v1.Event.FromString(record.numpy()).summary.value}
    assert "skipped_updates" in tags


# ----------------------------------------------------------------------------- TVD
def test_grid_histogram_matches_numpy_histogramdd():
    x = np.random.default_rng(0).uniform(size=(5000, 3))
    x[:10] = 1.0  # the upper edge belongs to the last cell, as in histogramdd
    want, _ = np.histogramdd(x, bins=10, range=[[0, 1]] * 3)
    np.testing.assert_allclose(models.grid_histogram(x), want.reshape(-1) / len(x))


def test_tvd_on_known_histograms():
    one = np.full((4, 3), 0.05)                     # all in cell (0, 0, 0)
    p = models.grid_histogram(one)
    assert p[0] == 1.0 and p.sum() == 1.0
    far = np.full((4, 3), 0.95)                     # all in cell (9, 9, 9)
    assert models.tvd_and_max_diff(p, p) == (0.0, 0.0)
    assert models.tvd_and_max_diff(p, models.grid_histogram(far)) == (1.0, 1.0)
    half = models.grid_histogram(np.array([[0.05] * 3, [0.95] * 3]))
    assert models.tvd_and_max_diff(p, half) == (0.5, 0.5)
    spread = models.grid_histogram(np.array([[0.05, 0.05, 0.05], [0.05, 0.05, 0.15],
                                             [0.05, 0.15, 0.05], [0.15, 0.05, 0.05]]))
    tvd, mvd = models.tvd_and_max_diff(p, spread)
    assert tvd == pytest.approx(0.75) and mvd == pytest.approx(0.75)


# ----------------------------------------------------------------------------- a short run
def run_main(args):
    return synth_main.run([str(a) for a in args])


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    code = run_main(["--data_type", "collider", "--max_step", 20, "--log_step", 10,
                     "--scatter_step", 10, "--save_step", 10, "--tvd_samples", 2000,
                     "--seed", 3, "--num_threads", 1, "--jit_compile", "False",
                     "--model_dir", out])
    assert code == 0
    (run,) = sorted(out.iterdir())
    return run


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_short_run_writes_tvd_csv_figures_and_checkpoints(short_run, capsys):
    params = json.loads((short_run / "params.json").read_text())
    assert params["data_type"] == "collider" and params["seed"] == 3
    assert json.loads((short_run / "data.json").read_text())["data_type"] == "collider"
    for name in models.GENERATORS:
        rows = read_rows(short_run / name / "tvd.csv")
        assert [int(r["iter"]) for r in rows] == [0, 10, 20]
        assert all(0 <= float(r["tvd"]) <= 1 and 0 <= float(r["mvd"]) <= 1 for r in rows)
        assert sorted(p.name for p in (short_run / name / "scatter").iterdir()) == [
            "000010.png", "000020.png"]
        assert list((short_run / name).glob("events.out.tfevents.*"))
    assert (short_run / "data_scatter.png").stat().st_size > 1000
    assert sorted(p.name for p in (short_run / "checkpoints").iterdir()) == [
        "ckpt-10.npz", "ckpt-20.npz"]
    assert len(read_rows(short_run / "data_tvd.csv")) == 3


def test_loaded_run_is_measured_then_resumed(short_run, capsys):
    before = read_rows(short_run / "fc5" / "tvd.csv")
    assert run_main(["--load_path", short_run, "--is_train", "False", "--tvd_samples", 2000,
                     "--jit_compile", "False"]) == 0
    table = capsys.readouterr().out
    assert "collider data, 20 iterations" in table
    ranked = [line.split()[1] for line in table.splitlines() if line[:4].strip().isdigit()]
    assert sorted(ranked) == sorted(models.GENERATORS)
    assert read_rows(short_run / "fc5" / "tvd.csv") == before  # measuring adds no row
    assert run_main(["--load_path", short_run, "--max_step", 30, "--log_step", 10,
                     "--tvd_samples", 2000, "--scatter_step", 0, "--jit_compile",
                     "False"]) == 0
    rows = read_rows(short_run / "fc5" / "tvd.csv")
    assert rows[:3] == before and [int(r["iter"]) for r in rows] == [0, 10, 20, 30]


def test_collect_stats_on_the_short_run(short_run, tmp_path, capsys):
    assert collect_stats.main([str(short_run.parent), "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "final_tvd.csv")
    assert {r["generator"] for r in rows} == set(models.GENERATORS)
    assert sorted(int(r["rank"]) for r in rows) == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "tvd_vs_iter.png").stat().st_size > 1000
    assert "| collider (1," in (tmp_path / "final_tvd.md").read_text()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("args", [["--data_type", "fork"], ["--batch_size", "0"],
                                  ["--lr_gen", "-1"], ["--no_such_flag", "1"],
                                  ["--max_nonfinite", "0"]])
def test_bad_flags_are_one_line_exit_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        run_main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("synthetic/main.py: error:")


def test_bad_values_are_one_line_exit_2(tmp_path, capsys):
    assert run_main(["--load_path", tmp_path / "missing"]) == 2
    assert run_main(["--is_train", "False", "--model_dir", tmp_path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--load_path" in err[0] and "--is_train False" in err[1]
    assert not list(tmp_path.iterdir())  # no run folder was made


def test_command_line_error_needs_no_tensorflow():
    result = subprocess.run([sys.executable, str(ROOT / "synthetic" / "main.py"),
                             "--data_type", "fork"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "invalid choice: 'fork'" in result.stderr


def test_run_datasets_repeats_runs_over_data_sets():
    script = ROOT / "synthetic" / "run_datasets.sh"
    env = dict(os.environ, PYTHON="echo", PER_PROCESS="2", DATA_TYPES="linear network")
    result = subprocess.run(["bash", str(script), "3", "--max_step", "7"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [line for line in result.stdout.splitlines() if "main.py" in line]
    assert [c.split("--num_runs ")[1].split()[0] for c in calls] == ["2", "1", "2", "1"]
    assert all(c.endswith("--max_step 7") for c in calls)
    assert [c.split("--data_type ")[1].split()[0] for c in calls] == [
        "linear", "linear", "network", "network"]
    for bad in (["0"], ["x"], ["2", "--seed", "1"]):
        result = subprocess.run(["bash", str(script), *bad], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
