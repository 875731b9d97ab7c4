"""One sampler for every figure: interventions and conditions on a run's controller and images.

    s = sample(trainer, do_dict={"Bald": 1}, cond_dict={"Male": -3}, N=10)
    s.images [L*N, H, W, C] in [0, 255]; s.labels, s.logits [L*N, n]; s.z_gen; s.accepted

``trainer`` is a Trainer (or anything with ``.cc``, ``.model`` (or None) and
``.batch_size``). The rules (ORIGINAL.md 8):

* Keys are node names, or ``z_gen`` (the image model's noise; interventions only).
* Interventions and conditions act on a node's logit when ``on_logits`` (the default), on
  its label otherwise.
* A condition value c on a logit holds when the logit has c's sign and a larger
  magnitude: c > 0 means logit > c, c < 0 means logit < c (the figures use +-3); c = 0
  has no sign and is refused. On labels, c is 0 or 1 and holds when the rounded label is c.
* An intervention on a logit takes the value as the logit, except that a node whose
  values are all 0 or 1 means the label's two states: 1 becomes the median of the node's
  positive logits, 0 the median of its negative ones ("the middle of where the model
  usually operates", measured on the observational distribution). On labels the value is
  the label, in [0, 1].
* A value may be a list: the request is the product of all keys' values (every
  combination, the first key varying slowest), and each combination gets ``N`` rows. Row
  ``c * N + k`` is combination c's k-th individual: the same controller noise and z_gen
  for every combination, so an intervention shows the same individuals in each.
* Rows are computed in chunks of the batch size. A row that fails its conditions is
  redrawn (fresh controller noise, the same z_gen) until it succeeds or has failed
  ``max_failures`` (4,000) times; rows given up are reported by condition and count (a
  warning, and ``Samples.failures``), and are left as NaN labels and black images.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

import causal_graph
from errors import UserError
from image_models import generate_images

log = logging.getLogger(__name__)

DEFAULT_CONDITION = 3.0  # the figures' condition on logits: logit > 3 (label 1), < -3 (label 0)
MAX_FAILURES = 4000      # the reference's give-up count per conditional row
MEDIAN_SAMPLES = 20_000  # observational draws behind the do(1)/do(0) logit medians
Z_KEY = "z_gen"          # the image model's named input
_ROUND_DRAWS = 65536     # most candidate rows drawn in one rejection round

# per controller: (its step, its {node: (negative median, positive median)})
_MEDIANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Samples:
    """What ``sample`` returns; rows are grouped by combination (``per_combination`` each)."""

    label_names: list[str]        # the controller's nodes, the columns of labels/logits
    combinations: list[dict]      # each {"do": {key: value}, "cond": {key: value}} as asked
    per_combination: int          # N: rows per combination
    labels: np.ndarray            # [L*N, n] float32; NaN in rows given up
    logits: np.ndarray            # [L*N, n] float32; NaN in rows given up
    accepted: np.ndarray          # [L*N] bool: the row met its conditions
    z_gen: np.ndarray | None = None   # [L*N, z_dim] the image noise of each row
    images: np.ndarray | None = None  # [L*N, H, W, C] in [0, 255]; black in rows given up
    failures: list[tuple[str, int]] = field(default_factory=list)  # (condition, rows given up)

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, combination: int) -> slice:
        """The rows of one combination."""
        n = self.per_combination
        return slice(combination * n, (combination + 1) * n)

    def column(self, name: str) -> np.ndarray:
        """One node's labels over all rows [L*N]."""
        return self.labels[:, self.label_names.index(name)]

    def label_dict(self, combination: int | None = None) -> dict[str, np.ndarray]:
        """{name: (M, 1)} of the accepted rows (of one combination, or all), the shape that
        ``pairwise.calc_tvd`` and ``crosstab`` take."""
        keep = self.accepted.copy()
        if combination is not None:
            mask = np.zeros_like(keep)
            mask[self.rows(combination)] = True
            keep &= mask
        return {name: self.labels[keep, i:i + 1] for i, name in enumerate(self.label_names)}


# ----------------------------------------------------------------------------- helpers
def check_nodes(cc, names, what: str) -> list[str]:
    """``names`` as a list, or UserError naming the unknown ones and the graph's nodes."""
    names = list(names)
    unknown = [n for n in names if n not in cc.label_names]
    if unknown:
        raise UserError(f"{what}: {unknown} are not nodes of this run's causal graph. "
                        f"Its nodes: {', '.join(cc.label_names)}.")
    return names


def image_model(trainer):
    """The run's image model, or UserError for a run that trained the controller only."""
    model = getattr(trainer, "model", None)
    if model is None:
        raise UserError("This run has no image model (it trained the controller only); "
                        "images need a run made with --model_type began (or dcgan).")
    return model


def descendants(cc, node: str) -> list[str]:
    """The nodes downstream of ``node`` in the controller's graph, in the controller's order."""
    below = set(causal_graph.descendants(cc.graph, node))
    return [name for name in cc.label_names if name in below]


def logit_medians(cc, n: int = MEDIAN_SAMPLES, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{node: (median of its negative logits, median of its positive logits)} over ``n``
    observational samples (NaN for a sign never seen); cached per controller and step."""
    step = int(cc.step.numpy())
    cached = _MEDIANS.get(cc)
    if cached is not None and cached[0] == step:
        return cached[1]
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, [n, len(cc.label_names), cc.n_hidden])
    _, logits = cc.sample(noise=noise.astype(np.float32))
    logits = logits.numpy()
    medians = {}
    for i, name in enumerate(cc.label_names):
        column = logits[:, i]
        neg, pos = column[column < 0], column[column > 0]
        medians[name] = (float(np.median(neg)) if len(neg) else float("nan"),
                         float(np.median(pos)) if len(pos) else float("nan"))
    _MEDIANS[cc] = (step, medians)
    return medians


def median_logit(cc, name: str, value) -> np.ndarray:
    """The logits that do(name=1) / do(name=0) set: the median positive / negative logit.
    A sign the node never takes falls back to +/- DEFAULT_CONDITION, with a warning."""
    lo, hi = logit_medians(cc)[name]
    value = np.asarray(value)
    for wanted, median, fallback in ((1, hi, DEFAULT_CONDITION), (0, lo, -DEFAULT_CONDITION)):
        if np.isnan(median) and np.any(value == wanted):
            log.warning("%s's logit is never %s in %d samples: do(%s=%d) on logits sets it to "
                        "%+g.", name, "positive" if wanted else "negative", MEDIAN_SAMPLES,
                        name, wanted, fallback)
    lo = -DEFAULT_CONDITION if np.isnan(lo) else lo
    hi = DEFAULT_CONDITION if np.isnan(hi) else hi
    return np.where(value == 1, hi, lo).astype(np.float32)


def describe(settings: Mapping, on_logits: bool, kind: str) -> str:
    """A short text of a do/cond setting: ``Bald: logit > 3, Male = 0``."""
    parts = []
    for key, value in settings.items():
        if key == Z_KEY:
            parts.append(f"{key} given")
        elif kind == "cond" and on_logits:
            parts.append(f"{key}: logit {'>' if value > 0 else '<'} {value:g}")
        elif kind == "do" and on_logits:
            parts.append(f"do({key} logit {value:g})" if value not in (0, 1)
                         else f"do({key}={int(value)})")
        else:
            parts.append(f"{'do(' if kind == 'do' else ''}{key}={value:g}"
                         f"{')' if kind == 'do' else ''}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- request parsing
def _values(key, value, what: str, z_dim: int | None) -> list:
    """The list of settings one key asks for (a scalar is a list of one)."""
    if key == Z_KEY:
        arr = np.asarray(value, np.float32)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != z_dim:
            raise UserError(f"{what}[{Z_KEY!r}] must be one z_gen vector of {z_dim} values or a "
                            f"list of them; got shape {np.shape(value)}.")
        return list(arr)
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise UserError(f"{what}[{key!r}] must be finite numbers; got {value!r}.")
    return [float(v) for v in arr]


def _parse(d: Mapping | None, kind: str, cc, model, on_logits: bool) -> dict[str, list]:
    """Validate a do/cond dictionary: {key: list of settings}."""
    what = f"{kind}_dict"
    if not d:
        return {}
    if not isinstance(d, Mapping):
        raise UserError(f"{what} must be a dictionary {{name: value(s)}}; got {type(d).__name__}.")
    z_dim = getattr(model, "z_dim", None) if model is not None else None
    known = list(cc.label_names) + ([Z_KEY] if model is not None else [])
    out = {}
    for key, value in d.items():
        if key not in known:
            raise UserError(f"{what}: {key!r} is not a node of this run's causal graph"
                            f"{' nor the image noise z_gen' if model is not None else ''}. "
                            f"Known: {', '.join(known)}.")
        if key == Z_KEY and kind == "cond":
            raise UserError(f"cond_dict: {Z_KEY} cannot be conditioned on; set it with do_dict.")
        values = _values(key, value, what, z_dim)
        if key != Z_KEY:
            if kind == "cond" and on_logits and any(v == 0 for v in values):
                raise UserError(f"cond_dict[{key!r}] = 0: a condition on a logit needs a sign; "
                                f"c > 0 means logit > c, c < 0 means logit < c (the figures "
                                f"use {DEFAULT_CONDITION:g} and -{DEFAULT_CONDITION:g}). On "
                                "labels (on_logits=False) give 0 or 1.")
            if kind == "cond" and not on_logits and any(v not in (0, 1) for v in values):
                raise UserError(f"cond_dict[{key!r}] = {value!r}: a condition on a label is 0 "
                                "or 1 (its rounded value); for thresholds use on_logits.")
            if kind == "do" and not on_logits and any(not 0 <= v <= 1 for v in values):
                raise UserError(f"do_dict[{key!r}] = {value!r}: a label lies in [0, 1]; for "
                                "other values intervene on the logit (on_logits=True).")
        out[key] = values
    return out


def _effective_do(do: dict[str, list], cc, on_logits: bool) -> dict[str, list]:
    """do-values as fed to the controller: on logits, 0/1-only nodes become the medians."""
    if not on_logits:
        return do
    out = dict(do)
    for key, values in do.items():
        if key != Z_KEY and all(v in (0, 1) for v in values):
            out[key] = [float(v) for v in median_logit(cc, key, values)]
    return out


# ----------------------------------------------------------------------------- the sampler
def _combinations(do: dict[str, list], effective: dict[str, list], cond: dict[str, list],
                  N: int) -> tuple[list[dict], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The product of the settings (first key slowest) and every key's value per row."""
    keys = [("do", k) for k in do] + [("cond", k) for k in cond]
    value_lists = [do[k] if kind == "do" else cond[k] for kind, k in keys]
    index_lists = [range(len(v)) for v in value_lists]
    combos, picks = [], []
    for pick in itertools.product(*index_lists):
        combo = {"do": {}, "cond": {}}
        for (kind, key), i, values in zip(keys, pick, value_lists, strict=True):
            combo[kind][key] = values[i]
        combos.append(combo)
        picks.append(pick)

    def per_row(kind: str, key: str, source: dict[str, list]) -> np.ndarray:
        j = keys.index((kind, key))
        chosen = np.asarray([source[key][p[j]] for p in picks])
        return np.repeat(chosen, N, axis=0)

    do_rows = {k: per_row("do", k, effective) for k in do}
    cond_rows = {k: per_row("cond", k, cond) for k in cond}
    return combos, do_rows, cond_rows


def _individuals(cc, model, N: int, n_rows: int, seed, noise, z_gen):
    """The N individuals' controller noise and every row's z_gen, and the redraws' rng."""
    seeds = np.random.SeedSequence(seed).spawn(2)
    base_rng, redraw_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    n_nodes, n_hidden = len(cc.label_names), int(cc.n_hidden)
    if noise is None:
        noise = base_rng.uniform(-1.0, 1.0, [N, n_nodes, n_hidden]).astype(np.float32)
    else:
        noise = np.asarray(noise, np.float32)
        if noise.shape != (N, n_nodes, n_hidden):
            raise UserError(f"noise must have shape [N={N}, {n_nodes}, {n_hidden}]; got "
                            f"{noise.shape}.")
    z_all = None
    if model is not None:
        z_dim = int(model.z_dim)
        if z_gen is None:
            z_gen = base_rng.uniform(-1.0, 1.0, [N, z_dim]).astype(np.float32)
        z_gen = np.asarray(z_gen, np.float32)
        if z_gen.shape != (N, z_dim):
            raise UserError(f"z_gen must have shape [N={N}, {z_dim}]; got {z_gen.shape}.")
        z_all = z_gen[np.arange(n_rows) % N]
    return noise, z_all, redraw_rng


def _forward(cc, do_rows, on_logits: bool, rows, row_noise=None, noise_seed=None):
    """Controller labels/logits for rows (indices into the request) with their given
    noise, or with noise the controller draws from ``noise_seed``."""
    label_do = {k: v[rows] for k, v in do_rows.items() if not on_logits}
    logit_do = {k: v[rows] for k, v in do_rows.items() if on_logits}
    lab, lgt = cc.sample(len(rows), noise=row_noise, do_labels=label_do or None,
                         do_logits=logit_do or None, seed=noise_seed)
    return lab.numpy(), lgt.numpy()


def _meets(cond_rows, index, on_logits: bool, rows, lab, lgt) -> np.ndarray:
    """Which of rows' labels/logits meet the rows' conditions."""
    ok = np.ones(len(rows), bool)
    for key, values in cond_rows.items():
        c = values[rows]
        j = index[key]
        if on_logits:
            ok &= np.where(c > 0, lgt[:, j] > c, lgt[:, j] < c)
        else:
            ok &= (lab[:, j] > 0.5) == (c > 0.5)
    return ok


def _draw_rows(cc, do_rows, cond_rows, on_logits: bool, noise, n_rows: int, batch_size: int,
               max_failures: int, redraw_rng, progress: bool):
    """Every row's labels and logits, by chunks, redrawing failing rows; the accepted and
    given-up flags."""
    from tqdm import tqdm

    N = len(noise)
    n_nodes = len(cc.label_names)
    labels = np.full([n_rows, n_nodes], np.nan, np.float32)
    logits = np.full([n_rows, n_nodes], np.nan, np.float32)
    accepted = np.zeros([n_rows], bool)
    given_up = np.zeros([n_rows], bool)
    index = {name: i for i, name in enumerate(cc.label_names)}

    def forward(rows, row_noise=None, noise_seed=None):
        return _forward(cc, do_rows, on_logits, rows, row_noise, noise_seed)

    def meets(rows, lab, lgt):
        return _meets(cond_rows, index, on_logits, rows, lab, lgt)

    starts = range(0, n_rows, batch_size)
    bar = tqdm(starts, desc="sampling", disable=not progress, dynamic_ncols=True, leave=False)
    for start in bar:
        rows = np.arange(start, min(start + batch_size, n_rows))
        lab, lgt = forward(rows, noise[rows % N])
        ok = meets(rows, lab, lgt) if cond_rows else np.ones(len(rows), bool)
        labels[rows[ok]], logits[rows[ok]], accepted[rows[ok]] = lab[ok], lgt[ok], True
        failed, fails = rows[~ok], np.ones(int((~ok).sum()), np.int64)
        while True:
            done = fails >= max_failures
            given_up[failed[done]] = True
            failed, fails = failed[~done], fails[~done]
            if not len(failed):
                break
            # redraw every failing row several times at once; each try is one failure
            bar.set_postfix(redrawing=len(failed), tries=int(fails.max()))
            tries = np.minimum(max(1, _ROUND_DRAWS // len(failed)), max_failures - fails)
            cand = np.repeat(failed, tries)
            lab, lgt = forward(cand, noise_seed=int(redraw_rng.integers(2**31 - 1)))
            ok = meets(cand, lab, lgt)
            starts_at = np.cumsum(tries) - tries
            first = np.minimum.reduceat(np.where(ok, np.arange(len(cand)), len(cand)), starts_at)
            hit = first < len(cand)
            labels[failed[hit]], logits[failed[hit]] = lab[first[hit]], lgt[first[hit]]
            accepted[failed[hit]] = True
            failed, fails = failed[~hit], fails[~hit] + tries[~hit]
    bar.close()
    return labels, logits, accepted, given_up


def _report_failures(combos: list[dict], given_up, N: int, on_logits: bool,
                     max_failures: int) -> list[tuple[str, int]]:
    """(condition text, rows given up) per combination with any; a warning names them."""
    failures = []
    if given_up.any():
        for c, combo in enumerate(combos):
            count = int(given_up[c * N:(c + 1) * N].sum())
            if count:
                text = describe(combo["cond"], on_logits, "cond")
                if combo["do"]:
                    text += f" under {describe(combo['do'], on_logits, 'do')}"
                failures.append((text, count))
        message = "; ".join(f"{text}: {count} of {N} rows" for text, count in failures)
        message = (f"Conditioning gave up after {max_failures} failed draws per row on "
                   f"{message}. Those rows are empty (NaN labels, black images); choose a "
                   "weaker condition.")
        log.warning(message)
    return failures


def sample(trainer, do_dict: Mapping | None = None, cond_dict: Mapping | None = None,
           N: int | None = None, *, on_logits: bool = True, images: bool | None = None,
           seed: int | None = None, noise=None, z_gen=None, batch_size: int | None = None,
           max_failures: int = MAX_FAILURES, progress: bool = False) -> Samples:
    """Samples under interventions and conditions (the rules are in the module docstring).

    N: rows per combination (default: the batch size). images: generate images (default:
    when the run has an image model). seed: fixes the individuals (controller noise and
    z_gen) and the redraws; None draws fresh ones. noise [N, nodes, cc_n_hidden] / z_gen
    [N, z_dim]: given individuals instead. batch_size: the chunk size (default the
    trainer's). progress: a tqdm bar over the chunks.
    """
    cc = trainer.cc
    model = getattr(trainer, "model", None)
    if images and model is None:
        image_model(trainer)  # raises the explanation
    images = model is not None if images is None else bool(images)
    batch_size = int(batch_size or trainer.batch_size)
    N = int(batch_size if N is None else N)
    if N < 1:
        raise UserError(f"N (rows per combination) must be at least 1; got {N}.")
    if int(max_failures) < 1:
        raise UserError(f"max_failures must be at least 1; got {max_failures}.")
    do = _parse(do_dict, "do", cc, model, on_logits)
    cond = _parse(cond_dict, "cond", cc, model, on_logits)
    effective = _effective_do(do, cc, on_logits)
    combos, do_rows, cond_rows = _combinations(do, effective, cond, N)
    n_rows = len(combos) * N
    noise, z_all, redraw_rng = _individuals(cc, model, N, n_rows, seed, noise, z_gen)
    if model is not None and Z_KEY in do_rows:
        z_all = do_rows.pop(Z_KEY).astype(np.float32)

    labels, logits, accepted, given_up = _draw_rows(
        cc, do_rows, cond_rows, on_logits, noise, n_rows, batch_size, max_failures, redraw_rng,
        progress)
    failures = _report_failures(combos, given_up, N, on_logits, max_failures)

    out_images = None
    if images:
        out_images = np.zeros([n_rows, *_image_shape(model, trainer)], np.float32)
        good = np.flatnonzero(accepted)
        if len(good):
            out_images[good] = generate_images(model, labels[good], z_all[good], batch_size)
    return Samples(list(cc.label_names), combos, N, labels, logits, accepted, z_all,
                   out_images, failures)


def _image_shape(model, trainer) -> tuple[int, int, int]:
    size = getattr(model, "image_size", None)
    if size is None:
        size = int(trainer.config.input_scale_size)
    return (int(size), int(size), int(model.channels))
