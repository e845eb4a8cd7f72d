"""Rule extraction on degenerate and malformed inputs: clear notes or clear DataErrors."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from xaudit.errors import DataError
from xaudit.analysis.rules import RulesParams, extract_rules

FAST = RulesParams(n_estimators=10, cv_folds=5, seed=0)
CLASSES = ["healthy", "lesion"]


def make(n=60, n_feat=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_feat))
    predicted = (x[:, 0] > 0).astype(int)
    names = [f"features.4:ch{i}" for i in range(n_feat)]
    ids = [f"s{i:03d}" for i in range(n)]
    return x, names, predicted, ids


def run(x, names, predicted, ids, labels=None, groups=None, classes=CLASSES, params=FAST):
    return extract_rules(x, names, predicted, labels, classes, groups or {}, ids, params)


def test_single_predicted_class_gives_no_rules_and_says_why():
    x, names, _, ids = make()
    res = run(x, names, np.ones(60, dtype=int), ids)
    assert res.rules == []
    assert any("single class ('lesion')" in n and "60 subjects" in n for n in res.notes)
    assert res.surrogate.fidelity is None and res.surrogate.n_subjects == 60


def test_constant_features_are_dropped_with_a_note():
    x, names, predicted, ids = make()
    x[:, 2] = 5.0
    x[:, 4] = 0.0
    res = run(x, names, predicted, ids)
    assert res.dropped_features == ["features.4:ch2", "features.4:ch4"]
    assert any("2 constant feature(s)" in n and "'features.4:ch2'" in n for n in res.notes)
    used = {c.index for r in res.rules for c in r.conditions}
    assert used and not used & {2, 4}
    assert res.surrogate.n_features_used == 4


def test_all_constant_features_give_no_rules():
    x, names, predicted, ids = make()
    res = run(np.ones_like(x), names, predicted, ids)
    assert res.rules == []
    assert any("All 6 features are constant" in n for n in res.notes)


def test_fewer_subjects_per_class_than_folds_reduces_folds():
    x, names, _, ids = make(n=20)
    predicted = np.zeros(20, dtype=int)
    predicted[:3] = 1  # smallest predicted class: 3 subjects
    res = run(x, names, predicted, ids)
    assert res.surrogate.cv_folds == 3
    assert any("cv_folds reduced from 5 to 3" in n and "'lesion'" in n for n in res.notes)
    assert res.surrogate.fidelity is not None


def test_one_subject_in_a_class_skips_cross_validation():
    x, names, _, ids = make(n=20)
    predicted = np.zeros(20, dtype=int)
    predicted[0] = 1
    res = run(x, names, predicted, ids, params=RulesParams(n_estimators=5, min_samples_leaf=1))
    assert res.surrogate.cv_folds == 0 and res.surrogate.fidelity is None
    assert res.surrogate.fidelity_train is not None
    assert any("Cross-validation skipped" in n for n in res.notes)


@pytest.mark.parametrize("bad, word", [(np.nan, "1 NaN, 0 Inf"), (-np.inf, "0 NaN, 1 Inf")])
def test_non_finite_features_name_the_feature_and_subject(bad, word):
    x, names, predicted, ids = make()
    x[7, 3] = bad
    with pytest.raises(DataError, match=rf"'features.4:ch3' \({word}.*'s007'"):
        run(x, names, predicted, ids)


def test_values_beyond_float32_are_rejected():
    x, names, predicted, ids = make()
    x[2, 1] = 1e300
    with pytest.raises(DataError, match="float32.*'features.4:ch1'"):
        run(x, names, predicted, ids)


@pytest.mark.parametrize("case, message", [
    ("names", "feature_names has 5 entries but features has 6 columns"),
    ("predicted_len", r"predicted must have shape \(60,\).*Got shape \(59,\)"),
    ("ids_len", "subject_ids has 59 entries but features has 60 rows"),
    ("features_1d", "features must be 2-D"),
    ("group_len", r"groups\['site'\] must have one value per subject"),
    ("labels_range", r"labels must be class indices in \[0, 1\] or -1.*Got 2 for subject 's004'"),
    ("predicted_range", r"predicted must be class indices in \[0, 1\].*Got -1"),
    ("predicted_float", "predicted must hold integer class indices"),
    ("dup_ids", r"subject_ids must be unique; duplicated: \['s001'\]"),
    ("dup_names", "feature_names must be unique"),
    ("text_features", "features must be a numeric array"),
])
def test_malformed_inputs_raise_data_error(case, message):
    x, names, predicted, ids = make()
    labels, groups = None, None
    if case == "names":
        names = names[:5]
    elif case == "predicted_len":
        predicted = predicted[:59]
    elif case == "ids_len":
        ids = ids[:59]
    elif case == "features_1d":
        x = x[:, 0]
    elif case == "group_len":
        groups = {"site": ["A"] * 59}
    elif case == "labels_range":
        labels = predicted.copy()
        labels[4] = 2
    elif case == "predicted_range":
        predicted = predicted.copy()
        predicted[3] = -1
    elif case == "predicted_float":
        predicted = predicted + 0.5
    elif case == "dup_ids":
        ids[2] = "s001"
    elif case == "dup_names":
        names[1] = names[0]
    elif case == "text_features":
        x = np.array([["a"] * 6] * 60)
    with pytest.raises(DataError, match=message):
        run(x, names, predicted, ids, labels=labels, groups=groups)


def test_unknown_labels_are_excluded_from_accuracies():
    x, names, predicted, ids = make()
    labels = predicted.copy()
    labels[:30] = -1
    labels[30:35] = 1 - labels[30:35]
    res = run(x, names, predicted, ids, labels=labels)
    assert res.surrogate.n_labelled == 30
    assert res.surrogate.network_accuracy == pytest.approx(25 / 30)
    assert all(r.n_labelled <= 30 for r in res.rules)


def test_params_are_frozen_and_validated():
    p = RulesParams()
    assert (p.top_n, p.n_estimators, p.max_depth, p.min_samples_leaf) == (10, 100, 3, 3)
    with pytest.raises(ValidationError):
        RulesParams(top_n=0)
    with pytest.raises(ValidationError):
        RulesParams(unknown_key=1)
    with pytest.raises(ValidationError):
        RulesParams(max_features=1.5)
    with pytest.raises(ValidationError):
        p.top_n = 3
