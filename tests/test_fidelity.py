"""The causal-fidelity report: the independent classifier, the label part against a known
truth, diversity, the verdicts and targets, and the whole report on a tiny run."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import main as main_module
import toy_faces
from errors import UserError
from figure_scripts import classifier as clf_module
from figure_scripts import fidelity

SIZE = 16
TINY_PLAN = clf_module.TrainingPlan(n_train=600, n_test=300, n_data_test=120, steps=160,
                                    batch_size=32, learning_rate=3e-3, render_workers=1)
# a four-node graph (any graph works); pretraining alone writes a checkpoint of the whole
# run, untrained image model included, and leaves no figures to draw
GRAPH = {"Young": [], "Male": [], "Bald": ["Male", "Young"],
         "Wearing_Lipstick": ["Male", "Young"]}
TINY_RUN = ["--dataset", "toyfaces", "--num_gpu", "0", "--input_scale_size", str(SIZE),
            "--conv_hidden_num", "4", "--z_num", "8", "--z_dim", "4", "--batch_size", "4",
            "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2", "--critic_layers",
            "3", "--num_worker", "2", "--is_pretrain", "True", "--pretrain_iter", "10",
            "--min_pretrain_iter", "10", "--model_type", "began", "--is_train", "False",
            "--log_step", "100"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=120, seed=0, workers=1, progress=False)
    return folder


@pytest.fixture(scope="module")
def classifier(data_dir):
    """A tiny classifier, cached where the report looks for it."""
    return clf_module.get_classifier(data_dir / "toyfaces", SIZE, seed=0, progress=False,
                                     plan=TINY_PLAN)


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory, classifier):
    logs = tmp_path_factory.mktemp("logs")
    graph = logs / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    code = main_module.run([*TINY_RUN, "--causal_model", str(graph), "--data_dir",
                            str(data_dir), "--log_dir", str(logs)])
    assert code == 0
    (run,) = [path for path in logs.iterdir() if path.is_dir()]
    assert list((run / "checkpoints").glob("ckpt-*.index"))
    return run


class ExactController:
    """A controller whose samples come from a known SCM (so the truth is known), or a
    wrong one that answers do() by conditioning."""

    def __init__(self, scm, names, confuse_do_with_cond=False):
        self.scm, self.label_names = scm, list(names)
        self.confuse = confuse_do_with_cond

    def sample_label(self, cond_dict=None, do_dict=None, N=None, seed=None):
        rng = np.random.default_rng(seed)
        cond = dict(cond_dict or {})
        do = dict(do_dict or {})
        if self.confuse:
            cond, do = {**cond, **do}, {}
        found, total = [], 0
        for _ in range(200):
            rows = self.scm.sample(50_000, do=do, seed=int(rng.integers(2**31)))
            for key, value in cond.items():
                rows = rows[rows[key] == value]
            found.append(rows)
            total += len(rows)
            if total >= N:
                break
        rows = pd.concat(found).iloc[:N]
        return {name: rows[name].to_numpy(np.float32)[:, None] for name in self.label_names}


# ----------------------------------------------------------------------------- classifier
def test_classifier_trains_on_a_tiny_rendered_set_beats_chance_and_is_cached(classifier,
                                                                             data_dir):
    balanced = classifier.info["scores"]["balanced"]
    assert classifier.attribute_names == list(toy_faces.NODES)
    scores = {name: s["balanced_accuracy"] for name, s in balanced.items()}
    assert all(s["n_pos"] > 50 and s["n_neg"] > 50 for s in balanced.values())
    # chance is 0.5 on every attribute; the largest, clearest ones are learnt at once
    assert np.mean(list(scores.values())) > 0.75, scores
    assert scores["Male"] > 0.85 and scores["Wearing_Lipstick"] > 0.85, scores
    groups = classifier.info["subgroups"]["balanced"]
    bald_women = [g for g in groups if g["subgroup"] == "Bald=1" and g["cell"] == "Male=0"
                  and g["attribute"] == "Male"]
    assert bald_women and bald_women[0]["n"] > 20
    assert any(g["too_small"] for g in classifier.info["subgroups"]["data"])

    # cached: a second call loads it (no training), a missing size is None when asked
    folder = clf_module.cache_folder(data_dir / "toyfaces", SIZE)
    assert (folder / clf_module.WEIGHTS_FILE).is_file() and (folder / "classifier.json").is_file()
    again = clf_module.get_classifier(data_dir / "toyfaces", SIZE, train_if_missing=False)
    assert again is not None  # loaded from the cache (train_if_missing=False never trains)
    images = np.random.default_rng(0).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    assert np.allclose(again.predict_proba(images), classifier.predict_proba(images), atol=1e-5)
    assert again.predict_proba(images).shape == (5, len(toy_faces.NODES))
    assert again.features(images).shape[0] == 5
    assert clf_module.get_classifier(data_dir / "toyfaces", 8, train_if_missing=False) is None


def test_on_real_data_the_classifier_trains_on_its_images_and_flags_small_subgroups(
        tmp_path, data_dir):
    import shutil

    folder = tmp_path / "photos"  # not the toy faces: no scm.json beside the attributes
    shutil.copytree(data_dir / "toyfaces" / "images", folder / "images")
    shutil.copy(data_dir / "toyfaces" / "list_attr_celeba.txt", folder)
    assert not clf_module.is_toy_dataset(folder)
    plan = clf_module.TrainingPlan(n_train=200, steps=20, batch_size=16, n_data_test=100)
    trained = clf_module.get_classifier(folder, 8, progress=False, plan=plan)
    info = trained.info
    assert "class-balanced" in info["training_data"] and "balanced" not in info["scores"]
    held = clf_module.heldout_mask(_attr(folder).index)
    assert info["train_images"] == (~held).sum() and info["eval_images"]["data"] == held.sum()
    assert all(row["too_small"] for row in info["subgroups"]["data"])


def test_classifier_errors_are_user_errors(tmp_path, classifier):
    folder = tmp_path / "noimages"
    folder.mkdir()
    (folder / "list_attr_celeba.txt").write_text("1\nMale Bald\n000001.jpg 1 -1\n")
    with pytest.raises(UserError, match="no images/ folder"):
        clf_module.get_classifier(folder, SIZE, progress=False)
    with pytest.raises(UserError, match="missing from the data set"):
        fidelity.classifier_columns(classifier, ["Male", "Gray_Hair"])
    with pytest.raises(UserError, match="shape"):
        classifier.predict_proba(np.zeros((2, 8, 8, 3)))


# ----------------------------------------------------------------------------- labels
def test_label_part_against_a_controller_with_known_truth():
    scm = toy_faces.default_scm()
    names = list(scm.nodes)
    data = scm.sample(20_000, seed=1)
    sampler = fidelity.LabelSampler(ExactController(scm, names), names, seed=0, probe=20_000)
    table, summary = fidelity.controller_fidelity(sampler, data, scm, n=20_000, progress=False)
    assert len(table) == len(names) * 2 * (len(names) - 1)
    row = table.set_index(["node", "value", "label"])
    assert row.loc[("Bald", 1, "Male"), "do_truth"] == pytest.approx(0.422)
    assert row.loc[("Bald", 1, "Male"), "do_controller"] == pytest.approx(0.422, abs=0.02)
    assert row.loc[("Bald", 1, "Male"), "cond_truth"] == pytest.approx(0.9393, abs=1e-3)
    assert row.loc[("Bald", 1, "Male"), "cond_controller"] == pytest.approx(0.939, abs=0.02)
    assert row.loc[("Wearing_Lipstick", 1, "Male"), "cond_controller"] < 0.03
    assert summary["do_abs_error_max"] < 0.03
    assert summary["tvd_exact"] < 0.04 and summary["tvd"] < 0.06
    assert summary["do_tvd_exact_max"] < 0.05
    assert summary["cond_abs_error_vs_data_max"] < 0.1
    assert summary["conditions_not_found"] == []
    assert summary["truth"] == "scm.json (exact)"
    targets = {t["name"]: t for t in fidelity.evaluate_targets(None, [], None, table)}
    assert targets["controller P(Male | Bald=1)"]["status"] == "PASS"

    # without an exact model (real data) the truth is marked unavailable
    table_no_truth, no_truth = fidelity.controller_fidelity(sampler, data, None, n=2000,
                                                            progress=False)
    assert no_truth["truth"] == "unavailable" and table_no_truth["do_truth"].isna().all()

    # a controller that answers do() by conditioning is caught
    wrong = fidelity.LabelSampler(ExactController(scm, names, confuse_do_with_cond=True), names,
                                  probe=20_000)
    table, summary = fidelity.controller_fidelity(wrong, data, scm, n=20_000, progress=False)
    row = table.set_index(["node", "value", "label"])
    assert row.loc[("Bald", 1, "Male"), "do_controller"] > 0.85
    assert summary["do_abs_error_max"] > 0.4


def test_a_condition_the_controller_never_meets_is_skipped_not_waited_for():
    scm = toy_faces.ToyFacesSCM([("Male", []), ("Bald", ["Male"])],
                                {"Male": [0.5], "Bald": [0.0, 0.0]})
    sampler = fidelity.LabelSampler(ExactController(scm, scm.nodes), scm.nodes, probe=2000)
    assert len(sampler(1000, 1, cond={"Bald": 1})) == 0  # gives up instead of waiting
    assert len(sampler(1000, 1, cond={"Male": 1})) == 1000


class RenderingModel:
    """A perfect image model: it draws the toy face of the labels it is given (the same
    crop and resize as the pipeline), the image noise choosing the nuisance."""

    z_dim, channels = 1, 3

    def generate(self, labels, z_gen=None):
        import tensorflow as tf

        def render(labels, z):
            faces = []
            for row, noise in zip(labels.numpy(), z.numpy()[:, 0], strict=True):
                face = toy_faces.render_face(
                    dict(zip(toy_faces.NODES, (int(v > 0.5) for v in row), strict=True)),
                    np.random.default_rng(int((noise + 1) * 1e9)))
                left, top = toy_faces.CROP_LEFT, toy_faces.CROP_TOP
                faces.append(np.asarray(face.crop((left, top, left + 108, top + 108))))
            return tf.image.resize(np.stack(faces), [SIZE, SIZE], method="area")

        return tf.py_function(render, [labels, z_gen], tf.float32)


def test_image_part_reads_a_perfect_renderer_under_the_exact_model_as_the_truth(
        classifier, data_dir):
    scm = toy_faces.default_scm()
    folder = data_dir / "toyfaces"
    trainer = SimpleNamespace(
        label_names=list(scm.nodes), attr=_attr(folder), dataset_dir=folder, model_dir="x",
        cc=ExactController(scm, scm.nodes), model=RenderingModel(), graph=scm.graph,
        config=SimpleNamespace(input_scale_size=SIZE))
    result = fidelity.build_report(trainer, n=150, label_samples=3000, progress=False,
                                   classifier=classifier)
    pairs = {(p["target"], p["node"]): p for p in result["pairs"]}
    male_bald, male_lipstick = pairs["Male", "Bald"], pairs["Male", "Wearing_Lipstick"]
    # the tiny classifier reads Male right ~94% of the time (bald women less often): loose
    # bounds around the truth, but the separations are wide
    assert male_bald["do_images"] == pytest.approx(0.422, abs=0.2)
    assert male_bald["cond_images"] > 0.75
    assert male_bald["cond_images"] - male_bald["do_images"] > 0.25
    assert male_lipstick["do_images"] == pytest.approx(0.422, abs=0.15)
    assert male_lipstick["cond_images"] < 0.2
    assert pairs["Bald", "Bald"]["do_images"] > 0.75
    assert "separate in the right direction" in male_lipstick["verdict"]
    consistency = result["consistency"].set_index("label")["balanced_accuracy"]
    assert consistency["Male"] > 0.85 and consistency.mean() > 0.7
    assert result["diversity"]["ratio"] == pytest.approx(1.0, abs=0.2)


# ----------------------------------------------------------------------------- diversity
def test_diversity_is_one_for_real_vs_real_and_near_zero_for_a_constant_generator(
        classifier, data_dir):
    assert fidelity.mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5)
    attr = data_dir / "toyfaces"
    real = fidelity.real_images(attr, _attr(attr), SIZE, 3, 120, progress=False)
    first, second = classifier.features(real[:60]), classifier.features(real[60:])
    assert fidelity.diversity_ratio(first, second)["ratio"] == pytest.approx(1.0, abs=0.15)
    constant = np.repeat(real[:1], 60, axis=0)
    assert fidelity.diversity_ratio(classifier.features(constant), second)["ratio"] < 1e-3
    rng = np.random.default_rng(0)
    jitter = np.clip(constant + rng.normal(0, 2, constant.shape), 0, 255)
    assert fidelity.diversity_ratio(classifier.features(jitter), second)["ratio"] < 0.2


def _attr(folder):
    import data_loader

    return data_loader.read_attributes(Path(folder) / "list_attr_celeba.txt")


# ----------------------------------------------------------------------------- verdicts
def _pair(target, node, do_i, cond_i, do_l, cond_l, do_r, cond_r):
    return {"target": target, "node": node, "do_images": do_i, "cond_images": cond_i,
            "do_labels": do_l, "cond_labels": cond_l, "do_reference": do_r,
            "cond_reference": cond_r, "do_reference_source": "truth",
            "cond_reference_source": "truth"}


def test_verdicts_say_where_the_chain_breaks():
    good = fidelity.pair_verdict(_pair("Male", "Bald", 0.45, 0.9, 0.42, 0.94, 0.422, 0.939))
    assert "separate in the right direction" in good and "do not" not in good
    images = fidelity.pair_verdict(_pair("Male", "Bald", 0.85, 0.9, 0.42, 0.94, 0.422, 0.939))
    assert "do not separate" in images and "the controller is right" in images
    assert "images do not show the labels" in images
    controller = fidelity.pair_verdict(_pair("Male", "Bald", 0.9, 0.9, 0.9, 0.94, 0.422, 0.939))
    assert "controller's labels are off" in controller
    itself = fidelity.pair_verdict(_pair("Bald", "Bald", 0.24, 0.84, 1.0, 1.0, 1.0, 1.0))
    assert "only for the individuals that conditioning selects" in itself
    never = fidelity.pair_verdict(_pair("Male", "Bald", 0.4, float("nan"), 0.4, float("nan"),
                                        0.422, 0.939))
    assert "never draws Bald=1" in never


def test_targets_pass_and_fail_on_the_issue_thresholds():
    consistency = pd.DataFrame({"label": ["Male", "Bald"], "balanced_accuracy": [0.96, 0.86],
                                "accuracy": [0.95, 0.85], "n_pos": [10, 10], "n_neg": [10, 10]})
    pairs = [_pair("Male", "Bald", 0.45, 0.85, 0.42, 0.94, 0.422, 0.939),
             _pair("Bald", "Bald", 0.79, 0.9, 1, 1, 1, 1),
             _pair("Male", "Wearing_Lipstick", 0.6, 0.05, 0.42, 0.0, 0.422, 0.007)]
    controller = pd.DataFrame([{"node": "Bald", "value": 1, "label": "Male",
                                "cond_controller": 0.84, "cond_truth": 0.939,
                                "cond_data": 0.95}])
    status = {t["name"]: t["status"] for t in fidelity.evaluate_targets(
        consistency, pairs, {"ratio": 0.7}, controller)}
    assert status == {
        "label consistency, mean over labels": "PASS",
        "label consistency, lowest (Bald)": "PASS",
        "do(Bald=1): images read as bald": "FAIL",
        "do(Bald=1): images read as male": "PASS",
        "Bald=1: images read as male": "PASS",
        "do(Wearing_Lipstick=1): images read as male": "FAIL",
        "Wearing_Lipstick=1: images read as male": "PASS",
        "diversity (generated / real feature distance)": "PASS",
        "controller P(Male | Bald=1)": "FAIL"}


# ----------------------------------------------------------------------------- the report
def test_report_on_a_tiny_run_writes_every_file(tiny_run, capsys):
    code = fidelity.main(["--load_path", str(tiny_run), "--n", "40", "--label_samples", "2000",
                          "--quiet"])
    assert code == 0
    out = tiny_run / "fidelity"
    for name in ("report.md", "summary.json", "classifier.csv", "classifier_subgroups.csv",
                 "controller.csv", "consistency.csv", "headline_pairs.csv", "classifier.png",
                 "controller.png", "consistency.png", "headline_pairs.png",
                 "intvcond_Bald=1.png", "intvcond_Wearing_Lipstick=1.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["consistency"]) == set(GRAPH)
    assert len(summary["targets"]) == 9
    assert summary["passed"] + summary["failed"] + sum(
        t["status"] == "N/A" for t in summary["targets"]) == 9
    assert {(p["target"], p["node"]) for p in summary["pairs"]} == set(fidelity.HEADLINE_PAIRS)
    male_bald = [p for p in summary["pairs"] if (p["target"], p["node"]) == ("Male", "Bald")][0]
    assert male_bald["do_reference"] == pytest.approx(0.422)
    assert summary["diversity"]["ratio"] is None or summary["diversity"]["ratio"] >= 0
    report = (out / "report.md").read_text()
    assert "## Targets" in report and ("PASS" in report or "FAIL" in report)
    printed = capsys.readouterr().out
    assert "targets:" in printed and "label consistency" in printed
    assert len(pd.read_csv(out / "controller.csv")) == 4 * 2 * 3


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        fidelity.main(["--load_path", str(tmp_path)])


def test_consistency_scalars_during_training(tiny_run, tmp_path):
    from figure_scripts.run import load_run

    trainer = load_run(tiny_run)
    scalars = fidelity.consistency_scalars(trainer, n=72)
    assert scalars and set(scalars) <= set(trainer.label_names)
    assert all(0.0 <= v <= 1.0 for v in scalars.values())
    # no cached classifier for this data set: nothing, at once
    bare = SimpleNamespace(model=trainer.model, dataset_dir=tmp_path, label_names=["Male"],
                           config=SimpleNamespace(input_scale_size=SIZE), cc=trainer.cc)
    assert fidelity.consistency_scalars(bare) == {}


def test_trainer_logs_label_consistency_at_its_figure_steps(tiny_run):
    """The figure step writes fidelity/consistency_<label> scalars to TensorBoard."""
    from tensorflow.core.util import event_pb2

    from figure_scripts.run import load_run

    trainer = load_run(tiny_run)
    written = trainer.write_consistency()
    trainer.summary_writer.flush()
    assert written and set(written) <= set(trainer.label_names)
    tags = set()
    for path in (tiny_run / "summaries").glob("events*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    assert {f"fidelity/consistency_{name}" for name in written} <= tags
