"""Feature roles: planted site / label / mixed / noise features get the right tags."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import f_oneway

from xaudit.analysis.bias import BiasParams, epsilon_squared, feature_roles


def _cohort(seed: int = 0, n_per_cell: int = 25):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 0, 1, 1], n_per_cell)
    site = np.tile(np.repeat(["A", "B"], n_per_cell), 2)
    noise = rng.normal(size=(len(labels), 4))
    b = (site == "B").astype(float)
    features = np.c_[noise[:, 0] + 2 * b, noise[:, 1] + 2 * labels, noise[:, 2] + 2 * b + 2 * labels, noise[:, 3]]
    return features, ["site_f", "label_f", "mixed_f", "noise_f"], labels, site


def test_planted_features_are_tagged():
    features, names, labels, site = _cohort()
    result = feature_roles(features, names, labels, {"site": site}, BiasParams())
    tags = {r.name: r.tag for r in result.features}
    assert tags == {"site_f": "group-signature", "label_f": "pathology", "mixed_f": "mixed", "noise_f": "neutral"}
    assert result.tag_shares["group-signature"] == pytest.approx(0.25)
    site_role = result.features[0]
    assert site_role.group_effect_within_class["site"] > 0.5
    assert site_role.mi_group["site"] > site_role.mi_label


def test_importance_on_site_features_fires_and_on_label_features_reads_as_pathology():
    features, names, labels, site = _cohort()
    params = BiasParams()
    bad = feature_roles(features, names, labels, {"site": site}, params, importances={"site_f": 3.0, "label_f": 1.0})
    [finding] = [f for f in bad.findings if f.id == "roles.importance.group_signature"]
    assert finding.severity == "critical"
    assert bad.importance_shares["group-signature"] == pytest.approx(0.75)
    good = feature_roles(features, names, labels, {"site": site}, params, importances={"label_f": 1.0, "x": 5})
    assert [f.id for f in good.findings if f.points_to != "neutral"] == ["roles.importance.pathology"]
    assert any("unknown feature" in n for n in good.notes)


def test_confounded_design_tags_label_tracking_feature_as_confounded():
    features, names, labels, _ = _cohort()
    site = np.where(labels == 0, "A", "B")
    result = feature_roles(features, names, labels, {"site": site}, BiasParams())
    tags = {r.name: r.tag for r in result.features}
    assert tags["label_f"] == "confounded"
    assert any("no class spans two site values" in n for n in result.notes)


def test_epsilon_squared_matches_anova():
    rng = np.random.default_rng(2)
    codes = np.repeat([0, 1, 2], [10, 14, 9])
    x = rng.normal(size=(len(codes), 3)) + codes[:, None] * np.array([0.0, 0.5, 2.0])
    eps = epsilon_squared(x, codes)
    for j in range(3):
        f = f_oneway(*[x[codes == c, j] for c in range(3)]).statistic
        df_b, df_w = 2, len(codes) - 3
        assert eps[j] == pytest.approx(df_b * (f - 1) / (df_b * f + df_w))


def test_epsilon_squared_not_estimable_without_two_groups():
    assert epsilon_squared(np.ones((5, 2)), np.zeros(5)) is None


def test_one_class_and_one_site_give_notes():
    features, names, _, _ = _cohort()
    labels = np.zeros(len(features), int)
    result = feature_roles(features, names, labels, {"site": np.array(["A"] * len(features))}, BiasParams())
    assert result.notes
    assert {r.tag for r in result.features} == {"neutral"}
