"""The metrics the bias checks bootstrap per group, as functions of resample counts.

The bootstrap itself (stratified percentile intervals, `Estimate`) and the ROC AUC are
`xaudit.analysis.stats`; this module only says which metrics a group gets.
"""

from __future__ import annotations

import numpy as np

from xaudit.analysis.stats import (Estimate, Metric, auc, bootstrap, difference, newcombe_difference, percentile_interval,
                                   recall, wilson_interval)

__all__ = ["Estimate", "Metric", "bootstrap_metrics", "difference", "metric_functions", "newcombe_difference",
           "percentile_interval", "wilson_interval"]

bootstrap_metrics = bootstrap  # the name the checks use


def metric_functions(y: np.ndarray, predicted: np.ndarray, probs: np.ndarray | None, k: int) -> dict[str, Metric]:
    """The metrics reported per group, as functions of a resample count matrix.

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
    correct = (y == predicted).astype(float)
    present = [int(c) for c in np.unique(y)]
    fns: dict[str, Metric] = {
        "accuracy": lambda w: (w @ correct) / w.sum(axis=1),
        "balanced_accuracy": lambda w: np.nanmean(np.stack([recall(w, y, correct, c) for c in present]), axis=0),
    }
    if probs is not None and len(present) >= 2:
        if k == 2:
            fns["roc_auc"] = lambda w: auc(w, probs[:, 1], y == 1)
        else:
            fns["roc_auc"] = lambda w: np.nanmean(np.stack([auc(w, probs[:, c], y == c) for c in present]), axis=0)
    if k == 2:
        fns["sensitivity"] = lambda w: recall(w, y, correct, 1)
        fns["specificity"] = lambda w: recall(w, y, correct, 0)
    return fns
