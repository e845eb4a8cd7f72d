"""Behaviour by group: metrics per group value and per class x group cell, with intervals.

A model that learned a site signature does well where class and site agree with the
training data and fails on the "off-diagonal" cells, e.g. patients scanned at the site
that supplied mostly healthy controls (Zech et al. 2018). This check reports n,
accuracy, balanced accuracy, ROC AUC (and sensitivity/specificity for two classes) per
group value with stratified percentile-bootstrap intervals (`xaudit.analysis.bias.bootstrap`), the
largest disparity between group values per metric, and per class the spread of recall
across group values. Disparities compare the observed best and worst value; their
interval comes from independent resamples of the two, except for a cell's recall (a
proportion, often of few subjects): Wilson intervals, and Newcombe's for their difference.
A column whose every value holds one class (fully confounded) raises no group-level
finding: its per-value metrics are class recalls.

Performance that differs between sites may also come from case mix or image quality, so
group-level disparities are reported as ``neutral`` warnings; a class recognised well at
one site and poorly at another is reported as ``signature`` evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaudit.analysis.bias.bootstrap import (Estimate, bootstrap_metrics, difference, metric_functions,
                                            newcombe_difference, wilson_interval)
from xaudit.analysis.bias.findings import Finding, severity_for
from xaudit.analysis.bias.inputs import group_strings
from xaudit.core.jsonable import to_jsonable
from xaudit.analysis.bias.masked_input import masked_input_summary  # noqa: F401 (re-exported; see that module)
from xaudit.config.bias import BiasParams


@dataclass
class GroupRow:
    """Metrics of one group value."""

    column: str
    value: str
    n: int
    metrics: dict[str, Estimate]
    samples: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"column": self.column, "value": self.value, "n": self.n, "metrics": self.metrics})


@dataclass
class CellRow:
    """Recall (accuracy within the class) of one class x group-value cell."""

    column: str
    value: str
    class_name: str
    n: int
    n_train: int | None
    accuracy: Estimate
    correct: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in ("column", "value", "class_name", "n", "n_train", "correct",
                                                          "accuracy")})


@dataclass
class Disparity:
    """Best minus worst value of a metric among group values (or cells of one class)."""

    column: str
    metric: str
    best: str
    worst: str
    difference: Estimate
    class_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


@dataclass
class GroupMetricsResult:
    """Overall metrics, per-group rows, per-cell rows, disparities, findings, notes."""

    evaluated: str = "all labelled subjects"
    n_evaluated: int = 0
    overall: dict[str, Estimate] = field(default_factory=dict)
    groups: list[GroupRow] = field(default_factory=list)
    cells: list[CellRow] = field(default_factory=list)
    disparities: list[Disparity] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "evaluated": self.evaluated, "n_evaluated": self.n_evaluated, "overall": self.overall,
            "groups": [g.to_dict() for g in self.groups], "cells": [c.to_dict() for c in self.cells],
            "disparities": [d.to_dict() for d in self.disparities], "notes": self.notes,
            "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings],
        })


def group_metrics(
    labels: np.ndarray, predicted: np.ndarray, probs: np.ndarray | None, class_names: list[str],
    groups: dict[str, np.ndarray], params: BiasParams, splits: np.ndarray | None = None,
) -> GroupMetricsResult:
    """Metrics per group value and per class x group cell, with disparities and findings.

    Args:
        labels: ``(n,)`` class indices, -1 unknown (left out).
        predicted: ``(n,)`` predicted class indices.
        probs: ``(n, K)`` probabilities or None.
        class_names: the K class names.
        groups: group column -> ``(n,)`` values.
        params: ``bootstrap``, ``confidence``, ``seed``, ``min_group_size``,
            ``disparity_*``, ``train_split``.
        splits: ``(n,)`` split names; training subjects are left out of the metrics when
            others exist, and counted per cell as ``n_train``.

    Returns:
        A `GroupMetricsResult`.
    """
    result = GroupMetricsResult()
    evaluate = labels >= 0
    train = np.zeros(len(labels), dtype=bool) if splits is None else (splits == params.train_split)
    if train.any() and (evaluate & ~train).any():
        evaluate &= ~train
        result.evaluated = f"labelled subjects outside split {params.train_split!r}"
    if evaluate.sum() < 2:
        result.notes.append("Behaviour by group skipped: fewer than two labelled subjects to evaluate.")
        return result
    k = len(class_names)
    result.n_evaluated = int(evaluate.sum())
    result.overall = _estimates(labels, predicted, probs, k, evaluate, params, [params.seed])[0]
    for i, (column, raw) in enumerate(groups.items()):
        values, known = group_strings(raw)
        rows = _group_rows(column, values, known & evaluate, labels, predicted, probs, k, params, i)
        result.groups += rows
        cells = _cell_rows(column, values, known, evaluate, train if train.any() else None,
                           labels, predicted, class_names, params)
        result.cells += cells
        group_disp = _group_disparities(column, rows, params)
        cell_disp = _cell_disparities(column, cells, class_names, params)
        result.disparities += group_disp + cell_disp
        result.signature_tests += len(cell_disp)
        if _one_class_per_value(values, known & evaluate, labels):
            result.notes.append(f"{column}: every value holds a single class, so its per-value metrics are that "
                                "class's recall and differences between values compare classes, not sites; no "
                                "finding is raised from them (see the design check and the interventions).")
        else:
            result.findings += _group_finding(column, group_disp, params)
        result.findings += [f for d in cell_disp for f in _cell_finding(d, cells, params)]
        if not group_disp:
            result.notes.append(f"{column}: fewer than two values with >= {params.min_group_size} "
                                "evaluated subjects; no disparity computed.")
    return result


def _one_class_per_value(values, rows, labels) -> bool:
    """Whether each group value among ``rows`` holds one class only (a fully confounded column)."""
    present = {v: set(labels[rows & (values == v)].tolist()) for v in set(values[rows].tolist())}
    return len(present) >= 2 and all(len(c) == 1 for c in present.values())


def _estimates(labels, predicted, probs, k, rows, params, seed):
    y, p = labels[rows], predicted[rows]
    fns = metric_functions(y, p, None if probs is None else probs[rows], k)
    return bootstrap_metrics(fns, y, params.bootstrap, params.confidence, seed)


def _group_rows(column, values, rows, labels, predicted, probs, k, params, i) -> list[GroupRow]:
    out = []
    for j, value in enumerate(sorted(set(values[rows].tolist()))):
        member = rows & (values == value)
        estimates, samples = _estimates(labels, predicted, probs, k, member, params, [params.seed, i, j])
        out.append(GroupRow(column, value, int(member.sum()), estimates, samples))
    return out


def _cell_rows(column, values, known, evaluate, train, labels, predicted, class_names, params) -> list[CellRow]:
    """Recall per class x value with its Wilson interval (valid at small n and at 0 % or 100 %,
    where a percentile bootstrap of a proportion cannot leave the edge)."""
    out = []
    for c, name in enumerate(class_names):
        for j, value in enumerate(sorted(set(values[known & (labels == c)].tolist()))):
            cell = known & (labels == c) & (values == value)
            member = cell & evaluate
            n_train = None if train is None else int((cell & train).sum())
            if not member.any():
                continue
            k, n = int((predicted == labels)[member].sum()), int(member.sum())
            out.append(CellRow(column, value, name, n, n_train, Estimate(k / n, *wilson_interval(k, n, params.confidence)), k))
    return out


def _group_disparities(column: str, rows: list[GroupRow], params: BiasParams) -> list[Disparity]:
    large = [r for r in rows if r.n >= params.min_group_size]
    out = []
    for metric in dict.fromkeys(m for r in large for m in r.metrics):
        scored = [r for r in large if metric in r.metrics and np.isfinite(r.metrics[metric].value)]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda r: r.metrics[metric].value)
        worst = min(scored, key=lambda r: r.metrics[metric].value)
        value = best.metrics[metric].value - worst.metrics[metric].value
        diff = difference(best.samples[metric], worst.samples[metric], value, params.confidence)
        out.append(Disparity(column, metric, best.value, worst.value, diff))
    return out


def _cell_disparities(column: str, cells: list[CellRow], class_names: list[str], params: BiasParams) -> list[Disparity]:
    out = []
    for name in class_names:
        scored = [c for c in cells if c.class_name == name and c.n >= params.min_group_size]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda c: c.accuracy.value)
        worst = min(scored, key=lambda c: c.accuracy.value)
        value = best.accuracy.value - worst.accuracy.value
        diff = Estimate(value, *newcombe_difference(best.correct, best.n, worst.correct, worst.n, params.confidence))
        out.append(Disparity(column, "recall", best.value, worst.value, diff, class_name=name))
    return out


def _fires(d: Disparity, params: BiasParams) -> str | None:
    if not d.difference.low > 0:  # the interval must exclude "no difference"
        return None
    return severity_for(d.difference.value, params.disparity_warning, params.disparity_critical)


def _threshold(params: BiasParams) -> dict[str, float]:
    return {"disparity_warning": params.disparity_warning, "disparity_critical": params.disparity_critical,
            "confidence": params.confidence}


#: metrics that move with the class mix alone: a group with more of the class the model
#: favours scores higher even when the model treats every group alike. The interval cannot
#: show it (the bootstrap keeps each class's count), so they are tabled but never fire.
CASE_MIX_METRICS = ("accuracy",)


def _group_finding(column: str, disparities: list[Disparity], params: BiasParams) -> list[Finding]:
    fired = [(d, s) for d in disparities
             if d.metric not in CASE_MIX_METRICS and (s := _fires(d, params)) is not None]
    if not fired:
        return []
    top, severity = max(fired, key=lambda pair: pair[0].difference.value)
    if any(s == "critical" for _, s in fired):
        severity = "critical"
    listed = "; ".join(f"{d.metric} {d.best} - {d.worst} = {d.difference.value:.2f} "
                       f"[{d.difference.low:.2f}, {d.difference.high:.2f}]" for d, _ in fired)
    return [Finding(
        id=f"group_metrics.disparity.{column}", check="group_metrics", severity=severity, column=column,
        title=f"performance differs between {column} values ({top.metric} {top.best} vs {top.worst}: "
              f"{top.difference.value:+.2f})",
        message=(f"Metrics differ between {column} values beyond chance ({listed}; {params.confidence:.0%} "
                 "bootstrap intervals). This may reflect case mix or image quality as well as a signature."),
        evidence={"disparities": [d.to_dict() for d, _ in fired]}, threshold=_threshold(params),
        points_to="neutral",
    )]


def _cell_finding(d: Disparity, cells: list[CellRow], params: BiasParams) -> list[Finding]:
    severity = _fires(d, params)
    if severity is None:
        return []
    best = next(c for c in cells if c.class_name == d.class_name and c.value == d.best)
    worst = next(c for c in cells if c.class_name == d.class_name and c.value == d.worst)
    train = (f", training subjects unknown: split {params.train_split!r} not audited" if worst.n_train is None
             else f", {worst.n_train} in training")
    return [Finding(
        id=f"group_metrics.cell.{d.column}.{d.class_name}", check="group_metrics", severity=severity, column=d.column,
        title=(f"{d.class_name} subjects are recognised at {worst.accuracy.value:.0%} at {d.column} {worst.value} "
               f"vs {best.accuracy.value:.0%} at {best.value}"),
        message=(f"Recall of {d.class_name} depends on {d.column}: {worst.accuracy.value:.0%} "
                 f"[{worst.accuracy.low:.0%}, {worst.accuracy.high:.0%}] at {worst.value} (n={worst.n}{train}) vs "
                 f"{best.accuracy.value:.0%} at {best.value} (n={best.n}); difference {d.difference.value:.2f} "
                 f"[{d.difference.low:.2f}, {d.difference.high:.2f}] (Wilson and Newcombe intervals). A model deciding on pathology should "
                 f"recognise a class equally well wherever it was scanned."),
        evidence={"best": best.to_dict(), "worst": worst.to_dict(), "difference": d.difference.to_dict()},
        threshold=_threshold(params), points_to="signature",
    )]
