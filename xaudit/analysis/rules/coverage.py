"""Which subjects a rule covers, vectorised, and how that coverage splits over groups.

Rule evaluation never loops over subjects in Python: each distinct condition is evaluated
once on the whole column, then rules are AND-ed position by position (a loop over the
longest rule's length, a handful of steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from xaudit.errors import DataError
from xaudit.analysis.rules.result import Condition, GroupCoverage, Rule, ValueCoverage

_CHUNK = 256  # conditions evaluated per block, bounds the float32 gather to n x 256
COUNT_ELEMENTS = 1_000_000  # subjects x rules per block of `class_counts`: 4 MB of float32


def condition_matrix(conditions: Sequence[Condition], features: np.ndarray,
                     columns: Sequence[int] | None = None) -> np.ndarray:
    """Evaluate conditions on every subject.

    Args:
        conditions: the tests.
        features: ``(n, n_features)``; compared in float32 like scikit-learn's trees.
        columns: column per condition; default ``condition.index``.

    Returns:
        bool ``(n, len(conditions) + 1)``; the last column is all True (padding for
        `coverage_from_columns`).
    """
    x = np.asarray(features, dtype=np.float32)
    cols = np.array([c.index for c in conditions] if columns is None else columns,
                    dtype=np.int64)
    thr = np.array([c.threshold for c in conditions], dtype=np.float64)
    le = np.array([c.op == "<=" for c in conditions], dtype=bool)
    out = np.ones((x.shape[0], len(conditions) + 1), dtype=bool)
    for start in range(0, len(conditions), _CHUNK):
        sl = slice(start, min(start + _CHUNK, len(conditions)))
        vals = x[:, cols[sl]]  # float32 vs float64 threshold: same promotion as sklearn
        out[:, sl] = np.where(le[sl], vals <= thr[sl], vals > thr[sl])
    return out


def coverage_from_columns(cond: np.ndarray, rule_columns: Sequence[Sequence[int]]) -> np.ndarray:
    """AND the condition columns of each rule.

    Args:
        cond: `condition_matrix` output (last column all True).
        rule_columns: per rule, the columns of its conditions in ``cond``.

    Returns:
        bool ``(n, n_rules)``.
    """
    pad_col = cond.shape[1] - 1
    longest = max((len(r) for r in rule_columns), default=0)
    index = np.full((len(rule_columns), max(longest, 1)), pad_col, dtype=np.int64)
    for i, cols in enumerate(rule_columns):
        index[i, : len(cols)] = cols
    covered = np.ones((cond.shape[0], len(rule_columns)), dtype=bool)
    for k in range(longest):
        covered &= cond[:, index[:, k]]
    return covered


def rule_coverage(rules: Sequence[Rule | Sequence[Condition]], features: np.ndarray,
                  feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Which subjects each rule covers.

    Args:
        rules: `Rule` objects or plain sequences of `Condition`.
        features: ``(n_subjects, n_features)``.
        feature_names: if given, conditions are matched to columns by name (use this
            for a feature matrix other than the one the rules came from); else by index.

    Returns:
        bool ``(n_subjects, n_rules)``; a rule without conditions covers everyone.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise DataError(f"features must be 2-D (n_subjects, n_features). Got shape {x.shape}.")
    lookup = None if feature_names is None else {str(n): i for i, n in enumerate(feature_names)}
    unique: dict[tuple, int] = {}
    conds: list[Condition] = []
    cols: list[int] = []
    per_rule: list[list[int]] = []
    for rule in rules:
        own = []
        for c in getattr(rule, "conditions", rule):
            key = (c.feature, c.index, c.op, c.threshold)
            if key not in unique:
                unique[key] = len(conds)
                conds.append(c)
                cols.append(_column(c, lookup, x.shape[1]))
            own.append(unique[key])
        per_rule.append(own)
    return coverage_from_columns(condition_matrix(conds, x, cols), per_rule)


def _column(c: Condition, lookup: dict[str, int] | None, n_features: int) -> int:
    if lookup is not None:
        if c.feature not in lookup:
            raise DataError(f"rule condition on feature {c.feature!r}, which is not among the "
                            f"{len(lookup)} given feature_names.")
        return lookup[c.feature]
    if not 0 <= c.index < n_features:
        raise DataError(f"rule condition on {c.feature!r} uses column {c.index}, but features "
                        f"has {n_features} columns; pass feature_names to match by name.")
    return c.index


def class_counts(covered: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Per rule, how many covered subjects have each class: int ``(n_rules, n_classes)``.

    Subjects with class -1 (unknown) are not counted.
    """
    known = classes >= 0
    rows = covered if known.all() else covered[known]
    # a float matmul is exact for counts below 2**24 (float32) and far faster than an int one
    dtype = np.float32 if len(rows) < 2**24 else np.float64
    onehot = np.zeros((len(rows), n_classes), dtype=dtype)
    onehot[np.arange(len(rows)), classes[known]] = 1.0
    out = np.empty((covered.shape[1], n_classes), dtype=np.int64)
    step = max(1, COUNT_ELEMENTS // max(len(rows), 1))  # rules at a time: memory stays flat in the cohort
    for start in range(0, covered.shape[1], step):
        out[start:start + step] = np.rint(rows[:, start:start + step].T.astype(dtype) @ onehot)
    return out


def group_coverage(covered: np.ndarray, groups: dict[str, np.ndarray], min_v: float,
                   alpha: float) -> list[dict[str, GroupCoverage]]:
    """Break each rule's coverage down by every group column.

    Args:
        covered: bool ``(n, n_rules)``.
        groups: column -> str value per subject.
        min_v: Cramer's V from which a rule counts as skewed.
        alpha: family-wise level; a rule is flagged when its p-value is below
            ``alpha / (n_rules * n_columns)`` (Bonferroni) and V >= ``min_v``.

    Returns:
        per rule, column -> `GroupCoverage`.
    """
    n_rules = covered.shape[1]
    level = alpha / max(1, n_rules * len(groups))
    out: list[dict[str, GroupCoverage]] = [{} for _ in range(n_rules)]
    for column, values in groups.items():
        for r, gc in enumerate(_column_coverage(covered, column, values, min_v, level)):
            out[r][column] = gc
    return out


def _column_coverage(covered: np.ndarray, column: str, values: np.ndarray, min_v: float,
                     level: float) -> list[GroupCoverage]:
    n = covered.shape[0]
    names, inverse = np.unique(values, return_inverse=True)
    per_value = class_counts(covered, inverse.astype(np.int64), len(names))  # (R, V)
    n_value = np.bincount(inverse, minlength=len(names))
    n_cov = covered.sum(axis=0)
    v_stat, p_val, test = _association(per_value, n_value, n_cov, n)
    share_rule = per_value / np.maximum(n_cov, 1)[:, None]
    share_data = n_value / n
    top = np.argmax(share_rule - share_data[None, :], axis=1)
    result = []
    for r in range(covered.shape[1]):
        entries = [ValueCoverage(str(names[j]), int(n_value[j]), int(per_value[r, j]),
                                 float(per_value[r, j] / n_value[j]), float(share_rule[r, j]),
                                 float(share_data[j])) for j in range(len(names))]
        result.append(GroupCoverage(column, entries, float(v_stat[r]), float(p_val[r]), test[r],
                                    str(names[top[r]]),
                                    bool(v_stat[r] >= min_v and p_val[r] < level)))
    return result


def _association(per_value: np.ndarray, n_value: np.ndarray, n_cov: np.ndarray,
                 n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Cramer's V and p-value of the 2 x V table (covered / not) x value, per rule.

    V uses the chi-square statistic (for a 2 x V table, V = sqrt(chi2 / n)). The p-value
    is the (uncorrected) chi-square test, except for 2 x 2 tables with an expected count
    below 5 (Cochran's rule), where chi-square is unreliable and Fisher's exact test is
    used; Fisher everywhere cost seconds on thousands of subjects for no gain.
    """
    n_rules, n_vals = per_value.shape
    expected = n_cov[:, None] * n_value[None, :] / n
    expected_out = (n - n_cov)[:, None] * n_value[None, :] / n
    observed_out = n_value[None, :] - per_value
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = (np.where(expected > 0, (per_value - expected) ** 2 / expected, 0.0).sum(1)
                + np.where(expected_out > 0, (observed_out - expected_out) ** 2 / expected_out,
                           0.0).sum(1))
    defined = (n_vals > 1) & (n_cov > 0) & (n_cov < n)
    v_stat = np.where(defined, np.sqrt(np.clip(chi2 / n, 0.0, 1.0)), 0.0)
    p_val = np.ones(n_rules)
    test = ["none"] * n_rules
    small = np.minimum(expected.min(axis=1), expected_out.min(axis=1)) < 5
    for r in np.flatnonzero(defined):
        if n_vals == 2 and small[r]:
            table = np.stack([per_value[r], observed_out[r]])
            p_val[r] = stats.fisher_exact(table).pvalue
            test[r] = "fisher"
        else:
            p_val[r] = stats.chi2.sf(chi2[r], n_vals - 1)
            test[r] = "chi2"
    return v_stat, p_val, test


def label_accuracy(covered: np.ndarray, labels: np.ndarray, rule_classes: np.ndarray,
                   n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per rule, accuracy of its class on covered subjects with a known label (>= 0).

    Returns:
        (accuracy float with NaN where no covered subject is labelled, n_labelled int).
    """
    counts = class_counts(covered, labels, n_classes)
    n_labelled = counts.sum(axis=1)
    correct = counts[np.arange(counts.shape[0]), rule_classes]
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n_labelled > 0, correct / np.maximum(n_labelled, 1), np.nan)
    return acc, n_labelled
