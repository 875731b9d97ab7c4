"""The causal-fidelity report's measurements: does the whole model draw interventions that
differ from conditioning, as read by a panel of independent attribute readers, and how
far are its images from the true distributions?

    python -m figure_scripts fidelity --load_path logs/<run> [--out DIR] [--n 2000]

(the command line and the files it writes: ``figure_scripts.fidelity_report``; the
targets and verdicts: ``figure_scripts.fidelity_targets``). Four layers are measured
separately so that the report says where a chain breaks:

1. Labels (the controller): the observational TVD, and for each node X and v in {0, 1}
   P(other labels | do(X=v)) against the truth (exact from ``scm.json`` on the toy
   faces, unavailable elsewhere) and P(other labels | X=v) against the data.
2. Images read by the panel (``figure_scripts.readers``: three readers trained
   separately on real images only). Label consistency is each reader's balanced accuracy
   of "the image shows the (rounded) label it was generated with", with its two recalls;
   labels are drawn from the controller conditioned on each label's two values in turn,
   so rare labels are measured too. The headline pairs compare image-level do() and
   cond() rates with the labels they came from and the truth. Every number is the
   panel's mean with its min-max, and per attribute the share of generated images on
   which all readers agree says how far the readings can be trusted.
3. Distances (``figure_scripts.frechet``): the Fréchet distance, in each reader's feature
   space, between generated images and true images (toy faces: rendered from the exact
   model; CelebA: held-out real images, no do()) for the observational distribution,
   do(X=1) and X=1 of the headline nodes and the rare pairs, beside the real-vs-real
   floor; k-NN precision and recall of the observational set.
4. Targets (``fidelity_targets``): PASS only when every reader passes.

Every share comes with its 95% Wilson interval (``figure_scripts.proportions``).
``consistency_scalars(trainer)`` gives the panel's label consistency during training
(empty when no panel is cached yet; it never trains one).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from causal_graph import descendants
from errors import UserError
from figure_scripts import frechet
from figure_scripts.fidelity_targets import HEADLINE_PAIRS, evaluate_targets, pair_verdict
from figure_scripts.proportions import rate, share
from figure_scripts.readers import Panel, PanelReading, spread
from figure_scripts.run import attribute_table
from figure_scripts.run_samples import LabelSampler, generate, stratified_labels

log = logging.getLogger(__name__)

GRID_IMAGES = 10  # images kept per generated set for the intvcond grids


# ----------------------------------------------------------------------------- helpers
def _fraction(values) -> float:
    values = np.asarray(values).reshape(-1)
    return float(np.mean(values > 0.5)) if values.size else float("nan")


def toy_scm(dataset_dir):
    """The exact causal model of a toy faces folder (its scm.json), or None."""
    path = Path(dataset_dir) / "scm.json"
    if not path.is_file():
        return None
    import toy_faces

    return toy_faces.ToyFacesSCM.from_json(path)


def _exact(scm, target: Mapping, given=None, do=None) -> float:
    if scm is None or any(k not in scm.nodes for k in [*target, *(given or {}), *(do or {})]):
        return float("nan")
    try:
        return scm.prob(target, given=given, do=do)
    except ValueError:  # a condition of probability 0
        return float("nan")


def _data_conditional(attr: pd.DataFrame, target: str, node: str, value: int) -> tuple[float, int]:
    rows = attr[attr[node] == value]
    return (float(rows[target].mean()) if len(rows) else float("nan")), len(rows)


# ----------------------------------------------------------------------------- 1. labels
def controller_fidelity(sampler: LabelSampler, attr: pd.DataFrame, scm=None,
                        n: int = 20000, seed: int = 0, progress: bool = True):
    """The controller against the truth and the data.

    Returns (table, summary): one row per (node X, value v, other label Y) with
    P(Y | do(X=v)) of the controller and of the truth, P(Y | X=v) of the controller, the
    data and the truth; the summary holds the TVDs and the largest errors.
    """
    from tqdm import tqdm

    from figure_scripts import pairwise

    names = sampler.names
    missing = [name for name in names if name not in attr.columns]
    if missing:
        raise UserError(f"The attribute table has no columns {missing} for the controller's "
                        "labels; use the data set the run was trained on.")
    observed = sampler.observed
    summary = {"samples": len(observed),
               "tvd": pairwise.tvd_from_arrays(observed, attr[names].to_numpy()),
               "tvd_exact": float("nan"), "do_tvd_exact_max": float("nan")}
    usable_scm = scm if scm is not None and set(names) <= set(scm.nodes) else None
    if usable_scm is not None:
        columns = [usable_scm.nodes.index(name) for name in names]

        def exact_tvd(samples, do=None):
            states, probs = usable_scm.joint(do)
            return pairwise.tvd_exact({nm: samples[:, i] for i, nm in enumerate(names)},
                                      states[:, columns], probs, names=names)

        summary["tvd_exact"] = exact_tvd(observed)
    rows, do_tvds = [], []
    jobs = [(node, value) for node in names for value in (1, 0)]
    for k, (node, value) in enumerate(tqdm(jobs, desc="controller do/cond", unit="dist",
                                           disable=not progress, leave=False)):
        do = sampler(n, seed + 1000 + 2 * k, do={node: value})
        cond = sampler(n, seed + 1001 + 2 * k, cond={node: value})
        if usable_scm is not None:
            do_tvds.append(exact_tvd(do, {node: value}))
        for j, other in enumerate(names):
            if other == node:
                continue
            data_cond, data_n = _data_conditional(attr, other, node, value)
            rows.append({
                "node": node, "value": value, "label": other,
                "do_controller": _fraction(do[:, j]),
                "do_truth": _exact(scm, {other: 1}, do={node: value}),
                "cond_controller": _fraction(cond[:, j]),
                "cond_data": data_cond,
                "cond_truth": _exact(scm, {other: 1}, given={node: value}),
                "cond_controller_n": len(cond), "cond_data_n": data_n})
    table = pd.DataFrame(rows, columns=["node", "value", "label", "do_controller", "do_truth",
                                        "cond_controller", "cond_data", "cond_truth",
                                        "cond_controller_n", "cond_data_n"])
    if do_tvds:
        summary["do_tvd_exact_max"] = float(np.max(do_tvds))
    do_error = (table["do_controller"] - table["do_truth"]).abs()
    cond_error = (table["cond_controller"] - table["cond_data"]).abs()
    summary["do_abs_error_max"] = float(do_error.max()) if do_error.notna().any() else float("nan")
    summary["do_abs_error_mean"] = float(do_error.mean()) if do_error.notna().any() else float("nan")
    summary["cond_abs_error_vs_data_max"] = (float(cond_error.max()) if cond_error.notna().any()
                                             else float("nan"))
    summary["truth"] = "scm.json (exact)" if usable_scm is not None else "unavailable"
    summary["conditions_not_found"] = sorted(
        {f"{r.node}={r.value}" for r in table.itertuples() if r.cond_controller_n == 0})
    return table, summary



# ----------------------------------------------------------------------------- 2. images
@dataclass
class GeneratedSet:
    """Images generated from controller labels, as the panel read them."""

    labels: np.ndarray  # [N, k] the controller's labels (the run's label order)
    reading: PanelReading
    images: np.ndarray  # the first GRID_IMAGES images, for the grids


def draw_set(panel: Panel, model, labels: np.ndarray, seed: int) -> GeneratedSet:
    """Generate from ``labels`` (image noise from ``seed``) and read with the panel."""
    images = generate(model, labels, seed) if len(labels) else \
        np.zeros([0, panel.image_size, panel.image_size, panel.channels], np.float32)
    reading = panel.read(images) if len(images) else PanelReading(
        np.zeros([len(panel), 0, len(panel.attribute_names)], np.float32),
        [np.zeros([0, 1], np.float32) for _ in panel.readers])
    return GeneratedSet(np.asarray(labels, np.float32), reading, images[:GRID_IMAGES])


def draw_sets(panel: Panel, model, sampler: LabelSampler, sets, n: int, seed: int = 0,
              progress: bool = True) -> dict[str, GeneratedSet]:
    """One GeneratedSet of (at most) ``n`` images per ``frechet.DistributionSet``: labels
    from the controller under its do() and condition (fewer when the controller seldom
    meets the condition, none when never)."""
    from tqdm import tqdm

    out = {}
    for k, dist in enumerate(tqdm(sets, desc="generating do/cond images", unit="set",
                                  disable=not progress, leave=False)):
        labels = sampler(n, seed + 31 * k, do=dict(dist.do) or None,
                         cond=dict(dist.given) or None)
        out[dist.key] = draw_set(panel, model, labels, seed + 31 * k + 1)
    return out


def consistency_scores(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Per label: balanced accuracy, accuracy and the two recalls (tpr, tnr) of one
    reader's reading ``probs`` [N, k] against the labels [N, k] the images were
    generated with (rounded)."""
    from figure_scripts.classifier import binary_scores

    rows = [dict(label=name, **binary_scores(probs[:, j], labels[:, j]))
            for j, name in enumerate(names)]
    return pd.DataFrame(rows, columns=["label", "balanced_accuracy", "accuracy", "tpr", "tnr",
                                       "n_pos", "n_neg"])


def panel_consistency(panel: Panel, drawn: GeneratedSet, names: Sequence[str]) -> pd.DataFrame:
    """Every reader's ``consistency_scores`` in one long table (column ``reader``)."""
    columns = panel.columns(names)
    parts = [consistency_scores(drawn.reading.probs[r][:, columns], drawn.labels, names)
             .assign(reader=name) for r, name in enumerate(panel.names)]
    return pd.concat(parts, ignore_index=True)


def label_consistency(panel: Panel, model, sampler: LabelSampler, n: int = 2000,
                      seed: int = 0) -> tuple[pd.DataFrame, GeneratedSet]:
    """Generate from stratified controller labels and score each reader's consistency
    per label: (the long table, the images as read)."""
    drawn = draw_set(panel, model, stratified_labels(sampler, n, seed), seed + 1)
    return panel_consistency(panel, drawn, sampler.names), drawn


def consistency_summary(long: pd.DataFrame, drawn: GeneratedSet, panel: Panel,
                        names: Sequence[str]) -> pd.DataFrame:
    """Per label, the panel's view: balanced accuracy mean and min-max over readers, the
    mean recalls with their Wilson intervals, and the share of these images on which all
    readers agree."""
    agree = drawn.reading.agree(panel.columns(names)) if len(drawn.reading) else \
        np.zeros([0, len(names)], bool)
    rows = []
    for j, name in enumerate(names):
        part = long[long["label"] == name]
        s = spread(part["balanced_accuracy"])
        n_pos, n_neg = int(part["n_pos"].iloc[0]), int(part["n_neg"].iloc[0])
        tpr, tnr = rate(float(part["tpr"].mean()), n_pos), rate(float(part["tnr"].mean()), n_neg)
        agreement = share(agree[:, j])
        rows.append({"label": name, "balanced_accuracy": s["mean"], "min": s["min"],
                     "max": s["max"], "tpr": tpr["value"], "tpr_low": tpr["low"],
                     "tpr_high": tpr["high"], "n_pos": n_pos, "tnr": tnr["value"],
                     "tnr_low": tnr["low"], "tnr_high": tnr["high"], "n_neg": n_neg,
                     "agreement": agreement["value"], "agreement_low": agreement["low"],
                     "agreement_high": agreement["high"]})
    return pd.DataFrame(rows)


def reference(kind: str, target: str, node: str, scm, attr: pd.DataFrame, graph) -> tuple[float, str]:
    """The value P(target | do(node=1)) (kind 'do') or P(target | node=1) ('cond') should
    have, and where it comes from: the exact model, the data, or the graph."""
    if scm is not None and target in scm.nodes and node in scm.nodes:
        if kind == "do":
            return _exact(scm, {target: 1}, do={node: 1}), "truth"
        return _exact(scm, {target: 1}, given={node: 1}), "truth"
    if target == node:
        return 1.0, "definition"
    if kind == "cond":
        return _data_conditional(attr, target, node, 1)[0], "data"
    if graph is not None and target not in descendants(graph, node):
        return float(attr[target].mean()), "data marginal (graph)"
    return float("nan"), "unavailable"


def _rate_columns(kind: str, reading: PanelReading, column: int, names: Sequence[str]) -> dict:
    rates = reading.rates(column)
    s = spread(rates)
    p = rate(s["mean"], len(reading))
    return {f"{kind}_images": s["mean"], f"{kind}_images_min": s["min"],
            f"{kind}_images_max": s["max"], f"{kind}_images_low": p["low"],
            f"{kind}_images_high": p["high"],
            f"{kind}_by_reader": dict(zip(names, map(float, rates), strict=True))}


def headline_pairs(panel: Panel, generated: Mapping[str, GeneratedSet], names: Sequence[str],
                   attr: pd.DataFrame, scm=None, graph=None) -> list[dict]:
    """For each headline pair present in the graph: P(target) under do(node=1) and under
    node=1 as the panel reads the images (mean, min-max, Wilson interval of the mean,
    each reader), in the images' own labels, and the reference value."""
    rows = []
    for target, node in HEADLINE_PAIRS:
        if target not in names or node not in names:
            continue
        do, cond = generated[f"do({node}=1)"], generated[f"{node}=1"]
        j, column = names.index(target), panel.columns([target])[0]
        do_ref, do_source = reference("do", target, node, scm, attr, graph)
        cond_ref, cond_source = reference("cond", target, node, scm, attr, graph)
        rows.append({"target": target, "node": node,
                     **_rate_columns("do", do.reading, column, panel.names),
                     "do_labels": _fraction(do.labels[:, j]), "do_reference": do_ref,
                     "do_reference_source": do_source, "do_n": len(do.labels),
                     **_rate_columns("cond", cond.reading, column, panel.names),
                     "cond_labels": _fraction(cond.labels[:, j]), "cond_reference": cond_ref,
                     "cond_reference_source": cond_source, "cond_n": len(cond.labels)})
    return rows


def agreement_table(panel: Panel, generated: Sequence[PanelReading],
                    reference: Sequence[PanelReading], names: Sequence[str]) -> pd.DataFrame:
    """Per attribute, the share of images on which all readers agree (Wilson interval):
    over every generated image of the report, and over every reference image."""
    columns = panel.columns(names)
    rows = {name: {"label": name} for name in names}
    for what, readings in (("generated", generated), ("reference", reference)):
        readings = [r for r in readings if r is not None and len(r)]
        agree = (PanelReading.concat(readings).agree(columns) if readings
                 else np.zeros([0, len(names)], bool))
        for j, name in enumerate(names):
            p = share(agree[:, j])
            rows[name].update({f"{what}_n": p["n"], f"{what}": p["value"],
                               f"{what}_low": p["low"], f"{what}_high": p["high"]})
    return pd.DataFrame(list(rows.values()))


# ----------------------------------------------------------------------------- training hook
def consistency_scalars(trainer, n: int = 288, seed: int = 0) -> dict[str, float]:
    """Label consistency per label ({label: balanced accuracy, the panel's mean}) of about
    ``n`` images generated from the trainer's controller, for TensorBoard during training.

    Empty when the run has no image model or no panel is cached for its data set and
    image size (this never trains one: run the report once to create it). Labels whose
    consistency cannot be measured (one value never drawn) are left out.
    """
    from figure_scripts.readers import get_panel

    model = getattr(trainer, "model", None)
    if model is None:
        return {}
    panel = get_panel(trainer.dataset_dir, int(trainer.config.input_scale_size),
                      int(model.channels), train_if_missing=False, progress=False)
    if panel is None:
        return {}
    names = [n for n in trainer.label_names if n in panel.attribute_names]
    if not names:
        return {}
    long, _ = label_consistency(panel, model, LabelSampler(trainer.cc, names, seed), n=n,
                                seed=seed)
    means = long.groupby("label", sort=False)["balanced_accuracy"].mean()
    return {label: float(v) for label, v in means.items() if np.isfinite(v)}


def training_scalars(trainer, n: int = 288, seed: int = 0) -> dict[str, float]:
    """``consistency_scalars`` as TensorBoard tags ``fidelity/consistency_<label>``: the
    figure-step metrics that main.py gives the Trainer (``Trainer(figure_metrics=...)``)."""
    values = consistency_scalars(trainer, n=n, seed=seed)
    if values:
        log.info("label consistency (independent classifier): mean %.3f, lowest %s %.3f",
                 float(np.mean(list(values.values()))), *min(values.items(),
                                                              key=lambda kv: kv[1]))
    return {f"fidelity/consistency_{name}": value for name, value in values.items()}


# ----------------------------------------------------------------------------- the report
def build_report(trainer, *, n: int = 2000, label_samples: int = 20000, seed: int = 0,
                 progress: bool = True, panel: Panel | None = None,
                 reference: frechet.Reference | None = None, **panel_options) -> dict:
    """Every measurement of the report for a loaded run (a Trainer), as one dict of
    tables and numbers; ``fidelity_report.write_report`` turns it into files.

    ``panel`` (else ``readers.get_panel(..., **panel_options)``) reads the images;
    ``reference`` (a previous result's ``"reference"``) reuses reference images already
    read by the same panel with the same ``n`` and ``seed``.
    """
    start = time.perf_counter()
    names = list(trainer.label_names)
    attr = attribute_table(trainer, "the fidelity report")
    missing = [name for name in names if name not in attr.columns]
    if missing:
        raise UserError(f"The run's labels {missing} are missing from the data set's attribute "
                        f"file in {trainer.dataset_dir}.")
    scm = toy_scm(trainer.dataset_dir)
    graph = getattr(trainer, "graph", None)
    result: dict = {"run": str(trainer.model_dir), "dataset_dir": str(trainer.dataset_dir),
                    "labels": names, "seed": seed, "n": n, "label_samples": label_samples}
    with contextlib.suppress(AttributeError, TypeError):
        result["step"] = int(trainer.overall_step())
    sampler = LabelSampler(trainer.cc, names, seed, probe=label_samples)
    result["controller_table"], result["controller"] = controller_fidelity(
        sampler, attr, scm, n=label_samples, seed=seed, progress=progress)

    model = getattr(trainer, "model", None)
    result.update(readers=None, consistency=None, consistency_by_reader=None, pairs=[],
                  frechet=None, precision_recall=None, agreement=None, grids={},
                  reference=None)
    if model is not None:
        from figure_scripts.readers import get_panel

        config = trainer.config
        size, channels = int(config.input_scale_size), int(model.channels)
        panel = panel or get_panel(trainer.dataset_dir, size, channels, progress=progress,
                                   **panel_options)
        panel.columns(names)
        result["readers"] = panel.info
        long, drawn = label_consistency(panel, model, sampler, n=n, seed=seed + 100)
        result["consistency_by_reader"] = long
        result["consistency"] = consistency_summary(long, drawn, panel, names)
        sets = frechet.distribution_sets(names)
        generated = draw_sets(panel, model, sampler, sets, n, seed + 200, progress)
        result["pairs"] = headline_pairs(panel, generated, names, attr, scm, graph)
        if reference is None or not reference.matches(panel, n, seed, sets):
            from figure_scripts.classifier import cache_folder

            reference = frechet.reference_readings(
                panel, sets, dataset_dir=trainer.dataset_dir, attr=attr, scm=scm, n=n,
                seed=seed, image_size=size, channels=channels,
                scratch_dir=cache_folder(trainer.dataset_dir, size, channels,
                                         panel_options.get("cache_dir")),
                resize_method=getattr(config, "resize_method", "AREA"), progress=progress)
        result["reference"] = reference
        result["frechet"] = frechet.distances(panel, sets, {k: g.reading for k, g in
                                                            generated.items()}, reference)
        result["precision_recall"] = frechet.observational_precision_recall(
            panel, generated[frechet.OBSERVATIONAL].reading, reference)
        result["agreement"] = agreement_table(
            panel, [drawn.reading, *(g.reading for g in generated.values())],
            [*reference.readings.values(), reference.floor], names)
        result["grids"] = {node: (generated[f"do({node}=1)"].images,
                                  generated[f"{node}=1"].images)
                           for node in dict.fromkeys(node for _, node in HEADLINE_PAIRS)
                           if node in names}
    for row in result["pairs"]:
        row["verdict"] = pair_verdict(row)
    result["targets"] = evaluate_targets(result["consistency_by_reader"], result["pairs"],
                                         result["frechet"], result["controller_table"])
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result
