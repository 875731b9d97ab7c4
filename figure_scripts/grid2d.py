"""Grids over two labels at once: condition2d and intervention2d.

    python -m figure_scripts intervention2d --load_path logs/<run> --rows Male --cols Smiling
    python -m figure_scripts condition2d --load_path logs/<run> --rows Male --cols Smiling

Row i of the grid holds the row label's i-th value; the columns hold the column label's
values, ``per_cell`` images each (so the grid is len(rows) x len(cols) * per_cell). The
k-th image of every cell is the same individual (for conditions: the same z_gen; the
controller noise is redrawn where a row fails its condition).

Defaults (on logits, figure_scripts.sample): intervention2d sweeps each logit over 5
values from the median of its positive logits down to the median of its negative ones,
one image per cell; condition2d uses logit > 3 and logit < -3, four images per cell.
With ``--on_labels``: labels 1 ... 0 and rounded labels 1 / 0. Files go to
``<run>/figures/<condition2d|intervention2d>/<step>_<row>_x_<col>.<ext>`` (or ``--out``).
In the session: ``from figure_scripts.grid2d import grid2d; grid2d(trainer, "intervention",
"Male", "Smiling")``.
"""

from __future__ import annotations

import argparse

import numpy as np

from errors import UserError
from figure_scripts.run import add_run_arguments, load_run
from figure_scripts.sample import (
    DEFAULT_CONDITION,
    check_nodes,
    image_model,
    median_logit,
    sample,
)
from figure_scripts.utils import figure_dir, save_grid

MODES = {"condition": "condition2d", "intervention": "intervention2d"}
SWEEP = 5  # default number of intervention values per label


def default_values(trainer, mode: str, node: str, on_logits: bool) -> list[float]:
    """A label's default values, from its "1" side to its "0" side."""
    if mode == "condition":
        return [DEFAULT_CONDITION, -DEFAULT_CONDITION] if on_logits else [1.0, 0.0]
    if on_logits:
        hi, lo = median_logit(trainer.cc, node, [1, 0])
        return [float(v) for v in np.linspace(hi, lo, SWEEP)]
    return [float(v) for v in np.linspace(1.0, 0.0, SWEEP)]


def grid2d(trainer, mode: str, row: str, col: str, row_values=None, col_values=None,
           per_cell: int | None = None, on_logits: bool = True, seed: int = 0, out=None,
           figure_ext: str | None = None, progress: bool = True):
    """Write one grid over two labels; ``mode`` is "condition" or "intervention". Returns
    the path."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}; got {mode!r}")
    image_model(trainer)
    check_nodes(trainer.cc, [row, col], f"--rows/--cols of {MODES[mode]}")
    if row == col:
        raise UserError(f"{MODES[mode]}: --rows and --cols are both {row}; give two labels.")
    row_values = list(row_values) if row_values else default_values(trainer, mode, row, on_logits)
    col_values = list(col_values) if col_values else default_values(trainer, mode, col, on_logits)
    per_cell = int(per_cell or (4 if mode == "condition" else 1))
    if per_cell < 1:
        raise UserError(f"--per_cell must be at least 1; got {per_cell}.")
    request = {row: row_values, col: col_values}
    kwargs = {"do_dict": request} if mode == "intervention" else {"cond_dict": request}
    s = sample(trainer, N=per_cell, on_logits=on_logits, seed=seed, progress=progress, **kwargs)
    ext = figure_ext or trainer.figure_ext
    folder = figure_dir(trainer.model_dir, out, MODES[mode])
    path = folder / f"{trainer.overall_step()}_{row}_x_{col}.{ext}"
    # combination (i, j) holds rows (i * C + j) * per_cell + k: the grid's row-major order
    return save_grid(s.images, path, len(row_values), len(col_values) * per_cell)


def build_parser(mode: str) -> argparse.ArgumentParser:
    what = "conditions" if mode == "condition" else "interventions"
    parser = argparse.ArgumentParser(
        prog=f"python -m figure_scripts {MODES[mode]}",
        description=f"A grid over two labels' {what}: rows one label's values, columns the "
                    "other's.")
    add_run_arguments(parser)
    parser.add_argument("--rows", required=True, help="The label whose values change down the rows.")
    parser.add_argument("--cols", required=True, help="The label whose values change across.")
    parser.add_argument("--row_values", type=float, nargs="+", default=None,
                        help="The row label's values (default: see the module docstring).")
    parser.add_argument("--col_values", type=float, nargs="+", default=None,
                        help="The column label's values.")
    parser.add_argument("--per_cell", type=int, default=None,
                        help=f"Images per cell (default {4 if mode == 'condition' else 1}).")
    parser.add_argument("--on_labels", action="store_true",
                        help="Act on labels instead of logits.")
    return parser


def _main(mode: str, argv) -> int:
    args = build_parser(mode).parse_args(argv)
    trainer = load_run(args.load_path)
    path = grid2d(trainer, mode, args.rows, args.cols, args.row_values, args.col_values,
                  args.per_cell, not args.on_labels, args.seed, args.out or None, args.figure_ext)
    print(f"{MODES[mode]}: wrote {path}")
    return 0


def main_condition(argv) -> int:
    return _main("condition", argv)


def main_intervention(argv) -> int:
    return _main("intervention", argv)
