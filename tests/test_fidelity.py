"""The causal-fidelity report: the label part against a known truth, the verdicts and
targets, a reader on real (non-toy) data, and the whole report on a tiny run. The panel of
readers and the distances to the true distributions: test_fidelity_panel.py."""

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
from figure_scripts import fidelity, fidelity_report, fidelity_targets, readers

# a four-node graph (any graph works); pretraining alone writes a checkpoint of the whole
# run, untrained image model included, and leaves no figures to draw
GRAPH = {"Young": [], "Male": [], "Bald": ["Male", "Young"],
         "Wearing_Lipstick": ["Male", "Young"]}


def tiny_run_argv(size):
    return ["--dataset", "toyfaces", "--num_gpu", "0", "--input_scale_size", str(size),
            "--conv_hidden_num", "4", "--z_num", "8", "--z_dim", "4", "--batch_size", "4",
            "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2", "--critic_layers",
            "3", "--num_worker", "2", "--is_pretrain", "True", "--pretrain_iter", "10",
            "--min_pretrain_iter", "10", "--model_type", "began", "--is_train", "False",
            "--log_step", "100"]


@pytest.fixture(scope="module")
def data_dir(toy_panel):
    """The shared toy data set's parent folder (a panel of readers is cached in it)."""
    return toy_panel.data_dir


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory, toy_panel):
    logs = tmp_path_factory.mktemp("logs")
    graph = logs / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    code = main_module.run([*tiny_run_argv(toy_panel.size), "--causal_model", str(graph),
                            "--data_dir", str(data_dir), "--log_dir", str(logs)])
    assert code == 0
    (run,) = [path for path in logs.iterdir() if path.is_dir()]
    assert list((run / "checkpoints").glob("ckpt-*.index"))
    return run


# ----------------------------------------------------------------------------- readers
def test_on_real_data_a_reader_trains_on_its_images_and_flags_small_subgroups(
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


def test_reader_errors_are_user_errors(tmp_path, toy_panel):
    folder = tmp_path / "noimages"
    folder.mkdir()
    (folder / "list_attr_celeba.txt").write_text("1\nMale Bald\n000001.jpg 1 -1\n")
    with pytest.raises(UserError, match="no images/ folder"):
        clf_module.get_classifier(folder, toy_panel.size, progress=False)
    with pytest.raises(UserError, match="missing from the data set"):
        toy_panel.panel.columns(["Male", "Gray_Hair"])
    with pytest.raises(UserError, match="shape"):
        toy_panel.panel.read(np.zeros((2, 8, 8, 3)))
    with pytest.raises(UserError, match="architecture"):
        clf_module.build_network(16, 3, 2, "resnet")


# ----------------------------------------------------------------------------- labels
def test_label_part_against_a_controller_with_known_truth(exact_controller):
    ExactController = exact_controller
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
    targets = {t["name"]: t for t in fidelity_targets.evaluate_targets(None, [], None, table)}
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


def test_a_condition_the_controller_never_meets_is_skipped_not_waited_for(exact_controller):
    scm = toy_faces.ToyFacesSCM([("Male", []), ("Bald", ["Male"])],
                                {"Male": [0.5], "Bald": [0.0, 1.0]})  # Bald exactly Male
    sampler = fidelity.LabelSampler(exact_controller(scm, scm.nodes), scm.nodes, probe=2000)
    assert len(sampler(1000, 1, cond={"Bald": 1, "Male": 0})) == 0  # jointly never met
    assert len(sampler(1000, 1, cond={"Bald": 1})) == 1000
    assert sampler.condition_rate({"Bald": 1, "Male": 1}) == pytest.approx(0.5, abs=0.05)


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
    pair_verdict = fidelity_targets.pair_verdict
    good = pair_verdict(_pair("Male", "Bald", 0.45, 0.9, 0.42, 0.94, 0.422, 0.939))
    assert "separate in the right direction" in good and "do not" not in good
    images = pair_verdict(_pair("Male", "Bald", 0.85, 0.9, 0.42, 0.94, 0.422, 0.939))
    assert "do not separate" in images and "the controller is right" in images
    assert "images do not show the labels" in images
    controller = pair_verdict(_pair("Male", "Bald", 0.9, 0.9, 0.9, 0.94, 0.422, 0.939))
    assert "controller's labels are off" in controller
    itself = pair_verdict(_pair("Bald", "Bald", 0.24, 0.90, 1.0, 1.0, 1.0, 1.0))
    assert "only for the individuals that conditioning selects" in itself
    never = pair_verdict(_pair("Male", "Bald", 0.4, float("nan"), 0.4, float("nan"),
                                        0.422, 0.939))
    assert "never draws Bald=1" in never
    split = dict(_pair("Male", "Bald", 0.45, 0.9, 0.42, 0.94, 0.422, 0.939),
                 do_images_min=0.2, do_images_max=0.7, cond_images_min=0.88, cond_images_max=0.92)
    assert "readers disagree (do(Bald=1) 0.20-0.70)" in pair_verdict(split)
    assert "disagree" not in good


def _by_reader(values):
    return dict(zip(["r1", "r2"], values, strict=True))


def test_targets_pass_only_when_every_reader_passes_and_name_the_failing_readers():
    consistency = pd.DataFrame({  # r2 reads Bald below 0.90, its mean is still 0.96
        "label": ["Male", "Bald", "Young"] * 2, "reader": ["r1"] * 3 + ["r2"] * 3,
        "balanced_accuracy": [0.99, 0.93, 0.98, 1.0, 0.89, 0.99]})
    pairs = [dict(_pair("Male", "Bald", 0.45, 0.86, 0.42, 0.94, 0.422, 0.939), do_n=10,
                  cond_n=10, do_by_reader=_by_reader([0.44, 0.46]),
                  cond_by_reader=_by_reader([0.86, 0.87])),
             dict(_pair("Bald", "Bald", 0.87, 0.9, 1, 1, 1, 1), do_n=10, cond_n=10,
                  do_by_reader=_by_reader([0.90, 0.84]), cond_by_reader=_by_reader([0.9, 0.9])),
             dict(_pair("Male", "Wearing_Lipstick", 0.52, 0.07, 0.42, 0.0, 0.422, 0.007),
                  do_n=10, cond_n=10, do_by_reader=_by_reader([0.50, 0.54]),
                  cond_by_reader=_by_reader([0.05, 0.09]))]
    frechet = {"floor": _by_reader([1.0, 2.0]), "n_floor": 10, "source": "test", "sets": [
        {"set": "observational", "kind": "observational", "n_generated": 10, "n_reference": 10,
         "frechet": _by_reader([7.0, 17.0]), "ratio": _by_reader([7.0, 8.5]),
         "ratio_to": "floor", "note": ""},
        {"set": "do(Bald=1)", "kind": "do", "n_generated": 10, "n_reference": 10,
         "frechet": _by_reader([7.0, 17.0]), "ratio": _by_reader([1.0, 1.4]),
         "ratio_to": "observational", "note": ""},
        {"set": "Bald=1", "kind": "cond", "n_generated": 10, "n_reference": 0,
         "frechet": _by_reader([np.nan, np.nan]), "ratio": _by_reader([np.nan, np.nan]),
         "ratio_to": "observational", "note": "unavailable: no exact model"},
        {"set": "Bald=1, Male=0", "kind": "pair", "n_generated": 10, "n_reference": 10,
         "frechet": _by_reader([70.0, 70.0]), "ratio": _by_reader([10.0, 10.0]),
         "ratio_to": "observational", "note": ""}]}
    controller = pd.DataFrame([{"node": "Bald", "value": 1, "label": "Male",
                                "cond_controller": 0.84, "cond_truth": 0.939,
                                "cond_data": 0.95}])
    targets = {t["name"]: t for t in fidelity_targets.evaluate_targets(
        consistency, pairs, frechet, controller)}
    assert {name: t["status"] for name, t in targets.items()} == {
        "label consistency, mean over labels": "PASS",
        "label consistency, lowest label (Bald)": "FAIL",
        "do(Bald=1): images read as bald": "FAIL",
        "do(Bald=1): images read as male": "PASS",
        "Bald=1: images read as male": "PASS",
        "do(Wearing_Lipstick=1): images read as male": "FAIL",  # 0.54 is 0.118 off
        "Wearing_Lipstick=1: images read as male": "FAIL",  # 0.09 > 0.08
        "Fréchet distance, observational / floor": "FAIL",
        "Fréchet distance, do(Bald=1) / observational": "PASS",
        "Fréchet distance, Bald=1 / observational": "N/A",  # no reference images
        "controller P(Male | Bald=1)": "FAIL"}  # and the rare pair has no target
    failed = {name: t["failed_readers"] for name, t in targets.items()}
    assert failed["label consistency, lowest label (Bald)"] == ["r2"]
    assert failed["do(Bald=1): images read as bald"] == ["r2"]
    assert failed["do(Wearing_Lipstick=1): images read as male"] == ["r2"]
    assert failed["Wearing_Lipstick=1: images read as male"] == ["r2"]
    assert failed["Fréchet distance, observational / floor"] == ["r2"]
    assert failed["controller P(Male | Bald=1)"] == []
    bald = targets["do(Bald=1): images read as bald"]
    assert (bald["value"], bald["min"], bald["max"]) == pytest.approx((0.87, 0.84, 0.90))
    assert "0.422" in targets["do(Bald=1): images read as male"]["goal"]


# ----------------------------------------------------------------------------- the report
def test_report_on_a_tiny_run_writes_every_file(tiny_run, capsys):
    code = fidelity_report.main(["--load_path", str(tiny_run), "--n", "40", "--label_samples",
                                 "2000", "--quiet"])
    assert code == 0
    out = tiny_run / "fidelity"
    for name in ("report.md", "summary.json", "readers.csv", "readers_subgroups.csv",
                 "controller.csv", "consistency.csv", "consistency_by_reader.csv",
                 "headline_pairs.csv", "agreement.csv", "frechet.csv", "precision_recall.csv",
                 "readers.png", "controller.png", "consistency.png", "headline_pairs.png",
                 "frechet.png", "intvcond_Bald=1.png", "intvcond_Wearing_Lipstick=1.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["consistency"]) == set(GRAPH)
    assert set(summary["readers"]) == {spec.name for spec in readers.PANEL}
    # 2 consistency + 5 headline + observational and 6 do/cond Fréchet + controller
    assert len(summary["targets"]) == 15
    assert summary["passed"] + summary["failed"] + sum(
        t["status"] == "N/A" for t in summary["targets"]) == 15
    assert all(set(t["failed_readers"]) <= set(summary["readers"]) for t in summary["targets"])
    assert {(p["target"], p["node"]) for p in summary["pairs"]} == set(
        fidelity_targets.HEADLINE_PAIRS)
    male_bald = [p for p in summary["pairs"] if (p["target"], p["node"]) == ("Male", "Bald")][0]
    assert male_bald["do_reference"] == pytest.approx(0.422)
    assert set(male_bald["do_by_reader"]) == set(summary["readers"])
    sets = {row["set"] for row in summary["frechet"]["sets"]}
    assert {"observational", "do(Bald=1)", "Bald=1", "Bald=1, Male=0"} <= sets
    assert "scm.json" in summary["frechet"]["source"]
    frechet = pd.read_csv(out / "frechet.csv")
    assert set(frechet["reader"]) == set(summary["readers"]) and (frechet["frechet"] >= 0).all()
    report = (out / "report.md").read_text()
    assert "## Targets" in report and ("PASS" in report or "FAIL" in report)
    assert "## 4. Distances to the true distributions" in report and "Wilson" in report
    printed = capsys.readouterr().out
    assert "targets (value = panel mean" in printed and "label consistency" in printed
    assert "Fréchet floor" in printed
    assert len(pd.read_csv(out / "controller.csv")) == 4 * 2 * 3


def test_report_refuses_a_folder_that_is_not_a_run_and_bad_sizes(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        fidelity_report.main(["--load_path", str(tmp_path)])
    with pytest.raises(UserError, match="--n must be at least 10"):
        fidelity_report.main(["--load_path", str(tmp_path), "--n", "3"])


@pytest.mark.parametrize("flag", ["--draw_rows", "--draw_bn_batches"])
def test_report_draw_options_are_refused_for_a_began_run(tiny_run, flag):
    with pytest.raises(UserError, match=f"{flag} is CausalGAN's"):
        fidelity_report.main(["--load_path", str(tiny_run), flag, "2"])


def test_consistency_scalars_during_training(tiny_run, tmp_path):
    from figure_scripts.run import load_run

    trainer = load_run(tiny_run)
    scalars = fidelity.consistency_scalars(trainer, n=72)
    assert scalars and set(scalars) <= set(trainer.label_names)
    assert all(0.0 <= v <= 1.0 for v in scalars.values())
    # no cached panel for this data set: nothing, at once
    bare = SimpleNamespace(model=trainer.model, dataset_dir=tmp_path, label_names=["Male"],
                           config=SimpleNamespace(input_scale_size=16), cc=trainer.cc)
    assert fidelity.consistency_scalars(bare) == {}


def test_trainer_logs_label_consistency_at_its_figure_steps(tiny_run):
    """main.py gives the Trainer the fidelity report's label consistency: its figure step
    writes fidelity/consistency_<label> scalars to TensorBoard."""
    from tensorflow.core.util import event_pb2

    import main

    trainer = main.get_trainer(["--load_path", str(tiny_run), "--dry_run"])
    assert trainer.figure_metrics is main.figure_metrics
    written = trainer.write_figure_metrics()
    trainer.summary_writer.flush()
    names = {tag.removeprefix("fidelity/consistency_") for tag in written}
    assert written and names <= set(trainer.label_names)
    tags = set()
    for path in (tiny_run / "summaries").glob("events*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    assert set(written) <= tags


def test_report_tables_escape_a_pipe_inside_a_cell():
    import pandas as pd

    from figure_scripts.utils import markdown_table

    md = markdown_table(pd.DataFrame([{"target": "P(Male | Bald=1)", "v": 0.5}]))
    assert md.splitlines()[2] == "| P(Male \\| Bald=1) | 0.500 |"
