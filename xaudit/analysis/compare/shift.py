"""Has the distribution of predictions moved between two runs?

Two tests on all audited subjects (labelled or not): a two-sample Kolmogorov-Smirnov test
on each class's predicted probability (the positive class only for two classes), and a
chi-square test of homogeneity on the predicted-class counts. When the runs share
subjects, the number whose predicted class changed is reported as well.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from xaudit.analysis.compare.load import shared_subjects
from xaudit.analysis.compare.metrics_diff import aligned


def prediction_shift(ref, other, classes: list[str], paired: bool = True) -> dict:
    """KS tests per class probability, chi-square on predicted classes, and prediction changes.

    ``paired`` False: the shared subject ids name different subjects (`compat._compare_subjects`),
    so there are no per-subject changes.

    Returns:
        ``{"probability": [{"class", "mean_reference", "mean_other", "ks_statistic",
        "p_value"}], "predicted_counts": {"reference": {...}, "other": {...},
        "chi2", "dof", "p_value"}, "changes": {...} | None}``.
    """
    _, ref_probs = aligned(ref, classes)
    _, oth_probs = aligned(other, classes)
    shown = [1] if len(classes) == 2 else list(range(len(classes)))
    probability = []
    for k in shown:
        a, b = ref_probs[:, k], oth_probs[:, k]
        test = stats.ks_2samp(a, b) if a.size and b.size else None
        probability.append({
            "class": classes[k], "mean_reference": float(a.mean()) if a.size else None,
            "mean_other": float(b.mean()) if b.size else None,
            "ks_statistic": float(test.statistic) if test else None, "p_value": float(test.pvalue) if test else None,
        })
    return {"probability": probability, "predicted_counts": _count_test(ref_probs, oth_probs, classes),
            "changes": _changes(ref, other, ref_probs, oth_probs, classes) if paired else None}


def _count_test(ref_probs: np.ndarray, oth_probs: np.ndarray, classes: list[str]) -> dict:
    k = len(classes)
    table = np.vstack([np.bincount(ref_probs.argmax(axis=1), minlength=k), np.bincount(oth_probs.argmax(axis=1), minlength=k)])
    out = {"reference": dict(zip(classes, table[0].tolist())), "other": dict(zip(classes, table[1].tolist())),
           "chi2": None, "dof": None, "p_value": None}
    used = table[:, table.sum(axis=0) > 0]
    if used.shape[1] < 2:
        # every subject of both runs predicted one class: the distributions are identical
        out.update(chi2=0.0, dof=0, p_value=1.0 if table.sum(axis=1).all() else None)
        return out
    if not used.sum(axis=1).all():
        return out
    chi2, p, dof, _ = stats.chi2_contingency(used)
    out.update(chi2=float(chi2), dof=int(dof), p_value=float(p))
    return out


def _changes(ref, other, ref_probs: np.ndarray, oth_probs: np.ndarray, classes: list[str]) -> dict | None:
    """Subjects in both runs whose predicted class changed, and the mean |probability change|."""
    ri, oi = shared_subjects(ref, other)
    if not ri.size:
        return None
    changed = ref_probs[ri].argmax(axis=1) != oth_probs[oi].argmax(axis=1)
    k = 1 if len(classes) == 2 else slice(None)
    return {"n_common": int(ri.size), "n_changed": int(changed.sum()), "fraction_changed": float(changed.mean()),
            "mean_abs_probability_change": float(np.abs(ref_probs[ri][:, k] - oth_probs[oi][:, k]).mean()),
            "changed_subjects": [str(s) for s in ref.subject_ids[ri][changed][:50]]}
