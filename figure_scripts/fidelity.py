"""The causal-fidelity report: does the whole model draw interventions that differ from
conditioning, as read by an independent attribute classifier?

    python -m figure_scripts fidelity --load_path logs/<run> [--out DIR] [--n 1000]

writes ``<run>/fidelity/`` and prints a short summary with the targets:

    report.md                  everything below in words and tables, PASS/FAIL per target
    summary.json               every headline number (for scripts comparing runs)
    classifier.csv             the classifier's accuracy / balanced accuracy per attribute
    classifier_subgroups.csv   its accuracy in the rare cells (Male among Bald=1, ...)
    controller.csv             P(label | do(X=v)) vs the truth, P(label | X=v) vs the data
    consistency.csv            label consistency of the generated images per label
    headline_pairs.csv         image-level P(target | do(X=1)) and P(target | X=1) beside
                               the controller's labels and the truth
    *.png (--figure_ext)       bar plots of those tables; intvcond_<X>=1 grids (top row
                               do(X=1), bottom row X=1, as read by the classifier)

Three layers are measured separately so that the report says where a chain breaks:

1. Labels (the controller): the observational TVD, and for each node X and v in {0, 1}
   P(other labels | do(X=v)) against the truth (exact from ``scm.json`` on the toy
   faces, unavailable elsewhere) and P(other labels | X=v) against the data.
2. Images (the whole model): images generated from controller labels are read back by
   the classifier (``figure_scripts.classifier``, trained on real images only). Label
   consistency is the balanced accuracy of "the image shows the (rounded) label it was
   generated with"; labels are drawn from the controller conditioned on each label's two
   values in turn, so rare labels are measured too. The headline pairs compare
   image-level do() and cond() probabilities with the labels they came from and the truth.
3. Diversity: the mean pairwise distance of generated images in the classifier's feature
   space over the same for real images (1.0 = as varied as the data, 0 = one image).

Only the image-model interface is used (``generate(labels, z_gen)``, ``z_dim``,
``channels``); image noise is U[-1, 1]^z_dim as in the Trainer's fixed figure inputs.
``consistency_scalars(trainer)`` gives the label consistency during training (empty when
no classifier is cached yet).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from errors import UserError

log = logging.getLogger(__name__)

# (target, node): image-level P(target = 1 | do(node = 1)) against P(target = 1 | node = 1)
HEADLINE_PAIRS = (("Male", "Bald"), ("Male", "Wearing_Lipstick"), ("Bald", "Bald"),
                  ("Wearing_Lipstick", "Wearing_Lipstick"))
TOLERANCE = 0.10  # "within 0.10 of the truth"
CONSISTENCY_MEAN_TARGET = 0.90
CONSISTENCY_EACH_TARGET = 0.80
SHOWS_ATTRIBUTE_TARGET = 0.80  # do(Bald=1) read as bald; Bald=1 read as male
RARE_TARGET = 0.10  # Wearing_Lipstick=1 read as male at most this
DIVERSITY_TARGET = 0.6
CONTROLLER_BALD_MALE_TARGET = 0.85  # the controller's P(Male | Bald=1)
GENERATE_BATCH = 256
MAX_CONDITIONING_DRAWS = 4_000_000  # controller draws one conditional may cost (about 1 s)
_CONTROLLER_LOGGER = "causal_controller.CausalController"


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet_conditioning():
    """Rejection sampling that finds too few samples warns; the report counts instead."""
    loggers = [logging.getLogger(name) for name in (_CONTROLLER_LOGGER, "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # also TensorFlow's note that each condition traces a sampler
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _matrix(label_dict: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """{name: (N, 1)} -> float32 [N, len(names)]."""
    if not names:
        return np.zeros([0, 0], np.float32)
    return np.concatenate([np.asarray(label_dict[n], np.float32).reshape(-1, 1) for n in names],
                          axis=1)


def _sample(cc, names, n: int, seed: int, do=None, cond=None) -> np.ndarray:
    """Controller labels [<=n, k] (fewer when conditioning finds fewer)."""
    with _quiet_conditioning():
        return _matrix(cc.sample_label(cond_dict=cond, do_dict=do, N=int(n), seed=int(seed)),
                       names)


class LabelSampler:
    """Controller labels under do() or cond(), never stuck on a condition the controller
    (almost) never meets: a probe of ``probe`` samples measures how often each label takes
    each value, and conditioning asks for at most as many samples as MAX_CONDITIONING_DRAWS
    draws would give at that rate (none when the probe saw the value zero times)."""

    def __init__(self, cc, names: Sequence[str], seed: int = 0, probe: int = 20000):
        self.cc, self.names = cc, list(names)
        self.observed = _sample(cc, self.names, probe, seed)
        ones = (self.observed > 0.5).mean(axis=0) if len(self.observed) else \
            np.zeros(len(self.names))
        self.rate = {}
        for j, name in enumerate(self.names):
            self.rate[name, 1], self.rate[name, 0] = float(ones[j]), float(1.0 - ones[j])

    def __call__(self, n: int, seed: int, do=None, cond=None) -> np.ndarray:
        if cond:
            rate = min(self.rate.get((k, int(v)), 1.0) for k, v in cond.items())
            n = min(int(n), int(rate * MAX_CONDITIONING_DRAWS))
            if n < 1:
                return np.zeros([0, len(self.names)], np.float32)
        return _sample(self.cc, self.names, n, seed, do=do, cond=cond)


def _fraction(values) -> float:
    values = np.asarray(values).reshape(-1)
    return float(np.mean(values > 0.5)) if values.size else float("nan")


def descendants(graph: Sequence[tuple[str, Sequence[str]]], node: str) -> set[str]:
    """The nodes that have ``node`` as an ancestor in ``graph`` [(node, [parents])]."""
    children: dict[str, list[str]] = {}
    for child, parents in graph:
        for parent in parents:
            children.setdefault(parent, []).append(child)
    found, todo = set(), [node]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


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
_GENERATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _generate_fn(model):
    """A compiled ``model.generate`` (one per model, reused across calls)."""
    import tensorflow as tf

    try:
        fn = _GENERATORS.get(model)
    except TypeError:  # not weak-referenceable: compile each time
        fn = None
    if fn is None:
        fn = tf.function(lambda labels, z: model.generate(labels, z), reduce_retracing=True)
        with contextlib.suppress(TypeError):
            _GENERATORS[model] = fn
    return fn


def generate(model, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Images [N, H, W, C] in [0, 255] (clipped) for controller labels [N, n_labels]; the
    image noise is U[-1, 1]^z_dim drawn from ``seed``."""
    import tensorflow as tf

    labels = np.asarray(labels, np.float32)
    z = np.random.default_rng(seed).uniform(-1.0, 1.0, (len(labels), int(model.z_dim)))
    fn = _generate_fn(model)
    out = []
    for start in range(0, len(labels), GENERATE_BATCH):
        images = fn(tf.constant(labels[start:start + GENERATE_BATCH]),
                    tf.constant(z[start:start + GENERATE_BATCH], tf.float32))
        out.append(np.clip(np.asarray(images, np.float32), 0.0, 255.0))
    if not out:
        return np.zeros([0, 1, 1, int(model.channels)], np.float32)
    return np.concatenate(out)


def classifier_columns(classifier, names: Sequence[str]) -> list[int]:
    """Column of each label in the classifier's output (UserError if it lacks one)."""
    missing = [n for n in names if n not in classifier.attribute_names]
    if missing:
        raise UserError(f"The attribute classifier knows no labels {missing} (it reads "
                        f"{', '.join(classifier.attribute_names)}): the run's labels are "
                        "missing from the data set's attribute file.")
    return [classifier.attribute_names.index(n) for n in names]


def stratified_labels(sampler: LabelSampler, n: int, seed: int = 0) -> np.ndarray:
    """About ``n`` controller label vectors: for each label and value v in {0, 1} the same
    share drawn conditioned on label = v, so every label has both values often enough."""
    names = sampler.names
    per = max(1, int(np.ceil(n / (2 * len(names)))))
    parts = [sampler(per, seed + 7 * i + v, cond={name: v})
             for i, name in enumerate(names) for v in (0, 1)]
    return np.concatenate(parts) if parts else np.zeros([0, len(names)], np.float32)


def consistency_scores(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Per label: balanced accuracy (and accuracy) of the images' reading ``probs`` [N, k]
    against the labels [N, k] they were generated with (rounded)."""
    from figure_scripts.classifier import binary_scores

    rows = [dict(label=name, **binary_scores(probs[:, j], labels[:, j]))
            for j, name in enumerate(names)]
    return pd.DataFrame(rows, columns=["label", "balanced_accuracy", "accuracy", "n_pos",
                                       "n_neg"])


def label_consistency(classifier, model, sampler: LabelSampler, n: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """Generate from stratified controller labels and score each label's consistency."""
    names = sampler.names
    labels = stratified_labels(sampler, n, seed)
    probs = classifier.predict_proba(generate(model, labels, seed + 1))
    return consistency_scores(probs[:, classifier_columns(classifier, names)], labels, names)


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


def headline_pairs(classifier, model, sampler: LabelSampler, attr: pd.DataFrame, scm=None,
                   graph=None, n: int = 1000, seed: int = 0, progress: bool = True):
    """For each headline pair present in the graph: P(target) under do(node=1) and under
    node=1, read from the images, from their own labels, and the reference value.

    Returns (rows, images) where images[node] = (do images, cond images, do reading
    [N, k], cond reading [N, k]) for the grids.
    """
    from tqdm import tqdm

    names = sampler.names
    columns = classifier_columns(classifier, names)
    rows, images = [], {}
    nodes = sorted({node for _, node in HEADLINE_PAIRS if node in names}, key=names.index)
    for k, node in enumerate(tqdm(nodes, desc="headline do/cond images", unit="node",
                                  disable=not progress, leave=False)):
        do = sampler(n, seed + 31 * k, do={node: 1})
        cond = sampler(n, seed + 31 * k + 1, cond={node: 1})
        do_images = generate(model, do, seed + 31 * k + 2)
        cond_images = generate(model, cond, seed + 31 * k + 3)
        do_read = classifier.predict_proba(do_images)[:, columns]
        cond_read = (classifier.predict_proba(cond_images)[:, columns] if len(cond)
                     else np.zeros([0, len(names)], np.float32))
        images[node] = (do_images, cond_images, do_read, cond_read)
        for target, pair_node in HEADLINE_PAIRS:
            if pair_node != node or target not in names:
                continue
            j = names.index(target)
            do_ref, do_source = reference("do", target, node, scm, attr, graph)
            cond_ref, cond_source = reference("cond", target, node, scm, attr, graph)
            rows.append({
                "target": target, "node": node,
                "do_images": _fraction(do_read[:, j]), "do_labels": _fraction(do[:, j]),
                "do_reference": do_ref, "do_reference_source": do_source,
                "cond_images": _fraction(cond_read[:, j]), "cond_labels": _fraction(cond[:, j]),
                "cond_reference": cond_ref, "cond_reference_source": cond_source,
                "do_n": len(do), "cond_n": len(cond)})
    return rows, images


def _close(a: float, b: float, tolerance: float = TOLERANCE) -> bool:
    return bool(np.isfinite(a) and np.isfinite(b) and abs(a - b) <= tolerance)


def pair_verdict(row: Mapping) -> str:
    """One sentence: do intervention and conditioning separate in the right direction in
    the images, and if not, where the chain (truth -> controller labels -> images) breaks."""
    target, node = row["target"], row["node"]
    adjective = _ADJECTIVES.get(target, f"{target}=1")
    do_i, cond_i = row["do_images"], row["cond_images"]
    do_l, cond_l = row["do_labels"], row["cond_labels"]
    do_r, cond_r = row["do_reference"], row["cond_reference"]
    numbers = (f"images read as {adjective} {_f(do_i)} under do({node}=1) and {_f(cond_i)} "
               f"under {node}=1")
    if not np.isfinite(cond_i):
        subject = f"{target} itself" if target == node else f"{target} under {node}"
        return (f"{subject}: images read as {adjective} {_f(do_i)} under do({node}=1); the "
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
    reference_known = np.isfinite(do_r) and np.isfinite(cond_r)
    if not reference_known:
        labels_gap, images_gap = cond_l - do_l, cond_i - do_i
        agree = np.sign(labels_gap) == np.sign(images_gap) and _close(do_i, do_l) and \
            _close(cond_i, cond_l)
        return (f"{target} under {node}: {numbers} (the controller's labels: {_f(do_l)} and "
                f"{_f(cond_l)}; no truth for the intervention): the images "
                + ("follow the controller." if agree else "do not follow the controller: the "
                   "chain breaks at the images."))
    expected = np.sign(cond_r - do_r)
    gap = cond_i - do_i
    right_way = expected != 0 and np.sign(gap) == expected and abs(gap) >= abs(cond_r - do_r) / 2
    controller_ok = _close(do_l, do_r) and _close(cond_l, cond_r)
    images_ok = _close(do_i, do_r) and _close(cond_i, cond_r)
    truth = f"truth {_f(do_r)} and {_f(cond_r)}"
    if right_way and images_ok:
        return (f"{target} under {node}: intervention and conditioning separate in the right "
                f"direction: {numbers} ({truth}).")
    where = []
    if not controller_ok:
        where.append(f"the controller's labels are off ({_f(do_l)} and {_f(cond_l)})")
    if not (_close(do_i, do_l) and _close(cond_i, cond_l)):
        where.append(f"the images do not show the labels they were given (labels {_f(do_l)} "
                     f"and {_f(cond_l)})")
    if not where:
        where.append("the differences are within noise of each stage but add up")
    if controller_ok:
        where.insert(0, "the controller is right")
    head = ("separate in the right direction but not by the right amounts" if right_way
            else "do not separate in the right direction")
    return (f"{target} under {node}: intervention and conditioning {head}: {numbers} "
            f"({truth}); " + "; ".join(where) + ".")


_ADJECTIVES = {"Male": "male", "Bald": "bald", "Wearing_Lipstick": "wearing lipstick",
               "Young": "young", "Smiling": "smiling", "Eyeglasses": "wearing eyeglasses",
               "Mustache": "with a mustache"}


def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None and np.isfinite(value) else "n/a"


# ----------------------------------------------------------------------------- 3. diversity
def mean_pairwise_distance(features: np.ndarray, max_n: int = 2000) -> float:
    """Mean Euclidean distance over all pairs of distinct rows (the first max_n rows)."""
    f = np.asarray(features, np.float64)[:max_n]
    if len(f) < 2:
        return float("nan")
    sq = (f * f).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    upper = np.triu_indices(len(f), k=1)
    return float(np.sqrt(d2[upper]).mean())


def diversity_ratio(generated_features: np.ndarray, real_features: np.ndarray) -> dict:
    """Mean pairwise feature distance of generated images over that of real images."""
    gen = mean_pairwise_distance(generated_features)
    real = mean_pairwise_distance(real_features)
    ratio = gen / real if np.isfinite(gen) and np.isfinite(real) and real > 0 else float("nan")
    return {"generated_distance": gen, "real_distance": real, "ratio": ratio}


def real_images(dataset_dir, attr: pd.DataFrame, image_size: int, channels: int, n: int,
                seed: int = 0, progress: bool = True) -> np.ndarray:
    """``n`` real images the classifier was not trained on (toy faces: any of the data
    set's images; real data: the held-out split), through the training pipeline."""
    from figure_scripts.classifier import heldout_mask, is_toy_dataset, load_images

    rows = attr if is_toy_dataset(dataset_dir) else attr[heldout_mask(attr.index)]
    rng = np.random.default_rng(seed)
    rows = rows.iloc[np.sort(rng.permutation(len(rows))[:n])]
    if len(rows) == 0:
        return np.zeros([0, image_size, image_size, channels], np.float32)
    return load_images(dataset_dir, rows, image_size, channels, progress,
                       "reading real images")[0].astype(np.float32)


# ----------------------------------------------------------------------------- targets
def evaluate_targets(consistency: pd.DataFrame | None, pairs: Sequence[Mapping],
                     diversity: Mapping | None, controller_table: pd.DataFrame) -> list[dict]:
    """The issue's targets, each {name, value, goal, status in PASS/FAIL/N/A, note}."""
    targets = []

    def add(name, value, goal, passed, note=""):
        status = "N/A" if passed is None else ("PASS" if passed else "FAIL")
        targets.append({"name": name, "value": value, "goal": goal, "status": status,
                        "note": note})

    if consistency is not None and len(consistency):
        values = consistency.set_index("label")["balanced_accuracy"].astype(float)
        finite = values[np.isfinite(values)]
        unmeasured = list(values.index[~np.isfinite(values)])
        note = (f"not measurable for {', '.join(unmeasured)} (the controller never draws "
                "both values)") if unmeasured else ""
        mean = float(finite.mean()) if len(finite) else float("nan")
        add("label consistency, mean over labels", mean, f">= {CONSISTENCY_MEAN_TARGET:.2f}",
            bool(len(finite) and mean >= CONSISTENCY_MEAN_TARGET), note)
        lowest = float(finite.min()) if len(finite) else float("nan")
        worst = f" ({finite.idxmin()})" if len(finite) else ""
        add(f"label consistency, lowest{worst}", lowest, f">= {CONSISTENCY_EACH_TARGET:.2f} each",
            bool(len(finite) and lowest >= CONSISTENCY_EACH_TARGET and not unmeasured), note)
    else:
        add("label consistency, mean over labels", float("nan"),
            f">= {CONSISTENCY_MEAN_TARGET:.2f}", None, "no image model")
        add("label consistency, lowest", float("nan"), f">= {CONSISTENCY_EACH_TARGET:.2f} each",
            None, "no image model")

    by_pair = {(p["target"], p["node"]): p for p in pairs}

    def pair_target(target, node, kind, goal_text, check):
        row = by_pair.get((target, node))
        label = (f"do({node}=1): images read as {_ADJECTIVES.get(target, target)}"
                 if kind == "do" else f"{node}=1: images read as {_ADJECTIVES.get(target, target)}")
        if row is None:
            add(label, float("nan"), goal_text(None), None,
                f"{node} or {target} is not in the graph" if consistency is not None
                else "no image model")
            return
        value = row[f"{kind}_images"]
        ref = row[f"{kind}_reference"]
        note = (f"reference: {row[f'{kind}_reference_source']}" if "within" in goal_text(row)
                else "")
        if not np.isfinite(value):
            note = f"the controller never draws {node}=1"
        add(label, value, goal_text(row), check(value, ref) if np.isfinite(value) else False,
            note)

    within = lambda row: (f"within {TOLERANCE:.2f} of {_f(row['do_reference'])}"  # noqa: E731
                          if row is not None else f"within {TOLERANCE:.2f} of the truth")
    pair_target("Bald", "Bald", "do", lambda row: f">= {SHOWS_ATTRIBUTE_TARGET:.2f}",
                lambda v, r: v >= SHOWS_ATTRIBUTE_TARGET)
    pair_target("Male", "Bald", "do", within,
                lambda v, r: None if not np.isfinite(r) else abs(v - r) <= TOLERANCE)
    pair_target("Male", "Bald", "cond", lambda row: f">= {SHOWS_ATTRIBUTE_TARGET:.2f}",
                lambda v, r: v >= SHOWS_ATTRIBUTE_TARGET)
    pair_target("Male", "Wearing_Lipstick", "do", within,
                lambda v, r: None if not np.isfinite(r) else abs(v - r) <= TOLERANCE)
    pair_target("Male", "Wearing_Lipstick", "cond", lambda row: f"<= {RARE_TARGET:.2f}",
                lambda v, r: v <= RARE_TARGET)
    if diversity is not None:
        ratio = diversity["ratio"]
        add("diversity (generated / real feature distance)", ratio, f">= {DIVERSITY_TARGET}",
            bool(np.isfinite(ratio) and ratio >= DIVERSITY_TARGET))
    else:
        add("diversity (generated / real feature distance)", float("nan"),
            f">= {DIVERSITY_TARGET}", None, "no image model")
    row = controller_table[(controller_table["node"] == "Bald") & (controller_table["value"] == 1)
                           & (controller_table["label"] == "Male")]
    if len(row):
        value = float(row["cond_controller"].iloc[0])
        note = (f"truth {_f(float(row['cond_truth'].iloc[0]))}, data "
                f"{_f(float(row['cond_data'].iloc[0]))}")
        if not np.isfinite(value):
            note = f"the controller never draws Bald=1; {note}"
        add("controller P(Male | Bald=1)", value, f">= {CONTROLLER_BALD_MALE_TARGET:.2f}",
            bool(np.isfinite(value) and value >= CONTROLLER_BALD_MALE_TARGET), note)
    else:
        add("controller P(Male | Bald=1)", float("nan"), f">= {CONTROLLER_BALD_MALE_TARGET:.2f}",
            None, "Bald or Male is not in the graph")
    return targets


# ----------------------------------------------------------------------------- training hook
def consistency_scalars(trainer, n: int = 288, seed: int = 0) -> dict[str, float]:
    """Label consistency per label ({label: balanced accuracy}) of about ``n`` images
    generated from the trainer's controller, for TensorBoard during training.

    Empty when the run has no image model or no classifier is cached for its data set and
    image size (this never trains one: run the report once to create it). Labels whose
    consistency cannot be measured (one value never drawn) are left out.
    """
    from figure_scripts.classifier import get_classifier

    model = getattr(trainer, "model", None)
    if model is None:
        return {}
    classifier = get_classifier(trainer.dataset_dir, int(trainer.config.input_scale_size),
                                int(model.channels), train_if_missing=False, progress=False)
    if classifier is None:
        return {}
    names = [n for n in trainer.label_names if n in classifier.attribute_names]
    if not names:
        return {}
    sampler = LabelSampler(trainer.cc, names, seed)
    table = label_consistency(classifier, model, sampler, n=n, seed=seed)
    return {row.label: float(row.balanced_accuracy) for row in table.itertuples()
            if np.isfinite(row.balanced_accuracy)}


# ----------------------------------------------------------------------------- the report
def build_report(trainer, *, n: int = 1000, label_samples: int = 20000, seed: int = 0,
                 progress: bool = True, classifier=None) -> dict:
    """Every measurement of the report for a loaded run (a Trainer), as one dict of
    tables (DataFrames) and numbers; ``write_report`` turns it into files."""
    start = time.perf_counter()
    names = list(trainer.label_names)
    attr = trainer.attr
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
    result.update(classifier_info=None, consistency=None, pairs=[], diversity=None, grids={})
    if model is not None:
        from figure_scripts.classifier import get_classifier

        size, channels = int(trainer.config.input_scale_size), int(model.channels)
        classifier = classifier or get_classifier(trainer.dataset_dir, size, channels, seed=seed,
                                                  progress=progress)
        classifier_columns(classifier, names)
        result["classifier_info"] = classifier.info
        result["consistency"] = label_consistency(classifier, model, sampler, n=n,
                                                  seed=seed + 100)
        result["pairs"], result["grids"] = headline_pairs(
            classifier, model, sampler, attr, scm, graph, n=n, seed=seed + 200,
            progress=progress)
        observed = sampler(n, seed + 300)
        generated = classifier.features(generate(model, observed, seed + 301))
        real = classifier.features(real_images(trainer.dataset_dir, attr, size, channels, n,
                                               seed, progress))
        result["diversity"] = diversity_ratio(generated, real)
    for row in result["pairs"]:
        row["verdict"] = pair_verdict(row)
    result["targets"] = evaluate_targets(result["consistency"], result["pairs"],
                                         result["diversity"], result["controller_table"])
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def summary_dict(result: Mapping) -> dict:
    """The machine-readable summary (summary.json): every headline number."""
    info = result["classifier_info"] or {}
    scores = info.get("scores", {})
    classifier = {key: {a: s["balanced_accuracy"] for a, s in table.items()}
                  for key, table in scores.items()}
    consistency = result["consistency"]
    return _clean({
        "run": result["run"], "step": result.get("step"), "dataset_dir": result["dataset_dir"],
        "labels": result["labels"], "seed": result["seed"], "n": result["n"],
        "classifier_balanced_accuracy": classifier,
        "classifier_training": {k: info.get(k) for k in ("training_data", "train_images",
                                                         "train_seconds", "seed")},
        "controller": result["controller"],
        "consistency": ({r.label: r.balanced_accuracy for r in consistency.itertuples()}
                        if consistency is not None else None),
        "pairs": [{k: v for k, v in row.items()} for row in result["pairs"]],
        "diversity": result["diversity"],
        "targets": result["targets"],
        "passed": sum(t["status"] == "PASS" for t in result["targets"]),
        "failed": sum(t["status"] == "FAIL" for t in result["targets"]),
        "seconds": result["seconds"],
    })


def _table_md(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    """A Markdown table of a DataFrame (NaN shown as n/a)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return floats.format(v) if np.isfinite(v) else "n/a"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def classifier_tables(info: Mapping) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-attribute scores, subgroup cells) of the classifier's held-out evaluation."""
    rows = []
    for key, table in info.get("scores", {}).items():
        for attribute, s in table.items():
            rows.append({"evaluation": key, "attribute": attribute,
                         "accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"],
                         "n_pos": s["n_pos"], "n_neg": s["n_neg"]})
    groups = [dict(evaluation=key, **row) for key, table in info.get("subgroups", {}).items()
              for row in table]
    to_float = lambda frame, cols: frame.astype({c: float for c in cols if c in frame})  # noqa: E731
    return (to_float(pd.DataFrame(rows), ["accuracy", "balanced_accuracy"]),
            to_float(pd.DataFrame(groups), ["accuracy"]))


_EVALUATION_SHORT = {"balanced": "rendered faces, balanced labels",
                     "data": "the data set's images"}
_EVALUATION_TEXT = {
    "balanced": "held-out faces rendered with independent, balanced labels",
    "data": "held-out images of the data set itself",
}


def report_markdown(result: Mapping, files: Mapping[str, str]) -> str:
    """The text of report.md."""
    out = [f"# Causal-fidelity report: {Path(result['run']).name}", ""]
    out.append(f"Run `{result['run']}`" + (f", step {result['step']}" if "step" in result else "")
               + f"; data set `{result['dataset_dir']}`; labels {', '.join(result['labels'])}. "
               f"{result['n']} images per measurement, {result['label_samples']} controller "
               f"samples per label distribution, seed {result['seed']}; "
               f"{result['seconds']:.0f} s.")
    out += ["", "## Targets", "", _table_md(pd.DataFrame(
        [{"target": t["name"], "value": t["value"], "goal": t["goal"], "status": t["status"],
          "note": t["note"]} for t in result["targets"]])), ""]
    if result["pairs"]:
        out += ["## Intervention vs conditioning, in one sentence each", ""]
        out += [f"- {row['verdict']}" for row in result["pairs"]] + [""]

    out += ["## 1. The attribute classifier", ""]
    info = result["classifier_info"]
    if info is None:
        out += ["Not used: the run has no image model.", ""]
    else:
        scores, groups = classifier_tables(info)
        out += [f"A small CNN trained on {info.get('training_data', '?')} "
                f"({info.get('train_images', '?')} images, {info.get('train_seconds', '?')} s), "
                "never on the model's labeler. Its scores on images it was not trained on:", ""]
        for key in scores["evaluation"].unique() if len(scores) else []:
            part = scores[scores["evaluation"] == key].drop(columns="evaluation")
            out += [f"On {_EVALUATION_TEXT.get(key, key)}:", "", _table_md(part), ""]
        if len(groups):
            out += ["Inside the rare combinations (cells with fewer than 50 images are "
                    "flagged: too small to trust):", "",
                    _table_md(groups.assign(too_small=groups["too_small"].map(
                        {True: "TOO SMALL", False: ""}))), ""]
        out += [f"![classifier]({files.get('classifier_plot', '')})", ""]

    out += ["## 2. Labels: the causal controller", ""]
    c = result["controller"]
    out += [f"Observational TVD against the data: **{_f(c['tvd'], 3)}**"
            + (f"; against the exact model: {_f(c['tvd_exact'], 3)}; largest TVD of an "
               "interventional distribution against the exact one: "
               f"{_f(c['do_tvd_exact_max'], 3)}"
               if c["truth"] != "unavailable" else "") + ".",
            "",
            f"P(label | do(X=v)) against the truth ({c['truth']}): largest error "
            f"{_f(c['do_abs_error_max'])}, mean {_f(c['do_abs_error_mean'])}. "
            f"P(label | X=v) against the data: largest error "
            f"{_f(c['cond_abs_error_vs_data_max'])}."]
    if c["conditions_not_found"]:
        out += ["", "The controller never drew " + ", ".join(c["conditions_not_found"])
                + " (conditioning on them found no samples)."]
    out += ["", f"The full table is `{files['controller']}`. Headline rows:", ""]
    table = result["controller_table"]
    headline = table[table.apply(lambda r: (r["label"], r["node"]) in HEADLINE_PAIRS
                                 and r["value"] == 1, axis=1)] if len(table) else table
    out += [_table_md(headline.drop(columns=["cond_controller_n", "cond_data_n"])), "",
            f"![controller]({files.get('controller_plot', '')})", ""]

    out += ["## 3. Images: the whole model", ""]
    if result["consistency"] is None:
        out += ["The run has no image model.", ""]
    else:
        out += ["Label consistency: balanced accuracy of \"the image shows the label it was "
                "generated with\" (0.5 = G ignores the label, 1.0 = always shown).", "",
                _table_md(result["consistency"]), "",
                f"![consistency]({files.get('consistency_plot', '')})", "",
                "Headline pairs: the share of images read as the target attribute, beside "
                "the share among the labels they were generated from and the reference "
                "(truth = exact model; data = the data's frequency; data marginal (graph) = "
                "P(target) when the graph makes it a non-descendant).", "",
                _table_md(pd.DataFrame(result["pairs"]).drop(columns=["verdict"])), "",
                f"![pairs]({files.get('pairs_plot', '')})", ""]
        for node, path in files.get("grids", {}).items():
            out += [f"Top row do({node}=1), bottom row {node}=1 (as generated): ![{node}]({path})",
                    ""]
        d = result["diversity"]
        out += [f"Diversity: mean pairwise distance in the classifier's feature space "
                f"{_f(d['generated_distance'])} for generated images and "
                f"{_f(d['real_distance'])} for real ones: ratio **{_f(d['ratio'])}** "
                "(1.0 = as varied as the data).", ""]
    out += ["## How to read this", "",
            "Each chain runs truth -> controller labels -> images. When the controller's "
            "labels match the truth but the images do not read as their labels, the image "
            "model is at fault; when the labels are already off, fix the controller first. "
            "The classifier's own scores above bound how far its readings can be trusted.", ""]
    return "\n".join(out)


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


def write_report(result: Mapping, out, figure_ext: str = "png") -> dict[str, Path]:
    """Write report.md, summary.json, the CSV tables and the plots into ``out``."""
    from figure_scripts.utils import save_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ext = figure_ext.lstrip(".")
    files: dict = {"controller": "controller.csv"}
    result["controller_table"].to_csv(out / "controller.csv", index=False)
    files["controller_plot"] = _controller_plot(out / f"controller.{ext}",
                                                result["controller_table"])
    if result["classifier_info"] is not None:
        scores, groups = classifier_tables(result["classifier_info"])
        scores.to_csv(out / "classifier.csv", index=False)
        groups.to_csv(out / "classifier_subgroups.csv", index=False)
        files["classifier"] = "classifier.csv"
        attributes = list(dict.fromkeys(scores["attribute"]))
        files["classifier_plot"] = _bar_plot(
            out / f"classifier.{ext}", attributes,
            {_EVALUATION_SHORT.get(key, key): scores[scores.evaluation == key]
             .set_index("attribute").reindex(attributes)["balanced_accuracy"]
             for key in scores.evaluation.unique()},
            "Attribute classifier: balanced accuracy on held-out images", lines=(0.97,),
            ylim=(0.4, 1.02))
    if result["consistency"] is not None:
        consistency = result["consistency"]
        consistency.to_csv(out / "consistency.csv", index=False)
        files["consistency_plot"] = _bar_plot(
            out / f"consistency.{ext}", list(consistency["label"]),
            {"balanced accuracy": consistency["balanced_accuracy"]},
            "Label consistency of generated images (classifier's reading)",
            lines=(CONSISTENCY_EACH_TARGET, CONSISTENCY_MEAN_TARGET), ylim=(0.4, 1.02))
        pairs = pd.DataFrame(result["pairs"])
        pairs.to_csv(out / "headline_pairs.csv", index=False)
        if len(pairs):
            both = lambda a, b: [v for pair in zip(a, b, strict=True) for v in pair]  # noqa: E731
            files["pairs_plot"] = _bar_plot(
                out / f"headline_pairs.{ext}",
                both([f"{r.target} | do({r.node}=1)" for r in pairs.itertuples()],
                     [f"{r.target} | {r.node}=1" for r in pairs.itertuples()]),
                {"reference": both(pairs.do_reference, pairs.cond_reference),
                 "controller labels": both(pairs.do_labels, pairs.cond_labels),
                 "images (classifier)": both(pairs.do_images, pairs.cond_images)},
                "P(target = 1) under do(X=1) and X=1: reference, controller labels, images")
        files["grids"] = {}
        for node, (do_images, cond_images, _, _) in result["grids"].items():
            top, bottom = do_images[:10], cond_images[:10]
            if len(bottom) < 10:  # conditioning found fewer: leave the cells black
                blank = np.zeros((10 - len(bottom), *do_images.shape[1:]), np.float32)
                bottom = np.concatenate([bottom, blank]) if len(bottom) else blank
            name = f"intvcond_{node}=1.{ext}"
            save_grid(np.concatenate([top, bottom]), out / name, 2, 10)
            files["grids"][node] = name
    (out / "summary.json").write_text(json.dumps(summary_dict(result), indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(result, files))
    return {name: out / name for name in sorted(p.name for p in out.iterdir())}


def summary_text(result: Mapping, out) -> str:
    """The short summary printed at the end."""
    lines = [f"Causal-fidelity report of {result['run']}"
             + (f" (step {result['step']})" if "step" in result else "")]
    info = result["classifier_info"]
    if info is not None:
        for key, table in info.get("scores", {}).items():
            values = {a: s["balanced_accuracy"] for a, s in table.items()}
            finite = [v for v in values.values() if v is not None and np.isfinite(v)]
            worst = min(values, key=lambda a: values[a] if values[a] is not None
                        and np.isfinite(values[a]) else 2.0)
            lines.append(f"  classifier, {_EVALUATION_TEXT.get(key, key)}: balanced accuracy "
                         f"min {_f(min(finite) if finite else float('nan'), 3)} ({worst})")
    c = result["controller"]
    lines.append(f"  controller: TVD {_f(c['tvd'], 3)}, P(.|do) largest error vs truth "
                 f"{_f(c['do_abs_error_max'])}")
    if result["consistency"] is not None:
        cons = result["consistency"]
        lines.append("  consistency: " + ", ".join(
            f"{r.label} {_f(r.balanced_accuracy)}" for r in cons.itertuples()))
    width = max(len(t["name"]) for t in result["targets"])
    lines.append("  targets:")
    for t in result["targets"]:
        value = _f(t["value"]) if isinstance(t["value"], float) else str(t["value"])
        note = f"  ({t['note']})" if t["note"] else ""
        lines.append(f"    {t['status']:<4}  {t['name']:<{width}}  {value:>5}  {t['goal']}{note}")
    for row in result["pairs"]:
        lines.append(f"  - {row['verdict']}")
    lines.append(f"  written to {out}/ (report.md, summary.json)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from figure_scripts.classifier import TrainingPlan
    from figure_scripts.run import add_run_arguments

    plan = TrainingPlan()
    parser = argparse.ArgumentParser(
        prog="python -m figure_scripts fidelity",
        description="The causal-fidelity report of a saved run: an independent attribute "
        "classifier (trained once per data set and image size on real images, then cached) "
        "reads the generated images; the controller's do() and cond() probabilities are "
        "compared with the truth and the data. Writes report.md, summary.json, CSV tables "
        "and plots into <run>/fidelity/ and prints the targets with PASS/FAIL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(parser, out_help="Output folder; empty: <run>/fidelity.")
    parser.add_argument("--n", type=int, default=1000,
                        help="Generated images per measurement (label consistency, each "
                        "do/cond of the headline pairs, diversity).")
    parser.add_argument("--label_samples", type=int, default=20000,
                        help="Controller label samples per distribution for the label part.")
    parser.add_argument("--retrain_classifier", action="store_true",
                        help="Train the attribute classifier again even if one is cached.")
    parser.add_argument("--classifier_dir", default="",
                        help="Cache folder of the classifiers; empty: <dataset>/classifiers.")
    parser.add_argument("--classifier_images", type=int, default=plan.n_train,
                        help="Training images of a newly trained classifier.")
    parser.add_argument("--classifier_steps", type=int, default=plan.steps,
                        help="Optimizer steps of a newly trained classifier.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 2:
        raise UserError(f"--n must be at least 2 images; got {args.n}.")
    if args.label_samples < 1:
        raise UserError(f"--label_samples must be positive; got {args.label_samples}.")
    if args.classifier_images < 1 or args.classifier_steps < 1:
        raise UserError("--classifier_images and --classifier_steps must be positive; got "
                        f"{args.classifier_images} and {args.classifier_steps}.")
    from figure_scripts import classifier as classifier_module
    from figure_scripts.run import load_run

    trainer = load_run(args.load_path)
    progress = not args.quiet
    classifier = None
    model = getattr(trainer, "model", None)
    if model is not None:
        plan = classifier_module.TrainingPlan(n_train=args.classifier_images,
                                              steps=args.classifier_steps)
        classifier = classifier_module.get_classifier(
            trainer.dataset_dir, int(trainer.config.input_scale_size), int(model.channels),
            seed=args.seed, progress=progress, cache_dir=args.classifier_dir or None,
            retrain=args.retrain_classifier, plan=plan)
    result = build_report(trainer, n=args.n, label_samples=args.label_samples, seed=args.seed,
                          progress=progress, classifier=classifier)
    out = Path(args.out) if args.out else Path(trainer.model_dir) / "fidelity"
    write_report(result, out, args.figure_ext)
    print(summary_text(result, out))
    return 0
