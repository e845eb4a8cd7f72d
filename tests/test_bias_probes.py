"""Representation probes: a planted site signal is found within class, pure noise is not."""

from __future__ import annotations

import numpy as np
import pytest

from xaudit.analysis.bias import BiasParams, linear_probe, run_probes

CLASSES = ["healthy", "lesion"]
FAST = BiasParams(permutations=19, probe_p_value=0.05, cv_folds=3)


def _cohort(signal: float, n_per_cell: int = 12, seed: int = 0):
    """Two classes x two sites, balanced; site shifts feature 0 by ``signal``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 0, 1, 1], n_per_cell)
    site = np.tile(np.repeat(["A", "B"], n_per_cell), 2)
    features = rng.normal(size=(len(labels), 6))
    features[:, 0] += signal * (site == "B")
    features[:, 1] += 2.0 * labels
    return features, labels, site


@pytest.fixture(scope="module")
def planted():
    features, labels, site = _cohort(signal=4.0, n_per_cell=16)
    return run_probes(features, labels, {"site": site}, CLASSES, FAST)


def test_planted_site_signal_is_decodable_within_each_class(planted):
    result = planted
    for name in CLASSES:
        score = result.get("site", f"class={name}")
        assert score.balanced_accuracy > 0.75
        assert score.p_value <= FAST.probe_p_value
    ids = {f.id for f in result.findings}
    assert {"probe.within_class.site.healthy", "probe.within_class.site.lesion"} <= ids
    assert result.signature_tests == 2
    assert all(f.points_to == "signature" for f in result.findings if f.id.startswith("probe.within"))


def test_pure_noise_is_not_decodable():
    features, labels, site = _cohort(signal=0.0, seed=3)
    result = run_probes(features, labels, {"site": site}, CLASSES, FAST)
    for name in CLASSES:
        assert result.get("site", f"class={name}").p_value > FAST.probe_p_value
    assert [f for f in result.findings if f.points_to == "signature"] == []
    label = result.get("label")  # the planted label signal is there: well above chance, at the smallest p
    assert label.balanced_accuracy > 0.75 and label.p_value <= FAST.probe_p_value


def test_probe_result_is_json_able(planted):
    import json

    json.dumps(planted.to_dict(), allow_nan=False)


def test_p_value_is_bounded_by_the_number_of_permutations_and_reproducible():
    features, labels, site = _cohort(signal=3.0)
    first = linear_probe(features, site, folds=3, permutations=19, seed=5)
    again = linear_probe(features, site, folds=3, permutations=19, seed=5)
    assert first == again
    assert first[2] == 1 / 20


def test_tiny_group_values_are_dropped_and_folds_shrink_with_notes():
    features, labels, site = _cohort(signal=3.0, n_per_cell=6)
    site = site.astype(object)
    site[:2] = "C"  # 2 subjects: fewer than min_group_size
    params = BiasParams(permutations=19, probe_p_value=0.05, cv_folds=5, min_group_size=3)
    result = run_probes(features, labels, {"site": site}, CLASSES, params)
    text = " ".join(result.notes)
    assert "['C']" in text
    assert "folds instead of 5" in text
    assert result.get("site", "class=healthy").folds < 5


def test_class_with_one_site_is_skipped_with_a_note():
    features, labels, site = _cohort(signal=3.0)
    site = np.where(labels == 0, "A", site)
    result = run_probes(features, labels, {"site": site}, CLASSES, FAST)
    assert result.get("site", "class=healthy") is None
    assert any("site (class=healthy) skipped" in n for n in result.notes)
    assert result.get("site", "class=lesion") is not None


@pytest.mark.parametrize("features", [5, 200])  # 200 > the 28 training rows: the wide path (row space)
def test_batched_logistic_matches_sklearn(features):
    from sklearn.linear_model import LogisticRegression

    from xaudit.analysis.bias.logistic import balanced_weights, fit_logistic

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, features))
    y = (x[:, 0] + rng.normal(size=40) > 0.5).astype(int)
    train = rng.random(40) < 0.7
    coef = fit_logistic(x, y[None], balanced_weights(y[None], train[None]))[0]
    ref = LogisticRegression(class_weight="balanced", tol=1e-10, max_iter=10000).fit(x[train], y[train])
    np.testing.assert_allclose(coef[:-1], ref.coef_[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(coef[-1], ref.intercept_[0], rtol=1e-5, atol=1e-6)


def test_wide_problems_with_their_own_penalties_match_sklearn_on_rescaled_features():
    """A per-problem penalty sum p_j w_j^2 is sklearn's fit on x / sqrt(p), its weights rescaled."""
    from sklearn.linear_model import LogisticRegression

    from xaudit.analysis.bias.logistic import fit_logistic

    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 90)) @ np.diag(rng.uniform(0.2, 3.0, 90))
    y = (rng.random((3, 50)) < 0.5).astype(float)
    weights = (rng.random((3, 50)) < 0.6).astype(float)
    penalty = rng.uniform(0.3, 4.0, (3, 90))
    coef = fit_logistic(x, y, weights, penalty=penalty)
    for b in range(3):
        rows, root = weights[b] > 0, np.sqrt(penalty[b])
        ref = LogisticRegression(tol=1e-10, max_iter=10000).fit(x[rows] / root, y[b, rows])
        np.testing.assert_allclose(coef[b, :-1], ref.coef_[0] / root, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(coef[b, -1], ref.intercept_[0], rtol=1e-4, atol=1e-6)


def test_a_wide_problem_without_rows_is_zero_and_an_unpenalised_wide_feature_is_refused():
    from xaudit.analysis.bias.logistic import fit_logistic

    x = np.random.default_rng(7).normal(size=(40, 100))
    weights = np.zeros((2, 40))
    weights[1, :10] = 1.0
    coef = fit_logistic(x, (np.arange(40) % 2 == 0)[None].repeat(2, 0).astype(float), weights)
    assert np.all(coef[0] == 0) and np.abs(coef[1]).max() > 0  # the row-less problem next to one with rows
    penalty = np.ones((2, 100))
    penalty[1, 3] = 0.0
    with pytest.raises(ValueError, match="must be positive"):
        fit_logistic(x, np.zeros((2, 40)), weights, penalty=penalty)


def test_batched_and_sklearn_probes_agree():
    features, labels, site = _cohort(signal=1.0)
    batched = linear_probe(features, site, folds=3, permutations=9, seed=2, solver="batched")
    reference = linear_probe(features, site, folds=3, permutations=9, seed=2, solver="sklearn")
    np.testing.assert_allclose(batched, reference, atol=1e-9)


def test_three_site_probe_uses_multiclass_path():
    features, labels, site = _cohort(signal=4.0)
    site = np.where(np.arange(len(site)) % 3 == 0, "C", site)
    ba, auc, p, _ = linear_probe(features, site, folds=3, permutations=5, seed=0)
    assert ba > 0.5 and auc > 0.7 and 1 / 6 <= p <= 1


def test_row_space_reduction_keeps_predictions():
    from sklearn.linear_model import LogisticRegression

    from xaudit.analysis.bias.probes import _row_space

    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 30))
    y = np.repeat([0, 1], 10)
    reduced = _row_space(x)
    assert reduced.shape == (20, 20)
    full = LogisticRegression(tol=1e-10, max_iter=10000).fit(x[:15], y[:15]).decision_function(x[15:])
    small = LogisticRegression(tol=1e-10, max_iter=10000).fit(reduced[:15], y[:15]).decision_function(reduced[15:])
    np.testing.assert_allclose(full, small, rtol=1e-5, atol=1e-6)


def test_folds_are_stratified_balanced_and_seeded():
    from xaudit.analysis.bias.probes import _fold_index

    y = np.array([0] * 13 + [1] * 7 + [2] * 5)
    index = _fold_index(y, 5, seed=3)
    for c, n in ((0, 13), (1, 7), (2, 5)):
        per_fold = np.bincount(index[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n  # each class spread evenly
    assert np.bincount(index, minlength=5).tolist() == [5, 5, 5, 5, 5]
    assert np.array_equal(index, _fold_index(y, 5, seed=3))
    assert not np.array_equal(index, _fold_index(y, 5, seed=4))
