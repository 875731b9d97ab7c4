"""How close the controller's label distribution is to the data's: TVD and crosstabs.

A core module (the controller's pretraining measures with it); ``figure_scripts.pairwise``
re-exports its public names.

* ``calc_tvd(label_dict, attr)``: total variation distance between the empirical
  distribution of the rounded sampled label vectors and that of the data's label vectors,
  TVD = 1/2 sum_v |p(v) - q(v)| over all binary vectors v.
* ``tvd_seen_only(label_dict, attr)``: the reference's variant. Its table merge dropped
  generated vectors that never occur in the data and renormalised the rest, which
  under-reports the TVD of a model that makes unseen vectors; kept so numbers can be
  compared with the paper's curves.
* ``tvd_exact(label_dict, states, probs)``: TVD against a known distribution (e.g. the
  toy data set's true causal model).
* ``crosstab(label_dict, attr, step=None, path=None)``: the text report;
  ``crosstab_of_counts`` writes it from a histogram of the samples' codes.

Vectors are encoded as integers (bit i = label i) and counted with ``np.bincount``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

_MAX_BINCOUNT_BITS = 22  # up to 4M bins: bincount; above that np.unique on the codes


def _sample_codes(label_dict: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return encode_columns([label_dict[n] for n in names])


def _data_matrix(attr, names: Sequence[str]) -> np.ndarray:
    """{0,1} uint8 matrix [rows, n] of the data's labels (DataFrame or array)."""
    if isinstance(attr, pd.DataFrame):
        missing = [n for n in names if n not in attr.columns]
        if missing:
            raise ValueError(f"The data labels have no columns {missing}.")
        values = attr[list(names)].to_numpy()
    else:
        values = np.asarray(attr)
    if values.size and values.min() < 0:
        raise ValueError("Data labels must be 0/1 (got negative values; map -1/+1 first).")
    return (values > 0.5).astype(np.uint8)


def _code_dtype(n: int):
    for bits, dtype in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)):
        if n <= bits:
            return dtype
    raise ValueError(f"Label vectors of more than 64 labels cannot be encoded (got {n}).")


def encode_columns(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Integer code of each row: bit i is (columns[i] > 0.5). Columns are 1-D, equal length."""
    dtype = _code_dtype(len(columns))
    codes = np.zeros(len(columns[0]) if columns else 0, dtype)
    for i, col in enumerate(columns):
        bit = (np.asarray(col).reshape(-1) > 0.5).view(np.uint8).astype(dtype)
        codes |= bit << dtype(i)
    return codes.astype(np.int64) if dtype == np.uint64 else codes


def encode(bits: np.ndarray) -> np.ndarray:
    """Each row of a {0,1} (or [0,1], rounded) matrix [N, n] as one integer, bit i = column i."""
    bits = np.asarray(bits)
    return encode_columns([bits[:, i] for i in range(bits.shape[1])])


def _distributions(codes_p: np.ndarray, codes_q: np.ndarray, n_bits: int):
    """Aligned probability vectors (p, q) over the union of the vectors that occur."""
    if n_bits <= _MAX_BINCOUNT_BITS:
        size = 1 << n_bits
        p = np.bincount(codes_p, minlength=size).astype(np.float64)
        q = np.bincount(codes_q, minlength=size).astype(np.float64)
    else:
        states, inverse = np.unique(np.concatenate([codes_p, codes_q]), return_inverse=True)
        p = np.bincount(inverse[:len(codes_p)], minlength=len(states)).astype(np.float64)
        q = np.bincount(inverse[len(codes_p):], minlength=len(states)).astype(np.float64)
    return p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)


def tvd_from_arrays(samples: np.ndarray, data: np.ndarray) -> float:
    """TVD between the rows of two {0,1} (or [0,1], rounded) matrices with the same columns."""
    samples = (np.asarray(samples) > 0.5).astype(np.uint8)
    data = (np.asarray(data) > 0.5).astype(np.uint8)
    p, q = _distributions(encode(samples), encode(data), samples.shape[1])
    return float(0.5 * np.abs(p - q).sum())


def calc_tvd(label_dict: Mapping[str, np.ndarray], attr) -> float:
    """TVD between sampled labels {name: (N, 1)} and data labels (DataFrame with those
    columns, 0/1), over the joint distribution of the dict's labels."""
    names = list(label_dict)
    p, q = _distributions(_sample_codes(label_dict, names), encode(_data_matrix(attr, names)),
                          len(names))
    return float(0.5 * np.abs(p - q).sum())


def tvd_seen_only(label_dict: Mapping[str, np.ndarray], attr) -> float:
    """The reference's TVD: sampled vectors absent from the data are dropped and the
    remaining sampled mass is renormalised before comparing (see the module docstring)."""
    names = list(label_dict)
    model, data = _distributions(_sample_codes(label_dict, names),
                                 encode(_data_matrix(attr, names)), len(names))
    return _seen_only_tvd(model, data)


def _seen_only_tvd(model: np.ndarray, data: np.ndarray) -> float:
    """``tvd_seen_only`` of aligned probability vectors: the model's mass on vectors the
    data never holds is dropped and the rest renormalised."""
    kept = model * (data > 0)
    mass = kept.sum()
    if mass > 0:
        kept = kept / mass
    return float(0.5 * np.abs(data - kept).sum())


def tvd_exact(label_dict: Mapping[str, np.ndarray], states: np.ndarray, probs: np.ndarray,
              names: Sequence[str] | None = None) -> float:
    """TVD between sampled labels and an exact distribution: ``states`` [K, n] of {0,1}
    (columns in ``names`` order, default the dict's order) with probabilities ``probs``."""
    names = list(names or label_dict)
    probs = np.asarray(probs, np.float64)
    n = len(names)
    q_codes = _sample_codes(label_dict, names)
    s_codes = encode(np.asarray(states))
    if n <= _MAX_BINCOUNT_BITS:
        size = 1 << n
        q = np.bincount(q_codes, minlength=size) / len(q_codes)
        p = np.bincount(s_codes, weights=probs, minlength=size)
    else:
        keys, inverse = np.unique(np.concatenate([q_codes, s_codes]), return_inverse=True)
        q = np.bincount(inverse[:len(q_codes)], minlength=len(keys)) / len(q_codes)
        p = np.bincount(inverse[len(q_codes):], weights=probs, minlength=len(keys))
    return float(0.5 * np.abs(p / p.sum() - q).sum())


def _histogram(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(states, counts): the distinct codes, ascending, and how often each occurs."""
    return np.unique(np.asarray(codes), return_counts=True)


def _bits(states: np.ndarray, n: int) -> np.ndarray:
    """{0,1} matrix [K, n] of the codes ``states`` (bit i = column i)."""
    states = np.asarray(states).astype(np.uint64)
    return ((states[:, None] >> np.arange(n, dtype=np.uint64)) & np.uint64(1)).astype(np.int64)


def _pair_tables(states: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """[n, n, 2, 2] joint frequencies P(column i = a, column j = b) of a histogram."""
    hot = np.stack([1 - _bits(states, n), _bits(states, n)], axis=-1).astype(np.float64)
    joint = np.einsum("k,kia,kjb->ijab", counts.astype(np.float64), hot, hot)
    return joint / max(float(np.sum(counts)), 1.0)


def crosstab(label_dict: Mapping[str, np.ndarray], attr, step: int | None = None,
             path: str | os.PathLike | None = None) -> str:
    """The text report of section 7: TVD (true and seen-only), marginals, pairwise tables.

    Written to ``path`` when given (its folder is created); returned either way.
    """
    names = list(label_dict)
    return crosstab_of_counts(_histogram(_sample_codes(label_dict, names)), attr, names,
                              step=step, path=path)


def crosstab_of_counts(histogram, attr, names: Sequence[str], step: int | None = None,
                       path: str | os.PathLike | None = None) -> str:
    """``crosstab`` of samples given as a histogram of their codes (bit i = ``names[i]``):
    ``(states, counts)``, or one count per code 0 .. 2^n - 1 (e.g. the controller's
    ``LabelCounter``). The same report, without the samples themselves."""
    names = list(names)
    n = len(names)
    if isinstance(histogram, tuple):
        states, counts = (np.asarray(a) for a in histogram)
    else:
        counts = np.asarray(histogram)
        states = np.arange(len(counts), dtype=np.int64)
    keep = counts > 0
    states, counts = states[keep].astype(np.int64), counts[keep].astype(np.int64)
    data_states, data_counts = _histogram(encode(_data_matrix(attr, names)))
    data_states = data_states.astype(np.int64)
    union = np.union1d(states, data_states)
    p = np.zeros(len(union))
    q = np.zeros(len(union))
    p[np.searchsorted(union, states)] = counts
    q[np.searchsorted(union, data_states)] = data_counts
    p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
    lines = []
    if step is not None:
        lines.append(f"Step: {step}")
    lines.append(f"Samples: {int(counts.sum())}    data rows: {int(data_counts.sum())}")
    lines.append(f"TVD: {0.5 * np.abs(p - q).sum():.6f}")
    lines.append(f"TVD seen-only (reference's calc_tvd): {_seen_only_tvd(p, q):.6f}")
    lines.append("")
    lines.append("Marginals: P(node = 1)")
    width = max(len(name) for name in names)
    lines.append(f"  {'node':<{width}}  {'model':>8}  {'data':>8}  {'diff':>8}")
    gen_tables = _pair_tables(states, counts, n)
    data_tables = _pair_tables(data_states, data_counts, n)
    for i, name in enumerate(names):
        g, d = gen_tables[i, i, 1, 1], data_tables[i, i, 1, 1]
        lines.append(f"  {name:<{width}}  {g:8.4f}  {d:8.4f}  {g - d:+8.4f}")
    lines.append("")
    lines.append("Pairwise: joint P(row node, column node), model | data")
    for i, j in combinations(range(n), 2):
        g, d = gen_tables[i, j], data_tables[i, j]
        lines.append(f"{names[i]} (rows) x {names[j]} (columns)")
        lines.append(f"  {'':>6}  {'model':^17}    {'data':^17}")
        lines.append(f"  {'':>6}  {'0':>8} {'1':>8}    {'0':>8} {'1':>8}")
        for r in range(2):
            lines.append(f"  {r:>6}  {g[r, 0]:8.4f} {g[r, 1]:8.4f}    {d[r, 0]:8.4f} {d[r, 1]:8.4f}")
        lines.append("")
    report = "\n".join(lines) + "\n"
    if path is not None:
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "w") as f:
            f.write(report)
    return report
