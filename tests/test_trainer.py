"""Trainer: devices, figures and summaries of a short run, checkpoints, kill and resume."""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2
from test_dcgan import dcgan_config

import trainer as trainer_module
from errors import UserError
from figure_scripts.utils import guess_model_step, make_sample_dir
from utils import grid_array, save_grid

ROOT = Path(__file__).resolve().parents[1]
GRAPH = [("Young", []), ("Male", []), ("Bald", ["Male", "Young"])]


def make_configs(data_dir, model_dir, **overrides):
    """(config, cc_config, model_config) Namespaces: ORIGINAL.md 2 defaults, tiny sizes."""
    config = argparse.Namespace(
        causal_model="test", data_dir=str(data_dir), dataset="toyfaces", do_shuffle=True,
        input_scale_size=16, is_crop=True, grayscale=False, split="train", num_worker=2,
        resize_method="AREA", build_train=False, build_pretrain=False, model_type="began",
        use_gpu=False, num_gpu=0, descrip="", dry_run=False, load_path="", log_step=1,
        log_level="INFO", log_dir="logs", seed=22, figure_ext="png", save_secs=300,
        num_cpu_devices=1, model_dir=str(model_dir))
    cc_config = argparse.Namespace(
        pt_load_path="", is_pretrain=False, pt_cc_lr=0.00008, pt_dcc_lr=0.00008, lambda_W=0.1,
        n_critic=2, critic_layers=3, critic_hidden_size=8, min_tvd=0.02, min_pretrain_iter=5,
        pretrain_iter=3, pt_factorized=False, cc_n_layers=2, cc_n_hidden=4, batch_size=4,
        save_step=5000, num_log_samples=3)
    model_config = argparse.Namespace(
        c_dim=3, conv_hidden_num=4, separate_labeler=True, z_dim=4, z_num=8, batch_size=4,
        beta1=0.9, beta2=0.999, d_lr=0.00008, g_lr=0.00008, label_loss="squarediff",
        lr_update_step=100000, max_step=50000, num_iter=10, optimizer="adam",
        round_fake_labels=True, gamma=0.5, gamma_label=0.5, lambda_k=0.001, lambda_l=0.00008,
        lambda_z=0.01, no_third_margin=False, zeta=0.5, is_train=True, build_all=False,
        log_step=1)
    for key, value in overrides.items():
        for ns in (config, cc_config, model_config):
            if hasattr(ns, key):
                setattr(ns, key, value)
    return config, cc_config, model_config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    import toy_faces

    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=64, seed=0, workers=1, progress=False)
    return folder


def read_events(summary_dir):
    """{tag: [steps]} of every event file under summary_dir."""
    tags = {}
    for path in Path(summary_dir).glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


# ----------------------------------------------------------------------------- devices
needs_no_gpu = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                                  reason="checks the behaviour of a machine without GPUs")


@needs_no_gpu
def test_one_gpu_asked_none_found_warns_and_uses_the_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="trainer"):
        strategy = trainer_module.make_strategy(argparse.Namespace(num_gpu=1, num_cpu_devices=1))
    assert "no GPU" in caplog.text and "CPU" in caplog.text
    assert strategy.num_replicas_in_sync == 1
    assert "CPU" in trainer_module.devices_of(strategy)[0].upper()
    assert not trainer_module.uses_gpu(strategy)


@needs_no_gpu
def test_more_gpus_than_exist_is_a_user_error():
    with pytest.raises(UserError, match="asks for 2 GPUs but TensorFlow finds 0"):
        trainer_module.make_strategy(argparse.Namespace(num_gpu=2, num_cpu_devices=1))


def test_cpu_split_after_tensorflow_started_is_a_clear_error():
    tf.constant(1.0) + 1.0  # devices are initialised now
    if len(tf.config.list_logical_devices("CPU")) == 3:
        pytest.skip("this process already has 3 logical CPUs")
    with pytest.raises(UserError, match="--num_cpu_devices 3"):
        trainer_module.split_cpu(3)


def test_multi_worker_detection(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not trainer_module.is_multi_worker() and trainer_module.is_chief()
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert trainer_module.is_multi_worker() and not trainer_module.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG"):
        trainer_module.is_multi_worker()


def test_stop_request_turns_sigterm_into_a_flag():
    with trainer_module.StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


# ----------------------------------------------------------------------------- figure utils
def test_grid_is_filled_row_by_row_with_padding(tmp_path):
    images = np.stack([np.full((2, 3, 3), 10.0 * (i + 1)) for i in range(5)])
    grid = grid_array(images, rows=2, cols=3, padding=2)
    assert grid.shape == (2 * 4 + 2, 3 * 5 + 2, 3)
    assert grid[2, 2, 0] == 10 and grid[2, 7, 0] == 20 and grid[6, 2, 0] == 40
    assert grid[6, 12, 0] == 0  # the sixth cell is empty
    assert grid[0, 0, 0] == 0 and grid[2, 5, 0] == 0  # padding
    for ext in ("png", "pdf"):
        path = save_grid(images, tmp_path / "sub" / f"g.{ext}", 2, 3)
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if ext == "png" else b"%PDF")


def test_sample_dir_and_step_guess(tmp_path):
    assert make_sample_dir(tmp_path, 1200).is_dir()
    assert guess_model_step("logs/x/checkpoints/ckpt-1200") == 1200
    assert guess_model_step("controller/checkpoints/CC-Model-5000.index") == 5000
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-77"\nall_model_checkpoint_paths: "ckpt-77"\n')
    assert guess_model_step(tmp_path) == 77
    assert guess_model_step(tmp_path / "nothing_here") is None


# ----------------------------------------------------------------------------- trainer
def test_dcgan_short_run_writes_figures_summaries_and_checkpoint(data_dir, tmp_path,
                                                                capsys):
    # with --rare_label_rate 0.3: rare rows repeat in the epochs, the controller reweighted
    run = tmp_path / "run"
    config, cc_config, _ = make_configs(data_dir, run, model_type="dcgan")
    config.rare_label_rate = 0.3
    model_config = dcgan_config(num_iter=4, log_step=2)
    measured = []  # the figure-step metrics are given to the Trainer (main.py: fidelity's)

    def probe(t):
        measured.append(t.overall_step())
        return {"figure/probe": 0.25}

    trainer = trainer_module.Trainer(config, cc_config, model_config, GRAPH,
                                     figure_metrics=probe)
    assert type(trainer.model).__name__ == "CausalGAN" and trainer.batch_size == 4
    table = trainer.attr[trainer.label_names].to_numpy()
    weights = trainer.model.label_weights.numpy()
    boosted = [(j, v) for j in range(len(trainer.label_names)) for v in (0, 1)
               if weights[j, v] != 1.0]
    assert boosted, "the test data set should have a label rarer than 0.3"
    repeats = trainer.row_repeats
    assert len(repeats) == len(table) and repeats.min() == 1
    for j, v in boosted:
        has = np.round(table[:, j]) == v
        assert has.mean() < 0.3 and repeats[has].sum() / repeats.sum() > has.mean()
    assert "--rare_label_rate" in capsys.readouterr().out
    trainer.train_loop()
    assert trainer.model_step == 4
    # with --rare_pair_rate as well, rows holding a rare pair of values repeat too
    pair_repeats = trainer._weigh_rare_labels(0.3, 0.45)
    assert trainer.model.label_weights.shape == [len(trainer.label_names), 2] * 2
    assert np.all(pair_repeats >= repeats) and np.any(pair_repeats > repeats)
    assert "--rare_pair_rate" in capsys.readouterr().out
    assert (run / "image_diversity" / "4_G_diversity.png").is_file()
    tags = read_events(run / "summaries")
    for tag in ("loss/d_loss", "loss/g_loss", "loss/g_loss_labelerG", "margins/k_t",
                "accuracy_real/Bald", "images/G", "labels/fake_prob", "figure/probe"):
        assert tag in tags, (tag, sorted(tags))
    assert measured and tags["figure/probe"] == measured
    assert trainer.manager.latest_checkpoint.endswith("ckpt-4")


def test_dcgan_image_side_must_match_gf_dim(data_dir, tmp_path):
    config, cc_config, _ = make_configs(data_dir, tmp_path, model_type="dcgan")
    with pytest.raises(UserError, match="--gf_dim 16"):
        trainer_module.Trainer(config, cc_config, dcgan_config(gf_dim=32), GRAPH)


def test_load_path_without_checkpoint_is_a_user_error(data_dir, tmp_path):
    config, cc_config, model_config = make_configs(data_dir, tmp_path, load_path=str(tmp_path))
    with pytest.raises(UserError, match="no checkpoint"):
        trainer_module.Trainer(config, cc_config, model_config, GRAPH)


def test_pt_load_path_loads_the_controller_alone_and_copies_it(data_dir, tmp_path):
    from causal_controller.CausalController import CausalController
    from causal_controller.pretrain import save_controller

    _, cc_config, _ = make_configs(data_dir, tmp_path)
    cc = CausalController(GRAPH, cc_config, seed=5)
    cc.step.assign(7)
    save_controller(cc, None, str(tmp_path / "old" / "checkpoints"), 7)
    config, cc_config, model_config = make_configs(
        data_dir, tmp_path / "new", pt_load_path=str(tmp_path / "old" / "checkpoints"))
    trainer = trainer_module.Trainer(config, cc_config, model_config, GRAPH)
    assert int(trainer.cc.step.numpy()) == 7 and trainer.overall_step() == 7
    for a, b in zip(cc.trainable_variables, trainer.cc.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (tmp_path / "new" / "controller" / "checkpoints" / "CC-Model-7.index").is_file()


def test_short_run_writes_every_figure_summary_and_checkpoint(data_dir, tmp_path):
    run = tmp_path / "run"
    config, cc_config, model_config = make_configs(
        data_dir, run, is_pretrain=True, pretrain_iter=3, num_iter=100, log_step=1)
    trainer = trainer_module.Trainer(config, cc_config, model_config, GRAPH)
    assert trainer.model is not None and trainer.strategy.num_replicas_in_sync == 1
    assert trainer.row_repeats is None and trainer.model.label_weights is None  # flag off
    trainer.pretrain_loop()
    assert int(trainer.cc.step.numpy()) == 3
    cc_before = [v.numpy().copy() for v in trainer.cc.trainable_variables]
    trainer.train_loop()
    assert trainer.model_step == 100 and trainer.overall_step() == 103
    for a, v in zip(cc_before, trainer.cc.trainable_variables, strict=True):
        np.testing.assert_array_equal(a, v.numpy())  # the controller stayed frozen

    expected = []
    for step, shapes in ((53, ["8x16"]), (103, ["8x16", "2x10"])):
        expected.append(f"image_diversity/{step}_G_diversity.png")
        for node, _ in GRAPH:
            expected.append(f"label_interpolation/{step}_G_interp_{node}.png")
            for rc in shapes:
                expected += [f"label_conditioning/{step}_condition_{node}_{rc}.png",
                             f"label_intervention/{step}_interv_{node}_{rc}.png",
                             f"label_intv_v_conditioning/{step}_intvcond_{node}=0_{rc}.png",
                             f"label_intv_v_conditioning/{step}_intvcond_{node}=1_{rc}.png"]
    missing = [name for name in expected if not (run / name).is_file()]
    assert not missing, missing
    written = {str(p.relative_to(run)) for p in run.glob("*/*.png")}
    assert written == set(expected)  # and nothing at other steps
    from PIL import Image

    with Image.open(run / "image_diversity/53_G_diversity.png") as im:
        assert im.size == (16 * 18 + 2, 16 * 18 + 2)

    tags = read_events(run / "summaries")
    for tag in ("loss/d_loss", "loss/g_loss", "loss/d_loss_real_label", "margins/k_t",
                "margins/l_t", "margins/z_t", "balance/balance_k", "learning_rate/g_lr",
                "measure/measure", "measure/measure_complete", "accuracy_real/Bald",
                "accuracy_fake/Male", "images/G", "images/AE_G", "images/AE_x",
                "labels/fake_prob"):
        assert tag in tags, (tag, sorted(tags))
    assert sorted(tags["loss/d_loss"])[:2] == [4, 5] and max(tags["loss/d_loss"]) == 103
    assert trainer.manager.latest_checkpoint.endswith("ckpt-103")


DRIVER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_dcgan import dcgan_config
    from test_trainer import GRAPH, MARGINS, make_configs
    from trainer import Trainer
    model_dir, num_iter, load = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "load"
    model_type, devices = sys.argv[4], int(sys.argv[5])
    config, cc_config, model_config = make_configs(
        {data!r}, model_dir, num_iter=num_iter, log_step=100000, save_secs=1,
        load_path=model_dir if load else "", num_cpu_devices=devices, model_type=model_type)
    if model_type == "dcgan":
        model_config = dcgan_config(num_iter=num_iter, log_step=100000)
    t = Trainer(config, cc_config, model_config, GRAPH)
    m = t.model
    print(json.dumps({{"step": int(m.step.numpy()),
                      **{{k: float(getattr(m, k).numpy()) for k in MARGINS[model_type]}},
                      "g_opt_iter": int(m.g_optimizer.iterations.numpy()),
                      "z_fixed": float(t.fixed.z_gen.numpy().sum()),
                      "replicas": t.strategy.num_replicas_in_sync}}), flush=True)
    t.train_loop()
    print(json.dumps({{"final": int(m.step.numpy())}}), flush=True)
""")


MARGINS = {"began": ("k_t", "l_t", "z_t"), "dcgan": ("k_t",)}
G_UPDATES_PER_STEP = {"began": 1, "dcgan": 2}


def _saved_state(run, model_type="began"):
    path = tf.train.latest_checkpoint(str(run / "checkpoints"))
    reader = tf.train.load_checkpoint(path)

    def get(name):
        return reader.get_tensor(f"model/{name}/.ATTRIBUTES/VARIABLE_VALUE")

    return path, {"step": int(get("step")),
                  **{k: float(get(k)) for k in MARGINS[model_type]},
                  "z_fixed": float(reader.get_tensor(
                      "fixed_inputs/z_gen/.ATTRIBUTES/VARIABLE_VALUE").sum())}


def _wait_for_checkpoint(run, proc, min_step, timeout=150):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        path = tf.train.latest_checkpoint(str(run / "checkpoints"))
        if path and guess_model_step(path) >= min_step:
            return path
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no checkpoint beyond step {min_step} in {timeout}s")


# CausalBEGAN on two CPU towers; CausalGAN (its towers are tested in test_dcgan) on one
@pytest.mark.parametrize("model_type,devices", [("began", 2), ("dcgan", 1)])
def test_sigkill_then_load_path_resumes_exactly_and_sigterm_saves(data_dir, tmp_path, model_type,
                                                                   devices):
    run = tmp_path / "run"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                    data=str(data_dir)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def start(*args):
        return subprocess.Popen([sys.executable, str(script), str(run), *args, model_type,
                                 str(devices)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("100000", "new")
    _wait_for_checkpoint(run, first, min_step=2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    path, saved = _saved_state(run, model_type)
    assert saved["step"] >= 2 and saved["k_t"] > 0

    second = start(str(saved["step"] + 100000), "load")
    restored = json.loads(second.stdout.readline())
    assert restored["replicas"] == devices  # --num_gpu 0 --num_cpu_devices 2: two towers
    assert restored["step"] == saved["step"]
    assert restored["g_opt_iter"] == G_UPDATES_PER_STEP[model_type] * saved["step"]
    for key in (*MARGINS[model_type], "z_fixed"):
        assert restored[key] == saved[key], key
    _wait_for_checkpoint(run, second, min_step=saved["step"] + 2)
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 143, err[-2000:]
    assert "Terminated at step" in out
    stopped_at = int(out.split("Terminated at step")[1].split(":")[0])
    _, final = _saved_state(run, model_type)
    assert final["step"] == stopped_at > saved["step"]
