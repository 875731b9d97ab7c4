"""Average many synthetic runs: the paper's TVD-vs-iteration figure and the final-TVD table.

    python synthetic/collect_stats.py /tmp/synth_runs/runs --out /tmp/synth_runs/stats
    python synthetic/collect_stats.py logs other_logs --out stats --max_step 5000

Finds every run folder (params.json + data.json + <generator>/tvd.csv) under the given
folders and groups the runs by data set. Runs that have not reached the iteration
compared (``--max_step``, else the most common last iteration of that data set) are left
out with a warning, as the reference left out unfinished runs. Writes to ``--out``:

    tvd_vs_iter.<ext>   one panel per data set: mean TVD of each generator against the
                        iteration, shaded +- one standard deviation over the runs
    final_tvd.csv       per (data set, generator): runs, iteration, mean / sd / sem / min /
                        max of the final TVD, its rank, and whether the generator's graph
                        is consistent with the data's causal order
    final_tvd.md        the same as a Markdown table, and the paper's claim tested per
                        data set: each consistent graph-shaped generator against the best
                        fully connected one, paired by run (wins, Wilcoxon signed-rank p)
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from synthetic.config import (  # noqa: E402
    DATA_TYPES,
    FC_LAYERS,
    GENERATORS,
    OneLineParser,
    consistent_generators,
)

PROG = "synthetic/collect_stats.py"
FAILED_TVD = 0.95  # a final TVD this high: the generator missed the data almost entirely


# ----------------------------------------------------------------------------- reading
def read_curve(path: Path) -> dict[int, float]:
    """{iteration: TVD} of a tvd.csv."""
    with open(path, newline="") as f:
        return {int(row["iter"]): float(row["tvd"]) for row in csv.DictReader(f)}


def find_runs(folders) -> list[dict]:
    """Every complete run folder under ``folders``: {"path", "data_type", "curves":
    {generator: {iter: tvd}}, "floor": {iter: tvd}}."""
    runs = []
    for folder in folders:
        for params in sorted(Path(folder).rglob("params.json")):
            path = params.parent
            if not (path / "data.json").is_file():
                continue
            curves = {g: read_curve(path / g / "tvd.csv") for g in GENERATORS
                      if (path / g / "tvd.csv").is_file()}
            if len(curves) != len(GENERATORS) or not all(curves.values()):
                continue
            data_type = json.loads((path / "data.json").read_text())["data_type"]
            floor = (read_curve(path / "data_tvd.csv")
                     if (path / "data_tvd.csv").is_file() else {})
            runs.append({"path": path, "data_type": data_type, "curves": curves,
                         "floor": floor})
    return runs


def last_iteration(run: dict) -> int:
    return min(max(curve) for curve in run["curves"].values())


def select_runs(runs: list[dict], max_step: int | None) -> dict[str, list[dict]]:
    """Runs grouped by data set, keeping those that reached the compared iteration."""
    grouped = defaultdict(list)
    for run in runs:
        grouped[run["data_type"]].append(run)
    chosen = {}
    for data_type in [d for d in DATA_TYPES if d in grouped]:
        group = grouped[data_type]
        target = max_step if max_step is not None else Counter(
            last_iteration(r) for r in group).most_common(1)[0][0]
        kept = [r for r in group if last_iteration(r) >= target]
        if len(kept) < len(group):
            print(f"{PROG}: warning: {data_type}: left out {len(group) - len(kept)} run(s) "
                  f"that did not reach iteration {target}", file=sys.stderr)
        if kept:
            chosen[data_type] = kept
    return chosen


def common_iterations(runs: list[dict], up_to: int) -> list[int]:
    """Iterations measured in every run and generator, up to ``up_to``."""
    sets = [set(c) for r in runs for c in r["curves"].values()]
    return sorted(i for i in set.intersection(*sets) if i <= up_to)


# ----------------------------------------------------------------------------- stats
def final_stats(data_type: str, runs: list[dict]) -> list[dict]:
    """One row per generator: the final TVD's statistics over the runs, ranked."""
    end = min(last_iteration(r) for r in runs)
    consistent = consistent_generators(data_type)
    rows = []
    for g in GENERATORS:
        values = [r["curves"][g][max(i for i in r["curves"][g] if i <= end)] for r in runs]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append({"data_type": data_type, "generator": g, "runs": len(values),
                     "iter": end, "mean": statistics.fmean(values), "sd": sd,
                     "sem": sd / len(values) ** 0.5, "median": statistics.median(values),
                     "min": min(values), "max": max(values),
                     "failed": sum(v >= FAILED_TVD for v in values),
                     "consistent": g in consistent, "values": values})
    for rank, row in enumerate(sorted(rows, key=lambda r: r["mean"]), 1):
        row["rank"] = rank
    return rows


def claim_rows(data_type: str, rows: list[dict]) -> list[dict]:
    """Each consistent graph-shaped generator against the best fully connected one (lowest
    mean final TVD), paired by run: mean difference, wins, Wilcoxon signed-rank p."""
    from scipy.stats import wilcoxon

    by_name = {r["generator"]: r for r in rows}
    best_fc = min(FC_LAYERS, key=lambda g: by_name[g]["mean"])
    out = []
    for g in consistent_generators(data_type):
        graph, fc = by_name[g]["values"], by_name[best_fc]["values"]
        diffs = [a - b for a, b in zip(graph, fc, strict=True)]
        p = float(wilcoxon(graph, fc).pvalue) if len(diffs) > 1 and any(diffs) else float("nan")
        out.append({"data_type": data_type, "generator": g, "graph_mean": by_name[g]["mean"],
                    "best_fc": best_fc, "fc_mean": by_name[best_fc]["mean"],
                    "mean_diff": statistics.fmean(diffs),
                    "median_diff": statistics.median(diffs),
                    "wins": sum(d < 0 for d in diffs), "runs": len(diffs), "p": p})
    return out


# ----------------------------------------------------------------------------- writing
def write_csv(rows: list[dict], path: Path) -> None:
    fields = ["data_type", "generator", "runs", "iter", "mean", "sd", "sem", "median", "min",
              "max", "failed", "rank", "consistent"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v)
                             for k, v in row.items()})


def markdown(stats: dict[str, list[dict]], floors: dict[str, float],
             claims: list[dict]) -> str:
    """The final-TVD table (mean ± sd, median, failed runs; the lowest mean of each data
    set in bold) and the claim."""
    lines = ["| data set (runs, iteration) | " + " | ".join(GENERATORS)
             + " | TVD floor |", "|---" * (len(GENERATORS) + 2) + "|"]
    for data_type, rows in stats.items():
        cells = []
        for row in rows:
            cell = f"{row['mean']:.3f} ± {row['sd']:.3f}"
            if row["rank"] == 1:
                cell = f"**{cell}**"
            cell += f" (median {row['median']:.3f}, failed {row['failed']})"
            if row["consistent"]:
                cell += " ‡"
            cells.append(cell)
        head = f"{data_type} ({rows[0]['runs']}, {rows[0]['iter']})"
        lines.append(f"| {head} | " + " | ".join(cells) + f" | {floors[data_type]:.3f} |")
    lines += ["", "Final TVD, mean ± standard deviation over the runs, the median, and the "
              f"number of failed runs (final TVD ≥ {FAILED_TVD}: the generator missed the "
              "data almost entirely); bold: the lowest mean of the data set; ‡: a "
              "graph-shaped generator consistent with the data's causal order. TVD floor: "
              "the mean TVD between two independent data samples of the same size (what a "
              "perfect generator would read).", ""]
    if claims:
        lines += ["| data set | consistent generator | its TVD (mean) | best fully connected "
                  "| its TVD (mean) | paired difference: mean / median | runs where the "
                  "graph wins | Wilcoxon p |", "|---|---|---|---|---|---|---|---|"]
        for c in claims:
            lines.append(f"| {c['data_type']} | {c['generator']} | {c['graph_mean']:.3f} | "
                         f"{c['best_fc']} | {c['fc_mean']:.3f} | {c['mean_diff']:+.3f} / "
                         f"{c['median_diff']:+.3f} | {c['wins']} of {c['runs']} | "
                         f"{c['p']:.3g} |")
    return "\n".join(lines) + "\n"


def plot(selected: dict[str, list[dict]], path: Path) -> None:
    """One panel per data set: mean TVD against iteration, +- one sd shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(selected), figsize=(4.2 * len(selected), 4),
                             sharey=True, squeeze=False)
    for ax, (data_type, runs) in zip(axes[0], selected.items(), strict=True):
        end = min(last_iteration(r) for r in runs)
        iters = common_iterations(runs, end)
        x = np.array(iters) / 1000.0
        consistent = consistent_generators(data_type)
        for g in GENERATORS:
            tvd = np.array([[r["curves"][g][i] for i in iters] for r in runs])
            mean, sd = tvd.mean(0), tvd.std(0, ddof=1) if len(runs) > 1 else 0 * tvd[0]
            style = "-" if g in consistent else ("--" if g in FC_LAYERS else ":")
            line, = ax.plot(x, mean, style, label=g + (" ‡" if g in consistent else ""))
            ax.fill_between(x, np.maximum(mean - sd, 1e-3), mean + sd, alpha=0.15,
                            color=line.get_color())
        ax.set_yscale("log")
        ax.set_title(f"data: {data_type} ({len(runs)} runs)")
        ax.set_xlabel("iteration (thousands)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("total variation distance")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="Folders searched (recursively) for runs.")
    parser.add_argument("--out", default="synth_stats",
                        help="Folder for the figure and the tables (made if missing).")
    parser.add_argument("--max_step", type=int, default=None,
                        help="Iteration to compare (default: the most common last "
                             "iteration of each data set's runs).")
    parser.add_argument("--ext", default="png", choices=("png", "pdf", "svg"),
                        help="Figure format.")
    args = parser.parse_args(argv)
    missing = [f for f in args.folders if not Path(f).is_dir()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)}")
    runs = find_runs(args.folders)
    if not runs:
        parser.error(f"no finished synthetic runs under {', '.join(args.folders)} (a run "
                     "folder holds params.json, data.json and <generator>/tvd.csv)")
    selected = select_runs(runs, args.max_step)
    if not selected:
        parser.error(f"no run reached iteration {args.max_step}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = {d: final_stats(d, rs) for d, rs in selected.items()}
    floors = {}
    for data_type, rs in selected.items():
        end = stats[data_type][0]["iter"]
        values = [r["floor"][max(i for i in r["floor"] if i <= end)] for r in rs if r["floor"]]
        floors[data_type] = statistics.fmean(values) if values else float("nan")
    claims = [c for d, rows in stats.items() for c in claim_rows(d, rows)]
    plot(selected, out / f"tvd_vs_iter.{args.ext}")
    write_csv([row for rows in stats.values() for row in rows], out / "final_tvd.csv")
    table = markdown(stats, floors, claims)
    (out / "final_tvd.md").write_text(table)
    print(table, end="")
    print(f"wrote {out / f'tvd_vs_iter.{args.ext}'}, {out / 'final_tvd.csv'}, "
          f"{out / 'final_tvd.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
