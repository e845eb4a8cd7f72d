"""Tree paths -> rules: extraction, simplification, inTrees pruning and merging.

Method: every root-to-leaf path of every tree is a conjunction of threshold tests
(Deng 2019, inTrees, Int J Data Sci Anal 7:277; Friedman & Popescu 2008, RuleFit).
scikit-learn sends ``x <= threshold`` to the left child and ``x > threshold`` right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.tree import _tree

from xaudit.analysis.rules.coverage import class_counts, condition_matrix, coverage_from_columns
from xaudit.analysis.rules.result import Condition

Path = tuple[tuple[int, str, float], ...]  # (tree feature index, op, threshold), root first


def tree_paths(tree) -> list[tuple[int, Path]]:
    """Every root-to-leaf path of a fitted scikit-learn tree, left subtrees first.

    Args:
        tree: a fitted ``DecisionTreeClassifier`` (or its ``tree_``).

    Returns:
        ``[(leaf_node_id, path), ...]``; a path lists ``(feature, op, threshold)`` with
        the tree's own feature indices. A tree that is a single leaf gives ``[(0, ())]``.
    """
    t = getattr(tree, "tree_", tree)
    left, right = t.children_left, t.children_right
    out: list[tuple[int, Path]] = []
    stack: list[tuple[int, Path]] = [(0, ())]
    while stack:
        node, path = stack.pop()
        if left[node] == _tree.TREE_LEAF:
            out.append((node, path))
            continue
        f, thr = int(t.feature[node]), float(t.threshold[node])
        stack.append((int(right[node]), path + ((f, ">", thr),)))
        stack.append((int(left[node]), path + ((f, "<=", thr),)))
    return out


def simplify(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """Keep the tightest test per (feature, op): the smallest ``<=``, the largest ``>``.

    Order of first appearance is kept, so the deepest tests stay last (pruning tries
    them first).
    """
    best: dict[tuple[int, str], Condition] = {}
    for c in conditions:
        key = (c.index, c.op)
        old = best.get(key)
        tighter = old is None or (c.threshold < old.threshold if c.op == "<="
                                  else c.threshold > old.threshold)
        if tighter:
            best[key] = c
    order = list(dict.fromkeys((c.index, c.op) for c in conditions))
    return tuple(best[k] for k in order)


def forest_rules(forest, feature_names: Sequence[str],
                 columns: Sequence[int]) -> list[tuple[Condition, ...]]:
    """Simplified root-to-leaf rules of every tree; single-leaf trees give none.

    Args:
        forest: a fitted forest (``estimators_``) or a list of trees.
        feature_names: names of the full feature matrix.
        columns: ``columns[j]`` = column of the full matrix that the forest's feature j is.
    """
    trees = getattr(forest, "estimators_", forest)
    out = []
    for tree in trees:
        for _, path in tree_paths(tree):
            if path:
                conds = [Condition(feature_names[columns[f]], int(columns[f]), op, thr)
                         for f, op, thr in path]
                out.append(simplify(conds))
    return out


def normal_key(conditions: Sequence[Condition]) -> tuple:
    """Order-free identity of a rule: its sorted (index, op, threshold) tests."""
    return tuple(sorted((c.index, c.op, c.threshold) for c in conditions))


@dataclass
class CandidateSet:
    """Rules under construction, with one shared condition matrix.

    Attributes:
        rules: per rule, its conditions.
        frequency: per rule, tree paths merged into it.
        cond: bool ``(n, n_conditions + 1)`` of `condition_matrix`.
        column: condition -> its column in ``cond``.
    """

    rules: list[tuple[Condition, ...]]
    frequency: list[int]
    cond: np.ndarray
    column: dict[Condition, int]

    @classmethod
    def build(cls, rules: list[tuple[Condition, ...]], features: np.ndarray) -> CandidateSet:
        """Evaluate every distinct condition of ``rules`` once on ``features``."""
        distinct = list(dict.fromkeys(c for r in rules for c in r))
        cond = condition_matrix(distinct, features)
        return cls(rules, [1] * len(rules), cond, {c: i for i, c in enumerate(distinct)})

    def coverage(self) -> np.ndarray:
        """bool ``(n, n_rules)``."""
        return coverage_from_columns(self.cond, [[self.column[c] for c in r] for r in self.rules])

    def keep(self, selected: Sequence[int], frequency: Sequence[int] | None = None) -> None:
        """Keep only the rules at ``selected``, optionally with new frequencies."""
        freq = [self.frequency[i] for i in selected] if frequency is None else list(frequency)
        self.rules = [self.rules[i] for i in selected]
        self.frequency = freq


def prune_rule(rule: tuple[Condition, ...], cols: np.ndarray, predicted: np.ndarray,
               max_decay: float) -> tuple[Condition, ...]:
    """inTrees' ``pruneSingleRule``: drop tests that barely matter.

    The rule's class is fixed to the majority network prediction it covers. Tests are
    tried from the last (deepest) to the first; a test is dropped when the error without
    it exceeds the current error by at most ``max_decay``. One test always remains.

    Args:
        rule: its conditions.
        cols: bool ``(n, len(rule))``, the condition columns in rule order.
        predicted: the network's class per subject.
        max_decay: the `prune_threshold`.
    """
    covered = cols.all(axis=1)
    if len(rule) <= 1 or not covered.any():
        return rule
    hits = predicted == np.bincount(predicted[covered]).argmax()
    error = 1.0 - hits[covered].mean()
    keep = list(range(len(rule)))
    for i in reversed(range(len(rule))):
        if len(keep) <= 1:
            break
        trial = [j for j in keep if j != i]
        trial_cov = cols[:, trial].all(axis=1)
        trial_error = 1.0 - hits[trial_cov].mean()
        if trial_error - error <= max_decay:
            keep, error = trial, trial_error
    return tuple(rule[j] for j in keep)


def prune_all(cands: CandidateSet, predicted: np.ndarray, max_decay: float) -> None:
    """Prune every rule in place (pruning only removes tests, so ``cond`` stays valid)."""
    cands.rules = [prune_rule(r, cands.cond[:, [cands.column[c] for c in r]], predicted,
                              max_decay) for r in cands.rules]


def merge_duplicates(cands: CandidateSet) -> None:
    """Merge rules with the same test set (order-free); frequencies add up.

    The merged rule is written in sorted order (by feature column, then op).
    """
    merged: dict[tuple, int] = {}
    rules, freq = [], []
    for rule, f in zip(cands.rules, cands.frequency):
        key = normal_key(rule)
        if key in merged:
            freq[merged[key]] += f
            continue
        merged[key] = len(rules)
        rules.append(tuple(sorted(rule, key=lambda c: (c.index, c.op, c.threshold))))
        freq.append(f)
    cands.rules, cands.frequency = rules, freq


def merge_equivalent(cands: CandidateSet, covered: np.ndarray) -> np.ndarray:
    """Merge rules covering exactly the same subjects; keep the shortest, then most frequent.

    Returns:
        the coverage matrix of the kept rules.
    """
    packed = np.packbits(covered, axis=0)  # one byte string per rule column
    order = sorted(range(len(cands.rules)),
                   key=lambda i: (len(cands.rules[i]), -cands.frequency[i], i))
    owner: dict[bytes, int] = {}
    total: dict[int, int] = {}
    for i in order:
        key = packed[:, i].tobytes()
        if key in owner:
            total[owner[key]] += cands.frequency[i]
        else:
            owner[key] = i
            total[i] = cands.frequency[i]
    kept = sorted(total)
    cands.keep(kept, [total[i] for i in kept])
    return covered[:, kept]


def rule_statistics(covered: np.ndarray, predicted: np.ndarray,
                    n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per rule: (n_covered, support, majority network class, confidence).

    Ties in the majority go to the lowest class index. Rules covering nobody get
    class 0 and confidence 0; callers drop them.
    """
    counts = class_counts(covered, predicted, n_classes)
    n_cov = counts.sum(axis=1)
    majority = counts.argmax(axis=1)
    confidence = counts.max(axis=1) / np.maximum(n_cov, 1)
    return n_cov, n_cov / covered.shape[0], majority, confidence
