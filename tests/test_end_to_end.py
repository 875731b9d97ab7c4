"""The command line end to end: python main.py on a tiny toy face set, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--causal_model", "big_causal_graph", "--dataset", "toyfaces", "--num_gpu", "0",
        "--input_scale_size", "8", "--conv_hidden_num", "4", "--z_num", "8", "--z_dim", "4",
        "--batch_size", "4", "--cc_n_layers", "2", "--cc_n_hidden", "4", "--n_critic", "2",
        "--critic_layers", "3", "--num_worker", "2", "--figure_ext", "png"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import toy_faces

    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=48, seed=0, workers=1, progress=False)
    return folder


def main_py(*args, cwd=ROOT):
    result = subprocess.run([sys.executable, "main.py", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def only_run(log_dir):
    runs = [path for path in Path(log_dir).iterdir() if path.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_pretrain_train_then_resume_from_the_command_line(data_dir, tmp_path):
    logs = tmp_path / "logs"
    result = main_py(*TINY, "--data_dir", str(data_dir), "--log_dir", str(logs),
                     "--is_pretrain", "True", "--pretrain_iter", "20", "--min_pretrain_iter",
                     "20", "--model_type", "began", "--is_train", "True", "--num_iter", "6",
                     "--log_step", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(logs)
    assert (run / "controller" / "checkpoints" / "CC-Model-20.index").is_file()
    assert (run / "controller" / "20_glabel_crosstab.txt").is_file()
    # figures of the image model, named as the reference's
    assert list((run / "label_intv_v_conditioning").glob("*_intvcond_Bald=1_2x10.png"))
    assert list((run / "image_diversity").glob("*_G_diversity.png"))
    assert list((run / "summaries").iterdir())
    params = json.loads((run / "began_params.json").read_text())
    assert params["num_iter"] == 6

    # resume: the saved flags come back, the explicit --num_iter wins, steps continue
    result = main_py("--load_path", str(run), "--num_iter", "9", "--is_pretrain", "False")
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_run(logs) == run
    steps = sorted(int(p.name.split("-")[1].split(".")[0])
                   for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert steps[-1] == 20 + 9, steps


def test_controller_only_then_pt_load_path_into_a_new_run(data_dir, tmp_path):
    logs = tmp_path / "logs"
    result = main_py(*TINY, "--data_dir", str(data_dir), "--log_dir", str(logs),
                     "--is_pretrain", "True", "--pretrain_iter", "10", "--log_step", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    first = only_run(logs)
    controller = first / "controller" / "checkpoints" / "CC-Model-10"
    assert Path(str(controller) + ".index").is_file()
    result = main_py(*TINY, "--data_dir", str(data_dir), "--log_dir", str(logs),
                     "--pt_load_path", str(controller), "--model_type", "began", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    second = [path for path in logs.iterdir() if path != first]
    assert len(second) == 1
    assert list((second[0] / "controller" / "checkpoints").glob("CC-Model-10*"))


@pytest.mark.parametrize("extra,message", [
    (["--dataset", "celebA"], "download.py"),
    (["--pt_load_path", "/nonexistent/CC-Model-5"], "controller checkpoint"),
    (["--model_type", "began", "--num_gpu", "4"], "GPU"),
])
def test_bad_starts_exit_2_and_leave_no_run_folder(data_dir, tmp_path, extra, message):
    logs = tmp_path / "logs"
    args = [*TINY, "--data_dir", str(data_dir), "--log_dir", str(logs), *extra]
    result = main_py(*args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr
    assert not logs.exists() or not any(logs.iterdir())


def test_graph_label_missing_from_the_data(data_dir, tmp_path):
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"Male": [], "Gray_Hair": ["Male"]}))
    logs = tmp_path / "logs"
    args = [*TINY, "--data_dir", str(data_dir), "--log_dir", str(logs)]
    args[args.index("big_causal_graph")] = str(graph)
    result = main_py(*args)
    assert result.returncode == 2
    assert "Gray_Hair" in result.stderr
    assert not logs.exists() or not any(logs.iterdir())
