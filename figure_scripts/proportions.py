"""Proportions with 95% Wilson score intervals, as the fidelity report shows them.

A share k/n read from a few hundred images is uncertain by several points; the report
gives every share with its interval so that a PASS by 0.01 is not over-read. The Wilson
interval (not the normal "p +- 1.96 sqrt(p(1-p)/n)") stays inside [0, 1] and is right
near 0 and 1, where the report's rates live (bald read as bald, made-up men read as male).

``successes`` may be fractional: the panel's mean rate over readers that all read the
same n images is given as (mean rate * n) successes out of n.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

CONFIDENCE = 0.95


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (NaN, NaN when n is 0)."""
    n = int(n)
    if n <= 0 or not np.isfinite(successes):
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p = min(max(float(successes) / n, 0.0), 1.0)
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: float, n: int) -> dict:
    """{"value": successes / n, "low", "high" (95% Wilson), "n"}; NaNs when n is 0."""
    n = int(n)
    low, high = wilson_interval(successes, n)
    return {"value": float(successes) / n if n > 0 else float("nan"), "low": low,
            "high": high, "n": n}


def share(flags) -> dict:
    """``proportion`` of the true entries of a boolean array."""
    flags = np.asarray(flags, bool).reshape(-1)
    return proportion(float(flags.sum()), flags.size)


def rate(value: float, n: int) -> dict:
    """``proportion`` of a rate already measured on ``n`` items (NaN rate: NaN interval)."""
    if not np.isfinite(value):
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": int(n)}
    return proportion(float(value) * int(n), n)


def interval_text(p: dict, digits: int = 2) -> str:
    """``[low, high]`` of a proportion dict ("n/a" when unknown)."""
    if not np.isfinite(p.get("low", float("nan"))):
        return "n/a"
    return f"[{p['low']:.{digits}f}, {p['high']:.{digits}f}]"
