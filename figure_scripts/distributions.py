"""Label distributions of the controller under interventions and conditions, as tables and plots.

    python -m figure_scripts distributions --load_path logs/<run> [--n 20000]

Writes into ``<run>/figures/distributions/`` (or ``--out``):

    <step>_do_cond_means.csv     for every node X, value v in {1, 0} and label Y:
                                 P(Y=1 | do(X=v)) of the model and the truth, P(Y=1 | X=v)
                                 of the model, the data and the truth
    <step>_do_cond_<X>.<ext>     those numbers as bars, one panel per v
    <step>_logit_sweep.csv       P(Y=1) of every label as X's logit is set to each of
                                 --sweep values (do on the logit)
    <step>_logit_sweep.<ext>     one panel per X that has descendants: their curves (X dashed)

Means are of rounded labels (P(Y=1)), as in the TVD. The truth is exact, by enumeration,
when the data set folder holds the toy faces' ``scm.json``; elsewhere it is left empty.
The table compares with the data's X=v, so by default it intervenes on and conditions on
labels; ``--on_logits`` uses the sampler's logit rules instead (do 1/0 = the median
logits, cond = logit beyond +-3). In the session: ``from figure_scripts.distributions
import distributions; distributions(trainer)``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from errors import UserError
from figure_scripts.run import add_run_arguments, attribute_table, load_run
from figure_scripts.sample import (
    DEFAULT_CONDITION,
    MAX_FAILURES,
    check_nodes,
    descendants,
    sample,
)
from figure_scripts.utils import figure_dir

log = logging.getLogger(__name__)

CHUNK = 8192  # controller rows per chunk: no images are drawn here
SWEEP = tuple(float(v) for v in np.linspace(-6.0, 6.0, 13))
COLUMNS = ["node", "value", "label", "model_do", "true_do", "model_cond", "data_cond",
           "true_cond", "n_cond", "n_data"]


def load_truth(dataset_dir):
    """The toy faces' exact causal model of a data set folder, or None when it has none."""
    path = Path(dataset_dir) / "scm.json"
    if not path.is_file():
        return None
    import toy_faces

    try:
        return toy_faces.ToyFacesSCM.from_json(path)
    except (ValueError, KeyError) as err:
        log.warning("%s cannot be read (%s): no exact truth in the tables", path, err)
        return None


def _truth(scm, target: str, do=None, given=None) -> float:
    nodes = {target, *(do or {}), *(given or {})}
    if scm is None or not nodes <= set(scm.nodes):
        return float("nan")
    try:
        return scm.prob({target: 1}, given=given, do=do)
    except ValueError:  # a condition of probability 0
        return float("nan")


def _ones(labels: np.ndarray) -> np.ndarray:
    """P(label = 1) per column of labels [M, n] (NaN without rows)."""
    if not len(labels):
        return np.full(labels.shape[1], np.nan)
    return (labels > 0.5).mean(axis=0)


def do_cond_table(trainer, n: int = 20_000, on_logits: bool = False,
                  cond_value: float = DEFAULT_CONDITION, nodes=None, seed: int = 0,
                  progress: bool = True, max_failures: int = MAX_FAILURES) -> pd.DataFrame:
    """The do/cond table described in the module docstring (one row per node, v, label).

    A condition the controller (almost) never meets costs n * max_failures draws before
    its rows are given up; lower ``max_failures`` to give up sooner."""
    from tqdm import tqdm

    cc = trainer.cc
    names = list(cc.label_names)
    nodes = check_nodes(cc, nodes or names, "--nodes")
    data = attribute_table(trainer, "distributions")[names].to_numpy() > 0.5
    scm = load_truth(trainer.dataset_dir)
    cond = [abs(cond_value), -abs(cond_value)] if on_logits else [1, 0]
    records = []
    for x in tqdm(nodes, desc="do/cond means", disable=not progress, dynamic_ncols=True):
        common = dict(N=n, on_logits=on_logits, images=False, seed=seed, batch_size=CHUNK)
        do = sample(trainer, do_dict={x: [1, 0]}, **common)
        obs = sample(trainer, cond_dict={x: cond}, max_failures=max_failures, **common)
        j = names.index(x)
        for c, v in enumerate((1, 0)):
            model_do = _ones(do.labels[do.rows(c)])
            kept = obs.labels[obs.rows(c)][obs.accepted[obs.rows(c)]]
            model_cond = _ones(kept)
            rows = data[data[:, j] == bool(v)]
            data_cond = _ones(rows.astype(np.float32))
            for i, y in enumerate(names):
                records.append({
                    "node": x, "value": v, "label": y, "model_do": model_do[i],
                    "true_do": _truth(scm, y, do={x: v}), "model_cond": model_cond[i],
                    "data_cond": data_cond[i], "true_cond": _truth(scm, y, given={x: v}),
                    "n_cond": len(kept), "n_data": len(rows)})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def logit_sweep_table(trainer, nodes=None, values=SWEEP, n: int = 2000, seed: int = 0,
                      progress: bool = True) -> pd.DataFrame:
    """P(Y=1) of every label Y as each node's logit is set to each value (node, logit,
    label, mean)."""
    from tqdm import tqdm

    cc = trainer.cc
    names = list(cc.label_names)
    nodes = check_nodes(cc, nodes or names, "--nodes")
    values = [float(v) for v in values]
    records = []
    for x in tqdm(nodes, desc="logit sweeps", disable=not progress, dynamic_ncols=True):
        s = sample(trainer, do_dict={x: values}, N=n, on_logits=True, images=False, seed=seed,
                   batch_size=CHUNK)
        for c, t in enumerate(values):
            means = _ones(s.labels[s.rows(c)])
            records += [{"node": x, "logit": t, "label": y, "mean": means[i]}
                        for i, y in enumerate(names)]
    return pd.DataFrame.from_records(records, columns=["node", "logit", "label", "mean"])


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


BARS = [("model_do", "model do(X=v)", "tab:blue"), ("true_do", "true do(X=v)", "lightblue"),
        ("model_cond", "model X=v", "tab:orange"), ("data_cond", "data X=v", "tab:red"),
        ("true_cond", "true X=v", "navajowhite")]


def plot_do_cond(table: pd.DataFrame, node: str, path) -> Path:
    """Bars of P(Y=1) under do(X=v) and X=v for one node X, a panel per v."""
    others = [y for y in dict.fromkeys(table["label"]) if y != node]
    fig = _figure(max(6.0, 1.1 * len(others) + 2), 6.5)
    bars = [b for b in BARS if table[b[0]].notna().any()]
    width = 0.8 / len(bars)
    for panel, v in enumerate((1, 0)):
        ax = fig.add_subplot(2, 1, panel + 1)
        part = table[(table["node"] == node) & (table["value"] == v)].set_index("label")
        x = np.arange(len(others))
        for b, (column, text, colour) in enumerate(bars):
            ax.bar(x + (b - (len(bars) - 1) / 2) * width, part.loc[others, column], width,
                   label=text, color=colour)
        ax.set_xticks(x)
        ax.set_xticklabels(others, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("P(label = 1)")
        ax.set_title(f"X = {node}, v = {v}", fontsize=10)
        if panel == 0:
            ax.legend(fontsize=7, ncol=len(bars), loc="upper center",
                      bbox_to_anchor=(0.5, 1.32))
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_sweep(table: pd.DataFrame, cc, path) -> Path:
    """One panel per swept node with descendants: their P(Y=1) (and the node's own,
    dashed) against its logit. Leaves have nothing downstream and get no panel."""
    nodes = list(dict.fromkeys(table["node"]))
    nodes = [x for x in nodes if descendants(cc, x)] or nodes
    cols = min(3, len(nodes))
    rows = -(-len(nodes) // cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    for k, x in enumerate(nodes):
        ax = fig.add_subplot(rows, cols, k + 1)
        part = table[table["node"] == x]
        for y in [x, *descendants(cc, x)]:
            curve = part[part["label"] == y]
            ax.plot(curve["logit"], curve["mean"], "--" if y == x else "-", marker=".",
                    label=y)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"do({x} logit = t)", fontsize=9)
        ax.set_xlabel("t", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def distributions(trainer, n: int = 20_000, sweep_n: int = 2000, sweep=SWEEP, nodes=None,
                  on_logits: bool = False, cond_value: float = DEFAULT_CONDITION,
                  seed: int = 0, out=None, figure_ext: str | None = None,
                  progress: bool = True, max_failures: int = MAX_FAILURES) -> list:
    """Write both tables and their plots (module docstring); returns the paths."""
    if n < 1 or sweep_n < 1:
        raise UserError(f"--n and --sweep_n must be at least 1; got {n} and {sweep_n}.")
    ext = figure_ext or trainer.figure_ext
    folder = figure_dir(trainer.model_dir, out, "distributions")
    step = trainer.overall_step()
    table = do_cond_table(trainer, n, on_logits, cond_value, nodes, seed, progress,
                          max_failures)
    written = [folder / f"{step}_do_cond_means.csv"]
    table.to_csv(written[0], index=False, float_format="%.4f")
    for x in dict.fromkeys(table["node"]):
        written.append(plot_do_cond(table, x, folder / f"{step}_do_cond_{x}.{ext}"))
    swept = logit_sweep_table(trainer, nodes, sweep, sweep_n, seed, progress)
    written.append(folder / f"{step}_logit_sweep.csv")
    swept.to_csv(written[-1], index=False, float_format="%.4f")
    written.append(plot_sweep(swept, trainer.cc, folder / f"{step}_logit_sweep.{ext}"))
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts distributions",
        description="Label means under do(X=v) and X=v next to the data's (and the exact "
                    "truth on toyfaces), and labels as one node's logit is swept.")
    add_run_arguments(parser)
    parser.add_argument("--n", type=int, default=20_000, help="Samples per do/cond setting.")
    parser.add_argument("--sweep_n", type=int, default=2000, help="Samples per swept value.")
    parser.add_argument("--sweep", type=float, nargs="+", default=list(SWEEP),
                        help="Logit values of the sweep (default -6 ... 6 in steps of 1).")
    parser.add_argument("--nodes", nargs="+", default=None,
                        help="Intervened/swept nodes (default: every node).")
    parser.add_argument("--on_logits", action="store_true",
                        help="Use the logit rules (median do, condition beyond +-cond_value).")
    parser.add_argument("--cond_value", type=float, default=DEFAULT_CONDITION,
                        help="With --on_logits: X=1 means logit > this, X=0 logit < -this.")
    parser.add_argument("--max_failures", type=int, default=MAX_FAILURES,
                        help="Draws after which a conditional row is given up (a condition "
                             "never met costs n times this).")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    trainer = load_run(args.load_path)
    paths = distributions(trainer, args.n, args.sweep_n, args.sweep, args.nodes, args.on_logits,
                          args.cond_value, args.seed, args.out or None, args.figure_ext,
                          max_failures=args.max_failures)
    print(f"distributions: wrote {len(paths)} files to {paths[0].parent}")
    return 0
