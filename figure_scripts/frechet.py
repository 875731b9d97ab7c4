"""How far generated images are from the true distributions, in each reader's feature space.

For every distribution the report measures (``distribution_sets``: the observational
one, do(X=1) and X=1 for each of FRECHET_NODES, and the rare pairs of RARE_PAIRS
conditioned on both values), generated images are compared with a *reference* set:

- on the toy faces (a ``scm.json``) fresh TRUE images: label rows drawn exactly from the
  model (``ToyFacesSCM.sample`` under do(), ``sample_conditional`` for a condition),
  drawn by ``toy_faces.render_labels`` and read through the training pipeline (JPEG,
  crop, resize: ``classifier.load_images``), exactly as the data set's own images;
- elsewhere (CelebA) the held-out real images (``classifier.heldout_mask``) that meet the
  condition; do() has no real images and is marked unavailable.

The distance is the Fréchet distance of Gaussians fitted to the features (FID-style; the
trace of the matrix square root from eigendecompositions, see ``trace_sqrt_product``),
in each reader's feature space (``AttributeClassifier.features``:
every block's average and the hidden layer, so texture, noise and colour count as well as
the attributes). Its *floor* is the same distance between two independent reference sets
of the same size: what sampling noise alone gives. Fréchet distances are biased upwards
by small sets, so only sets of the same size compare well; the report's targets are
therefore ratios (the observational distance over the floor; each do/cond set's over the
observational distance, or over the floor when the observational distance is below it).
Near the floor a distance is mostly that bias, and its spread does not shrink with more
images (both scale like 1/n): a ratio of two distances near the floor varies by +-30%
from one draw to the next, so read such ratios as "at the floor", not as a ranking.

The old diversity measure (mean pairwise feature distance of generated images over that
of real ones) is gone: images of pure noise are as spread out as real faces and passed
it. Its place is taken by the Fréchet distance (noise moves the features' means and
covariances far from the faces') and by k-NN precision and recall (Kynkäänniemi et al.
2019) of the observational set, reported beside it: precision is the share of generated
images inside the k-NN balls of the reference images (realism), recall the share of
reference images inside the generated images' balls (coverage). Noise and collapse
show apart: noise has low precision, one repeated face low recall.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from figure_scripts.proportions import proportion
from figure_scripts.readers import Panel, PanelReading

FRECHET_NODES = ("Male", "Bald", "Eyeglasses", "Wearing_Lipstick")  # do(X=1) and X=1 each
RARE_PAIRS = ((("Bald", 1), ("Male", 0)), (("Mustache", 1), ("Male", 0)),
              (("Wearing_Lipstick", 1), ("Male", 1)))
NEIGHBOURS = 3  # k of the k-NN precision and recall
OBSERVATIONAL = "observational"


@dataclass(frozen=True)
class DistributionSet:
    """One distribution the report draws images from."""

    key: str  # "observational", "do(Bald=1)", "Bald=1", "Bald=1, Male=0"
    kind: str  # "observational", "do", "cond" or "pair"
    do: tuple = ()  # ((node, value), ...)
    given: tuple = ()


def distribution_sets(names: Sequence[str]) -> list[DistributionSet]:
    """The sets of the report for a run with labels ``names`` (those whose nodes it has)."""
    sets = [DistributionSet(OBSERVATIONAL, "observational")]
    for node in (n for n in FRECHET_NODES if n in names):
        sets.append(DistributionSet(f"do({node}=1)", "do", do=((node, 1),)))
        sets.append(DistributionSet(f"{node}=1", "cond", given=((node, 1),)))
    for pair in RARE_PAIRS:
        if all(node in names for node, _ in pair):
            sets.append(DistributionSet(", ".join(f"{k}={v}" for k, v in pair), "pair",
                                        given=pair))
    return sets


# ----------------------------------------------------------------------------- measures
def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and covariance [d, d] of features [N, d] (float64)."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def trace_sqrt_product(c_a: np.ndarray, c_b: np.ndarray) -> float:
    """tr((C_a C_b)^(1/2)) of two covariance matrices: the sum of the square roots of the
    eigenvalues of the symmetric C_a^(1/2) C_b C_a^(1/2), which C_a C_b shares; the same
    number as ``np.trace(scipy.linalg.sqrtm(c_a @ c_b))``, from two symmetric
    eigendecompositions (sqrtm's Schur method is slower and warns on singular products,
    which features of fewer images than dimensions always give)."""
    w, v = np.linalg.eigh(c_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root_a @ c_b @ root_a
    eigenvalues = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature sets a [N, d] and b [M, d]:
    |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)); NaN with fewer than 2 rows."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu_a, c_a = gaussian(a)
    mu_b, c_b = gaussian(b)
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(c_a) + np.trace(c_b) - 2.0 * trace_sqrt_product(c_a, c_b)
    return float(max(value, 0.0))


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = _distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def precision_recall(reference: np.ndarray, generated: np.ndarray,
                     k: int = NEIGHBOURS) -> dict:
    """k-NN precision and recall (Kynkäänniemi et al. 2019) of generated features
    against reference ones, each a ``proportions.proportion`` dict (NaN when a set has
    no more than k rows)."""
    if len(reference) <= k or len(generated) <= k:
        empty = proportion(0, 0)
        return {"precision": empty, "recall": empty}
    between = _distances(generated, reference)  # [G, R]
    inside_reference = between <= _kth_neighbour_radius(reference, k)[None, :]
    inside_generated = between <= _kth_neighbour_radius(generated, k)[:, None]
    return {"precision": proportion(float(inside_reference.any(axis=1).sum()), len(generated)),
            "recall": proportion(float(inside_generated.any(axis=0).sum()), len(reference))}


# ----------------------------------------------------------------------------- references
@dataclass
class Reference:
    """Every reader's reading of the reference sets (true or held-out real images)."""

    source: str  # what the images are
    n: int
    seed: int
    readers: list  # the panel's reader names when read
    readings: dict = field(default_factory=dict)  # set key -> PanelReading, None: unavailable
    floor: PanelReading | None = None  # a second observational set, independent
    notes: dict = field(default_factory=dict)  # set key -> why unavailable / smaller

    def matches(self, panel: Panel, n: int, seed: int, sets) -> bool:
        return (self.readers == panel.names and self.n == n and self.seed == seed
                and all(d.key in self.readings for d in sets))


def true_labels(scm, dist: DistributionSet, n: int, seed: int) -> pd.DataFrame:
    """``n`` label rows drawn exactly from the model's distribution ``dist``."""
    if dist.given:
        return scm.sample_conditional(n, dict(dist.given), do=dict(dist.do) or None, seed=seed)
    return scm.sample(n, do=dict(dist.do) or None, seed=seed)


def render_true_images(labels: pd.DataFrame, image_size: int, channels: int, seed: int,
                       scratch_dir=None, resize_method: str = "AREA",
                       progress: bool = False) -> np.ndarray:
    """Toy faces of the label rows, through the data set's pipeline (JPEG files, crop,
    resize): float32 [N, S, S, C] in [0, 255]. ``seed`` draws the faces' nuisance."""
    import data_loader
    import toy_faces
    from figure_scripts.classifier import load_images

    if not len(labels):
        return np.zeros([0, image_size, image_size, channels], np.float32)
    if scratch_dir is not None:
        Path(scratch_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".true-", dir=scratch_dir) as scratch:
        folder = toy_faces.render_labels(Path(scratch) / "faces", labels, seed=seed,
                                         progress=progress)
        attr = data_loader.read_attributes(folder / "list_attr_celeba.txt")
        images, _ = load_images(folder, attr, image_size, channels, progress,
                                "reading true faces", resize_method)
    return images.astype(np.float32)


def _matching(attr: pd.DataFrame, given: Mapping[str, int]) -> pd.DataFrame:
    keep = np.ones(len(attr), bool)
    for node, value in given.items():
        keep &= (attr[node].to_numpy() > 0) == bool(value)
    return attr[keep]


def reference_readings(panel: Panel, sets: Sequence[DistributionSet], *, dataset_dir,
                       attr: pd.DataFrame, scm, n: int, seed: int, image_size: int,
                       channels: int, scratch_dir=None, resize_method: str = "AREA",
                       progress: bool = False) -> Reference:
    """Every reader's reading of a reference set per distribution in ``sets`` and of an
    independent second observational set (the floor); see the module doc."""
    from figure_scripts.classifier import heldout_mask, load_images

    if scm is not None:
        reference = Reference("true images rendered from scm.json (exact)", n, seed,
                              list(panel.names))
        tables = [true_labels(scm, dist, n, seed + 5000 + 13 * i) for i, dist in enumerate(sets)]
        tables.append(scm.sample(n, seed=seed + 4999))  # the floor's second set
        images = render_true_images(pd.concat(tables, ignore_index=True), image_size, channels,
                                    seed + 6000, scratch_dir, resize_method, progress)
        bounds = np.cumsum([0, *(len(t) for t in tables)])
        parts = [images[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        for dist, part in zip(sets, parts[:-1], strict=True):
            reference.readings[dist.key] = panel.read(part)
        reference.floor = panel.read(parts[-1])
        return reference

    reference = Reference("held-out real images of the data set", n, seed, list(panel.names))
    held = attr[heldout_mask(attr.index)]
    rng = np.random.default_rng(seed + 5000)
    order = held.iloc[rng.permutation(len(held))]
    half = min(n, len(order) // 2)
    if half < n:
        reference.notes[OBSERVATIONAL] = (f"{len(held)} held-out images: two sets of {half}, "
                                          f"not {n}")

    def read(rows: pd.DataFrame) -> PanelReading:
        images, _ = load_images(dataset_dir, rows, image_size, channels, progress,
                                "reading held-out images", resize_method)
        return panel.read(images.astype(np.float32))

    reference.floor = read(order.iloc[half:2 * half])
    for dist in sets:
        if dist.do:
            reference.readings[dist.key] = None
            reference.notes[dist.key] = "unavailable: no exact model (scm.json) for do()"
        elif dist.given:
            rows = _matching(order, dict(dist.given)).iloc[:n]
            reference.readings[dist.key] = read(rows)
            if len(rows) < n:
                reference.notes[dist.key] = f"{len(rows)} held-out images meet it"
        else:
            reference.readings[dist.key] = read(order.iloc[:half])
    return reference


# ----------------------------------------------------------------------------- distances
def distances(panel: Panel, sets: Sequence[DistributionSet],
              generated: Mapping[str, PanelReading], reference: Reference) -> dict:
    """Per reader, the floor and every set's Fréchet distance to its reference, with the
    ratios the targets use (observational / floor; any other set / observational, or /
    the floor where the observational distance is below it: that is sampling noise):

        {"floor": {reader: d}, "sets": [{"set", "kind", "n_generated", "n_reference",
         "frechet": {reader: d}, "ratio": {reader: r}, "ratio_to", "note"}, ...]}
    """
    names = panel.names
    floor_images = reference.readings.get(OBSERVATIONAL)
    floor = {name: (frechet_distance(floor_images.features[r], reference.floor.features[r])
                    if floor_images is not None and reference.floor is not None
                    else float("nan"))
             for r, name in enumerate(names)}
    rows, observed = [], {}
    for dist in sets:
        gen, ref = generated.get(dist.key), reference.readings.get(dist.key)
        d = {name: (frechet_distance(gen.features[r], ref.features[r])
                    if gen is not None and ref is not None else float("nan"))
             for r, name in enumerate(names)}
        if dist.key == OBSERVATIONAL:
            observed = {k: float(np.fmax(v, floor[k])) for k, v in d.items()}
            ratio = {k: _ratio(v, floor[k]) for k, v in d.items()}
        else:
            ratio = {k: _ratio(v, observed.get(k, float("nan"))) for k, v in d.items()}
        note = reference.notes.get(dist.key, "")
        if gen is not None and not len(gen):
            note = "the controller never draws it"
        rows.append({"set": dist.key, "kind": dist.kind,
                     "n_generated": len(gen) if gen is not None else 0,
                     "n_reference": len(ref) if ref is not None else 0,
                     "frechet": d, "ratio": ratio,
                     "ratio_to": "floor" if dist.key == OBSERVATIONAL else OBSERVATIONAL,
                     "note": note})
    return {"floor": floor, "n_floor": len(reference.floor) if reference.floor else 0,
            "source": reference.source, "sets": rows}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


def observational_precision_recall(panel: Panel, generated: PanelReading,
                                   reference: Reference) -> dict:
    """Per reader, k-NN precision and recall of the generated observational set, and of
    the floor's second reference set (what real images score): {reader: {"generated":
    {...}, "floor": {...}}}."""
    ref = reference.readings.get(OBSERVATIONAL)
    out = {}
    for r, name in enumerate(panel.names):
        if ref is None:
            continue
        out[name] = {"generated": precision_recall(ref.features[r], generated.features[r]),
                     "floor": precision_recall(ref.features[r], reference.floor.features[r])}
    return out
