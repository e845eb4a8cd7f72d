"""SpRAy: two planted strategies are recovered and matched to the group that drives them."""

from __future__ import annotations

import numpy as np
import pytest

from xaudit.analysis.bias import BiasParams, downsample_map, spray

CLASSES = ["healthy", "lesion"]


def _maps(seed: int = 0, n_per_site: int = 15):
    """Lesion maps look top-left at site A and bottom-right at site B; healthy maps anywhere."""
    rng = np.random.default_rng(seed)
    n = 4 * n_per_site
    labels = np.repeat([0, 1], 2 * n_per_site)
    site = np.tile(np.repeat(["A", "B"], n_per_site), 2)
    maps = rng.normal(0, 0.3, size=(n, 8, 8))
    lesion_a = (labels == 1) & (site == "A")
    lesion_b = (labels == 1) & (site == "B")
    maps[lesion_a, :4, :4] += 2.0
    maps[lesion_b, 4:, 4:] += 2.0
    ids = np.array([f"sub-{i:02d}" for i in range(n)])
    return maps.reshape(n, -1), labels, site, ids


def test_two_planted_strategies_are_recovered_and_follow_site():
    maps, labels, site, ids = _maps()
    result = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams(), subject_ids=ids)
    lesion = next(c for c in result.classes if c.class_name == "lesion")
    assert lesion.n_clusters == 2 and lesion.chosen_by == "eigengap"
    assert lesion.ami_groups["site"] > 0.9
    assert lesion.ami_label is None  # one true class inside a class: nothing to agree with
    sizes = sorted(c.size for c in lesion.clusters)
    assert sizes == [15, 15]
    for cluster in lesion.clusters:
        assert cluster.representative in ids[labels == 1]
        assert len(cluster.group_counts["site"]) == 1  # each strategy is one site
    assert lesion.mean_maps.shape == (2, 64)
    ids_found = {f.id for f in result.findings}
    assert "spray.site.lesion" in ids_found
    assert "spray.site.healthy" not in ids_found
    assert result.to_dict()["classes"][0]["class_name"] == "healthy"


def test_given_cluster_count_is_used():
    maps, labels, site, _ = _maps()
    result = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams(spray_clusters=3))
    assert all(c.n_clusters == 3 and c.chosen_by == "given" for c in result.classes)


def test_too_few_maps_give_a_note():
    maps, labels, site, _ = _maps(n_per_site=2)
    result = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams())
    assert result.classes == [] and len(result.notes) == 2


def test_downsample_map_keeps_the_mean():
    a = np.random.default_rng(0).random((16, 16, 16))
    small = downsample_map(a, (4, 4, 4))
    assert small.shape == (4, 4, 4)
    assert small.mean() == pytest.approx(a.mean(), abs=0.02)


def test_a_class_above_spray_max_maps_is_clustered_on_an_even_subsample_and_says_so():
    maps, labels, site, ids = _maps()  # 30 maps per class
    result = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams(spray_max_maps=20), subject_ids=ids)
    lesion = next(c for c in result.classes if c.class_name == "lesion")
    assert (lesion.n, lesion.n_class) == (20, 30) and lesion.subsampled
    assert len(lesion.members) == 20 and set(lesion.members) <= set(np.flatnonzero(labels == 1))
    assert lesion.members[0] == 30 and lesion.members[-1] == 59  # evenly spaced, first and last kept
    assert lesion.n_clusters == 2 and lesion.ami_groups["site"] > 0.9  # both strategies survive the draw
    assert lesion.to_dict()["n_class"] == 30
    assert any("clustered 20 of 30 maps" in note and "spray_max_maps" in note for note in result.notes)


def test_a_class_at_or_below_spray_max_maps_is_clustered_whole_and_its_result_is_unchanged():
    maps, labels, site, ids = _maps()
    capped = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams(spray_max_maps=30), subject_ids=ids)
    whole = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams(), subject_ids=ids)
    assert [c.to_dict() for c in capped.classes] == [c.to_dict() for c in whole.classes]
    assert all("n_class" not in c.to_dict() for c in capped.classes) and not capped.notes


def test_the_affinity_is_sparse_symmetric_and_the_knn_graph_joined_either_way():
    from scipy import sparse
    from sklearn.neighbors import kneighbors_graph

    from xaudit.analysis.bias.spray import knn_affinity

    unit = np.random.default_rng(1).normal(size=(40, 6))
    affinity = knn_affinity(unit, 5)
    dense = kneighbors_graph(unit, n_neighbors=5, include_self=False).toarray()
    assert sparse.issparse(affinity)  # a dense (n, n) affinity and its copies were most of SpRAy's memory
    np.testing.assert_array_equal(affinity.toarray(), np.maximum(dense, dense.T))


def test_clustering_leaves_the_callers_maps_as_they_were_and_means_the_raw_maps():
    maps, labels, site, ids = _maps()
    maps = maps.astype(np.float32)
    before = maps.copy()
    result = spray(maps, labels, labels, {"site": site}, CLASSES, BiasParams(), subject_ids=ids)
    np.testing.assert_array_equal(maps, before)  # the rows are normalised in a copy, never in place
    lesion = next(c for c in result.classes if c.class_name == "lesion")
    for j in range(lesion.n_clusters):
        inside = lesion.members[lesion.assignments == j]
        np.testing.assert_allclose(lesion.mean_maps[j], maps[inside].astype(float).mean(axis=0), rtol=1e-6)
