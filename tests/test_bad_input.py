"""Bad input, everywhere: one table of what a user can get wrong, and what they are told.

Every row is run through main.py's entry point, ``main.run`` (in this process, to keep
the suite fast) or ``python main.py`` (a real process, where the process boundary
matters: a TensorFlow error raised inside the input pipeline, a flag the parser
rejects). Each must end with exit code 2, one ``main.py: error:`` line naming the
problem, no traceback, and no half-written file: a run that could not start leaves no
run folder, a run that failed while saving leaves only complete checkpoints.

Images need no row of errors: whatever their name says, they are decoded by content, so
grey, RGBA, PNG-named-JPEG and other-sized images are accepted and converted (checked
in ``test_odd_images_are_accepted_and_converted``); an unreadable one is skipped with a
warning, and a data set with none readable is an error (a row below).
"""

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "toyfaces", "--num_gpu", "0", "--batch_size", "4", "--cc_n_layers", "2",
         "--cc_n_hidden", "4", "--n_critic", "2", "--critic_layers", "3",
         "--critic_hidden_size", "4"]
IMAGE_MODEL = ["--model_type", "began", "--input_scale_size", "8", "--conv_hidden_num", "4",
               "--z_num", "8", "--z_dim", "4", "--num_worker", "2"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    import toy_faces

    folder = tmp_path_factory.mktemp("data")
    toy_faces.render_dataset(folder / "toyfaces", n=48, seed=0, workers=1, progress=False)
    return folder


@dataclass
class Case:
    """One bad input: ``prepare(tmp, data)`` returns the command line (and may write files
    or patch functions through ``patch``); main.py must exit 2 with ``message``."""

    name: str
    prepare: object
    message: str
    subprocess: bool = False  # run python main.py instead of main.run
    run_folder_left: bool = False  # the run started before failing: its folder stays
    patches: list = field(default_factory=list)


def data_copy(tmp, data):
    """A copy of the toy data set that a row may damage."""
    target = tmp / "data"
    shutil.copytree(data, target)
    return target / "toyfaces"


def args(tmp, data_dir, *extra, graph="big_causal_graph"):
    return ["--causal_model", str(graph), *SMALL, "--data_dir", str(data_dir), "--log_dir",
            str(tmp / "logs"), *extra]


def graph_file(tmp, text):
    path = tmp / "graph.json"
    path.write_text(text)
    return path


def attribute_file(tmp, data, edit):
    folder = data_copy(tmp, data)
    path = folder / "list_attr_celeba.txt"
    path.write_text(edit(path.read_text().splitlines(keepends=True)))
    return args(tmp, folder.parent, "--dry_run")


def replace_line(lines, number, text):
    lines[number] = text
    return "".join(lines)


def saved_controller(tmp, graph, **flags):
    """A controller checkpoint of some graph, as another run would have left it."""
    import causal_controller.config as cc_flags
    from causal_controller.CausalController import CausalController
    from causal_controller.pretrain import save_controller

    config = cc_flags.get_config(["--cc_n_layers", "2", "--cc_n_hidden", "4"])[0]
    vars(config).update(flags)
    save_controller(CausalController(graph, config, seed=0), None, str(tmp / "old"), 5)
    return tmp / "old" / "CC-Model-5"


def fake_run_folder(tmp, data, damage=None):
    """A run folder of a run that never wrote a checkpoint (killed at once)."""
    code = main.run(args(tmp, data, "--dry_run", "--descrip", "first"))
    assert code == 0
    run = next((tmp / "logs").iterdir())
    if damage:
        damage(run)
    return ["--load_path", str(run)]


class FullDisk:
    """Writes of matching files fail with ENOSPC after writing part of the file."""

    def __init__(self, monkeypatch, match):
        import tensorflow as tf

        real_text, real_tf = Path.write_text, tf.train.Checkpoint._write

        def write_text(path, text, *a, **k):
            if match(str(path)):
                real_text(path, text[: len(text) // 2], *a, **k)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_text(path, text, *a, **k)

        def write_checkpoint(checkpoint, prefix, *a, **k):
            if match(str(prefix)):
                real_tf(checkpoint, prefix, *a, **k)  # the files are there, then no space
                raise tf.errors.ResourceExhaustedError(
                    None, None, f"{prefix}; {os.strerror(errno.ENOSPC)}")
            return real_tf(checkpoint, prefix, *a, **k)

        from causal_controller.pretrain import CheckpointWriter

        real_compiled = CheckpointWriter.__call__

        def write_compiled(writer, prefix):  # the same failure from the compiled write
            if match(str(prefix)):
                real_compiled(writer, prefix)
                raise tf.errors.ResourceExhaustedError(
                    None, None, f"{prefix}; {os.strerror(errno.ENOSPC)}")
            return real_compiled(writer, prefix)

        monkeypatch.setattr(Path, "write_text", write_text)
        monkeypatch.setattr(tf.train.Checkpoint, "_write", write_checkpoint)
        monkeypatch.setattr(CheckpointWriter, "__call__", write_compiled)


def no_mkdir_in(monkeypatch, folder):
    real = Path.mkdir

    def mkdir(path, *a, **k):
        if str(path).startswith(str(folder)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)


PRETRAIN_10 = ["--is_pretrain", "True", "--pretrain_iter", "10", "--min_pretrain_iter", "10",
               "--log_step", "1"]


def pretrain_10(tmp, data):
    """A run that pretrains a two-node controller for 10 iterations (one TVD check)."""
    graph = graph_file(tmp, json.dumps({"Male": [], "Bald": ["Male"]}))
    return args(tmp, data, *PRETRAIN_10, graph=graph)

CASES = [
    # -- the causal graph
    Case("graph JSON malformed", lambda t, d, m: args(
        t, d, graph=graph_file(t, '{"Male": [], "Bald": ["Male"'), ), "is not valid JSON"),
    Case("graph JSON of the wrong shape", lambda t, d, m: args(
        t, d, graph=graph_file(t, "[1, 2, 3]")), "must hold an object"),
    Case("graph JSON with a cycle", lambda t, d, m: args(
        t, d, graph=graph_file(t, json.dumps({"Male": ["Bald"], "Bald": ["Male"]}))), "cycle"),
    Case("graph label not in the data", lambda t, d, m: args(
        t, d, "--dry_run", graph=graph_file(t, json.dumps({"Male": [], "Gray_Hair": ["Male"]}))),
        "Gray_Hair"),
    Case("unknown graph name", lambda t, d, m: args(t, d, graph="big_casual_graph"),
         "unknown causal graph"),
    # -- the attribute file
    Case("attribute row with a missing column", lambda t, d, m: attribute_file(
        t, d, lambda lines: replace_line(lines, 5, "000004.jpg 1 -1 1\n")),
        "line 6: 4 fields, expected 10"),
    Case("attribute row with an extra column", lambda t, d, m: attribute_file(
        t, d, lambda lines: replace_line(lines, 2, lines[2].rstrip() + " 1\n")),
        "line 3: 11 fields"),
    Case("attribute names duplicated", lambda t, d, m: attribute_file(
        t, d, lambda lines: replace_line(lines, 1, lines[1].replace("Male", "Young"))),
        "names the attribute 'Young' twice"),
    Case("attribute value not a number", lambda t, d, m: attribute_file(
        t, d, lambda lines: replace_line(lines, 3, lines[3].replace("-1", "no", 1))),
        "has the value 'no'"),
    Case("attribute value out of range", lambda t, d, m: attribute_file(
        t, d, lambda lines: replace_line(lines, 4, lines[4].replace("-1", "2", 1))),
        "has the value '2'"),
    Case("image listed twice", lambda t, d, m: attribute_file(
        t, d, lambda lines: replace_line(lines, 4, lines[3])), "appears again"),
    Case("empty attribute file", lambda t, d, m: attribute_file(t, d, lambda lines: ""),
         "should list the attribute names but is empty"),
    Case("attribute file without rows", lambda t, d, m: attribute_file(
        t, d, lambda lines: "".join(lines[:2])), "has no data rows"),
    Case("attribute file missing", lambda t, d, m: (
        shutil.copytree(d / "toyfaces", t / "data" / "myfaces",
                        ignore=shutil.ignore_patterns("list_attr_celeba.txt")),
        args(t, t / "data", "--dataset", "myfaces", "--dry_run"))[1], "No attribute file"),
    # -- folders
    Case("data folder that does not exist", lambda t, d, m: args(
        t, t / "nowhere", "--dataset", "myfaces"), "does not exist"),
    Case("image folder missing", lambda t, d, m: (
        shutil.rmtree(data_copy(t, d) / "images"),
        args(t, t / "data", *IMAGE_MODEL, "--dry_run"))[1], "Image folder"),
    Case("log folder inside a file", lambda t, d, m: (
        (t / "file").write_text("x"), args(t, d)[:-1] + [str(t / "file" / "logs")])[1],
        "cannot create a run folder", subprocess=True),
    Case("log folder without permission", lambda t, d, m: (
        no_mkdir_in(m, t / "logs"), args(t, d, "--dry_run"))[1], "Permission denied"),
    Case("data folder without permission to render the toy faces", lambda t, d, m: (
        no_mkdir_in(m, t / "empty"), args(t, t / "empty", "--dry_run"))[1],
        "Cannot render the toy faces"),
    # -- a full disk while saving
    Case("full disk when the run starts", lambda t, d, m: (
        FullDisk(m, lambda p: "params.json" in p), args(t, d, "--dry_run"))[1],
        "disk is full"),
    Case("full disk at a controller checkpoint", lambda t, d, m: (
        FullDisk(m, lambda p: "CC-Model-10" in p), pretrain_10(t, d))[1],
        "disk is full", run_folder_left=True),
    Case("full disk at a crosstab report", lambda t, d, m: (
        FullDisk(m, lambda p: "10_glabel_crosstab.txt" in p), pretrain_10(t, d))[1],
        "disk is full", run_folder_left=True),
    Case("full disk at the run checkpoint", lambda t, d, m: (
        FullDisk(m, lambda p: p.endswith("ckpt-10")), pretrain_10(t, d))[1],
        "disk is full", run_folder_left=True),
    # -- resuming and loading
    Case("--load_path that does not exist", lambda t, d, m: ["--load_path", str(t / "nope")],
         "no such folder"),
    Case("--load_path to a folder that is not a run", lambda t, d, m: (
        (t / "notarun").mkdir(), ["--load_path", str(t / "notarun")])[1], "not a run folder",
        subprocess=True),
    Case("--load_path to a run with damaged flags", lambda t, d, m: fake_run_folder(
        t, d, lambda run: (run / "params.json").write_text('{"causal_model": ')), "is damaged",
        run_folder_left=True),
    Case("--load_path to a run without a checkpoint", lambda t, d, m: fake_run_folder(t, d),
         "no checkpoint found", run_folder_left=True),
    Case("--pt_load_path that does not exist", lambda t, d, m: args(
        t, d, "--pt_load_path", str(t / "CC-Model-5")), "No controller checkpoint"),
    Case("--pt_load_path of another graph", lambda t, d, m: args(
        t, d, "--pt_load_path", str(saved_controller(t, [("Male", []), ("Bald", ["Male"])]))),
        "another causal graph", subprocess=True),
    Case("--pt_load_path of another controller size", lambda t, d, m: args(
        t, d, "--pt_load_path", str(saved_controller(
            t, [(n, p) for n, p in __import__("causal_graph").get_causal_graph(
                "big_causal_graph")], cc_n_hidden=6))), "another causal graph"),
    Case("--pt_load_path to a half-written checkpoint", lambda t, d, m: args(
        t, d, "--pt_load_path", str(truncated(saved_controller(t, [("Male", [])])))),
        "Cannot read the controller checkpoint"),
    # -- flags
    Case("--max_nonfinite 0", lambda t, d, m: args(t, d, "--max_nonfinite", "0"),
         "expected a positive integer", subprocess=True),
    Case("a boolean flag given a number", lambda t, d, m: args(t, d, "--is_pretrain", "2"),
         "expected a boolean word"),
    # -- images
    Case("every image unreadable", lambda t, d, m: corrupt_images(
        t, d, *IMAGE_MODEL, "--is_train", "True", "--num_iter", "3"),
        "None of the 48 images", subprocess=True, run_folder_left=True),
]


def truncated(prefix):
    index = Path(str(prefix) + ".index")
    index.write_bytes(index.read_bytes()[:30])
    return prefix


def corrupt_images(tmp, data, *extra):
    folder = data_copy(tmp, data)
    for image in (folder / "images").iterdir():
        image.write_bytes(image.read_bytes()[:200])
    return args(tmp, folder.parent, *extra)


@pytest.fixture(autouse=True)
def keep_logging():
    """main.run points the log at this test's captured stderr; put it back afterwards."""
    handlers = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = handlers


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_message_and_exit_code_2(case, toy_data, tmp_path, monkeypatch,
                                                        capfd):
    argv = [str(a) for a in case.prepare(tmp_path, toy_data, monkeypatch)]
    if case.subprocess:
        result = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        code, err = result.returncode, result.stderr
    else:
        capfd.readouterr()
        code = main.run(argv)
        err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "main.py: error:" in line]
    assert code == 2, err[-3000:]
    assert len(errors) == 1 and case.message in errors[0], err[-3000:]
    assert "Traceback" not in err
    logs = tmp_path / "logs"
    runs = [p for p in logs.iterdir()] if logs.exists() else []
    if not case.run_folder_left:
        assert runs == [], runs
    half_written = [p for p in tmp_path.rglob("*")
                    if ".tmp-" in p.name or ".partial-" in p.name or p.name.endswith("_temp")]
    assert half_written == []
    for run in runs:  # a failed save left only checkpoints that read back whole
        from causal_controller.pretrain import latest_controller_checkpoint

        ckpts = run / "controller" / "checkpoints"
        indexes = sorted(ckpts.glob("*.index")) if ckpts.exists() else []
        if indexes:
            assert latest_controller_checkpoint(str(ckpts)) == str(indexes[-1])[:-6]


def test_odd_images_are_accepted_and_converted(tmp_path, caplog):
    """Grey, RGBA, PNG named .jpg, tiny and large images decode to RGB of the asked size;
    a truncated JPEG is skipped with a warning naming it."""
    import data_loader as dl

    rgb = (200, 40, 90)
    makers = {
        "grey.jpg": lambda: Image.new("L", (178, 218), 120),
        "rgba.png": lambda: Image.new("RGBA", (178, 218), (*rgb, 30)),
        "png_named.jpg": lambda: Image.new("RGB", (178, 218), rgb),
        "tiny.png": lambda: Image.new("RGB", (20, 12), rgb),
        "large.jpg": lambda: Image.new("RGB", (900, 700), rgb),
        "palette.png": lambda: Image.new("RGB", (178, 218), rgb).convert("P"),
        "grey16.png": lambda: Image.fromarray(np.full((218, 178), 30000, np.uint16)),
        "truncated.jpg": lambda: Image.new("RGB", (178, 218), rgb),
    }
    folder = tmp_path / "images"
    folder.mkdir()
    for name, make in makers.items():
        fmt = "PNG" if name.endswith(".png") or name == "png_named.jpg" else "JPEG"
        make().save(folder / name, format=fmt)
    truncated_file = folder / "truncated.jpg"
    truncated_file.write_bytes(truncated_file.read_bytes()[:300])
    import pandas as pd

    attr = pd.DataFrame({"Male": [1] * len(makers)}, index=pd.Index(list(makers), name="image_id"))
    with caplog.at_level(logging.WARNING):
        ds = dl.image_dataset(tmp_path, attr, ["Male"], 7, scale_size=16, shuffle=False,
                              flip=False, repeat=False)
        (images, _), = list(ds)
    images = images.numpy()
    assert images.shape == (7, 16, 16, 3)
    assert np.abs(images[0] - 120).max() <= 2  # grey -> three equal channels
    for i in (1, 2, 3, 4):
        assert np.abs(images[i] - rgb).max() <= 3, list(makers)[i]
    assert np.abs(images[5].mean(axis=(0, 1)) - rgb).max() <= 3  # a palette image, dithered
    assert np.abs(images[6] - 30000 / 257).max() <= 2  # 16 bits scaled to 8
    assert "truncated.jpg" in caplog.text and caplog.text.count("Skipped image") == 1
