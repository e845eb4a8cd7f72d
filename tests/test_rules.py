"""Rule extraction: tree paths, simplification, pruning, merging, ranking, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from xaudit.analysis.rules import Condition, RulesParams, extract_rules, rule_coverage
from xaudit.analysis.rules.coverage import group_coverage, label_accuracy
from xaudit.analysis.rules.extract import (
    CandidateSet,
    forest_rules,
    merge_duplicates,
    merge_equivalent,
    prune_rule,
    simplify,
    tree_paths,
)
from xaudit.analysis.rules.rank import rank_order, rule_importance

FAST = RulesParams(n_estimators=20, cv_folds=3, seed=0)


def names(n: int) -> list[str]:
    return [f"features.4:ch{i}" for i in range(n)]


def ids(n: int) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def cond(index: int, op: str, thr: float) -> Condition:
    return Condition(f"features.4:ch{index}", index, op, thr)


# --- tree paths --------------------------------------------------------------------------


def test_tree_paths_of_a_known_tree():
    # class 1 exactly on 1.5 < x <= 3.5: the tree must split at 1.5 and 3.5
    x = np.arange(6, dtype=float)[:, None]
    y = np.array([0, 0, 1, 1, 0, 0])
    tree = DecisionTreeClassifier(random_state=0).fit(x, y)
    paths = {frozenset(p) for _, p in tree_paths(tree)}
    assert paths == {
        frozenset({(0, "<=", 1.5)}),
        frozenset({(0, ">", 1.5), (0, "<=", 3.5)}),
        frozenset({(0, ">", 1.5), (0, ">", 3.5)}),
    } or paths == {
        frozenset({(0, ">", 3.5)}),
        frozenset({(0, "<=", 3.5), (0, "<=", 1.5)}),
        frozenset({(0, "<=", 3.5), (0, ">", 1.5)}),
    }


def test_single_leaf_tree_has_one_empty_path():
    tree = DecisionTreeClassifier().fit(np.zeros((4, 2)), np.zeros(4, dtype=int))
    assert tree_paths(tree) == [(0, ())]


def test_path_coverage_equals_leaf_membership():
    """Each leaf's rule covers exactly the subjects the forest sends to that leaf."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)) * rng.uniform(0.01, 100, size=6)  # mixed scales
    y = (x[:, 0] + 0.01 * x[:, 3] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y)
    for tree in forest.estimators_:
        leaves = tree.apply(x.astype(np.float32))
        paths = tree_paths(tree)
        assert {leaf for leaf, _ in paths} == set(np.flatnonzero(tree.tree_.children_left == -1))
        rules = [[cond(f, op, t) for f, op, t in p] for _, p in paths]
        covered = rule_coverage(rules, x)
        for k, (leaf, _) in enumerate(paths):
            np.testing.assert_array_equal(covered[:, k], leaves == leaf)


def test_forest_rules_map_columns_back_to_full_matrix():
    x = np.random.default_rng(2).normal(size=(80, 3))
    y = (x[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=3, max_depth=1, max_features=None,
                                    random_state=0).fit(x, y)
    all_names = ["a:ch0", "a:ch1", "const", "a:ch3", "a:ch4"]
    rules = forest_rules(forest, all_names, columns=[0, 1, 3])  # column 2 was dropped
    assert rules and all(c.feature == all_names[c.index] for r in rules for c in r)
    assert {c.index for r in rules for c in r} == {1}


def test_simplify_keeps_tightest_test_per_feature_and_op():
    rule = [cond(0, "<=", 5.0), cond(0, "<=", 3.0), cond(0, ">", 1.0), cond(0, ">", 2.0),
            cond(1, "<=", 0.0)]
    assert simplify(rule) == (cond(0, "<=", 3.0), cond(0, ">", 2.0), cond(1, "<=", 0.0))


# --- pruning and merging -----------------------------------------------------------------


def _cols(rule, x):
    return rule_coverage([[c] for c in rule], x)


def test_prune_drops_redundant_and_keeps_essential_condition():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    redundant = (cond(0, ">", 0.0), cond(1, ">", -3.0))  # second covers ~everyone
    pred = (x[:, 0] > 0).astype(int)
    assert prune_rule(redundant, _cols(redundant, x), pred, 0.01) == (cond(0, ">", 0.0),)
    essential = (cond(0, ">", 0.0), cond(1, ">", 0.0))
    pred_and = ((x[:, 0] > 0) & (x[:, 1] > 0)).astype(int)
    assert prune_rule(essential, _cols(essential, x), pred_and, 0.01) == essential


def test_prune_threshold_controls_tolerance():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 2))
    # the second test only removes a few errors: about 2.5% of covered subjects
    pred = ((x[:, 0] > 0) & (x[:, 1] > -2.0)).astype(int)
    rule = (cond(0, ">", 0.0), cond(1, ">", -2.0))
    assert prune_rule(rule, _cols(rule, x), pred, 0.0) == rule
    assert prune_rule(rule, _cols(rule, x), pred, 0.1) == (cond(0, ">", 0.0),)


def test_merge_duplicates_is_order_free_and_adds_frequency():
    x = np.random.default_rng(5).normal(size=(50, 3))
    a = (cond(0, ">", 0.0), cond(1, "<=", 0.5))
    b = (cond(1, "<=", 0.5), cond(0, ">", 0.0))
    c = (cond(2, ">", 0.0),)
    cands = CandidateSet.build([a, b, c], x)
    merge_duplicates(cands)
    assert len(cands.rules) == 2
    assert cands.frequency == [2, 1]
    assert set(cands.rules[0]) == set(a)


def test_merge_equivalent_keeps_shortest_rule_with_identical_coverage():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    long = (cond(0, ">", 1.5), cond(1, ">", 1.5))
    short = (cond(0, ">", 1.6),)  # same subjects on this cohort
    other = (cond(0, ">", 0.5),)
    cands = CandidateSet.build([long, short, other], x)
    kept_cov = merge_equivalent(cands, cands.coverage())
    assert cands.rules == [short, other]
    assert cands.frequency == [2, 1]
    np.testing.assert_array_equal(kept_cov, rule_coverage([short, other], x))


# --- vectorised coverage -----------------------------------------------------------------


def test_rule_coverage_equals_naive_loop():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 12))
    rules = []
    for _ in range(60):
        k = int(rng.integers(0, 5))
        rules.append([cond(int(rng.integers(12)), str(rng.choice(["<=", ">"])),
                           float(rng.normal())) for _ in range(k)])
    rules.append([cond(3, "<=", float(x[7, 3]))])  # a threshold equal to a data value
    covered = rule_coverage(rules, x)
    x = x.astype(np.float32)  # documented: compared in float32, as scikit-learn's trees do
    naive = np.zeros_like(covered)
    for i in range(x.shape[0]):
        for r, rule in enumerate(rules):
            # float(): compare in double like sklearn's C code, not in numpy's float32
            naive[i, r] = all(float(x[i, c.index]) <= c.threshold if c.op == "<=" else
                              float(x[i, c.index]) > c.threshold for c in rule)
    np.testing.assert_array_equal(covered, naive)


def test_rule_coverage_matches_by_name_when_given():
    x = np.array([[1.0, 10.0], [2.0, 20.0]])
    rule = [Condition("b", 0, ">", 15.0)]  # index 0 is stale: "b" is column 1 here
    np.testing.assert_array_equal(rule_coverage([rule], x, ["a", "b"])[:, 0], [False, True])


# --- ranking -----------------------------------------------------------------------------


def test_rule_importance_ranks_driving_rule_first():
    rng = np.random.default_rng(7)
    n = 400
    driver = rng.random(n) < 0.4
    noise = rng.random((n, 8)) < 0.4
    covered = np.column_stack([noise[:, :3], driver, noise[:, 3:]])
    predicted = np.where(rng.random(n) < 0.95, driver, ~driver).astype(int)
    importance, notes = rule_importance(covered, predicted, FAST)
    assert np.argmax(importance) == 3
    assert importance[3] > 5 * np.delete(importance, 3).max()
    assert notes == []


def test_the_ranking_fit_from_sparse_indicators_is_the_fit_from_dense_ones():
    from xaudit.analysis.rules.rank import indicator_matrix, l1_logistic

    rng = np.random.default_rng(3)
    covered = rng.random((2500, 12)) < 0.3
    predicted = (covered[:, 2] ^ (rng.random(2500) < 0.1)).astype(int)
    sparse_x = indicator_matrix(covered, rows=1000)  # three blocks, the last one short
    np.testing.assert_array_equal(sparse_x.toarray(), covered.astype(float))
    dense = l1_logistic(FAST, 2).fit(covered.astype(float), predicted).coef_
    np.testing.assert_array_equal(l1_logistic(FAST, 2).fit(sparse_x, predicted).coef_, dense)


def test_class_counts_in_blocks_of_rules_are_exact_counts(monkeypatch):
    import xaudit.analysis.rules.coverage as coverage

    rng = np.random.default_rng(4)
    covered = rng.random((300, 50)) < 0.5
    classes = rng.integers(-1, 3, 300)  # -1: unknown, not counted
    expected = np.array([[np.sum(covered[:, r] & (classes == c)) for c in range(3)] for r in range(50)])
    monkeypatch.setattr(coverage, "COUNT_ELEMENTS", 300 * 7)  # blocks of 7 rules, the last one short
    np.testing.assert_array_equal(coverage.class_counts(covered, classes, 3), expected)


def test_rank_order_breaks_ties_by_confidence_then_support():
    importance = np.array([0.0, 0.0, 0.0, 1.0])
    confidence = np.array([0.9, 0.9, 1.0, 0.5])
    support = np.array([0.1, 0.3, 0.2, 0.1])
    assert rank_order(importance, confidence, support).tolist() == [3, 2, 1, 0]


def _planted(n=240, n_feat=15, seed=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_feat))
    predicted = (x[:, 7] > 0.3).astype(int)
    labels = predicted.copy()
    labels[:20] = 1 - labels[:20]
    return x, predicted, labels


def test_planted_rule_ranks_first():
    x, predicted, labels = _planted()
    res = extract_rules(x, names(15), predicted, labels, ["healthy", "lesion"], {}, ids(240),
                        FAST)
    top = res.rules[0]
    assert [c.index for c in top.conditions] == [7]
    assert top.confidence > 0.97
    assert abs(top.conditions[0].threshold - 0.3) < 0.1
    assert [r.rank for r in res.rules] == list(range(1, len(res.rules) + 1))
    covered = rule_coverage([top], x)[:, 0]
    assert list(top.covered_subjects) == [s for s, c in zip(ids(240), covered) if c]
    assert all(r.covered_subjects == () for r in res.rules[FAST.top_n:])
    assert res.surrogate.fidelity > 0.9
    assert res.surrogate.cv_folds == 3
    # the network is wrong on 20 of 240 subjects, the surrogate imitates the network
    assert res.surrogate.network_accuracy == pytest.approx(220 / 240)
    assert res.surrogate.surrogate_accuracy < res.surrogate.fidelity


def test_multiclass_three_classes():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 10))
    predicted = np.where(x[:, 2] <= -0.5, 0, np.where(x[:, 5] > 0.5, 2, 1))
    res = extract_rules(x, names(10), predicted, None, ["cn", "mci", "ad"], {}, ids(300),
                        FAST)
    assert res.surrogate.fidelity > 0.85
    assert res.surrogate.surrogate_accuracy is None
    assert {r.predicted_class for r in res.top(10)} == {0, 1, 2}
    for r in res.rules:
        covered = rule_coverage([r], x)[:, 0]
        assert r.n_covered == covered.sum()
        assert r.confidence == pytest.approx(np.mean(predicted[covered] == r.predicted_class))
    features_of_top = {c.index for r in res.top(3) for c in r.conditions}
    assert features_of_top <= {2, 5}


# --- linked back to the cohort -----------------------------------------------------------


def test_group_coverage_flags_a_rule_that_fires_on_one_site():
    rng = np.random.default_rng(10)
    site = np.array(["A"] * 60 + ["B"] * 60 + ["C"] * 60)
    on_b = site == "B"
    random_rule = rng.random(180) < 0.33
    out = group_coverage(np.column_stack([on_b, random_rule]), {"site": site}, 0.3, 0.05)
    b, rand = out[0]["site"], out[1]["site"]
    assert b.skewed and b.top_value == "B" and b.cramers_v == pytest.approx(1.0)
    assert b.test == "chi2" and b.p_value < 1e-20
    entry = b.top()
    assert (entry.n_value, entry.n_covered, entry.share_of_rule) == (60, 60, 1.0)
    assert entry.share_of_dataset == pytest.approx(1 / 3)
    assert [v.fraction_covered for v in b.values] == [0.0, 1.0, 0.0]
    assert not rand.skewed and rand.cramers_v < 0.3


def test_group_coverage_two_values_uses_fisher():
    site = np.array(["A"] * 10 + ["B"] * 10)
    covered = np.zeros((20, 1), dtype=bool)
    covered[10:18, 0] = True
    gc = group_coverage(covered, {"site": site}, 0.3, 0.05)[0]["site"]
    assert gc.test == "fisher" and gc.skewed
    assert gc.p_value == pytest.approx(stats.fisher_exact([[0, 8], [10, 2]]).pvalue)


def test_group_coverage_large_table_matches_scipy_chi2():
    rng = np.random.default_rng(13)
    site = rng.choice(["A", "B", "C"], 500)
    covered = (rng.random(500) < np.where(site == "A", 0.6, 0.3))[:, None]
    gc = group_coverage(covered, {"site": site}, 0.3, 0.05)[0]["site"]
    table = [[int(np.sum(covered[:, 0] & (site == v))) for v in "ABC"],
             [int(np.sum(~covered[:, 0] & (site == v))) for v in "ABC"]]
    ref = stats.chi2_contingency(table, correction=False)
    assert gc.test == "chi2"
    assert gc.p_value == pytest.approx(ref.pvalue)
    assert gc.cramers_v == pytest.approx(stats.contingency.association(table))


def test_site_driven_network_is_flagged_end_to_end():
    rng = np.random.default_rng(11)
    n = 200
    site = np.where(np.arange(n) < 100, "A", "B")
    x = rng.normal(size=(n, 12))
    x[:, 4] += 3.0 * (site == "B")  # a scanner signature channel
    predicted = (site == "B").astype(int)  # the network decides on the site
    labels = rng.integers(0, 2, n)
    res = extract_rules(x, names(12), predicted, labels, ["healthy", "lesion"],
                        {"site": site, "sex": rng.choice(["F", "M"], n)}, ids(n), FAST)
    top = res.rules[0]
    assert {c.index for c in top.conditions} == {4}
    assert top.coverage_by_group["site"].skewed
    assert not top.coverage_by_group["sex"].skewed
    assert 0.3 < top.label_accuracy < 0.7  # the site rule says nothing about pathology


def test_label_accuracy_ignores_unknown_labels():
    covered = np.array([[True], [True], [True], [False]])
    labels = np.array([1, -1, 0, 1])
    acc, n_lab = label_accuracy(covered, labels, np.array([1]), 2)
    assert acc[0] == 0.5 and n_lab[0] == 2
    acc, n_lab = label_accuracy(covered, np.full(4, -1), np.array([1]), 2)
    assert np.isnan(acc[0]) and n_lab[0] == 0


def test_extraction_is_deterministic_under_seed():
    x, predicted, labels = _planted(n=120, seed=12)
    a = extract_rules(x, names(15), predicted, labels, ["h", "l"], {}, ids(120), FAST)
    b = extract_rules(x, names(15), predicted, labels, ["h", "l"], {}, ids(120), FAST)
    assert a.to_dict() == b.to_dict()


def test_rule_coverage_boundary_is_inclusive_on_the_left():
    x = np.array([[1.0], [2.0], [2.5], [3.0]])
    covered = rule_coverage([[cond(0, "<=", 2.0)], [cond(0, ">", 2.0)]], x)
    np.testing.assert_array_equal(covered, [[True, False], [True, False], [False, True],
                                            [False, True]])


def test_rule_coverage_compares_in_float32_like_the_forest():
    # 0.1 in float32 is 0.100000001..., above the float64 threshold 0.1
    x = np.array([[0.1], [0.05]])
    covered = rule_coverage([[cond(0, "<=", 0.1)]], x)
    np.testing.assert_array_equal(covered[:, 0], [False, True])


def test_skew_needs_significance_not_only_effect_size():
    site = np.array(["A", "A", "A", "B", "B", "B"])
    covered = np.array([[True], [True], [False], [False], [False], [False]])
    gc = group_coverage(covered, {"site": site}, 0.3, 0.05)[0]["site"]
    assert gc.cramers_v > 0.6 and not gc.skewed  # 2 of 6 subjects: not evidence


def test_cross_validated_fidelity_is_honest_for_a_random_network():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(200, 10))
    predicted = rng.integers(0, 2, 200)  # unrelated to the features
    res = extract_rules(x, names(10), predicted, None, ["a", "b"], {}, ids(200), FAST)
    assert res.surrogate.fidelity < 0.65
    assert res.surrogate.fidelity_train > res.surrogate.fidelity + 0.1
