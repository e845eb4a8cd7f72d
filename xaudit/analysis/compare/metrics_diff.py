"""Metric differences between two runs, with bootstrap intervals, overall and per group value.

Point estimates are `xaudit.analysis.metrics.classification_metrics` on each run's predictions.csv
(the numbers audit.json reports). The interval of a difference is the percentile interval
of ``metric(other resample) - metric(reference resample)``. Subjects are resampled within
each run independently; when both runs hold exactly the same labelled subjects and
``pairing`` is ``auto``, the same subjects are drawn for both (a paired bootstrap), which
is the right design for e.g. two models on one cohort and gives narrower intervals.
"""

from __future__ import annotations

import zlib

import numpy as np

from xaudit.analysis.stats import counts_from_draws, percentile_interval, recall, roc_auc
from xaudit.analysis.compare.params import METRICS, CompareParams


def aligned(run, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probs)`` of a run with its classes put in ``classes`` order (matched by name)."""
    columns = [run.classes.index(c) for c in classes]
    remap = np.full(len(run.classes) + 1, -1)
    remap[:-1] = [classes.index(c) if c in classes else -1 for c in run.classes]
    return remap[run.labels], run.probs[:, columns]


def point_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """n and the compared metrics of the labelled subjects.

    The same statistic as the bootstrap (all weights 1), hence the intervals belong to it;
    it equals `xaudit.analysis.metrics.classification_metrics` (audit.json) except for ROC AUC in a
    multi-class run where some class has no labelled subject (there audit.json
    renormalises the probabilities over the classes present).
    """
    known = labels >= 0
    out: dict = {"n": int(known.sum())}
    if not known.any():
        return {**out, **{m: None for m in METRICS}}
    samples = metric_samples(np.ones((1, int(known.sum()))), labels[known], probs[known])
    return {**out, **{m: _finite(samples[m][0]) for m in METRICS}}


def metric_samples(weights: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced_accuracy (undefined with one class present) and roc_auc for every
    resample row of ``weights`` (`xaudit.analysis.stats`)."""
    correct = (probs.argmax(axis=1) == labels).astype(float)
    recalls = np.vstack([recall(weights, labels, correct, k) for k in range(probs.shape[1])])
    present = np.isfinite(recalls).sum(axis=0)
    with np.errstate(invalid="ignore"):
        balanced = np.where(present > 1, np.nansum(recalls, axis=0) / np.maximum(present, 1), np.nan)
    return {
        "accuracy": (weights @ correct) / weights.sum(axis=1),
        "balanced_accuracy": balanced,
        "roc_auc": roc_auc(weights, labels, probs),
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def compare_metrics(ref, other, classes: list[str], params: CompareParams, key: str) -> dict:
    """Differences overall and per value of every group column both runs have.

    Returns:
        ``{"pairing", "overall": entry, "by_group": {column: {value: entry}}, "unmatched"}``
        where an entry is ``{"n": {...}, metric: {"reference", "other", "difference",
        "ci_low", "ci_high", "significant"}}`` and ``unmatched`` lists group values
        present in one run only.
    """
    ref_lab, ref_probs = aligned(ref, classes)
    oth_lab, oth_probs = aligned(other, classes)
    ref_all = (ref_lab >= 0)
    oth_all = (oth_lab >= 0)
    out: dict = {"pairing": "independent", "by_group": {}, "unmatched": {}}
    subsets = [("overall", ref_all, oth_all)]
    for column in [c for c in ref.groups if c in other.groups]:
        ref_values, oth_values = set(ref.groups[column]), set(other.groups[column])
        for value in sorted(ref_values & oth_values):
            subsets.append(((column, value), ref_all & (ref.groups[column] == value), oth_all & (other.groups[column] == value)))
        if ref_values != oth_values:
            out["unmatched"][column] = {"reference_only": sorted(ref_values - oth_values), "other_only": sorted(oth_values - ref_values)}
    for name, ref_sel, oth_sel in subsets:
        entry, paired = _entry(
            (ref.subject_ids[ref_sel], ref_lab[ref_sel], ref_probs[ref_sel]),
            (other.subject_ids[oth_sel], oth_lab[oth_sel], oth_probs[oth_sel]),
            params, f"{key}/{name}",
        )
        if name == "overall":
            out["overall"] = entry
            out["pairing"] = "paired" if paired else "independent"
        else:
            out["by_group"].setdefault(name[0], {})[str(name[1])] = entry
    return out


def _entry(ref: tuple, other: tuple, params: CompareParams, key: str) -> tuple[dict, bool]:
    """One subset's metrics side by side, differences and intervals; and whether it was paired."""
    ref_ids, ref_lab, ref_probs = ref
    oth_ids, oth_lab, oth_probs = other
    ref_point, oth_point = point_metrics(ref_lab, ref_probs), point_metrics(oth_lab, oth_probs)
    entry: dict = {"n": {"reference": ref_point["n"], "other": oth_point["n"]}}
    draws = _draws(ref_ids, oth_ids, params, key) if ref_lab.size and oth_lab.size and params.bootstrap else None
    samples = None
    if draws is not None:
        ref_draw, oth_draw, paired = draws
        ref_s = metric_samples(counts_from_draws(ref_lab.size, ref_draw), ref_lab, ref_probs)
        oth_s = metric_samples(counts_from_draws(oth_lab.size, oth_draw), oth_lab, oth_probs)
        samples = {m: oth_s[m] - ref_s[m] for m in METRICS}
    for m in METRICS:
        a, b = ref_point[m], oth_point[m]
        diff = None if a is None or b is None else b - a
        low, high = percentile_interval(samples[m], params.confidence) if samples is not None and diff is not None \
            else (float("nan"), float("nan"))
        low, high = _finite(low), _finite(high)
        significant = None if low is None else bool(low > 0 or high < 0)
        entry[m] = {"reference": a, "other": b, "difference": diff, "ci_low": low, "ci_high": high, "significant": significant}
    return entry, bool(draws and draws[2])


def _draws(ref_ids: np.ndarray, oth_ids: np.ndarray, params: CompareParams, key: str):
    """Resample indices ``(B, n_ref)`` and ``(B, n_other)``, paired when the subjects are the same."""
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, zlib.crc32(key.encode())]))
    size = params.bootstrap
    ref_draw = rng.integers(0, ref_ids.size, size=(size, ref_ids.size))
    same = (params.pairing == "auto" and ref_ids.size == oth_ids.size and len(set(ref_ids)) == ref_ids.size
            and set(ref_ids) == set(oth_ids))
    if same:
        position = {sid: i for i, sid in enumerate(oth_ids)}
        to_other = np.array([position[sid] for sid in ref_ids])
        return ref_draw, to_other[ref_draw], True
    return ref_draw, rng.integers(0, oth_ids.size, size=(size, oth_ids.size)), False
