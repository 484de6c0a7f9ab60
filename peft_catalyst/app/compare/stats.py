"""Statistics of a comparison: paired t and bootstrap intervals over seeds, and the binomial interval of a win count,
from scipy.stats (shared by ``peft-catalyst compare`` and the benchmarks)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = [
    "PairedDifference",
    "binomial_interval",
    "bootstrap_ci",
    "cluster_bootstrap_ratio",
    "mean_std",
    "paired_difference",
    "paired_t_ci",
    "t_quantile",
]


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` >= 1 integer degrees of freedom (``t_quantile(0.975, 4)``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df}")
    return float(stats.t.ppf(p, int(df)))


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
    with warnings.catch_warnings():  # identical differences: scipy warns of precision loss, the interval is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_1samp(d, 0.0).confidence_interval(confidence_level=confidence)
    return float(interval.low), float(interval.high)


def bootstrap_ci(
    differences: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference (resampling pairs, seeded; NaN below 2 pairs).

    With few pairs the percentile bootstrap is too narrow (it ignores that the spread itself is estimated): prefer
    :func:`paired_t_ci` for five seeds; the bootstrap is reported alongside as a distribution-free check. BCa would
    be undefined for identical differences, hence the percentile method.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    result = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


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


def binomial_interval(wins: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``wins / n`` (``(0, 1)`` when ``n`` is 0: nothing was compared)."""
    if n == 0:
        return 0.0, 1.0
    interval = stats.binomtest(int(wins), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def cluster_bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(numerators) / sum(denominators)`` resampling whole clusters (one entry
    per cluster: e.g. the rounds a proposer won and the rounds counted in one (task, seed)), so that outcomes that
    share a cluster (rounds of one run, runs that share a mentor call) are not counted as independent. NaN below 2
    clusters; a resample whose denominators sum to 0 is dropped."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise ValueError(f"one numerator and one denominator per cluster, got {num.size} and {den.size}")
    if num.size < 2:
        return math.nan, math.nan
    picks = np.random.default_rng(seed).integers(0, num.size, size=(resamples, num.size))
    totals, counts = num[picks].sum(axis=1), den[picks].sum(axis=1)
    ratios = totals[counts > 0] / counts[counts > 0]
    if ratios.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2
    return float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1.0 - alpha))
