"""Counterfactuals of held-out faces: abduction (encoder, refinement, controller noise),
the command's files and measures on a tiny CausalGAN run, and its errors. The toy faces'
exact counterfactuals themselves: test_toy_faces.py."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import abduction
import main as main_module
from errors import UserError
from figure_scripts import counterfactual, readers
from figure_scripts.__main__ import run as figures

GRAPH = {"Young": [], "Male": [], "Bald": ["Male", "Young"], "Eyeglasses": ["Young"]}
TINY = ["--dataset", "toyfaces", "--num_gpu", "0", "--z_dim", "4", "--batch_size", "4",
        "--cc_n_layers", "2", "--cc_n_hidden", "4", "--num_worker", "2",
        "--model_type", "dcgan", "--df_dim", "4"]


@pytest.fixture(scope="module")
def tiny_run(toy_panel, tmp_path_factory):
    """An untrained CausalGAN at the panel's size on the panel's toy faces, saved."""
    logs = tmp_path_factory.mktemp("cf_logs")
    graph = logs / "graph.json"
    graph.write_text(json.dumps(GRAPH))
    size = str(toy_panel.size)
    trainer = main_module.get_trainer([*TINY, "--input_scale_size", size, "--gf_dim", size,
                                       "--causal_model", str(graph), "--data_dir",
                                       str(toy_panel.data_dir), "--log_dir", str(logs)])
    trainer.save()
    return trainer


def test_controller_noise_reproduces_the_labels_and_counterfactuals_keep_the_rest(tiny_run):
    cc = tiny_run.cc
    names = list(cc.label_names)
    labels = np.round(cc.sample(64, seed=3)[0].numpy())
    noise = abduction.controller_noise(cc, labels, seed=0)
    np.testing.assert_array_equal(abduction.counterfactual_labels(cc, labels, noise, {}), labels)
    cf = abduction.counterfactual_labels(cc, labels, noise, {"Male": 0})
    assert (cf[:, names.index("Male")] == 0).all()
    for keep in ("Young", "Eyeglasses"):  # not below Male
        np.testing.assert_array_equal(cf[:, names.index(keep)], labels[:, names.index(keep)])
    bald = names.index("Bald")
    # Bald is recomputed with the same noise: where Male did not change, neither does Bald
    same = labels[:, names.index("Male")] == 0
    np.testing.assert_array_equal(cf[same, bald], labels[same, bald])
    # with noise that does not reproduce the labels, the rows whose Male stays keep every
    # label, and the others' descendants of Male follow that noise
    other = np.random.default_rng(1).uniform(-1, 1, noise.shape).astype(np.float32)
    cf = abduction.counterfactual_labels(cc, labels, other, {"Male": 0})
    np.testing.assert_array_equal(cf[same], labels[same])
    assert (cf[~same, bald] != labels[~same, bald]).any()
    with pytest.raises(UserError, match="not a node"):
        abduction.counterfactual_labels(cc, labels, noise, {"Smiling": 1})


def test_encoder_inverts_g_and_refinement_lowers_the_error(tiny_run, tmp_path):
    model = tiny_run.model
    encoder = abduction.train_encoder(model, tiny_run.cc, 16, 3, steps=30, progress=False)
    assert encoder.info["steps"] == 30 and encoder.info["history"]
    first, last = encoder.info["history"][0], encoder.info["history"][-1]
    assert last[1] + last[2] < first[1] + first[2]  # the losses fall
    labels = np.round(tiny_run.cc.sample(8, seed=1)[0].numpy())
    z = np.random.default_rng(0).uniform(-1, 1, [8, 4]).astype(np.float32)
    images = model.generate(labels, z, round_labels=True).numpy()
    fit, used = abduction.abduct(model, encoder, images, labels, steps=15, lr=0.1)
    np.testing.assert_array_equal(used, labels)
    assert fit.z_gen.shape == (8, 4) and np.abs(fit.z_gen).max() <= 1.0
    assert fit.mse[-1] < fit.mse[0] and len(fit.mse) == 16
    encoder.save(tmp_path / "enc")
    again = abduction.Encoder.load(tmp_path / "enc")
    np.testing.assert_allclose(again(images)[0], encoder(images)[0], atol=1e-6)


def test_command_writes_the_report_with_exact_counterfactuals(tiny_run, capsys):
    run = tiny_run.model_dir
    argv = ["counterfactual", "--load_path", str(run), "--n", "10", "--refine_steps", "2",
            "--encoder_steps", "3", "--quiet", "--do", "Bald=1", "--do", "Male=0"]
    assert figures(argv) == 0
    out = run / "counterfactual"
    for name in ("report.md", "summary.json", "composition.csv", "effectiveness.csv",
                 "faces.csv", "exact.csv", "targets.csv", "effectiveness.png",
                 "distances.png", "grid.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["readers"] == [spec.name for spec in readers.PANEL]
    assert summary["passed"] + summary["failed"] == len(summary["targets"]) == 1 + 2 * 2 + 2
    exact = pd.read_csv(out / "exact.csv")
    assert list(exact.intervention) == ["do(Bald=1)", "do(Male=0)"]
    assert (exact.floor_two_renders_l1 == 0).all()  # the renderer redraws the faces exactly
    assert exact.closer_l1.between(0, 1).all() and (exact.random_same_labels_l1 > 0).all()
    faces = pd.read_csv(out / "faces.csv")
    assert len(faces) == 2 * summary["n_faces"] and faces.reversed_l1.between(0, 1).all()
    effect = pd.read_csv(out / "effectiveness.csv")
    assert set(effect.reader) == set(summary["readers"]) and effect.kept.between(0, 1).all()
    assert "## Against the exact counterfactual" in (out / "report.md").read_text()
    printed = capsys.readouterr().out
    assert "closer to the exact counterfactual" in printed
    # the encoder is cached beside the report, and trained again only when asked or when
    # more steps are asked for than it was trained for
    info = out / "encoder" / abduction.INFO_FILE
    stamp = info.stat().st_mtime_ns
    assert abduction.get_encoder(tiny_run, steps=3, progress=False).info["steps"] == 3
    assert abduction.get_encoder(tiny_run, steps=2, progress=False).info["steps"] == 3
    assert info.stat().st_mtime_ns == stamp
    assert abduction.get_encoder(tiny_run, steps=4, progress=False).info["steps"] == 4
    assert json.loads(info.read_text())["steps"] == 4
    assert abduction.get_encoder(tiny_run, steps=2, retrain=True,
                                 progress=False).info["steps"] == 2


@pytest.mark.parametrize("extra,message", [
    (["--do", "Smiling=1"], "Smiling"),
    (["--do", "Bald=2"], "0 or 1"),
    (["--do", "Bald"], "NODE=VALUE"),
    (["--n", "1"], "--n must be"),
])
def test_bad_input_exits_2_with_a_message(tiny_run, capsys, extra, message):
    assert figures(["counterfactual", "--load_path", str(tiny_run.model_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_panel_and_missing_image_model_say_what_to_do(tiny_run, monkeypatch):
    monkeypatch.setattr(readers, "get_panel", lambda *a, **k: None)
    with pytest.raises(UserError, match="python -m figure_scripts fidelity"):
        counterfactual._panel(tiny_run, False, False)
    with pytest.raises(UserError, match="no image model"):
        abduction.get_encoder(SimpleNamespace(model=None))
