"""Run folders: naming and creating them, saving and restoring the flags, a copy of the code."""

import json
import logging
import os
import shutil
import time
from pathlib import Path

from errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent
PARAM_FILES = {  # flag group -> file in the run folder, as in the reference
    "config": "params.json",
    "cc_config": "cc_params.json",
    "dcgan_config": "dcgan_params.json",
    "began_config": "began_params.json",
}
GRAPH_FILE = "graph.json"
_SKIP_DIRS = {"data", "logs", "tests", "__pycache__", "docs"}


def setup_logging(level="INFO"):
    """Console logging in a short format; TensorFlow's C++ chatter stays quiet."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=getattr(logging, "WARNING" if level == "WARN" else level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)


def new_run_dir(log_dir, dataset, descrip=""):
    """Create logs/<dataset>_<MMDD_HHMMSS>[_<descrip>]; runs in the same second get _2, _3..."""
    if descrip and any(ch in descrip for ch in "/\\:\0"):
        raise UserError(f"--descrip {descrip!r} must not contain / \\ or :, it becomes part "
                        "of a folder name")
    base = f"{dataset}_{time.strftime('%m%d_%H%M%S')}" + (f"_{descrip}" if descrip else "")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = Path(log_dir) / (base if attempt == 1 else f"{base}_{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()
    raise UserError(f"could not create a new run folder under {log_dir}")


def write_json(path, content):
    """Write JSON atomically: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_configs(model_dir, groups, graph):
    """Write params.json, cc_params.json, dcgan_params.json, began_params.json and graph.json."""
    for group, filename in PARAM_FILES.items():
        write_json(Path(model_dir) / filename, vars(groups[group]))
    write_json(Path(model_dir) / GRAPH_FILE, [[node, list(parents)] for node, parents in graph])


def load_configs(run_dir):
    """The saved flags of a run folder: {group: dict}, and its saved graph (or None)."""
    saved = {}
    for group, filename in PARAM_FILES.items():
        path = Path(run_dir) / filename
        try:
            saved[group] = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{run_dir} is not a run folder: {filename} is missing. Give "
                            "--load_path a folder created by main.py (logs/<dataset>_<time>)"
                            ) from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is damaged ({err}); it cannot be resumed") from None
    graph_path = Path(run_dir) / GRAPH_FILE
    graph = json.loads(graph_path.read_text()) if graph_path.exists() else None
    return saved, graph


def resolve_run_dir(load_path):
    """An existing run folder, relative to the working directory or absolute."""
    path = Path(load_path).expanduser()
    if not path.is_dir():
        raise UserError(f"--load_path {load_path}: no such folder. Give a run folder such as "
                        "logs/toyfaces_1128_093000")
    return path.resolve()


def copy_code(model_dir):
    """Copy the project's Python sources into <model_dir>/code, keeping the layout."""
    target = Path(model_dir) / "code"
    for source in PROJECT_ROOT.rglob("*.py"):
        relative = source.relative_to(PROJECT_ROOT)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / relative)


def remove_run_dir(model_dir):
    """Remove a run folder that this process created but could not start."""
    shutil.rmtree(model_dir, ignore_errors=True)


def publish_folder(tmp, target, remove_old=False):
    """Rename a finished folder ``tmp`` to ``target`` atomically.

    An existing ``target`` is first renamed aside to ``<target>.old-<time>`` (and deleted
    when ``remove_old``); returns that aside path, or None when nothing was in the way.
    """
    tmp, target = Path(tmp), Path(target)
    aside = None
    if target.exists():
        aside = target.with_name(f"{target.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(target, aside)
        if remove_old:
            shutil.rmtree(aside)
            aside = None
    os.rename(tmp, target)
    return aside
