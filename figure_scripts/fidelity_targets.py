"""The fidelity report's targets and its one-sentence verdicts.

Every image-level target is checked for each reader of the panel on its own: a target
PASSes only when every reader passes it, and a failed target names the readers that
failed it. Its value is the panel's mean, shown with the readers' min-max.

    label consistency               >= 0.95 mean over labels, >= 0.90 each label
    do(Bald=1)                      read as bald >= 0.85; as male within 0.08 of the truth
    Bald=1                          read as male >= 0.85
    do(Wearing_Lipstick=1)          read as male within 0.08 of the truth
    Wearing_Lipstick=1              read as male <= 0.08
    Fréchet distance                observational <= 8x the real-vs-real floor; each
                                    do(X=1) and X=1 set of frechet.FRECHET_NODES <= 1.5x
                                    the run's own observational distance (or the floor,
                                    when that is larger: below it is sampling noise)
    controller P(Male | Bald=1)     >= 0.85 (labels only, no readers)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from figure_scripts.frechet import FRECHET_NODES
from figure_scripts.readers import spread

CONSISTENCY_MEAN_TARGET = 0.95
CONSISTENCY_EACH_TARGET = 0.90
SHOWS_ATTRIBUTE_TARGET = 0.85  # do(Bald=1) read as bald; Bald=1 read as male
TOLERANCE = 0.08  # "within 0.08 of the truth"
RARE_TARGET = 0.08  # Wearing_Lipstick=1 read as male at most this
FRECHET_FLOOR_FACTOR = 8.0  # observational distance <= this x the real-vs-real floor
FRECHET_SET_FACTOR = 1.5  # each headline do/cond set <= this x the observational distance
CONTROLLER_BALD_MALE_TARGET = 0.85  # the controller's P(Male | Bald=1)
DISAGREEMENT = 0.15  # readers further apart than this on a rate are named in the verdict

# (target, node): image-level P(target = 1 | do(node = 1)) against P(target = 1 | node = 1)
HEADLINE_PAIRS = (("Male", "Bald"), ("Male", "Wearing_Lipstick"), ("Bald", "Bald"),
                  ("Wearing_Lipstick", "Wearing_Lipstick"))
assert {node for _, node in HEADLINE_PAIRS} <= set(FRECHET_NODES)  # their images are shared

ADJECTIVES = {"Male": "male", "Bald": "bald", "Wearing_Lipstick": "wearing lipstick",
              "Young": "young", "Smiling": "smiling", "Eyeglasses": "wearing eyeglasses",
              "Mustache": "with a mustache"}


def fmt(value, digits: int = 2) -> str:
    """A number for the report ("n/a" when unknown)."""
    return f"{value:.{digits}f}" if value is not None and np.isfinite(value) else "n/a"


def _close(a: float, b: float, tolerance: float = TOLERANCE) -> bool:
    return bool(np.isfinite(a) and np.isfinite(b) and abs(a - b) <= tolerance)


# ----------------------------------------------------------------------------- targets
def _target(name: str, by_reader: Mapping[str, float] | None, goal: str, check,
            note: str = "", value: float | None = None) -> dict:
    """A target row. ``by_reader`` None: not applicable (N/A); a reader whose value is
    NaN or fails ``check`` fails it."""
    if by_reader is None:
        return {"name": name, "value": float("nan"), "min": float("nan"), "max": float("nan"),
                "goal": goal, "status": "N/A", "failed_readers": [], "per_reader": {},
                "note": note}
    s = spread(list(by_reader.values()))
    failed = [r for r, v in by_reader.items() if not (np.isfinite(v) and check(v))]
    if value is not None:
        s["mean"] = value
    return {"name": name, "value": s["mean"], "min": s["min"], "max": s["max"], "goal": goal,
            "status": "FAIL" if failed or not by_reader else "PASS",
            "failed_readers": failed, "per_reader": dict(by_reader), "note": note}


def _consistency_targets(consistency: pd.DataFrame | None) -> list[dict]:
    mean_goal = f">= {CONSISTENCY_MEAN_TARGET:.2f}"
    each_goal = f">= {CONSISTENCY_EACH_TARGET:.2f} each"
    if consistency is None or not len(consistency):
        return [_target("label consistency, mean over labels", None, mean_goal, None,
                        "no image model"),
                _target("label consistency, lowest label", None, each_goal, None,
                        "no image model")]
    table = consistency.pivot(index="label", columns="reader", values="balanced_accuracy")
    table = table.astype(float)
    unmeasured = [label for label, row in table.iterrows() if not np.isfinite(row).any()]
    note = (f"not measurable for {', '.join(unmeasured)} (the controller never draws both "
            "values)") if unmeasured else ""
    means = {r: float(table[r].mean()) for r in table.columns}  # NaN labels left out
    lowest = {r: (float(table[r].min()) if not unmeasured else float("nan"))
              for r in table.columns}
    panel_mean = table.mean(axis=1)
    worst = f" ({panel_mean.idxmin()})" if panel_mean.notna().any() else ""
    lowest_value = float(np.nanmean([table[r].min() for r in table.columns])) \
        if panel_mean.notna().any() else float("nan")
    return [_target("label consistency, mean over labels", means, mean_goal,
                    lambda v: v >= CONSISTENCY_MEAN_TARGET, note),
            _target(f"label consistency, lowest label{worst}", lowest, each_goal,
                    lambda v: v >= CONSISTENCY_EACH_TARGET, note, value=lowest_value)]


def _pair_target(by_pair: Mapping, target: str, node: str, kind: str, goal: str, check,
                 has_model: bool) -> dict:
    adjective = ADJECTIVES.get(target, target)
    name = (f"do({node}=1): images read as {adjective}" if kind == "do"
            else f"{node}=1: images read as {adjective}")
    row = by_pair.get((target, node))
    if row is None:
        return _target(name, None, goal, None, f"{node} or {target} is not in the graph"
                       if has_model else "no image model")
    reference = row[f"{kind}_reference"]
    if "within" in goal and not np.isfinite(reference):
        return _target(name, None, goal, None, "no reference value")
    note = f"reference: {row[f'{kind}_reference_source']}" if "within" in goal else ""
    if not row[f"{kind}_n"]:
        note = f"the controller never draws {node}=1"
    return _target(name, row[f"{kind}_by_reader"], goal, check, note)


def _frechet_targets(frechet: Mapping | None) -> list[dict]:
    obs_goal = f"<= {FRECHET_FLOOR_FACTOR:g}x the floor"
    set_goal = f"<= {FRECHET_SET_FACTOR:g}x observational"
    if frechet is None:
        return [_target("Fréchet distance, observational / floor", None, obs_goal, None,
                        "no image model")]
    out = []
    for row in frechet["sets"]:
        if row["kind"] == "observational":
            floor = spread(list(frechet["floor"].values()))["mean"]
            d = spread(list(row["frechet"].values()))["mean"]
            out.append(_target("Fréchet distance, observational / floor", row["ratio"],
                               obs_goal, lambda v: v <= FRECHET_FLOOR_FACTOR,
                               f"distance {fmt(d, 3)}, floor {fmt(floor, 3)}"))
        elif row["kind"] in ("do", "cond"):
            name = f"Fréchet distance, {row['set']} / observational"
            if row["n_reference"] == 0 and row["note"].startswith("unavailable"):
                out.append(_target(name, None, set_goal, None, row["note"]))
                continue
            note = row["note"] or f"{row['n_generated']} generated images"
            out.append(_target(name, row["ratio"], set_goal,
                               lambda v: v <= FRECHET_SET_FACTOR, note))
    return out


def evaluate_targets(consistency: pd.DataFrame | None, pairs: Sequence[Mapping],
                     frechet: Mapping | None, controller_table: pd.DataFrame) -> list[dict]:
    """The targets, each {name, value (panel mean), min, max, goal, status in
    PASS/FAIL/N/A, failed_readers, per_reader, note}. ``consistency`` is the long table
    of every reader's consistency per label (columns label, reader, balanced_accuracy)."""
    has_model = consistency is not None
    targets = _consistency_targets(consistency)
    by_pair = {(p["target"], p["node"]): p for p in pairs}
    within = f"within {TOLERANCE:.2f} of the truth"
    for target, node, kind, goal, check in (
            ("Bald", "Bald", "do", f">= {SHOWS_ATTRIBUTE_TARGET:.2f}",
             lambda v: v >= SHOWS_ATTRIBUTE_TARGET),
            ("Male", "Bald", "do", within, None),
            ("Male", "Bald", "cond", f">= {SHOWS_ATTRIBUTE_TARGET:.2f}",
             lambda v: v >= SHOWS_ATTRIBUTE_TARGET),
            ("Male", "Wearing_Lipstick", "do", within, None),
            ("Male", "Wearing_Lipstick", "cond", f"<= {RARE_TARGET:.2f}",
             lambda v: v <= RARE_TARGET)):
        if check is None:
            row = by_pair.get((target, node))
            truth = row[f"{kind}_reference"] if row is not None else float("nan")
            if np.isfinite(truth):
                goal = f"within {TOLERANCE:.2f} of {truth:.3f}"
            check = (lambda t: lambda v: abs(v - t) <= TOLERANCE)(truth)
        targets.append(_pair_target(by_pair, target, node, kind, goal, check, has_model))
    targets += _frechet_targets(frechet)
    row = controller_table[(controller_table["node"] == "Bald") & (controller_table["value"] == 1)
                           & (controller_table["label"] == "Male")]
    goal = f">= {CONTROLLER_BALD_MALE_TARGET:.2f}"
    if len(row):
        value = float(row["cond_controller"].iloc[0])
        note = (f"truth {fmt(float(row['cond_truth'].iloc[0]))}, data "
                f"{fmt(float(row['cond_data'].iloc[0]))}")
        if not np.isfinite(value):
            note = f"the controller never draws Bald=1; {note}"
        target = _target("controller P(Male | Bald=1)", {"controller": value}, goal,
                         lambda v: v >= CONTROLLER_BALD_MALE_TARGET, note)
        target["failed_readers"] = []  # the controller's labels: no reader involved
        targets.append(target)
    else:
        targets.append(_target("controller P(Male | Bald=1)", None, goal, None,
                               "Bald or Male is not in the graph"))
    return targets


# ----------------------------------------------------------------------------- verdicts
def pair_verdict(row: Mapping) -> str:
    """One sentence: do intervention and conditioning separate in the right direction in
    the images (the panel's mean reading), and if not, where the chain (truth ->
    controller labels -> images) breaks; readers that disagree are named."""
    text = _verdict(row)
    spans = [(kind, row.get(f"{kind}_images_min"), row.get(f"{kind}_images_max"))
             for kind in ("do", "cond")]
    wide = [f"{'do(' + row['node'] + '=1)' if kind == 'do' else row['node'] + '=1'} "
            f"{fmt(low)}-{fmt(high)}" for kind, low, high in spans
            if low is not None and np.isfinite(low) and high - low > DISAGREEMENT]
    if wide:
        text += (" The readers disagree (" + "; ".join(wide) + "): these images are "
                 "ambiguous, read them in the grids.")
    return text


def _verdict(row: Mapping) -> str:
    target, node = row["target"], row["node"]
    adjective = ADJECTIVES.get(target, f"{target}=1")
    do_i, cond_i = row["do_images"], row["cond_images"]
    do_l, cond_l = row["do_labels"], row["cond_labels"]
    do_r, cond_r = row["do_reference"], row["cond_reference"]
    numbers = (f"images read as {adjective} {fmt(do_i)} under do({node}=1) and {fmt(cond_i)} "
               f"under {node}=1")
    if not np.isfinite(cond_i):
        subject = f"{target} itself" if target == node else f"{target} under {node}"
        return (f"{subject}: images read as {adjective} {fmt(do_i)} under do({node}=1); the "
                f"controller never draws {node}=1, so conditioning cannot be shown: the chain "
                "breaks at the controller.")
    if target == node:
        if do_i >= SHOWS_ATTRIBUTE_TARGET and cond_i >= SHOWS_ATTRIBUTE_TARGET:
            return (f"{target} itself: {numbers}: the images show the attribute under both, "
                    "as they must.")
        if cond_i >= SHOWS_ATTRIBUTE_TARGET:
            return (f"{target} itself: {numbers}: G draws {adjective} faces only for the "
                    f"individuals that conditioning selects, not for those the intervention "
                    f"makes {adjective}; the labels are right by construction, so the chain "
                    "breaks at the images.")
        return (f"{target} itself: {numbers}: G does not draw the attribute it is given; the "
                "labels are right by construction, so the chain breaks at the images.")
    if not (np.isfinite(do_r) and np.isfinite(cond_r)):
        labels_gap, images_gap = cond_l - do_l, cond_i - do_i
        agree = np.sign(labels_gap) == np.sign(images_gap) and _close(do_i, do_l) and \
            _close(cond_i, cond_l)
        return (f"{target} under {node}: {numbers} (the controller's labels: {fmt(do_l)} and "
                f"{fmt(cond_l)}; no truth for the intervention): the images "
                + ("follow the controller." if agree else "do not follow the controller: the "
                   "chain breaks at the images."))
    expected = np.sign(cond_r - do_r)
    gap = cond_i - do_i
    right_way = expected != 0 and np.sign(gap) == expected and abs(gap) >= abs(cond_r - do_r) / 2
    controller_ok = _close(do_l, do_r) and _close(cond_l, cond_r)
    images_ok = _close(do_i, do_r) and _close(cond_i, cond_r)
    truth = f"truth {fmt(do_r)} and {fmt(cond_r)}"
    if right_way and images_ok:
        return (f"{target} under {node}: intervention and conditioning separate in the right "
                f"direction: {numbers} ({truth}).")
    where = []
    if not controller_ok:
        where.append(f"the controller's labels are off ({fmt(do_l)} and {fmt(cond_l)})")
    if not (_close(do_i, do_l) and _close(cond_i, cond_l)):
        where.append(f"the images do not show the labels they were given (labels {fmt(do_l)} "
                     f"and {fmt(cond_l)})")
    if not where:
        where.append("the differences are within noise of each stage but add up")
    if controller_ok:
        where.insert(0, "the controller is right")
    head = ("separate in the right direction but not by the right amounts" if right_way
            else "do not separate in the right direction")
    return (f"{target} under {node}: intervention and conditioning {head}: {numbers} "
            f"({truth}); " + "; ".join(where) + ".")
