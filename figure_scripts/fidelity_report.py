"""The causal-fidelity report's command line and files.

    python -m figure_scripts fidelity --load_path logs/<run> [--out DIR] [--n 2000]

measures the run (``figure_scripts.fidelity``), writes ``<run>/fidelity/`` and prints a
short summary with the targets:

    report.md                  everything below in words and tables, PASS/FAIL per target
    summary.json               every headline number (for scripts comparing runs)
    readers.csv                each reader's accuracy / balanced accuracy per attribute
    readers_subgroups.csv      their accuracy in the rare cells (Male among Bald=1, ...)
    controller.csv             P(label | do(X=v)) vs the truth, P(label | X=v) vs the data
    consistency.csv            label consistency per label: the panel's mean, min-max,
                               recalls and agreement with Wilson intervals
    consistency_by_reader.csv  the same for each reader
    headline_pairs.csv         image-level P(target | do(X=1)) and P(target | X=1) beside
                               the controller's labels and the truth (each reader too)
    agreement.csv              per attribute, the share of images all readers agree on
    frechet.csv                Fréchet distance of every set to its reference, each reader
    precision_recall.csv       k-NN precision and recall of the observational set
    *.png (--figure_ext)       bar plots of those tables; intvcond_<X>=1 grids (top row
                               do(X=1), bottom row X=1)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from errors import UserError
from figure_scripts.fidelity_targets import (
    CONSISTENCY_EACH_TARGET,
    CONSISTENCY_MEAN_TARGET,
    FRECHET_FLOOR_FACTOR,
    FRECHET_SET_FACTOR,
    HEADLINE_PAIRS,
    fmt,
)
from figure_scripts.proportions import interval_text
from figure_scripts.readers import spread
from figure_scripts.utils import markdown_table

_EVALUATION_TEXT = {"balanced": "held-out faces rendered with independent, balanced labels",
                    "data": "held-out images of the data set itself"}


# ----------------------------------------------------------------------------- tables
def _clean(value):
    """JSON-friendly copy: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return _clean(value.to_dict(orient="records"))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _span(low, high) -> str:
    return f"{fmt(low)}-{fmt(high)}" if low is not None and np.isfinite(low) else "n/a"


def reader_tables(readers: Mapping[str, Mapping]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per reader and attribute, held-out scores; per reader, the rare subgroup cells)."""
    rows, groups = [], []
    for reader, info in readers.items():
        for key, table in info.get("scores", {}).items():
            for attribute, s in table.items():
                rows.append({"reader": reader, "evaluation": key, "attribute": attribute,
                             "accuracy": s["accuracy"],
                             "balanced_accuracy": s["balanced_accuracy"],
                             "n_pos": s["n_pos"], "n_neg": s["n_neg"]})
        groups += [dict(reader=reader, evaluation=key, **row)
                   for key, table in info.get("subgroups", {}).items() for row in table]
    as_float = lambda frame, cols: frame.astype({c: float for c in cols if c in frame})  # noqa: E731
    return (as_float(pd.DataFrame(rows), ["accuracy", "balanced_accuracy"]),
            as_float(pd.DataFrame(groups), ["accuracy"]))


def pairs_table(pairs: Sequence[Mapping]) -> pd.DataFrame:
    """The headline pairs flat for the CSV (one column per reader and kind)."""
    flat = []
    for row in pairs:
        out = {k: v for k, v in row.items() if not k.endswith("_by_reader")}
        for kind in ("do", "cond"):
            for reader, value in row[f"{kind}_by_reader"].items():
                out[f"{kind}_images[{reader}]"] = value
        flat.append(out)
    return pd.DataFrame(flat)


def frechet_table(frechet: Mapping) -> pd.DataFrame:
    """One row per (set, reader) and the floor's rows."""
    rows = [{"set": "floor (reference vs reference)", "kind": "floor", "reader": reader,
             "n_generated": 0, "n_reference": frechet["n_floor"], "frechet": d,
             "ratio": float("nan"), "ratio_to": "", "note": ""}
            for reader, d in frechet["floor"].items()]
    for row in frechet["sets"]:
        for reader, d in row["frechet"].items():
            rows.append({"set": row["set"], "kind": row["kind"], "reader": reader,
                         "n_generated": row["n_generated"], "n_reference": row["n_reference"],
                         "frechet": d, "ratio": row["ratio"][reader],
                         "ratio_to": row["ratio_to"], "note": row["note"]})
    return pd.DataFrame(rows)


def precision_recall_table(pr: Mapping) -> pd.DataFrame:
    rows = []
    for reader, parts in pr.items():
        row = {"reader": reader}
        for what, values in parts.items():
            for measure, p in values.items():
                row.update({f"{what}_{measure}": p["value"], f"{what}_{measure}_low": p["low"],
                            f"{what}_{measure}_high": p["high"], f"{what}_{measure}_n": p["n"]})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_dict(result: Mapping) -> dict:
    """The machine-readable summary (summary.json): every headline number."""
    readers = result["readers"] or {}
    consistency = result["consistency"]
    return _clean({
        "run": result["run"], "step": result.get("step"), "dataset_dir": result["dataset_dir"],
        "labels": result["labels"], "seed": result["seed"], "n": result["n"],
        "readers": {name: {"architecture": info.get("architecture"), "seed": info.get("seed"),
                           "training_data": info.get("training_data"),
                           "train_images": info.get("train_images"),
                           "train_seconds": info.get("train_seconds"),
                           "balanced_accuracy": {
                               key: {a: s["balanced_accuracy"] for a, s in table.items()}
                               for key, table in info.get("scores", {}).items()}}
                    for name, info in readers.items()},
        "controller": result["controller"],
        "consistency": ({r["label"]: {k: v for k, v in r.items() if k != "label"}
                         for r in consistency.to_dict(orient="records")}
                        if consistency is not None else None),
        "pairs": list(result["pairs"]),
        "agreement": result["agreement"],
        "frechet": result["frechet"],
        "precision_recall": result["precision_recall"],
        "targets": result["targets"],
        "passed": sum(t["status"] == "PASS" for t in result["targets"]),
        "failed": sum(t["status"] == "FAIL" for t in result["targets"]),
        "seconds": result["seconds"],
    })


# ----------------------------------------------------------------------------- markdown
def _targets_md(targets: Sequence[Mapping]) -> str:
    return markdown_table(pd.DataFrame(
        [{"target": t["name"], "value (panel mean)": t["value"],
          "readers min-max": _span(t["min"], t["max"]), "goal": t["goal"],
          "status": t["status"], "failed by": ", ".join(t["failed_readers"]),
          "note": t["note"]} for t in targets]))


def _readers_md(result: Mapping, files: Mapping[str, str]) -> list[str]:
    readers = result["readers"]
    if readers is None:
        return ["Not used: the run has no image model.", ""]
    out = ["Each reader is a small CNN trained on its own, never on the model's labeler, "
           "with augmented batches (flips, shifts, colour jitter, blur, noise):", ""]
    out += [markdown_table(pd.DataFrame([{
        "reader": name, "architecture": info.get("architecture", "maxpool"),
        "seed": info.get("seed"), "trained on": info.get("training_data", "?"),
        "images": info.get("train_images"), "seconds": info.get("train_seconds")}
        for name, info in readers.items()])), ""]
    scores, groups = reader_tables(readers)
    for key in scores["evaluation"].unique() if len(scores) else []:
        part = scores[scores["evaluation"] == key]
        wide = part.pivot(index="attribute", columns="reader", values="balanced_accuracy")
        wide = wide.reindex(list(dict.fromkeys(part["attribute"]))).reset_index()
        out += [f"Balanced accuracy on {_EVALUATION_TEXT.get(key, key)}:", "",
                markdown_table(wide), ""]
    if len(groups):
        wide = groups.pivot_table(index=["evaluation", "subgroup", "cell", "attribute", "n"],
                                  columns="reader", values="accuracy").reset_index()
        out += ["Accuracy inside the rare combinations (cells of fewer than 50 images are "
                "too small to trust):", "", markdown_table(wide), ""]
    out += [f"![readers]({files.get('readers_plot', '')})", ""]
    agreement = result["agreement"]
    if agreement is not None:
        out += ["Agreement: the share of images on which all readers read the attribute the "
                "same way (95% Wilson interval), over every generated image of this report and "
                "over every reference image:", "",
                markdown_table(pd.DataFrame([{
                    "label": r["label"], "generated": r["generated"],
                    "generated 95% CI": interval_text({"low": r["generated_low"],
                                                       "high": r["generated_high"]}),
                    "generated n": r["generated_n"], "reference": r["reference"],
                    "reference 95% CI": interval_text({"low": r["reference_low"],
                                                       "high": r["reference_high"]}),
                    "reference n": r["reference_n"]}
                    for r in agreement.to_dict(orient="records")])), ""]
    return out


def _controller_md(result: Mapping, files: Mapping[str, str]) -> list[str]:
    c = result["controller"]
    out = [f"Observational TVD against the data: **{fmt(c['tvd'], 3)}**"
           + (f"; against the exact model: {fmt(c['tvd_exact'], 3)}; largest TVD of an "
              "interventional distribution against the exact one: "
              f"{fmt(c['do_tvd_exact_max'], 3)}" if c["truth"] != "unavailable" else "") + ".",
           "", f"P(label | do(X=v)) against the truth ({c['truth']}): largest error "
           f"{fmt(c['do_abs_error_max'])}, mean {fmt(c['do_abs_error_mean'])}. P(label | X=v) "
           f"against the data: largest error {fmt(c['cond_abs_error_vs_data_max'])}."]
    if c["conditions_not_found"]:
        out += ["", "The controller never drew " + ", ".join(c["conditions_not_found"])
                + " (conditioning on them found no samples)."]
    table = result["controller_table"]
    headline = table[table.apply(lambda r: (r["label"], r["node"]) in HEADLINE_PAIRS
                                 and r["value"] == 1, axis=1)] if len(table) else table
    return out + ["", f"The full table is `{files['controller']}`. Headline rows:", "",
                  markdown_table(headline.drop(columns=["cond_controller_n", "cond_data_n"])), "",
                  f"![controller]({files.get('controller_plot', '')})", ""]


def _images_md(result: Mapping, files: Mapping[str, str]) -> list[str]:
    if result["consistency"] is None:
        return ["The run has no image model.", ""]
    cons = result["consistency"]
    out = ["Label consistency: each reader's balanced accuracy of \"the image shows the label "
           "it was generated with\" (0.5 = G ignores the label, 1.0 = always shown); the "
           "panel's mean and min-max, the mean recalls of the label's two values and the "
           "share of these images all readers agree on, each with its 95% Wilson interval.",
           "", markdown_table(pd.DataFrame([{
               "label": r["label"], "balanced accuracy": r["balanced_accuracy"],
               "readers": _span(r["min"], r["max"]),
               "shown when 1": f"{fmt(r['tpr'])} {interval_text({'low': r['tpr_low'], 'high': r['tpr_high']})}",
               "n (1)": r["n_pos"],
               "shown when 0": f"{fmt(r['tnr'])} {interval_text({'low': r['tnr_low'], 'high': r['tnr_high']})}",
               "n (0)": r["n_neg"],
               "agreement": f"{fmt(r['agreement'])} {interval_text({'low': r['agreement_low'], 'high': r['agreement_high']})}"}
               for r in cons.to_dict(orient="records")])), "",
           f"![consistency]({files.get('consistency_plot', '')})", "",
           "Headline pairs: the share of images read as the target attribute (panel mean, "
           "readers' min-max, 95% Wilson interval of the mean), beside the share among the "
           "labels they were generated from and the reference (truth = exact model; data = "
           "the data's frequency; data marginal (graph) = P(target) when the graph makes it "
           "a non-descendant).", ""]
    rows = []
    for p in result["pairs"]:
        for kind, label in (("do", f"do({p['node']}=1)"), ("cond", f"{p['node']}=1")):
            rows.append({"target": p["target"], "under": label, "images": p[f"{kind}_images"],
                         "readers": _span(p[f"{kind}_images_min"], p[f"{kind}_images_max"]),
                         "95% CI": interval_text({"low": p[f"{kind}_images_low"],
                                                  "high": p[f"{kind}_images_high"]}),
                         "n": p[f"{kind}_n"], "labels": p[f"{kind}_labels"],
                         "reference": p[f"{kind}_reference"],
                         "source": p[f"{kind}_reference_source"]})
    out += [markdown_table(pd.DataFrame(rows)), "", f"![pairs]({files.get('pairs_plot', '')})", ""]
    for node, path in files.get("grids", {}).items():
        out += [f"Top row do({node}=1), bottom row {node}=1 (as generated): ![{node}]({path})", ""]
    return out


def _distances_md(result: Mapping, files: Mapping[str, str]) -> list[str]:
    fr = result["frechet"]
    if fr is None:
        return ["The run has no image model.", ""]
    floor = spread(list(fr["floor"].values()))
    out = [f"Reference images: {fr['source']}. The Fréchet distance (Gaussian fit of each "
           "reader's features) between generated and reference images, and between two "
           f"independent reference sets of {fr['n_floor']} (the floor: "
           f"{fmt(floor['mean'], 3)}, readers {_span(floor['min'], floor['max'])}). The "
           "observational distance is compared with the floor, every other set's with the "
           "observational distance (sets of different sizes are biased differently: read "
           "small sets' ratios loosely). The rare pairs carry no target.", ""]
    rows = []
    for row in fr["sets"]:
        d, r = spread(list(row["frechet"].values())), spread(list(row["ratio"].values()))
        rows.append({"set": row["set"], "generated": row["n_generated"],
                     "reference": row["n_reference"], "Fréchet": d["mean"],
                     "readers": _span(d["min"], d["max"]), "ratio": r["mean"],
                     "ratio readers": _span(r["min"], r["max"]), "ratio to": row["ratio_to"],
                     "note": row["note"]})
    out += [markdown_table(pd.DataFrame(rows)), "", f"![frechet]({files.get('frechet_plot', '')})", ""]
    pr = result["precision_recall"]
    if pr:
        out += ["k-NN precision (share of generated images inside the reference images' "
                "3-NN balls: realism) and recall (share of reference images inside the "
                "generated images' balls: coverage) of the observational set, beside the "
                "same for the floor's second reference set:", "",
                markdown_table(pd.DataFrame([{
                    "reader": reader,
                    "precision": f"{fmt(v['generated']['precision']['value'])} "
                                 f"{interval_text(v['generated']['precision'])}",
                    "recall": f"{fmt(v['generated']['recall']['value'])} "
                              f"{interval_text(v['generated']['recall'])}",
                    "reference precision": fmt(v["floor"]["precision"]["value"]),
                    "reference recall": fmt(v["floor"]["recall"]["value"])}
                    for reader, v in pr.items()])), ""]
    return out


def report_markdown(result: Mapping, files: Mapping[str, str]) -> str:
    """The text of report.md."""
    readers = result["readers"] or {}
    out = [f"# Causal-fidelity report: {Path(result['run']).name}", "",
           f"Run `{result['run']}`" + (f", step {result['step']}" if "step" in result else "")
           + f"; data set `{result['dataset_dir']}`; labels {', '.join(result['labels'])}. "
           f"{result['n']} images per set, {result['label_samples']} controller samples per "
           f"label distribution, {len(readers)} readers ({', '.join(readers)}), seed "
           f"{result['seed']}; {result['seconds']:.0f} s.", "",
           "## Targets", "", "A target passes only when every reader passes it.", "",
           _targets_md(result["targets"]), ""]
    if result["pairs"]:
        out += ["## Intervention vs conditioning, in one sentence each", ""]
        out += [f"- {row['verdict']}" for row in result["pairs"]] + [""]
    out += ["## 1. The readers", "", *_readers_md(result, files),
            "## 2. Labels: the causal controller", "", *_controller_md(result, files),
            "## 3. Images: what the readers see", "", *_images_md(result, files),
            "## 4. Distances to the true distributions", "", *_distances_md(result, files),
            "## How to read this", "",
            "Each chain runs truth -> controller labels -> images. When the controller's "
            "labels match the truth but the images do not read as their labels, the image "
            "model is at fault; when the labels are already off, fix the controller first. "
            "Where the readers disagree, the images are ambiguous: no reading of them can be "
            "trusted, and the Fréchet distances (which need no reading) say how far the "
            "images are from the true ones.", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots
def _bar_plot(path, groups: Sequence[str], series: Mapping[str, Sequence[float]], title: str,
              lines: Sequence[float] = (), ylim=(0.0, 1.05)) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    width_inches = min(16.0, max(6.0, 0.45 * len(groups) * max(1, len(series)) ** 0.5 + 2))
    fig = Figure(figsize=(width_inches, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        values = np.nan_to_num(np.asarray(values, float), nan=0.0)
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    for y in lines:
        ax.axhline(y, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path).name


def _controller_plot(path, table: pd.DataFrame) -> str:
    """Two scatter panels, one point per (X, v, label): the controller's P(label | do(X=v))
    against the truth, and its P(label | X=v) against the data; the diagonal is perfect."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.5))
    panels = (("do_truth", "do_controller", "P(label | do(X=v)): truth", "controller"),
              ("cond_data", "cond_controller", "P(label | X=v): data", "controller"))
    for k, (x, y, xlabel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
        known = table[[x, y]].dropna()
        ax.scatter(known[x], known[y], s=10, alpha=0.7)
        if known.empty:
            ax.text(0.5, 0.5, "unavailable", ha="center", va="center")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal")
    fig.suptitle("Controller: each point a (node X, value v, other label)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path).name


def _by_reader_plot(path, long: pd.DataFrame, group: str, value: str, title: str,
                    **options) -> str:
    """A bar plot of a long table: one group of bars per ``group`` value (in table order),
    one bar per reader."""
    groups = list(dict.fromkeys(long[group]))
    return _bar_plot(path, groups, {reader: part.set_index(group).reindex(groups)[value]
                                    for reader, part in long.groupby("reader", sort=False)},
                     title, **options)


def _write_plots(result: Mapping, out: Path, ext: str, files: dict) -> None:
    from figure_scripts.utils import save_grid

    files["controller_plot"] = _controller_plot(out / f"controller.{ext}",
                                                result["controller_table"])
    scores, _ = reader_tables(result["readers"])
    balanced = scores[scores["evaluation"] == scores["evaluation"].iloc[0]] if len(scores) \
        else scores
    files["readers_plot"] = _by_reader_plot(
        out / f"readers.{ext}", balanced, "attribute", "balanced_accuracy",
        "Readers: balanced accuracy on held-out images", lines=(0.97,), ylim=(0.4, 1.02))
    files["consistency_plot"] = _by_reader_plot(
        out / f"consistency.{ext}", result["consistency_by_reader"], "label",
        "balanced_accuracy", "Label consistency of generated images, each reader",
        lines=(CONSISTENCY_EACH_TARGET, CONSISTENCY_MEAN_TARGET), ylim=(0.4, 1.02))
    pairs = result["pairs"]
    if pairs:
        both = lambda key: [p[f"{kind}_{key}"] for p in pairs for kind in ("do", "cond")]  # noqa: E731
        files["pairs_plot"] = _bar_plot(
            out / f"headline_pairs.{ext}",
            [f"{p['target']} | {u}" for p in pairs
             for u in (f"do({p['node']}=1)", f"{p['node']}=1")],
            {"reference": both("reference"), "controller labels": both("labels"),
             "images (panel mean)": both("images")},
            "P(target = 1) under do(X=1) and X=1: reference, controller labels, images")
    table = frechet_table(result["frechet"])
    files["frechet_plot"] = _by_reader_plot(
        out / f"frechet.{ext}", table[table["kind"] != "floor"], "set", "ratio",
        "Fréchet distance ratio (observational: to the floor; others: to observational)",
        lines=(FRECHET_SET_FACTOR, FRECHET_FLOOR_FACTOR), ylim=None)
    files["grids"] = {}
    for node, (do_images, cond_images) in result["grids"].items():
        rows = []
        for images in (do_images, cond_images):  # a row of 10; missing cells left black
            blank = np.zeros((10 - len(images), *do_images.shape[1:]), np.float32)
            rows.append(np.concatenate([images[:10], blank]) if len(images) < 10 else images[:10])
        name = f"intvcond_{node}=1.{ext}"
        save_grid(np.concatenate(rows), out / name, 2, 10)
        files["grids"][node] = name


def write_report(result: Mapping, out, figure_ext: str = "png") -> dict[str, Path]:
    """Write report.md, summary.json, the CSV tables and the plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ext = figure_ext.lstrip(".")
    files: dict = {"controller": "controller.csv"}
    result["controller_table"].to_csv(out / "controller.csv", index=False)
    if result["readers"] is not None:
        scores, groups = reader_tables(result["readers"])
        scores.to_csv(out / "readers.csv", index=False)
        groups.to_csv(out / "readers_subgroups.csv", index=False)
        result["consistency"].to_csv(out / "consistency.csv", index=False)
        result["consistency_by_reader"].to_csv(out / "consistency_by_reader.csv", index=False)
        pairs_table(result["pairs"]).to_csv(out / "headline_pairs.csv", index=False)
        result["agreement"].to_csv(out / "agreement.csv", index=False)
        frechet_table(result["frechet"]).to_csv(out / "frechet.csv", index=False)
        precision_recall_table(result["precision_recall"]).to_csv(out / "precision_recall.csv",
                                                                  index=False)
        _write_plots(result, out, ext, files)
    else:
        files["controller_plot"] = _controller_plot(out / f"controller.{ext}",
                                                    result["controller_table"])
    (out / "summary.json").write_text(json.dumps(summary_dict(result), indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(result, files))
    return {name: out / name for name in sorted(p.name for p in out.iterdir())}


# ----------------------------------------------------------------------------- printed
def summary_text(result: Mapping, out) -> str:
    """The short summary printed at the end."""
    lines = [f"Causal-fidelity report of {result['run']}"
             + (f" (step {result['step']})" if "step" in result else "")]
    for name, info in (result["readers"] or {}).items():
        for key, table in info.get("scores", {}).items():
            values = {a: s["balanced_accuracy"] for a, s in table.items()
                      if s["balanced_accuracy"] is not None and np.isfinite(s["balanced_accuracy"])}
            worst = min(values, key=values.get) if values else "n/a"
            lines.append(f"  reader {name} ({info.get('architecture', 'maxpool')}), "
                         f"{_EVALUATION_TEXT.get(key, key)}: balanced accuracy min "
                         f"{fmt(values.get(worst, float('nan')), 3)} ({worst})")
    c = result["controller"]
    lines.append(f"  controller: TVD {fmt(c['tvd'], 3)}, P(.|do) largest error vs truth "
                 f"{fmt(c['do_abs_error_max'])}")
    if result["consistency"] is not None:
        lines.append("  consistency (panel mean): " + ", ".join(
            f"{r.label} {fmt(r.balanced_accuracy)}" for r in result["consistency"].itertuples()))
    if result["frechet"] is not None:
        fr = result["frechet"]
        floor = spread(list(fr["floor"].values()))
        lines.append(f"  Fréchet floor {fmt(floor['mean'], 3)} ({_span(floor['min'], floor['max'])}); "
                     + ", ".join(f"{row['set']} {fmt(spread(list(row['frechet'].values()))['mean'], 3)}"
                                 for row in fr["sets"]))
    width = max(len(t["name"]) for t in result["targets"])
    lines.append("  targets (value = panel mean, readers min-max):")
    for t in result["targets"]:
        failed = f"  failed by {', '.join(t['failed_readers'])}" if t["failed_readers"] else ""
        note = f"  ({t['note']})" if t["note"] else ""
        lines.append(f"    {t['status']:<4}  {t['name']:<{width}}  {fmt(t['value']):>5} "
                     f"[{_span(t['min'], t['max'])}]  {t['goal']}{failed}{note}")
    for row in result["pairs"]:
        lines.append(f"  - {row['verdict']}")
    lines.append(f"  written to {out}/ (report.md, summary.json)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from figure_scripts.classifier import TrainingPlan
    from figure_scripts.readers import PANEL
    from figure_scripts.run import add_run_arguments

    plan = TrainingPlan()
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts fidelity",
        description="The causal-fidelity report of a saved run: a panel of "
        f"{len(PANEL)} independent attribute readers (trained once per data set and image "
        "size on real images, then cached) reads the generated images; their Fréchet "
        "distances to the true distributions (toy faces: rendered from the exact model) are "
        "measured; the controller's do() and cond() probabilities are compared with the "
        "truth and the data. Writes report.md, summary.json, CSV tables and plots into "
        "<run>/fidelity/ and prints the targets with PASS/FAIL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(parser, out_help="Output folder; empty: <run>/fidelity.")
    parser.add_argument("--n", type=int, default=2000,
                        help="Images per set: generated images of the label consistency and "
                        "of each do/cond set, and true (or held-out real) images of each "
                        "reference set and of the floor.")
    parser.add_argument("--label_samples", type=int, default=20000,
                        help="Controller label samples per distribution for the label part.")
    parser.add_argument("--retrain_readers", action="store_true",
                        help="Train the attribute readers again even if they are cached.")
    parser.add_argument("--readers_dir", default="",
                        help="Cache folder of the readers; empty: <dataset>/classifiers.")
    parser.add_argument("--reader_images", type=int, default=plan.n_train,
                        help="Training images of each newly trained reader.")
    parser.add_argument("--reader_steps", type=int, default=plan.steps,
                        help="Optimizer steps of each newly trained reader.")
    parser.add_argument("--draw_rows", type=int, default=None,
                        help="CausalGAN only: draw the images with this --draw_rows instead "
                        "of the run's own (0: every row of a batch, as the reference).")
    parser.add_argument("--draw_bn_batches", type=int, default=None,
                        help="CausalGAN only: draw the images with this --draw_bn_batches "
                        "instead of the run's own (G's batch norms take statistics averaged "
                        "over that many training-like batches; 0: off).")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 10:
        raise UserError(f"--n must be at least 10 images per set; got {args.n}.")
    if args.label_samples < 1:
        raise UserError(f"--label_samples must be positive; got {args.label_samples}.")
    if args.reader_images < 1 or args.reader_steps < 1:
        raise UserError("--reader_images and --reader_steps must be positive; got "
                        f"{args.reader_images} and {args.reader_steps}.")
    from figure_scripts.classifier import TrainingPlan
    from figure_scripts.fidelity import build_report
    from figure_scripts.run import load_run

    trainer = load_run(args.load_path)
    for flag, setter in (("draw_rows", "set_draw_rows"),
                         ("draw_bn_batches", "set_draw_bn_batches")):
        if getattr(args, flag) is None:
            continue
        if not hasattr(trainer.model, setter):
            raise UserError(f"--{flag} is CausalGAN's; {args.load_path} is a "
                            f"{trainer.model_type or 'controller-only'} run.")
        getattr(trainer.model, setter)(getattr(args, flag))
    if args.draw_bn_batches:  # its statistics are taken over training's label mix
        trainer.weigh_rare_labels()
    plan = TrainingPlan(n_train=args.reader_images, steps=args.reader_steps)
    result = build_report(trainer, n=args.n, label_samples=args.label_samples, seed=args.seed,
                          progress=not args.quiet, plan=plan, retrain=args.retrain_readers,
                          cache_dir=args.readers_dir or None)
    out = Path(args.out) if args.out else Path(trainer.model_dir) / "fidelity"
    write_report(result, out, args.figure_ext)
    print(summary_text(result, out))
    return 0
