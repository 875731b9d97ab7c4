"""Figure scripts: the sampler's rules on a hand-set model, and every figure command on a tiny run."""

import argparse
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import data_loader
from errors import UserError
from figure_scripts import sample as sampler
from figure_scripts.__main__ import run as figures

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a hand-set model
class Spy:
    """The controller, recording the rows of every draw."""

    def __init__(self, cc):
        self.cc = cc
        self.draws = []

    def sample(self, batch_size=None, noise=None, **kwargs):
        self.draws.append(len(noise) if noise is not None else batch_size)
        return self.cc.sample(batch_size, noise=noise, **kwargs)

    def __getattr__(self, name):
        return getattr(self.cc, name)


class PaintModel:
    """An image model with fixed weights: every pixel shows (labels, z_gen) in its channels."""

    z_dim, channels, image_size = 2, 3, 4

    def generate(self, labels, z_gen=None, round_labels=None):
        labels = tf.convert_to_tensor(labels, tf.float32)
        if round_labels is None or round_labels:
            labels = tf.round(labels)
        code = tf.concat([labels, tf.convert_to_tensor(z_gen, tf.float32)], 1)  # [B, 2 + 2]
        pixels = 127.5 + 100.0 * code[:, :3]
        return tf.tile(pixels[:, None, None, :], [1, 4, 4, 1])


def hand_set_controller():
    """A[] -> B[A], one linear layer each: logit_A = 4 z_A (uniform on [-4, 4]) and
    logit_B = 4 z_B + 6 label_A - 3."""
    from causal_controller.CausalController import CausalController

    config = argparse.Namespace(cc_n_hidden=1, cc_n_layers=1, batch_size=3)
    cc = CausalController([("A", []), ("B", ["A"])], config, seed=0)
    cc.node_dict["A"].weights[0].assign([[4.0]])
    cc.node_dict["A"].biases[0].assign([0.0])
    cc.node_dict["B"].weights[0].assign([[4.0], [6.0]])
    cc.node_dict["B"].biases[0].assign([-3.0])
    return cc


@pytest.fixture(scope="module")
def toy():
    cc = Spy(hand_set_controller())
    return SimpleNamespace(cc=cc, model=PaintModel(), batch_size=3)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_medians_of_a_uniform_logit(toy):
    (lo_a, hi_a) = sampler.logit_medians(toy.cc)["A"]
    assert lo_a == pytest.approx(-2.0, abs=0.06) and hi_a == pytest.approx(2.0, abs=0.06)


def test_do_on_logits_uses_the_medians_and_keeps_the_individuals(toy):
    lo, hi = sampler.logit_medians(toy.cc)["A"]
    s = sampler.sample(toy, do_dict={"A": [1, 0]}, N=5, seed=1)
    assert [c["do"] for c in s.combinations] == [{"A": 1.0}, {"A": 0.0}]
    np.testing.assert_allclose(s.logits[:5, 0], hi, rtol=1e-6)
    np.testing.assert_allclose(s.logits[5:, 0], lo, rtol=1e-6)
    # same individuals: B's logit moves by exactly 6 (sigmoid(hi) - sigmoid(lo))
    np.testing.assert_allclose(s.logits[:5, 1] - s.logits[5:, 1],
                               6 * (sigmoid(hi) - sigmoid(lo)), rtol=1e-4)
    assert s.images.shape == (10, 4, 4, 3) and s.accepted.all()
    np.testing.assert_array_equal(s.z_gen[:5], s.z_gen[5:])
    # a value other than 0 and 1 is the logit itself
    s = sampler.sample(toy, do_dict={"A": 2.5}, N=4, seed=1)
    np.testing.assert_allclose(s.logits[:, 0], 2.5)


def test_do_on_labels_sets_the_label(toy):
    s = sampler.sample(toy, do_dict={"A": [1, 0]}, N=5, on_logits=False, seed=2)
    np.testing.assert_array_equal(s.labels[:5, 0], 1.0)
    np.testing.assert_array_equal(s.labels[5:, 0], 0.0)
    np.testing.assert_allclose(s.logits[:5, 1] - s.logits[5:, 1], 6.0, rtol=1e-5)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        sampler.sample(toy, do_dict={"A": 1.5}, N=2, on_logits=False)


def test_conditions_on_logits_need_the_sign_and_a_larger_magnitude(toy):
    s = sampler.sample(toy, cond_dict={"A": [3, -3], "B": -1}, N=20, seed=3)
    assert s.accepted.all() and not s.failures
    assert (s.logits[:20, 0] > 3).all() and (s.logits[20:, 0] < -3).all()
    assert (s.logits[:, 1] < -1).all()
    # unconditioned, most rows would fail A > 3 (P = 1/8): they were redrawn
    assert sum(toy.cc.draws[-5:]) > 40
    # on labels: the rounded label
    s = sampler.sample(toy, cond_dict={"A": 1}, N=20, on_logits=False, seed=3)
    assert (s.labels[:, 0] > 0.5).all() and (s.logits[:, 0] <= 3).any()
    with pytest.raises(UserError, match="needs a sign"):
        sampler.sample(toy, cond_dict={"A": 0}, N=2)
    with pytest.raises(UserError, match="0 or 1"):
        sampler.sample(toy, cond_dict={"A": 0.5}, N=2, on_logits=False)


def test_a_dict_of_several_values_is_their_product(toy):
    s = sampler.sample(toy, do_dict={"A": [0, 1]}, cond_dict={"B": [1, -1]}, N=4, seed=4)
    assert len(s) == 16 and s.per_combination == 4
    expected = [({"A": a}, {"B": b}) for a in (0.0, 1.0) for b in (1.0, -1.0)]
    assert [(c["do"], c["cond"]) for c in s.combinations] == expected
    lo, hi = sampler.logit_medians(toy.cc)["A"]
    for c, (do, cond) in enumerate(expected):
        block = s.logits[s.rows(c)]
        np.testing.assert_allclose(block[:, 0], hi if do["A"] else lo, rtol=1e-6)
        assert (block[:, 1] > 1).all() if cond["B"] > 0 else (block[:, 1] < -1).all()
    # z_gen is a named input too, set for all rows
    s = sampler.sample(toy, do_dict={"z_gen": [0.5, -0.5], "A": 1}, N=3, seed=4)
    np.testing.assert_array_equal(s.z_gen, np.tile([0.5, -0.5], (3, 1)))
    np.testing.assert_allclose(s.images[:, 0, 0, 2], 127.5 + 50.0)  # channel 3 = z_gen[0]


def test_chunks_of_the_batch_size_give_the_same_rows(toy):
    sampler.logit_medians(toy.cc)  # measured once (20,000 draws), then cached
    toy.cc.draws.clear()
    chunked = sampler.sample(toy, do_dict={"A": 1}, N=7, seed=5)
    assert toy.cc.draws == [3, 3, 1]
    whole = sampler.sample(toy, do_dict={"A": 1}, N=7, seed=5, batch_size=64)
    np.testing.assert_allclose(chunked.logits, whole.logits, rtol=1e-6)
    np.testing.assert_allclose(chunked.images, whole.images, rtol=1e-6)


def test_give_up_after_4000_failures_reports_the_condition_and_count(toy, caplog):
    toy.cc.draws.clear()
    with caplog.at_level(logging.WARNING):
        s = sampler.sample(toy, cond_dict={"A": [5, -3]}, N=4, seed=6)  # |logit_A| <= 4
    assert s.failures == [("A: logit > 5", 4)]
    assert "A: logit > 5: 4 of 4 rows" in caplog.text and "4000" in caplog.text
    assert not s.accepted[:4].any() and s.accepted[4:].all()
    assert np.isnan(s.labels[:4]).all() and (s.images[:4] == 0).all()
    # each impossible row is drawn exactly 4000 times (its first draw and 3999 redraws)
    toy.cc.draws.clear()
    s = sampler.sample(toy, cond_dict={"A": 5}, N=4, seed=6)
    assert s.failures == [("A: logit > 5", 4)]
    assert sum(toy.cc.draws) == 4 * sampler.MAX_FAILURES


def test_bad_keys_are_user_errors(toy):
    with pytest.raises(UserError, match="'C' is not a node"):
        sampler.sample(toy, do_dict={"C": 1}, N=2)
    with pytest.raises(UserError, match="cannot be conditioned"):
        sampler.sample(toy, cond_dict={"z_gen": [0, 0]}, N=2)
    with pytest.raises(UserError, match="z_gen"):
        sampler.sample(toy, do_dict={"z_gen": [1, 2, 3]}, N=2)
    no_images = SimpleNamespace(cc=toy.cc, model=None, batch_size=3)
    with pytest.raises(UserError, match="no image model"):
        sampler.sample(no_images, N=2, images=True)
    assert sampler.sample(no_images, N=2).images is None


# ----------------------------------------------------------------------------- a tiny run
GRAPH = {"Young": [], "Male": [], "Bald": ["Male", "Young"]}
TINY = ["--dataset", "toyfaces", "--num_gpu", "0", "--input_scale_size", "8",
        "--conv_hidden_num", "4", "--z_num", "8", "--z_dim", "4", "--batch_size", "4",
        "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2", "--critic_layers", "3",
        "--num_worker", "2", "--figure_ext", "png", "--log_step", "10"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder made by main.py in this process: a controller pretrained for 20
    iterations and a CausalBEGAN built and saved with it (training it would only add
    minutes of tracing; the figures read any checkpoint)."""
    import main
    import toy_faces

    root = tmp_path_factory.mktemp("figures")
    toy_faces.render_dataset(root / "data" / "toyfaces", n=48, seed=0, workers=1,
                             progress=False)
    graph = root / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    trainer = main.get_trainer([
        *TINY, "--causal_model", str(graph), "--data_dir", str(root / "data"),
        "--log_dir", str(root / "logs"), "--is_pretrain", "True", "--pretrain_iter", "20",
        "--min_pretrain_iter", "20", "--model_type", "began"])
    main.main(trainer)
    trainer.summary_writer.flush()
    return Path(trainer.model_dir)


def step_of(run: Path) -> int:
    """The run's overall step, which names the figures: that of its newest checkpoint."""
    from figure_scripts.utils import guess_model_step

    return guess_model_step(run)


def test_high_level_writes_three_grids_per_label(tiny_run):
    assert figures(["high_level", "--load_path", str(tiny_run), "--labels", "Bald", "Male",
                    "--cols", "3", "--cond_value", "0.01"]) == 0
    folder = tiny_run / "figures" / "high_level"
    from PIL import Image

    for kind in ("do1_cond1", "do1_do0", "cond1_cond0"):
        for label in ("Bald", "Male"):
            with Image.open(folder / f"{step_of(tiny_run)}_{kind}_{label}.png") as im:
                assert im.size == (3 * 10 + 2, 2 * 10 + 2)  # 2 x 3 cells of 8 px + padding
    assert len(list(folder.iterdir())) == 6


def test_grids_over_two_labels(tiny_run, tmp_path):
    from PIL import Image

    assert figures(["intervention2d", "--load_path", str(tiny_run), "--rows", "Male",
                    "--cols", "Bald", "--out", str(tmp_path / "i")]) == 0
    with Image.open(tmp_path / "i" / f"{step_of(tiny_run)}_Male_x_Bald.png") as im:
        assert im.size == (5 * 10 + 2, 5 * 10 + 2)  # 5 x 5 values, one image each
    assert figures(["condition2d", "--load_path", str(tiny_run), "--rows", "Male",
                    "--cols", "Young", "--row_values", "0.01", "-0.01", "--col_values", "0.01",
                    "-0.01", "--per_cell", "2", "--figure_ext", "pdf",
                    "--out", str(tmp_path / "c")]) == 0
    path = tmp_path / "c" / f"{step_of(tiny_run)}_Male_x_Young.pdf"
    assert path.read_bytes()[:4] == b"%PDF"


def test_distributions_tables_have_the_data_and_the_exact_truth(tiny_run, tmp_path):
    import toy_faces

    assert figures(["distributions", "--load_path", str(tiny_run), "--n", "200",
                    "--sweep_n", "50", "--sweep", "-4", "0", "4", "--out", str(tmp_path)]) == 0
    step = step_of(tiny_run)
    table = pd.read_csv(tmp_path / f"{step}_do_cond_means.csv")
    assert len(table) == 3 * 2 * 3 and table["model_do"].between(0, 1).all()
    scm = toy_faces.default_scm()
    row = table[(table.node == "Bald") & (table.value == 1) & (table.label == "Male")].iloc[0]
    assert row.true_do == pytest.approx(scm.prob({"Male": 1}, do={"Bald": 1}), abs=1e-4)
    assert row.true_cond == pytest.approx(scm.prob({"Male": 1}, given={"Bald": 1}), abs=1e-4)
    attr = data_loader.read_attributes(tiny_run.parent.parent / "data" / "toyfaces"
                                       / "list_attr_celeba.txt")
    male_given_young = attr.loc[attr.Young == 1, "Male"].mean()
    row = table[(table.node == "Young") & (table.value == 1) & (table.label == "Male")].iloc[0]
    assert row.data_cond == pytest.approx(male_given_young, abs=1e-4)
    # an intervention on labels sets the label itself; the condition holds in every row kept
    do_self = table[(table.node == table.label)]
    np.testing.assert_array_equal(do_self.model_do, do_self.value)
    np.testing.assert_array_equal(do_self.model_cond, do_self.value)
    sweep = pd.read_csv(tmp_path / f"{step}_logit_sweep.csv")
    assert len(sweep) == 3 * 3 * 3
    own = sweep[(sweep.node == "Bald") & (sweep.label == "Bald")].sort_values("logit")
    assert list(own["mean"]) == [0.0, 0.0, 1.0]  # logit -4, 0 (label 0.5 rounds to 0), 4
    for name in [f"{step}_do_cond_{n}.png" for n in GRAPH] + [f"{step}_logit_sweep.png"]:
        assert (tmp_path / name).stat().st_size > 1000


def test_encode_command_writes_strip_and_reports_the_error_per_step(tiny_run, tmp_path, capsys):
    assert figures(["encode", "--load_path", str(tiny_run), "--count", "2", "--steps", "6",
                    "--do", "Bald=1", "--do", "Male=0,Young=1", "--out", str(tmp_path)]) == 0
    step = step_of(tiny_run)
    loss = pd.read_csv(tmp_path / f"{step}_encode_loss.csv")
    assert len(loss) == 7 and list(loss.columns[:2]) == ["step", "mean"]
    labels = pd.read_csv(tmp_path / f"{step}_encode_labels.csv")
    assert len(labels) == 2 * 3 and labels["fitted"].between(0, 1).all()
    assert (tmp_path / f"{step}_encode_strip.png").stat().st_size > 1000
    assert "reconstruction error" in capsys.readouterr().out


def test_tvd_plot_puts_several_runs_on_one_figure(tiny_run, tmp_path):
    other = tmp_path / "other_run"
    (other / "summaries").mkdir(parents=True)
    (other / "params.json").write_text(json.dumps({"causal_model": "big_causal_graph"}))
    writer = tf.summary.create_file_writer(str(other / "summaries"))
    with writer.as_default():
        for step, tvd in ((10, 0.5), (20, 0.3), (30, 0.2)):
            tf.summary.scalar("misc/tvd", tvd, step=step)
    writer.close()
    out = tmp_path / "plot"
    assert figures(["tvd_plot", "--load_path", str(tiny_run), str(other), "--out", str(out)]) == 0
    table = pd.read_csv(out / "tvd.csv")
    assert sorted(table["run"].unique()) == sorted([f"{tiny_run.name} (graph)",
                                                   "other_run (big_causal_graph)"])
    mine = table[table.run == "other_run (big_causal_graph)"]
    assert list(mine.step) == [10, 20, 30] and list(mine.tvd) == pytest.approx([0.5, 0.3, 0.2])
    assert list(table[table.run != "other_run (big_causal_graph)"].step) == [20]
    assert (out / "tvd.png").stat().st_size > 1000


def test_figure_commands_need_no_images_and_write_no_events(tiny_run, tmp_path):
    """The commands open the run read-only (saved_run.open_run): a copy of the run whose
    data set has its attribute file but no images draws its figures, and no TensorBoard
    event file is added."""
    import shutil

    run = tmp_path / "logs" / tiny_run.name
    shutil.copytree(tiny_run, run)
    source = data_loader.resolve_dataset_dir(json.loads((run / "params.json").read_text())[
        "data_dir"], "toyfaces")
    data = tmp_path / "data" / "toyfaces"
    data.mkdir(parents=True)
    for name in ("list_attr_celeba.txt", "scm.json"):
        shutil.copy(source / name, data / name)
    params = json.loads((run / "params.json").read_text())
    params["data_dir"] = str(tmp_path / "data")
    (run / "params.json").write_text(json.dumps(params))

    def events():
        return sorted(p.relative_to(run) for p in run.rglob("events.out.tfevents.*"))

    before = events()
    assert figures(["high_level", "--load_path", str(run), "--labels", "Bald", "--cols", "2",
                    "--cond_value", "0.01"]) == 0
    assert figures(["intervention2d", "--load_path", str(run), "--rows", "Male",
                    "--cols", "Bald"]) == 0
    assert figures(["distributions", "--load_path", str(run), "--n", "100", "--sweep_n", "20",
                    "--sweep", "0", "--nodes", "Bald"]) == 0
    assert events() == before
    assert (run / "figures" / "high_level").is_dir() and (run / "figures").is_dir()


def test_each_figure_is_a_function_of_the_sessions_trainer(tiny_run, tmp_path):
    """What ``%run main.py --load_path <run> --dry_run`` leaves: call the figures on trainer."""
    import main
    from figure_scripts.grid2d import grid2d
    from figure_scripts.tvd_plot import tvd_plot

    trainer = main.get_trainer(["--load_path", str(tiny_run), "--dry_run"])
    path = grid2d(trainer, "intervention", "Bald", "Young", row_values=[4, -4],
                  col_values=[1, 0], out=tmp_path)
    assert path == tmp_path / f"{step_of(tiny_run)}_Bald_x_Young.png"  # the run's --figure_ext
    figure, table = tvd_plot(trainer, out=tmp_path)
    assert figure.is_file() and pd.read_csv(table)["tvd"].between(0, 1).all()
    s = sampler.sample(trainer, do_dict={"Bald": [1, 0]}, N=3, seed=0)
    assert s.images.shape == (6, 8, 8, 3) and s.images.max() <= 255


def test_figures_of_a_causalgan_run(tiny_run, tmp_path):
    """The other image model (its batch norm pads every generate to full batches)."""
    import main

    dataset_dir = tiny_run.parent.parent / "data"
    graph = tiny_run.parent.parent / "graph.json"
    trainer = main.get_trainer([
        *TINY, "--input_scale_size", "16", "--gf_dim", "16", "--df_dim", "4",
        "--causal_model", str(graph), "--data_dir", str(dataset_dir),
        "--log_dir", str(tmp_path / "logs"), "--model_type", "dcgan"])
    trainer.save()
    run = str(trainer.model_dir)
    assert figures(["high_level", "--load_path", run, "--labels", "Bald", "--cols", "3",
                    "--cond_value", "0.01"]) == 0
    assert len(list((Path(run) / "figures" / "high_level").glob("0_*_Bald.png"))) == 3
    assert figures(["encode", "--load_path", run, "--count", "1", "--steps", "4",
                    "--do", "Bald=1", "--out", str(tmp_path / "e")]) == 0
    loss = pd.read_csv(tmp_path / "e" / "0_encode_loss.csv")
    assert len(loss) == 5 and loss["mean"].iloc[-1] < loss["mean"].iloc[0]


@pytest.mark.parametrize("argv,message", [
    (["high_level", "--load_path", "{tmp}"], "not a run folder"),
    (["high_level", "--load_path", "{run}", "--labels", "Smiling"], "Smiling"),
    (["condition2d", "--load_path", "{run}", "--rows", "Male", "--cols", "Bald",
      "--row_values", "0", "1"], "needs a sign"),
    (["encode", "--load_path", "{run}", "--do", "Bald"], "NODE=VALUE"),
    (["tvd_plot", "--load_path", "{tmp}"], "no TensorBoard events"),
])
def test_bad_input_exits_2_with_a_message(tiny_run, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    assert figures(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ----------------------------------------------------------------------------- counterfactuals
class LinearFaces:
    """An image model fitted in closed form to a data set: image = [labels, 1] W + z_gen B.

    W is the least-squares fit of the images on their labels (so each label has its own
    picture direction), B the leading principal directions of what the labels leave."""

    def __init__(self, images, labels, z_dim=8):
        n, self.image_size = len(images), images.shape[1]
        self.channels, self.z_dim = images.shape[3], z_dim
        flat = images.reshape(n, -1).astype(np.float64)
        design = np.concatenate([labels, np.ones([n, 1])], axis=1)
        weights, *_ = np.linalg.lstsq(design, flat, rcond=None)
        _, s, vt = np.linalg.svd(flat - design @ weights, full_matrices=False)
        basis = vt[:z_dim] * (s[:z_dim, None] * np.sqrt(3.0 / n))  # U[-1, 1] z: the residual's spread
        self.weights = tf.constant(weights, tf.float32)
        self.basis = tf.constant(basis, tf.float32)

    def generate(self, labels, z_gen=None, round_labels=None):
        labels = tf.convert_to_tensor(labels, tf.float32)
        if round_labels is None or round_labels:
            labels = tf.round(labels)
        ones = tf.ones([tf.shape(labels)[0], 1])
        flat = tf.concat([labels, ones], 1) @ self.weights + tf.cast(z_gen, tf.float32) @ self.basis
        size = self.image_size
        return tf.clip_by_value(tf.reshape(flat, [-1, size, size, self.channels]), 0.0, 255.0)


def test_encode_lowers_the_error_and_its_counterfactual_changes_the_intervened_attribute(
        tmp_path):
    fidelity = pytest.importorskip("figure_scripts.fidelity")
    get_classifier = getattr(fidelity, "get_classifier", None)
    extra = {}
    if get_classifier is None:  # the classifier lives in its own module
        classifier_module = pytest.importorskip("figure_scripts.classifier")
        get_classifier = classifier_module.get_classifier
        if hasattr(classifier_module, "TrainingPlan"):  # a small classifier is enough here
            import dataclasses

            known = {f.name for f in dataclasses.fields(classifier_module.TrainingPlan)}
            wanted = dict(n_train=600, n_test=100, n_data_test=100, steps=160, batch_size=32,
                          learning_rate=3e-3, render_workers=1)
            extra["plan"] = classifier_module.TrainingPlan(
                **{k: v for k, v in wanted.items() if k in known})
    import toy_faces
    from causal_controller.CausalController import CausalController
    from figure_scripts import encode

    size = 16
    independent = toy_faces.ToyFacesSCM([(n, []) for n in toy_faces.NODES],
                                        {n: [0.5] for n in toy_faces.NODES})
    dataset = toy_faces.render_dataset(tmp_path / "toyfaces", n=400, seed=3, workers=1,
                                       progress=False, scm=independent)
    attr = data_loader.read_attributes(data_loader.find_attribute_file(dataset))
    names = list(toy_faces.NODES)
    images, labels = next(iter(data_loader.image_dataset(
        dataset, attr, names, len(attr), scale_size=size, seed=0, shuffle=False, flip=False,
        repeat=False)))
    images, labels = images.numpy(), labels.numpy()
    model = LinearFaces(images, labels)
    config = argparse.Namespace(cc_n_hidden=4, cc_n_layers=2, batch_size=4)
    cc = CausalController(toy_faces.GRAPH, config, seed=0)

    target = names.index("Wearing_Lipstick")
    rows = np.flatnonzero(labels[:, target] == 0)[:3]
    fit = encode.fit_inputs(model, images[rows], len(names), steps=150, lr=0.05,
                            progress=False)
    assert fit.history.shape == (151, 3)
    assert (fit.history[-1] < 0.5 * fit.history[0]).all(), fit.history[[0, -1]]
    fit.noise = encode.fit_noise(cc, fit.labels, fit.logits, steps=50)
    changed = encode.counterfactual_labels(cc, fit, {"Wearing_Lipstick": 1}, on_logits=False)
    assert (changed[:, target] == 1).all()
    others = [j for j in range(len(names)) if j != target]
    np.testing.assert_allclose(changed[:, others], fit.labels[:, others], rtol=1e-6)  # a leaf
    counterfactual = model.generate(changed, fit.z_gen, round_labels=False).numpy()

    classifier = get_classifier(dataset, size, seed=0, progress=False, **extra)
    read = [classifier.attribute_names.index(n) for n in names]
    before = classifier.predict_proba(fit.reconstruction)[:, read]
    after = classifier.predict_proba(counterfactual)[:, read]
    change = np.abs(after - before).mean(axis=0)
    assert change[target] > change[others].max(), dict(zip(names, change.round(3), strict=True))
    assert (after[:, target] > before[:, target]).all()
