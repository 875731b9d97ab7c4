"""Open a saved run for the figure scripts: the Trainer with its controller and image model.

``load_run(path)`` is ``%run main.py --load_path <path> --dry_run`` as a function: the
run's saved flags are restored and its newest checkpoint is loaded; nothing is trained.
Errors (not a run folder, no checkpoint) are ``UserError`` with a message for the user.
"""

from __future__ import annotations

from pathlib import Path

from errors import UserError


def load_run(load_path, extra_argv=()):
    """The Trainer of the run folder ``load_path`` (flags restored, newest checkpoint)."""
    folder = Path(load_path)
    if not folder.is_dir():
        raise UserError(f"--load_path {load_path}: no such folder. Give a run folder such "
                        "as logs/toyfaces_<MMDD_HHMMSS>.")
    if not (folder / "params.json").is_file():
        raise UserError(f"--load_path {load_path}: not a run folder (it has no params.json). "
                        "Give a folder that main.py created under logs/.")
    import main as main_module

    return main_module.get_trainer(["--load_path", str(folder), "--dry_run", *extra_argv])


def add_run_arguments(parser, out_help: str = "Output folder (default: inside the run).") -> None:
    """The options every figure command shares: --load_path, --out, --figure_ext, --seed."""
    parser.add_argument("--load_path", required=True,
                        help="A run folder written by main.py (logs/<run>).")
    parser.add_argument("--out", default="", help=out_help)
    parser.add_argument("--figure_ext", default="png",
                        help="File format of the figures (png, pdf, ...).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the samples drawn.")
