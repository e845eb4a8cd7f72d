"""Vectorised bootstrap of classification metrics.

A resample is a row of counts ``W[b, i]`` (how often subject ``i`` was drawn), so every
metric of every resample is a few matrix operations instead of a Python loop: accuracy
and balanced accuracy are weighted means, ROC AUC is the weighted Mann-Whitney statistic
with ties counted one half (the same value as scikit-learn's ``roc_auc_score``).
"""

from __future__ import annotations

import numpy as np


def resample_counts(n: int, draws: np.ndarray | None = None, rng: np.random.Generator | None = None, size: int = 0) -> np.ndarray:
    """``(B, n)`` counts of each subject per resample, from ``draws`` ``(B, n)`` indices or fresh ones."""
    if draws is None:
        draws = rng.integers(0, n, size=(size, n))
    b = draws.shape[0]
    flat = (draws + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def accuracy(weights: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """``(B,)`` weighted accuracy."""
    return (weights @ correct.astype(float)) / weights.sum(axis=1)


def balanced_accuracy(weights: np.ndarray, labels: np.ndarray, correct: np.ndarray, n_classes: int) -> np.ndarray:
    """``(B,)`` mean per-class recall over the classes present in each resample (as scikit-learn)."""
    recalls = []
    for k in range(n_classes):
        member = (labels == k).astype(float)
        total = weights @ member
        hits = weights @ (member * correct)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(total > 0, hits / total, np.nan))
    stacked = np.vstack(recalls)
    present = np.isfinite(stacked).sum(axis=0)
    with np.errstate(invalid="ignore"):
        out = np.nansum(stacked, axis=0) / present
    # one class only: undefined, as in `xaudit.analysis.metrics.classification_metrics`
    return np.where(present > 1, out, np.nan)


def binary_auc(weights: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """``(B,)`` weighted ROC AUC of ``scores`` for ``positive`` (NaN when a class is absent)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    w = weights[:, order]
    pos = positive[order].astype(float)
    # tie blocks: equal scores count one half, as in the Mann-Whitney statistic
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    pos_w = np.add.reduceat(w * pos, starts, axis=1)
    neg_w = np.add.reduceat(w * (1.0 - pos), starts, axis=1)
    neg_below = np.cumsum(neg_w, axis=1) - neg_w
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def roc_auc(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(B,)`` positive-class AUC for two classes, else one-vs-rest macro AUC over classes present."""
    if probs.shape[1] == 2:
        return binary_auc(weights, probs[:, 1], labels == 1)
    per_class = np.vstack([binary_auc(weights, probs[:, k], labels == k) for k in range(probs.shape[1])])
    defined = np.isfinite(per_class).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(defined > 1, np.nansum(per_class, axis=0) / defined, np.nan)


def metric_samples(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced_accuracy and roc_auc for every resample row of ``weights``."""
    correct = probs.argmax(axis=1) == labels
    return {
        "accuracy": accuracy(weights, correct),
        "balanced_accuracy": balanced_accuracy(weights, labels, correct, probs.shape[1]),
        "roc_auc": roc_auc(weights, labels, probs),
    }


def interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite samples, or (None, None) when there are fewer than 10."""
    finite = samples[np.isfinite(samples)]
    if finite.size < 10:
        return None, None
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
