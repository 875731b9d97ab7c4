"""saved_run.open_run: a run folder opened read-only, without the data set, bad folders explained."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import tiny_run

import saved_run
from errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory, "dcgan")


@pytest.fixture(scope="module")
def controller_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory, "controller")


def listing(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def copy_run(run_dir: Path, tmp_path: Path, with_data: bool = False) -> Path:
    """A copy of the run under tmp_path/logs (and of its data under tmp_path/data)."""
    target = tmp_path / "logs" / run_dir.name
    shutil.copytree(run_dir, target)
    if with_data:
        shutil.copytree(run_dir.parents[2] / "data", tmp_path / "data")
    return target


def test_opens_the_run_as_the_trainer_saved_it_and_writes_nothing(run_dir):
    before = listing(run_dir)
    run = saved_run.open_run(run_dir)
    assert listing(run_dir) == before  # no event files, no figures, nothing touched
    assert run.model_dir == run_dir.resolve()
    assert run.label_names[:2] == ["Young", "Male"] and len(run.label_names) == 9
    assert dict(run.graph)["Bald"] == ["Male", "Young"]
    assert run.config.model_type == "dcgan" and run.model_config.gf_dim == 16
    assert run.model.name == "CausalGAN" and run.image_shape == (16, 16, 3)
    assert run.controller_step == 30 and run.model_step == 0 and run.step == 30
    assert run.checkpoint.endswith("ckpt-30")
    images = run.generate(np.ones([5, 9], np.float32), np.zeros([5, 4], np.float32))
    assert images.shape == (5, 16, 16, 3) and 0 <= images.min() <= images.max() <= 255
    assert listing(run_dir) == before


def test_it_restores_what_the_trainer_restores(run_dir, tmp_path):
    """The same weights as %run main.py --load_path <run> --dry_run (on a copy: the
    Trainer opens a TensorBoard writer in the run folder)."""
    import main

    run = saved_run.open_run(run_dir)
    trainer = main.get_trainer(["--load_path", str(copy_run(run_dir, tmp_path)), "--dry_run"])
    for mine, theirs in ((run.cc, trainer.cc), (run.model.G, trainer.model.G)):
        assert len(mine.variables) == len(theirs.variables)
        for a, b in zip(mine.variables, theirs.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    fresh = type(run.cc)(run.graph, run.cc_config, seed=1)
    assert not np.array_equal(fresh.nodes[0].weights[0].numpy(), run.cc.nodes[0].weights[0].numpy())


def relative_data_dir(run: Path) -> Path:
    """The run with --data_dir data (relative), as main.py run from the repository saves it."""
    params = json.loads((run / "params.json").read_text())
    params["data_dir"] = "data"
    (run / "params.json").write_text(json.dumps(params))
    return run


def test_the_data_set_is_optional(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = relative_data_dir(copy_run(run_dir, tmp_path))  # no data folder beside it
    run = saved_run.open_run(copy)
    assert run.attr is None
    assert run.scm is not None and run.scm.nodes[:2] == ["Young", "Male"]  # built-in model
    with_data = relative_data_dir(copy_run(run_dir, tmp_path / "b", with_data=True))
    run = saved_run.open_run(with_data)
    assert run.dataset_dir == tmp_path / "b" / "data" / "toyfaces"
    assert len(run.attr) == 48 and "Bald" in run.attr.columns


def test_a_controller_only_run(controller_dir):
    run = saved_run.open_run(controller_dir)
    assert run.model is None and run.model_config is None and run.image_shape is None
    assert run.step == 30
    with pytest.raises(UserError, match="controller only"):
        run.generate(np.ones([1, 9]), np.zeros([1, 4]))


def test_importing_it_brings_nothing_of_figure_scripts():
    code = ("import sys, saved_run, api; "
            "print([m for m in sys.modules if m.startswith('figure_scripts')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_bad_folders_say_what_to_do(run_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        saved_run.open_run(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        saved_run.open_run(tmp_path / "file")
    with pytest.raises(UserError, match="no params.json"):
        saved_run.open_run(tmp_path)

    copy = copy_run(run_dir, tmp_path / "a")
    (copy / "params.json").write_text("{ not json")
    with pytest.raises(UserError, match="damaged"):
        saved_run.open_run(copy)

    copy = copy_run(run_dir, tmp_path / "b")
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(UserError, match="holds no checkpoint"):
        saved_run.open_run(copy)

    copy = copy_run(run_dir, tmp_path / "c")
    for data in (copy / "checkpoints").glob("ckpt-30.data-*"):
        data.write_bytes(data.read_bytes()[:100])  # cut short, as by a full disk
    with pytest.raises(UserError, match="cannot be read"):
        saved_run.open_run(copy)

    copy = copy_run(run_dir, tmp_path / "d")
    params = (copy / "dcgan_params.json").read_text().replace('"df_dim": 4', '"df_dim": 8')
    (copy / "dcgan_params.json").write_text(params)
    with pytest.raises(UserError, match="cannot be read into the model"):
        saved_run.open_run(copy)


def test_rare_label_weights_are_those_of_training(run_dir, tmp_path, monkeypatch):
    """--rare_label_rate runs get the Trainer's label weights (the mix --draw_bn_batches
    measures G's statistics over): from the data's attribute table, or from the
    controller's labels when the data are elsewhere."""
    import data_loader

    monkeypatch.chdir(tmp_path)
    assert saved_run.open_run(run_dir).model.label_weights is None  # no rare rate
    for name, with_data in (("a", True), ("b", False)):
        copy = relative_data_dir(copy_run(run_dir, tmp_path / name, with_data=with_data))
        params = json.loads((copy / "params.json").read_text())
        params.update(rare_label_rate=0.3, rare_pair_rate=0.2)
        (copy / "params.json").write_text(json.dumps(params))
        dcgan = json.loads((copy / "dcgan_params.json").read_text())
        dcgan.update(draw_bn_batches=2)  # the drawing the weights are for
        (copy / "dcgan_params.json").write_text(json.dumps(dcgan))
        monkeypatch.chdir(tmp_path / name)
        run = saved_run.open_run(copy)
        weights = run.model.label_weights.numpy()
        assert weights.shape == (9, 2, 9, 2)
        if with_data:
            table = run.attr[run.label_names].to_numpy(np.float32)
            np.testing.assert_allclose(weights, data_loader.rare_pair_weights(table, 0.3, 0.2))
        else:
            assert run.attr is None and np.all(weights >= 1.0) and np.any(weights > 1.0)
