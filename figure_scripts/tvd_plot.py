"""The controller's TVD against iteration, from one or more runs' TensorBoard events.

    python -m figure_scripts tvd_plot --load_path logs/<run1> logs/<run2> [--labels a b]

The pretraining loop logs the TVD as the scalar ``misc/tvd`` (causal_controller/pretrain.py)
every 10 * log_step iterations. Each run is one line, labelled with its folder and graph,
as in the paper's convergence figure. Writes ``tvd.<ext>`` and ``tvd.csv`` (run, step,
tvd) into ``<first run>/figures/tvd_plot/`` (or ``--out``). Nothing is loaded but the
event files. In the session: ``from figure_scripts.tvd_plot import tvd_plot;
tvd_plot(trainer)`` or ``tvd_plot([trainer, "logs/<other run>"])``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from errors import UserError
from figure_scripts.utils import figure_dir

TAG = "misc/tvd"


def event_files(folder) -> list[Path]:
    """The event files of a run folder (its summaries/) or of any folder holding them."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    for candidate in (folder / "summaries", folder):
        files = sorted(candidate.glob("events.out.tfevents.*"))
        if files:
            return files
    return []


def read_scalar(folder, tag: str = TAG) -> pd.DataFrame:
    """(step, value) of one scalar tag over a run's event files, sorted by step; a step
    written twice (a resumed run) keeps the later value."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    points = []
    for path in event_files(folder):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag != tag:
                    continue
                number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                          else float(value.simple_value))
                points.append((event.wall_time, int(event.step), number))
    frame = pd.DataFrame(points, columns=["wall_time", "step", "value"])
    frame = frame.sort_values("wall_time").drop_duplicates("step", keep="last")
    return frame.sort_values("step")[["step", "value"]].reset_index(drop=True)


def run_label(folder) -> str:
    """``<folder name> (<graph>)`` from the run's saved flags, or the folder name."""
    folder = Path(folder)
    try:
        graph = json.loads((folder / "params.json").read_text()).get("causal_model") or ""
    except (OSError, ValueError):
        graph = ""
    graph = Path(graph).stem if graph.endswith(".json") else graph
    return f"{folder.name} ({graph})" if graph else folder.name


def tvd_plot(runs, labels=None, tag: str = TAG, out=None, figure_ext: str = "png",
             log_y: bool = False) -> list:
    """Plot the TVD of each run (run folders or Trainers, or one of them) on one figure;
    returns the paths of the figure and its CSV."""
    if isinstance(runs, (str, Path)) or hasattr(runs, "model_dir"):
        runs = [runs]  # one run
    runs = [Path(getattr(r, "model_dir", r)) for r in runs]
    if not runs:
        raise UserError("tvd_plot needs at least one run folder.")
    if labels is not None and len(labels) != len(runs):
        raise UserError(f"--labels has {len(labels)} names for {len(runs)} runs; give one each.")
    series = []
    for k, folder in enumerate(runs):
        if not folder.exists():
            raise UserError(f"{folder}: no such run folder.")
        if not event_files(folder):
            raise UserError(f"{folder}: no TensorBoard events (expected {folder}/summaries/"
                            "events.out.tfevents.*). Give a run folder written by main.py.")
        frame = read_scalar(folder, tag)
        if frame.empty:
            raise UserError(f"{folder}: its events hold no {tag!r} scalar (the controller "
                            "pretraining writes it every 10 * log_step iterations); was the "
                            "controller pretrained in this run?")
        frame.insert(0, "run", labels[k] if labels else run_label(folder))
        series.append(frame)
    table = pd.concat(series, ignore_index=True).rename(columns={"value": "tvd"})

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for name, part in table.groupby("run", sort=False):
        ax.plot(part["step"], part["tvd"], marker="o", markersize=3, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("TVD")
    if log_y:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, max(0.05, float(np.nanmax(table["tvd"])) * 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Causal controller: total variation distance to the data")
    fig.tight_layout()
    folder = figure_dir(runs[0], out, "tvd_plot")
    paths = [folder / f"tvd.{figure_ext}", folder / "tvd.csv"]
    fig.savefig(paths[0])
    table.to_csv(paths[1], index=False, float_format="%.6f")
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts tvd_plot",
        description="The controller's TVD against iteration, one line per run.")
    parser.add_argument("--load_path", nargs="+", required=True,
                        help="One or more run folders written by main.py (logs/<run>).")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="A legend name per run (default: folder and graph).")
    parser.add_argument("--out", default="",
                        help="Output folder (default: <first run>/figures/tvd_plot).")
    parser.add_argument("--figure_ext", default="png", help="File format (png, pdf, ...).")
    parser.add_argument("--tag", default=TAG, help="The scalar to plot.")
    parser.add_argument("--log_y", action="store_true", help="A logarithmic TVD axis.")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    paths = tvd_plot(args.load_path, args.labels, args.tag, args.out or None, args.figure_ext,
                     args.log_y)
    print(f"tvd_plot: wrote {paths[0]} and {paths[1]}")
    return 0
