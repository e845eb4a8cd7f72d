"""Behaviour by group: bootstrap intervals, planted disparities, masked-input findings."""

from __future__ import annotations

import numpy as np
import pytest

from xaudit.analysis.bias import BiasParams, group_metrics, masked_input_summary
from xaudit.analysis.bias.bootstrap import bootstrap_metrics, metric_functions

CLASSES = ["healthy", "lesion"]
FAST = BiasParams(bootstrap=300)


def test_bootstrap_interval_contains_truth_and_is_reproducible():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    correct = rng.random(300) < 0.8  # true accuracy 0.8
    predicted = np.where(correct, y, 1 - y)
    fns = metric_functions(y, predicted, None, 2)
    first, _ = bootstrap_metrics(fns, y, 500, 0.95, seed=7)
    again, _ = bootstrap_metrics(fns, y, 500, 0.95, seed=7)
    other, _ = bootstrap_metrics(fns, y, 500, 0.95, seed=8)
    acc = first["accuracy"]
    assert acc.low < 0.8 < acc.high
    assert acc.high - acc.low < 0.12
    assert acc.value == pytest.approx(correct.mean())
    assert first == again
    assert first["accuracy"].low != other["accuracy"].low


def _cohort(off_diagonal_recall: float, n: int = 30, seed: int = 0):
    """Healthy mostly at A, lesion mostly at B; lesion at A recognised at the given rate."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 0, 1, 1], n)
    site = np.tile(np.repeat(["A", "B"], n), 2)
    recall = np.where((labels == 1) & (site == "A"), off_diagonal_recall, 0.95)
    correct = rng.random(len(labels)) < recall
    predicted = np.where(correct, labels, 1 - labels)
    p1 = np.clip(np.where(predicted == 1, 0.8, 0.2) + rng.normal(0, 0.05, len(labels)), 0, 1)
    return labels, predicted, np.c_[1 - p1, p1], site


def test_off_diagonal_cell_failure_is_found():
    labels, predicted, probs, site = _cohort(off_diagonal_recall=0.3)
    result = group_metrics(labels, predicted, probs, CLASSES, {"site": site}, FAST)
    [cell] = [f for f in result.findings if f.id == "group_metrics.cell.site.lesion"]
    assert cell.severity == "critical"
    assert cell.points_to == "signature"
    assert "at site A" in cell.title
    disparity = next(d for d in result.disparities if d.metric == "sensitivity")
    assert disparity.worst == "A" and disparity.difference.low > 0
    assert {g.value for g in result.groups} == {"A", "B"}


def test_equal_behaviour_raises_nothing():
    labels, predicted, probs, site = _cohort(off_diagonal_recall=0.95, seed=2)
    result = group_metrics(labels, predicted, probs, CLASSES, {"site": site}, FAST)
    assert result.findings == []
    assert result.signature_tests == 2


def test_case_mix_alone_raises_no_disparity():
    """A model that predicts one class for everyone treats every site alike; its accuracy
    still differs between sites that hold the classes in different proportions."""
    labels = np.array([0] * 8 + [1] * 2 + [0] * 2 + [1] * 8)
    site = np.array(["A"] * 10 + ["B"] * 10)
    predicted = np.zeros_like(labels)
    probs = np.c_[np.full(len(labels), 0.7), np.full(len(labels), 0.3)]
    result = group_metrics(labels, predicted, probs, CLASSES, {"site": site}, FAST)
    accuracy = next(d for d in result.disparities if d.metric == "accuracy" and d.class_name is None)
    assert accuracy.difference.value == pytest.approx(0.6)  # tabled: 0.8 at A vs 0.2 at B
    assert [f for f in result.findings if f.id.startswith("group_metrics.disparity")] == []


def test_training_subjects_are_left_out_and_counted():
    labels, predicted, probs, site = _cohort(off_diagonal_recall=0.95)
    splits = np.where(np.arange(len(labels)) % 2 == 0, "train", "test")
    result = group_metrics(labels, predicted, probs, CLASSES, {"site": site}, FAST, splits=splits)
    assert "outside split 'train'" in result.evaluated
    assert sum(g.n for g in result.groups) == len(labels) // 2
    assert all(c.n_train == 15 for c in result.cells)


def test_one_group_value_and_tiny_n_give_notes():
    result = group_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), None, CLASSES,
                           {"site": np.array(["A", "A", "A"])}, FAST)
    assert result.findings == [] and result.notes
    assert group_metrics(np.array([0, -1]), np.array([0, 1]), None, CLASSES, {}, FAST).notes


def test_background_only_separation_is_critical():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    p1 = np.clip(0.2 + 0.6 * labels + rng.normal(0, 0.1, 80), 0, 1)
    full = np.c_[1 - p1, p1]
    result = masked_input_summary(full, full, None, labels, full.argmax(1), FAST)
    [finding] = result.findings
    assert finding.id == "masked_input.background_separates"
    assert finding.severity == "critical"
    assert result.variants["background_only"]["auc_vs_label"].value > 0.9


def test_uninformative_background_and_good_foreground_point_to_the_foreground():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 40)
    p1 = np.clip(0.2 + 0.6 * labels + rng.normal(0, 0.1, 80), 0, 1)
    full = np.c_[1 - p1, p1]
    noise = rng.random(80)
    result = masked_input_summary(full, np.c_[1 - noise, noise], full, labels, full.argmax(1), FAST)
    assert [f.id for f in result.findings] == ["masked_input.foreground_suffices"]
    assert result.findings[0].points_to == "pathology"
