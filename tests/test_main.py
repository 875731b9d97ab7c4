"""main.py: run folders, flag restoration on --load_path, clean failures, seeds."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import main
import utils
from errors import UserError

ROOT = Path(__file__).resolve().parents[1]


class FakeTrainer:
    """Stands in for trainer.Trainer so these tests exercise main.py alone."""

    fail_with = None

    def __init__(self, config, cc_config, model_config, graph, figure_metrics=None):
        if FakeTrainer.fail_with is not None:
            raise FakeTrainer.fail_with
        self.config, self.cc_config, self.model_config, self.graph = (
            config, cc_config, model_config, graph)
        self.figure_metrics = figure_metrics
        self.cc, self.model = "controller", None
        self.calls = []

    def pretrain_loop(self):
        self.calls.append("pretrain")

    def train_loop(self):
        self.calls.append("train")


@pytest.fixture
def fake_trainer(monkeypatch):
    module = types.ModuleType("trainer")
    module.Trainer = FakeTrainer
    monkeypatch.setitem(sys.modules, "trainer", module)
    FakeTrainer.fail_with = None
    yield FakeTrainer
    FakeTrainer.fail_with = None


def run_main(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "main.py", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("graph_args,message", [
    (["--causal_model", "no_such_graph"], "unknown causal graph"),
    ([], "--causal_model is required"),
])
def test_bad_graph_exits_2_without_a_run_folder(tmp_path, graph_args, message):
    result = run_main(*graph_args, "--log_dir", str(tmp_path / "logs"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


@pytest.mark.parametrize("graph,message", [
    ({"A": ["B"], "B": ["A"]}, "cycle"),
    ({"A": ["A"]}, "self-loop"),
    ({"A": ["Ghost"]}, "not nodes"),
    ({}, "no nodes"),
])
def test_invalid_json_graph_exits_2_without_a_run_folder(tmp_path, graph, message):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    result = run_main("--causal_model", str(path), "--log_dir", str(tmp_path / "logs"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_unknown_flag_exits_2(tmp_path):
    result = run_main("--causal_model", "M", "--num_gpus", "2", "--log_dir", str(tmp_path))
    assert result.returncode == 2 and "did you mean --num_gpu" in result.stderr


def test_is_train_without_model_type_exits_2(tmp_path):
    result = run_main("--causal_model", "M", "--is_train", "True", "--log_dir", str(tmp_path))
    assert result.returncode == 2 and "--model_type" in result.stderr
    assert not any(tmp_path.iterdir())


def test_new_run_folder_holds_flags_and_code(tmp_path, fake_trainer):
    trainer = main.get_trainer(["--causal_model", "big_causal_graph", "--dataset", "toyfaces",
                                "--log_dir", str(tmp_path), "--descrip", "demo",
                                "--model_type", "began"])
    run_dir = Path(trainer.config.model_dir)
    assert run_dir.parent == tmp_path.resolve()
    assert run_dir.name.startswith("toyfaces_") and run_dir.name.endswith("_demo")
    for name in ("params.json", "cc_params.json", "dcgan_params.json", "began_params.json",
                 "graph.json"):
        assert (run_dir / name).is_file(), name
    params = json.loads((run_dir / "params.json").read_text())
    assert params["causal_model"] == "big_causal_graph" and params["model_type"] == "began"
    assert (run_dir / "code" / "main.py").is_file()
    assert (run_dir / "code" / "causal_controller" / "config.py").is_file()
    assert not (run_dir / "code" / "tests").exists()
    assert trainer.model_config.batch_size == 16
    assert [node for node, _ in trainer.graph][:2] == ["Young", "Male"]


def test_failed_start_removes_the_new_run_folder(tmp_path, fake_trainer):
    fake_trainer.fail_with = UserError("no data here")
    code = main.run(["--causal_model", "M", "--log_dir", str(tmp_path)])
    assert code == 2
    assert list(tmp_path.iterdir()) == []


def test_main_calls_the_loops_the_flags_ask_for(tmp_path, fake_trainer):
    trainer = main.get_trainer(["--causal_model", "M", "--log_dir", str(tmp_path),
                                "--is_pretrain", "True", "--model_type", "began",
                                "--is_train", "yes"])
    main.main(trainer)
    assert trainer.calls == ["pretrain", "train"]
    dry = main.get_trainer(["--causal_model", "M", "--log_dir", str(tmp_path),
                            "--is_pretrain", "True", "--dry_run"])
    main.main(dry)
    assert dry.calls == []


def test_runs_in_the_same_second_get_distinct_folders(tmp_path):
    first = utils.new_run_dir(tmp_path, "toyfaces")
    second = utils.new_run_dir(tmp_path, "toyfaces")
    third = utils.new_run_dir(tmp_path, "toyfaces")
    assert len({first, second, third}) == 3
    assert all(path.is_dir() for path in (first, second, third))


def make_run(tmp_path, fake_trainer, *extra):
    trainer = main.get_trainer(["--causal_model", "big_causal_graph", "--log_dir",
                                str(tmp_path), "--model_type", "began",
                                "--conv_hidden_num", "32", "--log_step", "7",
                                "--num_iter", "500", *extra])
    return Path(trainer.config.model_dir)


def test_load_path_restores_saved_flags(tmp_path, fake_trainer, monkeypatch):
    run_dir = make_run(tmp_path, fake_trainer)
    monkeypatch.chdir(tmp_path)
    relative = run_dir.name
    trainer = main.get_trainer(["--load_path", relative, "--num_iter", "900"])
    assert Path(trainer.config.model_dir) == run_dir
    assert trainer.config.model_type == "began"
    assert trainer.model_config.conv_hidden_num == 32      # restored architecture
    assert trainer.config.log_step == 7                    # restored schedule
    assert trainer.model_config.num_iter == 900            # explicit flag wins
    assert trainer.config.causal_model == "big_causal_graph"
    assert len(trainer.graph) == 9
    assert len(list(tmp_path.iterdir())) == 1              # no new run folder


def test_load_path_conflicting_architecture_flag(tmp_path, fake_trainer):
    run_dir = make_run(tmp_path, fake_trainer)
    with pytest.raises(UserError) as info:
        main.get_trainer(["--load_path", str(run_dir), "--conv_hidden_num", "64"])
    text = str(info.value)
    assert "--conv_hidden_num" in text and "64" in text and "32" in text
    assert main.run(["--load_path", str(run_dir), "--causal_model", "M"]) == 2


def test_load_path_same_architecture_flag_is_fine(tmp_path, fake_trainer):
    run_dir = make_run(tmp_path, fake_trainer)
    trainer = main.get_trainer(["--load_path", str(run_dir), "--conv_hidden_num", "32"])
    assert trainer.model_config.conv_hidden_num == 32


def test_load_path_that_is_not_a_run(tmp_path, fake_trainer):
    with pytest.raises(UserError, match="no such folder"):
        main.get_trainer(["--load_path", str(tmp_path / "missing")])
    with pytest.raises(UserError, match="params.json is missing"):
        main.get_trainer(["--load_path", str(tmp_path)])


def test_same_seed_same_start():
    import numpy as np
    import tensorflow as tf

    main.seed_everything(5)
    first = (np.random.rand(3), tf.random.uniform([3]).numpy())
    main.seed_everything(5)
    second = (np.random.rand(3), tf.random.uniform([3]).numpy())
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_explain_turns_a_full_disk_or_unreadable_data_into_a_message():
    import errno
    import os

    import tensorflow as tf

    import data_loader

    full = main.explain(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/ckpt-5.index"))
    assert isinstance(full, UserError) and "/x/ckpt-5.index" in str(full)
    assert "disk is full" in str(full)
    tf_full = tf.errors.ResourceExhaustedError(None, None, f"ckpt: {os.strerror(errno.ENOSPC)}")
    assert "disk is full" in str(main.explain(tf_full))
    read_only = main.explain(OSError(errno.EROFS, os.strerror(errno.EROFS), "/x"))
    assert "read-only" in str(read_only)
    unreadable = tf.errors.InvalidArgumentError(None, None, "assertion failed: [" + (
        data_loader.UNREADABLE_MESSAGE.format(n=3, folder="/d/images")) + "]")
    assert str(main.explain(unreadable)).startswith("None of the 3 images in /d/images")
    assert main.explain(ValueError("a bug")) is None  # anything else keeps its traceback
    assert main.explain(OSError(errno.ENOENT, "No such file or directory")) is None


def test_watchdog_knows_when_the_main_thread_waits_for_input():
    import sys
    import threading

    import tensorflow as tf

    seen = {}
    ready = threading.Event()

    def probe(x):
        seen["waiting"] = main.waiting_for_input(sys._current_frames()[main_thread])
        ready.set()
        return x

    main_thread = threading.get_ident()
    ds = tf.data.Dataset.range(1).map(lambda x: tf.py_function(probe, [x], tf.int64))
    next(iter(ds))
    assert ready.is_set() and seen["waiting"] is True
    assert main.waiting_for_input(sys._getframe()) is False


# ----------------------------------------------------------------------------- flag files
def test_flag_file_expands_in_place_and_later_flags_win(tmp_path):
    inner = tmp_path / "inner.txt"
    inner.write_text("--z_dim 12  # a comment\n")
    outer = tmp_path / "outer.txt"
    outer.write_text(f"# the demo's flags\n--dataset toyfaces --model_type dcgan\n"
                     f"--num_iter 500\n@{inner}\n")
    groups = main.parse_flags([f"@{outer}", "--num_iter", "7"])
    assert groups["config"].dataset == "toyfaces"
    assert groups["dcgan_config"].num_iter == 7  # written after the file: wins
    assert groups["dcgan_config"].z_dim == 12  # from the nested file
    groups = main.parse_flags(["--num_iter", "7", f"@{outer}"])
    assert groups["dcgan_config"].num_iter == 500  # the file comes last: it wins


def test_the_demo_config_file_parses():
    groups = main.parse_flags(["@configs/toyfaces_demo.txt"])
    model_config = main.resolve_model(groups)
    assert groups["config"].dataset == "toyfaces" and groups["config"].num_gpu == 0
    assert groups["cc_config"].is_pretrain is True
    assert model_config is groups["dcgan_config"] and model_config.is_train is True


@pytest.mark.parametrize("content,message", [
    (None, "no such flag file"),
    ("--num_iter '5", "cannot read its flags"),
    ("@{self}", "in a loop"),
])
def test_bad_flag_file_exits_2_without_a_run_folder(tmp_path, content, message):
    path = tmp_path / "flags.txt"
    if content is not None:
        path.write_text(content.replace("{self}", str(path)))
    result = run_main("--causal_model", "M", f"@{path}", "--log_dir", str(tmp_path / "logs"))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()


def test_a_new_run_starts_from_a_saved_runs_params(tmp_path, fake_trainer):
    first = main.get_trainer(["--causal_model", "big_causal_graph", "--dataset", "toyfaces",
                              "--log_dir", str(tmp_path), "--model_type", "dcgan",
                              "--z_dim", "17", "--rare_label_rate", "0.3", "--dry_run"])
    params = Path(first.config.model_dir) / "params.json"
    second = main.get_trainer([f"@{params}", "--tau", "50"])
    assert second.config.model_dir != first.config.model_dir  # a new run, not a resume
    assert second.model_config.z_dim == 17 and second.config.rare_label_rate == 0.3
    assert second.model_config.tau == 50 and second.config.dry_run is False
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "params.json").write_text("{}")
    with pytest.raises(UserError, match="cc_params.json is missing"):
        main.parse_flags([f"@{tmp_path / 'lonely' / 'params.json'}"])


def test_code_copy_leaves_out_run_folders_under_a_log_dir_inside_the_project(tmp_path,
                                                                              monkeypatch):
    import utils

    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "main.py").write_text("# main\n")
    (project / "pkg" / "mod.py").write_text("# mod\n")
    old_run = project / "myruns" / "toyfaces_old"        # a run of an earlier --log_dir
    (old_run / "code").mkdir(parents=True)
    (old_run / "params.json").write_text("{}")
    (old_run / "code" / "main.py").write_text("# old copy\n")
    (project / "myruns" / "helper.py").write_text("# not in a run folder\n")
    monkeypatch.setattr(utils, "PROJECT_ROOT", project)
    for name in ("toyfaces_new", "toyfaces_newer"):   # the second would copy the first
        run = project / "myruns" / name
        run.mkdir()
        utils.copy_code(run)
        (run / "params.json").write_text("{}")
        copied = sorted(p.relative_to(run / "code").as_posix()
                        for p in (run / "code").rglob("*.py"))
        assert copied == ["main.py", "myruns/helper.py", "pkg/mod.py"], copied
