"""The statistics every analysis shares: one ROC AUC, one bootstrap, one percentile interval.

A resample is a row of counts ``W[b, i]`` (how often subject ``i`` was drawn; the data itself
is a row of ones), so every metric of every resample is a few array operations. ROC AUC is
the weighted Mann-Whitney statistic with ties counted one half, the same value as
scikit-learn's ``roc_auc_score`` (tested against it). Undefined values are NaN here and
None in JSON (`xaudit.core.jsonable.to_jsonable`).

Proportions get Wilson score intervals and their differences Newcombe's (valid at small n
and at 0 % or 100 %, where a percentile bootstrap cannot leave the edge).

Bootstrap intervals are percentile intervals (Efron & Tibshirani 1993); resampling may be
stratified by the true class (as pROC does by default; Robin et al. 2011, BMC
Bioinformatics 12:77), so AUC and balanced accuracy are defined in every resample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from xaudit.core.jsonable import to_jsonable
from xaudit.core.pages import row_blocks

#: a metric as a function of resample counts ``(B, n)`` -> ``(B,)``
Metric = Callable[[np.ndarray], np.ndarray]
MAX_ELEMENTS = 1_000_000  # count-matrix entries per chunk: bounds memory at ~50 MB (4M took 180 MB at n = 10,000, and longer)
MIN_FINITE = 10  # fewer finite resamples than this: the interval is undefined


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


def counts_from_draws(n: int, draws: np.ndarray) -> np.ndarray:
    """``(B, n)`` counts of each subject per resample, from ``(B, n)`` drawn indices."""
    b = draws.shape[0]
    flat = (draws + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def stratified_draws(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` indices drawn with replacement within each stratum (sizes kept)."""
    idx = np.empty((n_boot, len(strata)), dtype=np.int64)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        idx[:, members] = rng.choice(members, size=(n_boot, len(members)), replace=True)
    return idx


def auc(weights: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """``(B,)`` weighted ROC AUC of ``scores`` for ``positive`` (NaN when a class is absent)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    w = np.atleast_2d(weights)[:, order]
    pos = positive[order].astype(float)
    # tie blocks: equal scores count one half, as in the Mann-Whitney statistic
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    pos_w = np.add.reduceat(w * pos, starts, axis=1)
    neg_w = np.add.reduceat(w * (1.0 - pos), starts, axis=1)
    neg_below = np.cumsum(neg_w, axis=1) - neg_w
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), value, np.nan)


def roc_auc(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(B,)`` AUC of class 1's probability for two classes, else the one-vs-rest macro AUC
    over the classes present (NaN when fewer than two are)."""
    if probs.shape[1] == 2:
        return auc(weights, probs[:, 1], labels == 1)
    per_class = np.vstack([auc(weights, probs[:, k], labels == k) for k in range(probs.shape[1])])
    defined = np.isfinite(per_class).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(defined > 1, np.nansum(per_class, axis=0) / np.maximum(defined, 1), np.nan)


def roc_auc_point(labels: np.ndarray, probs: np.ndarray) -> float:
    """`roc_auc` of the data itself (all weights 1); NaN when undefined."""
    return float(roc_auc(np.ones((1, len(labels))), labels, probs)[0])


def recall(weights: np.ndarray, labels: np.ndarray, correct: np.ndarray, cls: int) -> np.ndarray:
    """``(B,)`` weighted share of class ``cls`` predicted correctly (NaN when absent)."""
    member = (labels == cls).astype(float)
    total = weights @ member
    hits = weights @ (member * correct)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.maximum(total, 1e-300), np.nan)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite samples; (NaN, NaN) with fewer than `MIN_FINITE`."""
    finite = samples[np.isfinite(samples)]
    if finite.size < MIN_FINITE:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    fns: dict[str, Metric], strata: np.ndarray, n_boot: int, confidence: float, seed: Any
) -> tuple[dict[str, Estimate], dict[str, np.ndarray]]:
    """Point estimates, percentile intervals and the resampled values of each metric.

    All metrics share the same resamples (stratified by ``strata``), so differences between
    them, or between groups resampled with their own seeds, are taken resample by resample.

    Args:
        fns: metric name -> function of a count matrix ``(B, n)``.
        strata: ``(n,)`` stratum of each row (e.g. the true class; all equal: plain bootstrap).
        n_boot: number of resamples.
        confidence: interval level, e.g. 0.95.
        seed: anything ``np.random.default_rng`` takes; the same seed, the same interval.

    Returns:
        ``(estimates, samples)`` with ``samples[name]`` of shape ``(n_boot,)``.
    """
    n = len(strata)
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_ELEMENTS // max(n, 1))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in fns}
    for start in range(0, n_boot, chunk):
        weights = counts_from_draws(n, stratified_draws(strata, min(chunk, n_boot - start), rng))
        for name, fn in fns.items():
            parts[name].append(fn(weights))
    samples = {name: np.concatenate(p) if p else np.empty(0) for name, p in parts.items()}
    whole = np.ones((1, n))
    estimates = {name: Estimate(float(fns[name](whole)[0]), *percentile_interval(samples[name], confidence))
                 for name in fns}
    return estimates, samples


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


def evenly_spaced(n: int, cap: int) -> np.ndarray:
    """Indices of ``range(n)`` to keep: all when ``n <= cap``, else ``cap`` evenly spaced (first and last kept).

    Every subsample a big cohort needs (SpRAy, the group view, the mosaic, typical examples) is
    this one: deterministic, so re-renders and merges draw the same subjects.
    """
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(int))


def mean_rows(array: np.ndarray, rows) -> np.ndarray:
    """``array[rows].mean(axis=0)``, the same numbers, without copying the rows (``rows``: indices or a mask).

    A class's maps in a 10,000-subject cohort are hundreds of megabytes; this sums the same
    rows in the same order (numpy's reduction over the first axis adds row after row), a
    block of rows at a time (`xaudit.core.pages.row_blocks`: a file-mapped cohort keeps one
    block resident, not the array), then divides as ``np.mean`` does.
    """
    mask = np.zeros(len(array), bool)
    mask[rows] = True
    dtype = array.dtype if np.issubdtype(array.dtype, np.inexact) else np.dtype(np.float64)
    total = np.zeros(array.shape[1:], dtype)
    for start, block in row_blocks(array):
        chosen = block[mask[start:start + len(block)]]
        if len(chosen):
            total = np.add.reduce(np.concatenate([total[None], chosen.astype(dtype, copy=False)]), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total.astype(np.float64) / int(mask.sum())).astype(dtype)
