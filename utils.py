"""Run folders: naming and creating them, saving and restoring the flags, a copy of the code;
files written atomically, and failed writes (a full disk, a read-only folder) explained;
image grids (``grid_array``, ``save_grid``)."""

import errno
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

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
    """Create logs/<dataset>_<MMDD_HHMMSS>[_<descrip>]; runs in the same second get _2, _3...

    Creating the folder is atomic (mkdir), so runs started at once by several processes
    get distinct folders.
    """
    if descrip and any(ch in descrip for ch in "/\\:\0"):
        raise UserError(f"--descrip {descrip!r} must not contain / \\ or :, it becomes part "
                        "of a folder name")
    base = f"{dataset}_{time.strftime('%m%d_%H%M%S')}" + (f"_{descrip}" if descrip else "")
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            path = Path(log_dir) / (base if attempt == 1 else f"{base}_{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path.resolve()
    except OSError as err:
        raise UserError(f"--log_dir {log_dir}: cannot create a run folder there "
                        f"({err.strerror or err}). Give --log_dir a folder you can write "
                        "to.") from None
    raise UserError(f"could not create a new run folder under {log_dir}")


# errno -> what it means for a file being written
_WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def write_failure(err, what):
    """A UserError explaining why writing ``what`` failed, or None for other errors.

    Recognises OSErrors of a full disk, a quota, a read-only file system or missing
    permission, and TensorFlow's errors carrying the same messages.
    """
    reason = None
    if isinstance(err, OSError):
        reason = _WRITE_FAILURES.get(err.errno)
    else:
        text = str(getattr(err, "message", err))
        for code, meaning in _WRITE_FAILURES.items():
            if os.strerror(code) in text:
                reason = meaning
                break
        if reason is None and type(err).__name__ == "ResourceExhaustedError" \
                and "space" in text.lower():
            reason = "the disk is full"
    if reason is None:
        return None
    return UserError(f"cannot write {what}: {reason}. Nothing half-written was kept; the "
                     "last complete checkpoint is still there. Free space (or fix the "
                     "folder's permissions) and resume with --load_path <run folder>.")


def write_text(path, text):
    """Write a text file atomically: a reader (or a resumed run) never sees half of it.

    On failure the temporary file is removed and a full disk or a read-only folder
    becomes a UserError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        failure = write_failure(err, path)
        if failure is None:
            raise
        raise failure from None


_LEFTOVER = re.compile(r"\..+\.(?:tmp|partial)-(\d+)")  # what write_text and checkpoints use


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(folder):
    """Remove the temporary files and folders (``.<name>.tmp-<pid>``,
    ``.<name>.partial-<pid>``) that a writer killed mid-write left in ``folder``; those
    of processes still running are kept."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        match = _LEFTOVER.fullmatch(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)


def write_json(path, content):
    """Write JSON atomically: a reader never sees a half-written file."""
    write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


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
    """Copy the project's Python sources into <model_dir>/code, keeping the layout.

    Run folders are left out wherever they are (a --log_dir inside the project other than
    logs/ holds runs whose code/ copies would otherwise be copied again, run after run),
    and the sources are listed before anything is written."""
    target = Path(model_dir) / "code"
    skip_run = Path(model_dir).resolve()
    run_folders: dict[Path, bool] = {}

    def in_run_folder(relative: Path) -> bool:
        for i in range(1, len(relative.parts)):
            folder = PROJECT_ROOT.joinpath(*relative.parts[:i])
            if folder not in run_folders:
                run_folders[folder] = (folder.resolve() == skip_run
                                       or (folder / "params.json").is_file())
            if run_folders[folder]:
                return True
        return False

    for source in sorted(PROJECT_ROOT.rglob("*.py")):
        relative = source.relative_to(PROJECT_ROOT)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        if in_run_folder(relative):
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


def grid_array(images, rows: int, cols: int, padding: int = 2) -> np.ndarray:
    """Tile ``images`` [N, H, W, C] (values in [0, 255]) into one uint8 array, row by row.

    The grid has ``rows x cols`` cells separated (and framed) by ``padding`` black
    pixels; missing images leave their cells black, extra images are dropped.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C]; got shape {images.shape}")
    n, h, w, c = images.shape
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c),
                    np.uint8)
    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    for k in range(min(n, rows * cols)):
        r, col = divmod(k, cols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = pixels[k]
    return grid


def save_grid(images, path, rows: int, cols: int, padding: int = 2) -> Path:
    """Save a ``rows x cols`` grid of ``images`` to ``path``; the suffix picks the format.

    .png / .jpg go through PIL at the images' own resolution; .pdf (or anything else
    matplotlib knows) is drawn by matplotlib without axes. Folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = grid_array(images, rows, cols, padding)
    if grid.shape[2] == 1:
        grid = grid[..., 0]
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        Image.fromarray(grid).save(path)
        return path
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    height, width = grid.shape[:2]
    dpi = 100
    scale = max(1.0, 600.0 / max(height, width))  # small grids still get a readable page
    fig = Figure(figsize=(width * scale / dpi, height * scale / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, interpolation="nearest")
    ax.axis("off")
    fig.savefig(path)
    return path
