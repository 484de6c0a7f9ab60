"""Paired statistics over seeds for the method comparison: paired t and bootstrap confidence intervals.

Dependency-free (NumPy only): the Student t quantile is computed from the exact closed-form t distribution function
for integer degrees of freedom (Abramowitz & Stegun 26.7.3-4), inverted by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PairedDifference", "bootstrap_ci", "mean_std", "paired_difference", "paired_t_ci", "t_quantile"]


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (a positive integer) degrees of freedom, ``t >= 0``."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df == 1:
        return 2.0 * theta / math.pi
    if df % 2:  # odd: 2/pi * (theta + sin(theta) * (c + 2/3 c^3 + 2*4/(3*5) c^5 + ...)), up to c^(df-2)
        term, total = c, c
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * c * c
            total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0  # even: sin(theta) * (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...), up to c^(df-2)
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * c * c
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` >= 1 integer degrees of freedom (``t_quantile(0.975, 4)``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df}")
    df = int(df)
    if p == 0.5:
        return 0.0
    mass = abs(2.0 * p - 1.0)  # two-sided mass inside +-t
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < mass:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < mass:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    t = 0.5 * (lo + hi)
    return t if p > 0.5 else -t


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def paired_t_ci(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the mean paired difference from the t distribution (NaN for fewer than 2 pairs)."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2.0, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def bootstrap_ci(
    differences: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference (resampling pairs, seeded; NaN below 2 pairs).

    With few pairs the percentile bootstrap is too narrow (it ignores that the spread itself is estimated): prefer
    :func:`paired_t_ci` for five seeds; the bootstrap is reported alongside as a distribution-free check.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass
class PairedDifference:
    """A method's paired difference against a reference over the same seeds."""

    n: int
    mean: float
    std: float
    t_ci: tuple[float, float]
    bootstrap_ci: tuple[float, float]
    wins: int
    ties: int
    losses: int

    def to_dict(self) -> dict:
        """JSON-serializable form."""
        data = asdict(self)
        data["t_ci"], data["bootstrap_ci"] = list(self.t_ci), list(self.bootstrap_ci)
        return data


def paired_difference(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> PairedDifference:
    """``values - reference`` pair by pair (same seeds, same order): mean, spread, both intervals, win/tie/loss."""
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    d = a - b
    mean, std = mean_std(d)
    return PairedDifference(
        n=int(d.size),
        mean=mean,
        std=std,
        t_ci=paired_t_ci(d, confidence),
        bootstrap_ci=bootstrap_ci(d, confidence, seed=seed),
        wins=int((d > 1e-12).sum()),
        ties=int((np.abs(d) <= 1e-12).sum()),
        losses=int((d < -1e-12).sum()),
    )
