"""TCAV: a planted concept direction is significant; a random grouping is not."""

from __future__ import annotations

import numpy as np
import pytest

from xaudit.analysis.bias import BiasParams, concept_activation_vector, tcav, tcav_score
from xaudit.analysis.bias.concepts import concept_activation_vectors

CLASSES = ["healthy", "lesion"]
PARAMS = BiasParams(tcav_random_sets=6)


def _cohort(seed: int = 0, n_per_cell: int = 20, dims: int = 8):
    """Site B shifts activations along e0; the lesion logit's gradient points along e0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 0, 1, 1], n_per_cell)
    site = np.tile(np.repeat(["A", "B"], n_per_cell), 2)
    scanner = rng.choice(["X", "Y"], len(labels))  # unrelated to anything
    activations = rng.normal(size=(len(labels), dims))
    activations[:, 0] += 3.0 * (site == "B")
    gradients = rng.normal(size=(len(labels), dims))
    gradients[:, 0] += 1.5 * (labels == 1)  # healthy gradients: pure noise
    return activations, gradients, labels, {"site": site, "scanner": scanner}


def test_cav_points_along_the_planted_direction():
    activations, _, _, groups = _cohort()
    site = groups["site"]
    cav = concept_activation_vector(activations, np.flatnonzero(site == "B"), np.flatnonzero(site == "A"))
    assert cav[0] > 0.9
    assert np.linalg.norm(cav) == np.float64(1.0) or abs(np.linalg.norm(cav) - 1) < 1e-12
    assert tcav_score(np.eye(8)[:1], cav) == 1.0


def test_planted_concept_is_significant_and_random_grouping_is_not():
    activations, gradients, labels, groups = _cohort()
    result = tcav(activations, gradients, labels, labels, groups, CLASSES, PARAMS)
    by_key = {(s.column, s.value, s.class_name): s for s in result.scores}
    towards = by_key[("site", "B", "lesion")]
    away = by_key[("site", "A", "lesion")]
    assert towards.score_mean > 0.8 and towards.p_adjusted <= PARAMS.tcav_p_value
    assert away.score_mean < 0.2 and away.p_adjusted <= PARAMS.tcav_p_value
    assert towards.class_matched
    ids = {f.id for f in result.findings}
    assert {"concepts.site.B.lesion", "concepts.site.A.lesion"} <= ids
    assert not any(i.startswith("concepts.scanner") for i in ids)
    assert not any(i.endswith(".healthy") for i in ids)  # healthy gradients carry no direction
    assert result.signature_tests == len(result.scores) == 8


def test_confounded_concept_is_reported_as_design_not_signature():
    activations, gradients, labels, _ = _cohort()
    site = np.where(labels == 1, "B", "A")
    activations[:, 0] += 3.0 * (site == "B")
    result = tcav(activations, gradients, labels, labels, {"site": site}, CLASSES, PARAMS)
    assert result.scores and all(not s.class_matched for s in result.scores)
    # the null sets share the concept's class mix, i.e. they are the label itself here
    assert all(f.points_to == "design" and f.severity == "info" for f in result.findings)


def test_identical_gradients_are_skipped_with_a_note():
    activations, _, labels, groups = _cohort()
    gradients = np.tile(np.arange(8.0), (len(labels), 1))
    result = tcav(activations, gradients, labels, labels, groups, CLASSES, PARAMS)
    assert result.scores == [] and "same for every subject" in result.notes[0]


def test_tiny_groups_give_notes():
    activations, gradients, labels, _ = _cohort(n_per_cell=3)
    site = np.array(["A"] * (len(labels) - 2) + ["B", "B"])
    result = tcav(activations, gradients, labels, labels, {"site": site}, CLASSES, PARAMS)
    assert result.findings == []
    assert any("site=B: only 2 subjects" in note for note in result.notes), result.notes  # too small to test
    assert any("site=A: fewer than" in note for note in result.notes), result.notes  # nothing to contrast with


def _wide_cohort(seed: int, dims: int = 128, n_per_cell: int = 15):
    """Pooled-CNN-like activations (low rank + noise, more features than subjects) whose target
    gradients share one direction: any fixed subject set then scores near 0 or 1."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 0, 1, 1], n_per_cell)
    site = np.tile(np.repeat(["A", "B"], n_per_cell), 2)
    sex = rng.choice(["F", "M"], len(labels))  # random by construction
    activations = rng.normal(size=(len(labels), 8)) @ rng.normal(size=(8, dims))
    activations += 0.3 * rng.normal(size=activations.shape)
    activations[:, :4] += 3.0 * (site == "B")[:, None]
    gradients = 2.0 * rng.normal(size=dims) + rng.normal(size=(len(labels), dims))
    return activations, gradients, labels, {"site": site, "sex": sex}


def test_random_grouping_is_not_significant_when_gradients_share_a_direction():
    """The t-test of Kim et al. (concept CAVs vs random-vs-random CAVs) called a random grouping
    significant in 3 of these 4 cohorts (15 of 20 in a wider simulation): the concept's CAVs
    share their positive set, so their scores barely vary."""
    for seed in range(4):
        activations, gradients, labels, groups = _wide_cohort(seed)
        result = tcav(activations, gradients, labels, labels, {"sex": groups["sex"]}, CLASSES, BiasParams())
        assert result.scores
        assert result.findings == [], [f.title for f in result.findings]


def test_planted_concept_stays_significant_in_wide_activations():
    activations, _, labels, groups = _wide_cohort(0)
    direction = np.zeros(activations.shape[1])
    direction[:4] = 1.0  # the site-B shift in activation space
    gradients = np.random.default_rng(5).normal(size=activations.shape)
    gradients[labels == 1] += direction  # the lesion logit rises along it
    result = tcav(activations, gradients, labels, labels, {"site": groups["site"]}, CLASSES, PARAMS)
    ids = {f.id for f in result.findings}
    assert {"concepts.site.B.lesion", "concepts.site.A.lesion"} <= ids
    assert not any(i.endswith(".healthy") for i in ids)


def test_too_few_null_sets_for_the_bonferroni_factor_is_noted():
    activations, gradients, labels, groups = _cohort()
    params = BiasParams(tcav_random_sets=3, tcav_null_sets=19)
    result = tcav(activations, gradients, labels, labels, groups, CLASSES, params)
    assert result.findings == []
    assert any("raise bias.tcav_null_sets to at least 160" in n for n in result.notes), result.notes


@pytest.mark.parametrize("channels", [12, 128])  # 128: a wide layer, solved in each set's row space
def test_batched_cavs_equal_one_sklearn_fit_each(channels, monkeypatch):
    import xaudit.analysis.bias.concepts as concepts

    rng = np.random.default_rng(3)
    activations = rng.normal(size=(60, channels)) * rng.uniform(0.1, 5.0, channels) + rng.normal(size=channels)
    activations[:, 5] = 2.0  # a constant channel
    pairs = []
    for _ in range(7):
        order = rng.permutation(60)
        pairs.append((order[:15], order[15:32]))
    with monkeypatch.context() as patched:  # batched, not one sklearn fit each
        patched.setattr(concepts, "concept_activation_vector", None)
        batched = concept_activation_vectors(activations, pairs)
    for (positive, negative), cav in zip(pairs, batched):
        one = concept_activation_vector(activations, positive, negative)
        assert float(cav @ one) > 0.9999
        assert np.linalg.norm(cav) == pytest.approx(1.0)
