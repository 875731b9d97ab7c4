"""Small helpers of the figure scripts: sample folders, a model's step, Markdown tables
(``markdown_table``, for every report); the image grids (``grid_array``, ``save_grid``)
are the core's (utils.py), re-exported here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from utils import grid_array, save_grid  # noqa: F401 (re-exported)


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


def markdown_table(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    """A Markdown table of a DataFrame (NaN shown as n/a)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return floats.format(v) if np.isfinite(v) else "n/a"
        return str(v).replace("|", "\\|")  # a "|" in a cell would split it

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)
