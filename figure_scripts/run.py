"""Open a saved run for the figure scripts, read-only: ``saved_run.open_run``.

``load_run(path)`` gives the run's ``SavedRun`` (flags, graph, controller and image model
restored from the newest checkpoint): no command line is parsed, nothing is written into
the run (no TensorBoard events), and the data set is read only by the figures that need
it (``attribute_table``). Every figure function also takes the session's Trainer (``%run
main.py --load_path <run> --dry_run``): both offer ``cc``, ``model``, ``config``,
``label_names``, ``batch_size``, ``model_dir``, ``dataset_dir``, ``attr``, ``figure_ext``,
``model_step`` and ``overall_step()``. Errors (not a run folder, no checkpoint) are
``UserError`` with a message for the user.
"""

from __future__ import annotations

from errors import UserError
from saved_run import SavedRun, open_run


def load_run(load_path) -> SavedRun:
    """The run folder ``load_path`` opened for reading (newest checkpoint)."""
    return open_run(load_path)


def attribute_table(run, what: str):
    """The run's attribute table (``run.attr``), or UserError saying that ``what`` needs
    the data set's attribute file, which is not on this machine."""
    attr = getattr(run, "attr", None)
    if attr is None:
        raise UserError(f"{what} needs the data set's attribute file, and {run.dataset_dir} "
                        "has none: give the run's data set (its --data_dir/--dataset) on "
                        "this machine.")
    return attr


def add_run_arguments(parser, out_help: str = "Output folder (default: inside the run).") -> None:
    """The options every figure command shares: --load_path, --out, --figure_ext, --seed."""
    parser.add_argument("--load_path", required=True,
                        help="A run folder written by main.py (logs/<run>).")
    parser.add_argument("--out", default="", help=out_help)
    parser.add_argument("--figure_ext", default="png",
                        help="File format of the figures (png, pdf, ...).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the samples drawn.")
