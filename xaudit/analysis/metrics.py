"""Classification metrics overall and per value of each group column."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from xaudit.analysis.stats import roc_auc_point


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """n, accuracy, balanced accuracy and ROC AUC over the labelled subjects.

    ROC AUC is the positive-class AUC for two classes and the one-vs-rest macro AUC
    otherwise; None where it is undefined (one class present).
    """
    known = labels >= 0
    y, p = labels[known], probs[known]
    out: dict = {"n": int(known.sum()), "n_unlabelled": int((~known).sum())}
    if y.size == 0:
        return {**out, "accuracy": None, "balanced_accuracy": None, "roc_auc": None}
    pred = p.argmax(axis=1)
    out["accuracy"] = float((pred == y).mean())
    out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred)) if np.unique(y).size > 1 else None
    out["roc_auc"] = safe_auc(y, p)
    out["class_counts"] = {int(c): int((y == c).sum()) for c in np.unique(y)}
    return out


def safe_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """`xaudit.analysis.stats.roc_auc_point`, None where undefined (one class present)."""
    value = roc_auc_point(y, p)
    return value if np.isfinite(value) else None


def metrics_by_group(labels: np.ndarray, probs: np.ndarray, groups: dict[str, np.ndarray]) -> dict:
    """``{column: {value: metrics}}`` for every group column."""
    out = {}
    for column, values in groups.items():
        out[column] = {str(v): classification_metrics(labels[values == v], probs[values == v]) for v in sorted(set(values))}
    return out
