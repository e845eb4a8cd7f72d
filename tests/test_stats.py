"""The one ROC AUC and the one bootstrap (`xaudit.analysis.stats`), against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xaudit.analysis import metrics
from xaudit.analysis.bias.bootstrap import metric_functions
from xaudit.analysis.stats import (
    auc,
    bootstrap,
    counts_from_draws,
    percentile_interval,
    roc_auc,
    roc_auc_point,
    stratified_draws,
)


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    score = np.round(rng.random(50) + 0.3 * y, 1)  # rounding makes ties
    assert auc(np.ones((1, 50)), score, y == 1)[0] == pytest.approx(roc_auc_score(y, score))


def test_weighted_auc_equals_sklearn_with_sample_weights():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    score = np.round(rng.random(40) + 0.4 * y, 1)
    draws = rng.integers(0, 40, size=(5, 40))
    weights = counts_from_draws(40, draws)
    values = auc(weights, score, y == 1)
    for b in range(5):
        assert values[b] == pytest.approx(roc_auc_score(y, score, sample_weight=weights[b]))
        assert values[b] == pytest.approx(roc_auc_score(y[draws[b]], score[draws[b]]))


def test_multiclass_auc_is_sklearns_one_vs_rest_macro():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    expected = roc_auc_score(y, probs, multi_class="ovr")
    assert roc_auc_point(y, probs) == pytest.approx(expected)
    assert metric_functions(y, probs.argmax(1), probs, 3)["roc_auc"](np.ones((1, 60)))[0] == pytest.approx(expected)
    assert metrics.classification_metrics(y, probs)["roc_auc"] == pytest.approx(expected)


def test_auc_is_undefined_with_one_class():
    assert np.isnan(roc_auc_point(np.zeros(5, int), np.full((5, 2), 0.5)))
    assert metrics.classification_metrics(np.zeros(5, int), np.full((5, 2), 0.5))["roc_auc"] is None


def test_stratified_resamples_keep_class_counts():
    strata = np.repeat([0, 1, 2], [3, 5, 7])
    idx = stratified_draws(strata, 50, np.random.default_rng(0))
    assert idx.shape == (50, 15)
    np.testing.assert_array_equal(strata[idx], np.broadcast_to(strata, (50, 15)))


def test_undefined_interval_is_nan_in_memory_and_none_in_json():
    from xaudit.core.jsonable import to_jsonable

    low, high = percentile_interval(np.array([np.nan] * 50 + [0.5] * 5), 0.95)
    assert np.isnan(low) and np.isnan(high)
    assert to_jsonable({"low": low}) == {"low": None}


def test_bootstrap_auc_interval_brackets_the_point_estimate():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 40)
    probs = np.c_[1 - (0.3 * y + rng.random(80) * 0.7), 0.3 * y + rng.random(80) * 0.7]
    est, samples = bootstrap({"auc": lambda w: roc_auc(w, y, probs)}, y, 400, 0.95, seed=0)
    assert est["auc"].value == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert est["auc"].low < est["auc"].value < est["auc"].high
    assert samples["auc"].shape == (400,)
