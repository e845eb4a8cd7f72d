"""Vectorised, stratified percentile bootstrap of classification metrics.

Resampling is stratified by the true class (as pROC does by default; Robin et al. 2011,
BMC Bioinformatics 12:77), so every resample holds each class as often as the data and
AUC and balanced accuracy are defined in all of them. Each metric takes an index matrix
``(B, n)`` (one resample per row; row ``arange(n)`` is the data itself) and returns ``(B,)``
values, so a thousand resamples cost a few array operations (Efron & Tibshirani 1993,
percentile intervals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from xaudit.core.jsonable import to_jsonable

Metric = Callable[[np.ndarray], np.ndarray]
MAX_ELEMENTS = 4_000_000  # index-matrix entries per chunk: bounds memory at ~100 MB


@dataclass
class Estimate:
    """A point estimate with its percentile interval (NaN where undefined)."""

    value: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        """True when the interval lies entirely above or below ``value``."""
        return bool(self.low > value or self.high < value)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"value": self.value, "low": self.low, "high": self.high})


def stratified_indices(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` resample indices drawn with replacement within each stratum.

    Each stratum's members are redrawn into that stratum's own columns, so stratum sizes
    are the same in every resample.
    """
    idx = np.empty((n_boot, len(strata)), dtype=np.int64)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        idx[:, members] = rng.choice(members, size=(n_boot, len(members)), replace=True)
    return idx


def binary_auc(positive: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ROC AUC per resample via the Mann-Whitney U statistic (ties count one half)."""
    ranks = rankdata(score[idx], axis=1)
    pos = positive[idx]
    n1 = pos.sum(axis=1).astype(float)
    n0 = idx.shape[1] - n1
    u = (ranks * pos).sum(axis=1) - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def recall(y: np.ndarray, correct: np.ndarray, cls: int, idx: np.ndarray) -> np.ndarray:
    """Share of class ``cls`` predicted correctly, per resample (NaN when absent)."""
    member = (y == cls)[idx]
    hits = (member & correct[idx]).sum(axis=1)
    count = member.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def metric_functions(y: np.ndarray, predicted: np.ndarray, probs: np.ndarray | None, k: int) -> dict[str, Metric]:
    """The metrics reported per group, as functions of a resample index matrix.

    Args:
        y: ``(n,)`` true class indices (all known).
        predicted: ``(n,)`` predicted class indices.
        probs: ``(n, k)`` probabilities, or None (no AUC then).
        k: number of classes.

    Returns:
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present),
        ``roc_auc`` (binary: probability of class 1; multiclass: one-vs-rest macro over
        the classes present) and for binary problems ``sensitivity`` (recall of class 1)
        and ``specificity`` (recall of class 0).
    """
    correct = y == predicted
    present = [int(c) for c in np.unique(y)]
    fns: dict[str, Metric] = {
        "accuracy": lambda idx: correct[idx].mean(axis=1),
        "balanced_accuracy": lambda idx: np.nanmean(
            np.stack([recall(y, correct, c, idx) for c in present]), axis=0),
    }
    if probs is not None and len(present) >= 2:
        if k == 2:
            fns["roc_auc"] = lambda idx: binary_auc(y == 1, probs[:, 1], idx)
        else:
            fns["roc_auc"] = lambda idx: np.nanmean(
                np.stack([binary_auc(y == c, probs[:, c], idx) for c in present]), axis=0)
    if k == 2:
        fns["sensitivity"] = lambda idx: recall(y, correct, 1, idx)
        fns["specificity"] = lambda idx: recall(y, correct, 0, idx)
    return fns


def bootstrap_metrics(
    fns: dict[str, Metric], strata: np.ndarray, n_boot: int, confidence: float, seed: Any
) -> tuple[dict[str, Estimate], dict[str, np.ndarray]]:
    """Point estimates, percentile intervals and the resampled values of each metric.

    All metrics share the same resamples, so differences between them (or between
    groups resampled with their own seeds) are taken resample by resample.

    Args:
        fns: metric name -> function of an index matrix.
        strata: ``(n,)`` stratum of each row (the true class).
        n_boot: number of resamples.
        confidence: interval level, e.g. 0.95.
        seed: anything ``np.random.default_rng`` takes; the same seed, the same interval.

    Returns:
        ``(estimates, samples)`` with ``samples[name]`` of shape ``(n_boot,)``.
    """
    n = len(strata)
    rng = np.random.default_rng(seed)
    whole = np.arange(n)[None, :]
    chunk = max(1, MAX_ELEMENTS // max(n, 1))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in fns}
    for start in range(0, n_boot, chunk):
        idx = stratified_indices(strata, min(chunk, n_boot - start), rng)
        for name, fn in fns.items():
            parts[name].append(fn(idx))
    samples = {name: np.concatenate(p) for name, p in parts.items()}
    estimates = {name: Estimate(float(fns[name](whole)[0]), *percentile_interval(samples[name], confidence))
                 for name in fns}
    return estimates, samples


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite samples, (NaN, NaN) when there are none."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def difference(a: np.ndarray, b: np.ndarray, value: float, confidence: float) -> Estimate:
    """Estimate of ``value`` = a - b with the interval of the resampled differences."""
    return Estimate(value, *percentile_interval(a - b, confidence))


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927; Newcombe 1998, Stat. Med. 17:857).

    Valid at small n and at 0 % or 100 %, where a percentile bootstrap of a proportion
    cannot leave the edge (6 of 6 gives [1, 1] by bootstrap, [0.61, 1] by Wilson at 95 %).

    Returns:
        ``(low, high)``; (NaN, NaN) when ``n`` is 0.
    """
    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, confidence: float) -> tuple[float, float]:
    """Interval of the difference of two independent proportions ``k1/n1 - k2/n2``.

    Newcombe's hybrid score interval (1998, Stat. Med. 17:873, method 10), built from the
    two Wilson intervals; like them it holds at small n and at 0 % or 100 %.

    Returns:
        ``(low, high)``; (NaN, NaN) when either n is 0.
    """
    if n1 <= 0 or n2 <= 0:
        return float("nan"), float("nan")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return float(max(-1.0, low)), float(min(1.0, high))
