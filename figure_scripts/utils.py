"""Small helpers of the figure scripts: image grids, sample folders, a model's step."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np


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


def make_sample_dir(model_dir, step=None, name: str = "samples") -> Path:
    """``<model_dir>/<name>[/<step>]``, created if missing."""
    folder = Path(model_dir) / name
    if step is not None:
        folder = folder / str(int(step))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_STEP = re.compile(r"(\d+)(?!.*\d)")


def guess_model_step(path) -> int | None:
    """The step of a checkpoint path (``.../ckpt-1200``, ``CC-Model-5000``) or of the
    newest checkpoint in a run or checkpoint folder; None when nothing says."""
    path = Path(path)
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            state = folder / "checkpoint"
            if state.exists():
                match = re.search(r'model_checkpoint_path:\s*"([^"]+)"', state.read_text())
                if match:
                    return guess_model_step(match.group(1))
        return None
    name = os.path.basename(str(path))
    name = re.sub(r"\.(index|data-\d+-of-\d+)$", "", name)
    match = _STEP.search(name)
    return int(match.group(1)) if match else None


def figure_dir(model_dir, out=None, name: str = "figures") -> Path:
    """Where a figure command writes: ``out`` when given, else ``<model_dir>/figures/<name>``
    (created either way)."""
    folder = Path(out) if out else Path(model_dir) / "figures" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
