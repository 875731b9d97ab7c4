"""The researcher's Python API: open a trained run, draw images under do() and given
conditions, compare the same individuals under several interventions, and read the
controller's probabilities beside the exact truth (docs/API.md has every example).

    import api
    run = api.open_run("logs/toyfaces_1203_101500")   # reads the folder, writes nothing
    s = run.sample(do={"Bald": 1}, n=16, seed=0)       # s.images uint8 [16, H, W, C]
    s.labels                                           # pandas DataFrame of 0/1 labels
    same = run.sample_same([{"Bald": 1}, {"Bald": 0}, None], n=8, seed=0)
    same.save("bald.png")                              # one row per intervention
    run.probabilities(do={"Bald": 1})                  # P(label = 1): model, truth, data
    cf = run.counterfactuals(faces, do={"Male": 0})    # the same faces, had they been women

The rules:

* ``do`` sets nodes' labels (0 or 1, or a value in [0, 1]) and the controller recomputes
  only their descendants; ``cond`` keeps the individuals whose rounded labels equal the
  given 0/1 values (conditioning after the interventions).
* A ``seed`` fixes the individuals: row k has the same controller noise and the same image
  noise z_gen in every call with that seed and ``n``, whatever ``do`` says, so
  ``sample(do=...)`` and ``sample_same`` show the same faces under different interventions.
  Under ``cond`` a row whose individual does not meet the condition is replaced by the
  next one that does (from a second stream of the same seed) and keeps its z_gen; which
  rows were replaced is ``Sample.redrawn``.
* A condition the controller meets in fewer than ``MIN_ACCEPTANCE`` (0.1%) of its draws,
  an unknown node or a bad value is a ``UserError`` whose message says what to change.
* The truth is exact on the toy faces (their causal model, ``scm.json`` beside the data,
  or the built-in one when the data folder is absent) and NaN elsewhere; ``data`` is the
  frequency in the run's attribute file (conditions only; NaN under do or without data).

Counterfactuals of given images (``abduction.py``): G's image noise of each face is
abducted (an encoder trained on G's own samples, cached in ``<run>/counterfactual/encoder/``,
then refinement against the face's pixels), the controller's noise is drawn so that it
reproduces the face's labels, the intervened nodes are set and their descendants
recomputed, and G draws the result with the face's own image noise. This is the one call
that may write into the run folder (the encoder's cache, shared with ``python -m
figure_scripts counterfactual``; a read-only folder keeps it in memory and a warning says so).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import abduction
import saved_run
from errors import UserError

log = logging.getLogger(__name__)

MIN_ACCEPTANCE = 1e-3     # conditions met less often than this are refused
POOL = 8_192              # controller draws per round of redrawing under a condition
MAX_POOLS = 16            # rounds before a condition is given up
PROBABILITY_DRAWS = 20_000  # controller draws behind each probability (std. error <= 0.0036)
GRID_PADDING = 2          # black pixels between and around the cells of a grid


# ----------------------------------------------------------------------------- results
def tile(images: np.ndarray, cols: int, padding: int = GRID_PADDING) -> np.ndarray:
    """Images [N, H, W, C] (uint8) as one uint8 grid of ``cols`` columns, row by row,
    framed and separated by ``padding`` black pixels; empty cells stay black."""
    n, h, w, c = images.shape
    cols = max(1, min(int(cols), max(n, 1)))
    rows = max(1, -(-n // cols))
    cells = np.zeros((rows * cols, h + padding, w + padding, c), np.uint8)
    cells[:n, padding:, padding:] = images
    grid = cells.reshape(rows, cols, h + padding, w + padding, c).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (h + padding), cols * (w + padding), c)
    return np.pad(grid, ((0, padding), (0, padding), (0, 0)))


def write_png(grid: np.ndarray, path) -> Path:
    """Save a uint8 grid [H, W, C] as a PNG (one channel as grey); folders are created."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(path, format="PNG")
    return path


@dataclass
class Sample:
    """n individuals under one choice of interventions and conditions."""

    do: dict                   # the interventions {node: value}
    cond: dict                 # the conditions {node: 0 or 1}
    seed: int                  # the seed of the individuals
    labels: pd.DataFrame       # [n rows, one column per node] the rounded 0/1 labels
    values: np.ndarray         # [n, nodes] float32: the controller's labels in [0, 1]
    redrawn: np.ndarray        # [n] bool: the row's individual was replaced to meet cond
    images: np.ndarray | None  # [n, H, W, C] uint8, None for a controller-only run
    z_gen: np.ndarray | None   # [n, z_dim] float32: each row's image noise

    def __len__(self) -> int:
        return len(self.labels)

    def grid(self, cols: int = 8) -> np.ndarray:
        """The images as one uint8 grid of ``cols`` columns."""
        return tile(_images_of(self), cols)

    def save(self, path, cols: int = 8) -> Path:
        """The grid as a PNG file."""
        return write_png(self.grid(cols), path)


@dataclass
class SameIndividuals:
    """The same n individuals under several interventions: ``samples[i]`` is the i-th."""

    interventions: list[dict]  # {} stands for none
    samples: list[Sample]

    @property
    def images(self) -> np.ndarray:
        """[interventions, n, H, W, C] uint8."""
        return np.stack([_images_of(s) for s in self.samples])

    @property
    def labels(self) -> pd.DataFrame:
        """Every sample's labels, with the columns ``intervention`` (its text) and ``row``."""
        parts = []
        for s in self.samples:
            part = s.labels.copy()
            part.insert(0, "row", np.arange(len(part)))
            part.insert(0, "intervention", describe(s.do, {}))
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def grid(self) -> np.ndarray:
        """One row of the grid per intervention, one column per individual."""
        images = self.images
        return tile(images.reshape(-1, *images.shape[2:]), images.shape[1])

    def save(self, path) -> Path:
        return write_png(self.grid(), path)


def _images_of(sample: Sample) -> np.ndarray:
    if sample.images is None:
        raise UserError("This run trained the controller only: its samples have labels but "
                        "no images.")
    return sample.images


def describe(do: Mapping, cond: Mapping) -> str:
    """``do(Bald=1), Male=0`` (``observational`` when both are empty)."""
    parts = [f"do({k}={v:g})" for k, v in do.items()] + [f"{k}={v:g}" for k, v in cond.items()]
    return ", ".join(parts) or "observational"


@dataclass
class Counterfactuals:
    """k given faces and what they would have been under ``do`` (``Run.counterfactuals``)."""

    do: dict                       # the interventions {node: 0 or 1}
    faces: np.ndarray              # [k, H, W, C] uint8: the given images
    factual_labels: pd.DataFrame   # [k rows] the faces' labels (given, or the encoder's reading);
    labels: pd.DataFrame           # the labels under do (non-descendants kept); both indexed
                                   # as the labels given (e.g. file names), else 0..k-1
    reconstructions: np.ndarray    # [k, H, W, C] uint8: G's redraw of each face (its own labels)
    images: np.ndarray             # [k, H, W, C] uint8: G's drawing of each face under do
    z_gen: np.ndarray              # [k, z_dim] float32: each face's abducted image noise
    mse: float                     # mean squared pixel error of the redraw (pixels in [0, 1])

    def __len__(self) -> int:
        return len(self.labels)

    def grid(self) -> np.ndarray:
        """Three rows: the faces, G's redraws, the counterfactuals; one column per face."""
        return tile(np.concatenate([self.faces, self.reconstructions, self.images]), len(self))

    def save(self, path) -> Path:
        return write_png(self.grid(), path)


# ----------------------------------------------------------------------------- the run
class Run:
    """A trained run opened for sampling (``open_run``). ``saved`` is the
    ``saved_run.SavedRun`` underneath, with the flags, controller and model."""

    def __init__(self, saved: saved_run.SavedRun):
        self.saved = saved
        self.label_names = list(saved.label_names)
        self.graph = list(saved.graph)
        self._index = {name: i for i, name in enumerate(self.label_names)}

    @property
    def step(self) -> int:
        return self.saved.step

    @property
    def has_images(self) -> bool:
        return self.saved.model is not None

    @property
    def has_truth(self) -> bool:
        return self.saved.scm is not None

    def __repr__(self) -> str:
        return f"api.Run({self.saved!r})"

    # -- checks
    def _check(self, choice: Mapping | None, what: str) -> dict[str, float]:
        if choice is None:
            return {}
        if not isinstance(choice, Mapping):
            raise UserError(f"{what} must be a dictionary {{node: value}} such as "
                            f"{{'{self.label_names[0]}': 1}}; got {type(choice).__name__}.")
        unknown = [k for k in choice if k not in self._index]
        if unknown:
            raise UserError(f"{what}: {', '.join(map(str, unknown))} "
                            f"{'is not a node' if len(unknown) == 1 else 'are not nodes'} of "
                            f"this run's causal graph. Its nodes: {', '.join(self.label_names)}.")
        out = {}
        for key, value in choice.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            allowed = (number in (0.0, 1.0)) if what == "cond" else (0.0 <= number <= 1.0)
            if not allowed:
                rule = "0 or 1" if what == "cond" else "a label in [0, 1] (0 or 1 usually)"
                raise UserError(f"{what}[{key!r}] = {value!r}: give {rule}.")
            out[str(key)] = number
        return out

    def _never_met(self, do, cond, met: int, drawn: int) -> UserError:
        under = f" under {describe(do, {})}" if do else ""
        return UserError(
            f"The controller almost never meets the condition {describe({}, cond)}{under}: "
            f"{met} of {drawn} draws ({met / drawn:.3%}; at least {MIN_ACCEPTANCE:.1%} is "
            "needed). Choose a weaker condition, or intervene (do) instead of conditioning.")

    # -- the controller
    def _labels(self, count: int | None = None, noise=None, do=None, seed=None) -> np.ndarray:
        labels, _ = self.saved.cc.sample(count, noise=noise, do_labels=do or None, seed=seed)
        return labels.numpy()

    def _meets(self, values: np.ndarray, cond: Mapping) -> np.ndarray:
        ok = np.ones(len(values), bool)
        for key, wanted in cond.items():
            ok &= (values[:, self._index[key]] > 0.5) == (wanted > 0.5)
        return ok

    def _individuals(self, n: int, seed: int):
        """Controller noise [n, nodes, hidden] and z_gen [n, z_dim] (None without images)
        of the seed's first n individuals, and the seed of its redrawing stream."""
        base, redraw = np.random.SeedSequence(int(seed)).spawn(2)
        rng = np.random.default_rng(base)
        cc = self.saved.cc
        noise = rng.uniform(-1.0, 1.0, [n, len(self.label_names), cc.n_hidden])
        z_rng = np.random.default_rng(base.spawn(1)[0])  # independent of the noise's size
        z = (z_rng.uniform(-1.0, 1.0, [n, self.saved.model.z_dim]).astype(np.float32)
             if self.has_images else None)
        return noise.astype(np.float32), z, int(redraw.generate_state(1)[0] >> 1)

    # -- the API
    def sample(self, do: Mapping | None = None, cond: Mapping | None = None, n: int = 16,
               seed: int = 0, images: bool = True) -> Sample:
        """n individuals under ``do`` (interventions) and ``cond`` (conditions), with their
        images (unless ``images`` is False or the run has no image model) and labels."""
        do, cond = self._check(do, "do"), self._check(cond, "cond")
        n = int(n)
        if n < 1:
            raise UserError(f"n (individuals) must be at least 1; got {n}.")
        noise, z, redraw_seed = self._individuals(n, seed)
        values = self._labels(noise=noise, do=do)
        redrawn = np.zeros(n, bool)
        if cond:
            missing = np.flatnonzero(~self._meets(values, cond))
            redrawn[missing] = True
            for round_ in range(MAX_POOLS):
                pool = self._labels(POOL, do=do, seed=redraw_seed + round_)
                found = pool[self._meets(pool, cond)]
                if round_ == 0 and len(found) < MIN_ACCEPTANCE * POOL:
                    raise self._never_met(do, cond, len(found), POOL)
                take = min(len(found), len(missing))
                values[missing[:take]] = found[:take]
                missing = missing[take:]
                if not len(missing):
                    break
            if len(missing):
                raise self._never_met(do, cond, n - len(missing), n)
        labels = pd.DataFrame((values > 0.5).astype(np.int8), columns=self.label_names)
        pictures = None
        if images and self.has_images:
            pictures = np.clip(np.rint(self.saved.generate(values, z)), 0, 255).astype(np.uint8)
        return Sample(do, cond, int(seed), labels, values, redrawn, pictures, z)

    def sample_same(self, interventions: Sequence[Mapping | None], n: int = 8,
                    seed: int = 0) -> SameIndividuals:
        """The same n individuals (fixed controller noise and image noise) under each
        intervention of the list (a do-dictionary, or None for none)."""
        if isinstance(interventions, Mapping) or not len(interventions):
            raise UserError("interventions must be a list of do-dictionaries (None for no "
                            "intervention), e.g. [{'Bald': 1}, {'Bald': 0}, None].")
        samples = [self.sample(do=do, n=n, seed=seed) for do in interventions]
        return SameIndividuals([s.do for s in samples], samples)

    def probabilities(self, do: Mapping | None = None, cond: Mapping | None = None,
                      draws: int = PROBABILITY_DRAWS, seed: int = 0) -> pd.DataFrame:
        """P(label = 1 | cond) under do, one row per node: ``model`` (the controller,
        ``draws`` seeded samples, rounded labels), ``truth`` (exact on the toy faces, else
        NaN) and ``data`` (the attribute file's frequency; conditions only, else NaN).
        ``.attrs["acceptance"]`` is the share of the controller's draws meeting cond."""
        do, cond = self._check(do, "do"), self._check(cond, "cond")
        values = self._labels(int(draws), do=do, seed=int(seed))
        kept = values[self._meets(values, cond)]
        if cond and len(kept) < MIN_ACCEPTANCE * len(values):
            raise self._never_met(do, cond, len(kept), len(values))
        table = pd.DataFrame({"model": (kept > 0.5).mean(axis=0),
                              "truth": self._truth(do, cond),
                              "data": self._data(do, cond)}, index=self.label_names)
        table.index.name = "label"
        table.attrs["acceptance"] = len(kept) / len(values)
        return table

    def _truth(self, do: Mapping, cond: Mapping) -> np.ndarray:
        scm = self.saved.scm
        out = np.full(len(self.label_names), np.nan)
        if scm is None or any(k not in scm.nodes for k in [*do, *cond]) \
                or any(v not in (0.0, 1.0) for v in do.values()):
            return out
        do01 = {k: int(v) for k, v in do.items()}
        cond01 = {k: int(v) for k, v in cond.items()}
        for i, name in enumerate(self.label_names):
            if name in scm.nodes:
                try:
                    out[i] = scm.prob({name: 1}, given=cond01, do=do01)
                except ValueError:  # a condition of probability 0
                    pass
        return out

    def _data(self, do: Mapping, cond: Mapping) -> np.ndarray:
        attr = self.saved.attr
        out = np.full(len(self.label_names), np.nan)
        if attr is None or do:
            return out
        keep = np.ones(len(attr), bool)
        for key, wanted in cond.items():
            keep &= attr[key].to_numpy() == int(wanted)
        if keep.any():
            out[:] = attr.loc[keep, self.label_names].to_numpy().mean(axis=0)
        return out

    def counterfactuals(self, images, do: Mapping, labels=None, *, seed: int = 0,
                        refine_steps: int = abduction.REFINE_STEPS,
                        encoder_steps: int = abduction.ENCODER_STEPS,
                        progress: bool = True) -> Counterfactuals:
        """What the given faces would have looked like under ``do`` (module docstring).

        images: [k, H, W, C] pixels in [0, 255] (uint8 or float; [k, H, W] for a grey run)
        at the run's image size. do: {node: 0 or 1}; {} redraws the faces. labels: the
        faces' 0/1 labels (a DataFrame or dict with a column per node, or an array
        [k, nodes] in the graph's order); None reads them with the encoder. seed: the
        controller noise's draw. refine_steps: Adam steps fitting each face's image noise
        (the faces are fitted together: G's batch norm sees them as one batch).
        encoder_steps: training steps of the encoder when none trained for at least as
        many is cached (a progress bar shows the training unless ``progress`` is False).
        """
        do = self._check(do, "do")
        bad = {k: v for k, v in do.items() if v not in (0.0, 1.0)}
        if bad:
            raise UserError(f"do: a counterfactual sets labels to 0 or 1; got {bad}.")
        if not self.has_images:
            raise UserError(f"{self.saved.model_dir} trained the controller only: it has no "
                            "image model to draw counterfactual images with.")
        if int(refine_steps) < 0 or int(encoder_steps) < 1:
            raise UserError(f"refine_steps must be >= 0 and encoder_steps >= 1; got "
                            f"{refine_steps} and {encoder_steps}.")
        faces = self._faces(images)
        factual = None if labels is None else self._factual(labels, len(faces))
        model, cc = self.saved.model, self.saved.cc
        encoder = self._encoder(int(encoder_steps), progress)
        fit, used = abduction.abduct(model, encoder, faces.astype(np.float32), factual,
                                     steps=int(refine_steps))
        noise = abduction.controller_noise(cc, used, seed=int(seed))
        changed = abduction.counterfactual_labels(cc, used, noise, do)
        drawn = model.generate(changed.astype(np.float32), fit.z_gen, round_labels=True)

        def as_uint8(x):
            return np.clip(np.rint(np.asarray(x)), 0, 255).astype(np.uint8)

        index = labels.index if isinstance(labels, pd.DataFrame) else None  # e.g. file names

        def frame(x):
            return pd.DataFrame((np.asarray(x) > 0.5).astype(np.int8), columns=self.label_names,
                                index=index)

        return Counterfactuals(do, faces, frame(used), frame(changed),
                               as_uint8(fit.reconstruction), as_uint8(drawn), fit.z_gen,
                               float(fit.mse[-1]))

    def _faces(self, images) -> np.ndarray:
        shape = self.saved.image_shape
        faces = np.asarray(images)
        if faces.ndim == 3 and shape is not None and shape[2] == 1 and faces.shape[1:] == shape[:2]:
            faces = faces[..., None]
        if faces.ndim != 4 or tuple(faces.shape[1:]) != tuple(shape) or not len(faces):
            raise UserError(f"images: give an array [k, {shape[0]}, {shape[1]}, {shape[2]}] "
                            f"(this run's image size); got shape {faces.shape}. Resize the "
                            "faces first (PIL's Image.resize, as the data pipeline does).")
        if not np.issubdtype(faces.dtype, np.number) or not np.isfinite(faces).all() \
                or faces.min() < 0 or faces.max() > 255:
            raise UserError("images: pixel values must be finite numbers in [0, 255].")
        if np.issubdtype(faces.dtype, np.floating) and 0 < faces.max() <= 1:
            log.warning("images: every pixel is in [0, 1]; counterfactuals reads pixels in "
                        "[0, 255] (multiply by 255 if these were scaled)")
        return np.clip(np.rint(faces), 0, 255).astype(np.uint8)

    def _factual(self, labels, k: int) -> np.ndarray:
        if isinstance(labels, Mapping):  # {node: one 0/1 label per face}
            try:
                labels = pd.DataFrame({key: np.atleast_1d(v) for key, v in labels.items()})
            except ValueError as err:
                raise UserError(f"labels: give one 0/1 label per face for every node "
                                f"({err}).") from None
        if isinstance(labels, pd.DataFrame):
            missing = [name for name in self.label_names if name not in labels.columns]
            if missing:
                raise UserError(f"labels: the columns {', '.join(missing)} are missing; give "
                                f"one column per node ({', '.join(self.label_names)}).")
            labels = labels[self.label_names].to_numpy()
        try:
            values = np.asarray(labels, np.float32)
        except (TypeError, ValueError):
            values = np.full(1, np.nan, np.float32)
        if values.shape != (k, len(self.label_names)):
            raise UserError(f"labels: give 0/1 labels [{k} faces, {len(self.label_names)} "
                            f"nodes: {', '.join(self.label_names)}]; got shape "
                            f"{values.shape}.")
        if not np.isin(values, (0.0, 1.0)).all():
            raise UserError("labels: give 0/1 labels; got values "
                            f"{sorted(set(values[~np.isin(values, (0.0, 1.0))].tolist()))[:5]}.")
        return values

    def _encoder(self, steps: int, progress: bool) -> abduction.Encoder:
        """The run's encoder: kept on this Run, cached in the run folder when it can be
        written (``abduction.get_encoder``; a warning when it cannot)."""
        kept = getattr(self, "_encoder_cache", None)
        if kept is not None and kept.info.get("steps", 0) >= steps:
            return kept
        self._encoder_cache = abduction.get_encoder(self.saved, steps=steps, progress=progress)
        return self._encoder_cache


def open_run(path) -> Run:
    """Open the run folder ``path`` (logs/<run>) for sampling; it is only read."""
    return Run(saved_run.open_run(path))
