"""Concepts: does a group value (e.g. "site B") steer the decision? TCAV on group concepts.

Testing with Concept Activation Vectors (Kim et al. 2018, ICML, "Interpretability beyond
feature attribution"): a linear classifier separates a concept's activations from random
counterexamples; its normal is the concept activation vector (CAV). The TCAV score of a
class is the share of that class's subjects whose target logit increases along the CAV
(positive directional derivative). The concept's score is the mean over
``tcav_random_sets`` CAVs, each against a fresh draw of counterexamples.

Significance. Kim et al. compare those scores with random-vs-random CAVs by a t-test. That
test treats the concept's CAVs as independent draws, but they all share one positive set, so
they point the same way and their scores barely vary; when the target gradients share a
direction (common in late layers) any fixed set of subjects then scores near 0 or 1 and comes
out "significant": measured, a random grouping fired in 15 of 20 simulated cohorts. Here the
null is what the concept is: ``tcav_null_sets`` random subject sets of the concept's size and
class mix, each scored with one CAV against counterexamples drawn the same way. The p-value
is the share of null scores at least as far from their mean as the concept's mean score
(two-sided, ``(1 + k) / (1 + R)``), Bonferroni-adjusted over the concept x class tests. A
single-CAV null score varies more than a mean of several CAVs, so the test errs on the
cautious side.

Here each group value is a concept. Counterexamples are drawn from the other group values
with the concept's class mix where possible ("class-matched"), so the CAV points along
the site difference rather than the label difference; where the design makes that
impossible, the finding says so.

Gradients must vary between subjects: for a linear head on pooled features every subject
has the same gradient and TCAV scores collapse to 0 or 1 (use an earlier layer then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from xaudit.analysis.bias.findings import Finding
from xaudit.analysis.bias.inputs import group_strings, values_with_count
from xaudit.analysis.bias.logistic import MAX_FEATURES, fit_logistic
from xaudit.core.jsonable import to_jsonable
from xaudit.config.bias import BiasParams


@dataclass
class ConceptScore:
    """TCAV scores of one group-value concept for one class."""

    column: str
    value: str
    class_name: str
    n_concept: int
    n_class: int
    score_mean: float
    score_std: float
    random_mean: float
    random_std: float
    p_value: float
    p_adjusted: float
    class_matched: bool
    scores: list[float] = field(default_factory=list)
    random_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


@dataclass
class ConceptsResult:
    """All concept scores, findings and notes."""

    scores: list[ConceptScore] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"scores": [s.to_dict() for s in self.scores], "notes": self.notes,
                            "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings]})


def concept_activation_vector(activations: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Unit CAV in activation space: the normal of a logistic regression positive vs negative.

    The classifier is fit on standardised activations for conditioning; its weights are
    mapped back to raw activation coordinates (w / sd) so the directional derivative with
    raw-activation gradients is meaningful.
    """
    x = activations[np.concatenate([positive, negative])]
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(max_iter=1000).fit((x - mean) / scale, y)
    w = clf.coef_[0] / scale
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else w


def concept_activation_vectors(activations: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """`concept_activation_vector` of many (positive, negative) subject sets, fitted together.

    The same fits (each on activations standardised over its own subjects), solved at once
    by `fit_logistic` with each problem's scales as penalty weights: measured 20 ms per
    sklearn fit, about 220 fits per run, against one batched Newton solve. A wide layer
    (more than `MAX_FEATURES` channels) is solved in each set's row space when the sets have
    at most `MAX_FEATURES` subjects: 128 channels, 420 sets of 32 subjects, 0.2 s against
    sklearn's 5.9 s. Beyond that, one sklearn fit each.
    """
    if not pairs:
        return []
    if min(activations.shape[1], max(len(p) + len(n) for p, n in pairs)) > MAX_FEATURES:
        return [concept_activation_vector(activations, p, n) for p, n in pairs]
    centre, spread = activations.mean(axis=0), activations.std(axis=0)
    spread[spread == 0] = 1.0
    x = (activations - centre) / spread  # for conditioning; the fits are scale-equivariant
    y, weights = np.zeros((len(pairs), len(x))), np.zeros((len(pairs), len(x)))
    penalty = np.ones((len(pairs), x.shape[1]))
    for b, (positive, negative) in enumerate(pairs):
        rows = np.concatenate([positive, negative])
        y[b, positive], weights[b, rows] = 1.0, 1.0
        scale = activations[rows].std(axis=0)
        scale[scale == 0] = 1.0
        penalty[b] = (scale / spread) ** 2
    raw = fit_logistic(x, y, weights, c=1.0, penalty=penalty)[:, :-1] / spread
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    return list(np.where(norms > 0, raw / np.where(norms > 0, norms, 1.0), raw))


def tcav_score(gradients: np.ndarray, cav: np.ndarray) -> float:
    """Share of rows whose directional derivative ``gradient . cav`` is positive."""
    return float(np.mean(gradients @ cav > 0))


def tcav(
    activations: np.ndarray, gradients: np.ndarray, targets: np.ndarray, labels: np.ndarray,
    groups: dict[str, np.ndarray], class_names: list[str], params: BiasParams,
) -> ConceptsResult:
    """TCAV of every group value (as a concept) for every target class.

    Args:
        activations: ``(n, F)`` layer activations (pooled or flattened).
        gradients: ``(n, F)`` gradient of the target logit w.r.t. the activations.
        targets: ``(n,)`` the class whose logit each gradient row belongs to.
        labels: ``(n,)`` true classes (-1 unknown), used to class-match counterexamples.
        groups: group column -> ``(n,)`` values.
        class_names: the class names.
        params: ``tcav_random_sets``, ``tcav_null_sets``, ``tcav_p_value``, ``tcav_score_difference``,
            ``min_group_size``, ``seed``.

    Returns:
        A `ConceptsResult`.
    """
    with threadpool_limits(limits=1):  # hundreds of tiny fits: BLAS threads only contend
        return _tcav(activations, gradients, targets, labels, groups, class_names, params)


def _tcav(activations, gradients, targets, labels, groups, class_names, params) -> ConceptsResult:
    result = ConceptsResult()
    null_cache: dict = {}
    spread = np.abs(gradients - gradients.mean(axis=0)).max()
    if spread <= 1e-9 * max(np.abs(gradients).max(), 1e-30):
        result.notes.append("TCAV skipped: the gradients are the same for every subject (a linear head on "
                            "pooled features?); TCAV needs an earlier layer.")
        return result
    for i, (column, raw) in enumerate(groups.items()):
        values, known = group_strings(raw)
        tested = values_with_count(values, known, params.min_group_size)
        for value in sorted(set(values[known].tolist()) - set(tested)):
            result.notes.append(f"TCAV {column}={value}: only {int((known & (values == value)).sum())} subjects"
                                f" (fewer than {params.min_group_size}); not tested as a concept.")
        for j, value in enumerate(tested):
            positive = np.flatnonzero(known & (values == value))
            others = np.flatnonzero(known & (values != value))
            if len(others) < params.min_group_size:
                result.notes.append(f"TCAV {column}={value}: fewer than {params.min_group_size} other subjects.")
                continue
            rng = np.random.default_rng([params.seed, i, j])
            pairs, matched = _concept_sets(positive, others, labels, params.tcav_random_sets, rng)
            classes, counts = np.unique(labels[positive], return_counts=True)
            key = (classes.tobytes(), counts.tobytes(), known.tobytes())
            null_pairs = [] if key in null_cache else _null_sets(  # sets of one size and class mix share a null
                positive, np.flatnonzero(known), labels, params.tcav_null_sets, np.random.default_rng([params.seed, i, j, 1]))
            fitted = concept_activation_vectors(activations, pairs + null_pairs)
            cavs = fitted[:len(pairs)]
            null_cache.setdefault(key, fitted[len(pairs):])
            result.scores += _score_classes(column, value, len(positive), matched, cavs, null_cache[key],
                                            gradients, targets, class_names, params, result.notes)
    _adjust(result.scores)
    _note_resolution(result, params)
    result.signature_tests = len(result.scores)
    result.findings = [f for s in result.scores for f in _finding(s, params)]
    return result


def _counterexamples(positive, others, labels, rng) -> tuple[np.ndarray, bool]:
    """Others with the positive set's class mix where possible; flag whether it matched."""
    chosen, matched = [], True
    for cls, count in zip(*np.unique(labels[positive], return_counts=True)):
        pool = others[labels[others] == cls]
        take = min(count, len(pool))
        matched &= take == count
        chosen.append(rng.choice(pool, size=take, replace=False))
    chosen_idx = np.concatenate(chosen) if chosen else np.empty(0, dtype=int)
    deficit = min(len(positive), len(others)) - len(chosen_idx)
    if deficit > 0:
        rest = np.setdiff1d(others, chosen_idx)
        chosen_idx = np.concatenate([chosen_idx, rng.choice(rest, size=deficit, replace=False)])
    return chosen_idx, bool(matched)


def _concept_sets(positive, others, labels, sets, rng) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """``sets`` (positive, counterexamples) pairs of one concept; whether every draw was class-matched."""
    pairs, matched = [], True
    for _ in range(sets):
        negative, ok = _counterexamples(positive, others, labels, rng)
        matched &= ok
        pairs.append((positive, negative))
    return pairs, matched


def _null_sets(positive, pool, labels, sets, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """``sets`` random subject sets with the concept's size and class mix (drawn from ``pool``),
    each against counterexamples drawn from the rest of the pool like the concept's own: the
    null of the test."""
    pairs = []
    for _ in range(sets):
        drawn, _ = _counterexamples(positive, pool, labels, rng)  # the concept's size and class mix
        rest = np.setdiff1d(pool, drawn)
        if len(rest) < 2:
            continue
        negative, _ = _counterexamples(drawn, rest, labels, rng)
        pairs.append((drawn, negative))
    return pairs


def _score_classes(column, value, n_concept, matched, cavs, randoms, gradients, targets,
                   class_names, params, notes) -> list[ConceptScore]:
    out = []
    for c, name in enumerate(class_names):
        rows = targets == c
        if rows.sum() < params.min_group_size:
            if rows.any():
                notes.append(f"TCAV {column}={value} for {name}: only {int(rows.sum())} subjects target it.")
            continue
        scores = np.array([tcav_score(gradients[rows], v) for v in cavs])
        random_scores = np.array([tcav_score(gradients[rows], v) for v in randoms])
        p = _rank_p_value(float(scores.mean()), random_scores)
        out.append(ConceptScore(column, value, name, n_concept, int(rows.sum()), float(scores.mean()),
                                float(scores.std(ddof=1)), float(random_scores.mean()),
                                float(random_scores.std(ddof=1)), p, p, matched,
                                scores.tolist(), random_scores.tolist()))
    return out


def _rank_p_value(score: float, null: np.ndarray) -> float:
    """Two-sided empirical p-value of ``score`` among the ``null`` scores: ``(1 + k) / (1 + R)``,
    k the null scores at least as far from the null mean as ``score``. 1 without a null."""
    if len(null) == 0:
        return 1.0
    centre = null.mean()
    k = int(np.sum(np.abs(null - centre) >= abs(score - centre) - 1e-12))
    return (1 + k) / (1 + len(null))


def _adjust(scores: list[ConceptScore]) -> None:
    for s in scores:  # Bonferroni over all concept x class tests
        s.p_adjusted = min(1.0, s.p_value * len(scores))


def _note_resolution(result: ConceptsResult, params: BiasParams) -> None:
    """Say so when no test could reach the threshold: too few null sets for the Bonferroni factor."""
    tests = len(result.scores)
    if tests and min(1.0, tests / (1 + params.tcav_null_sets)) > params.tcav_p_value:
        result.notes.append(
            f"TCAV cannot reach p <= {params.tcav_p_value} with {tests} tests and {params.tcav_null_sets} "
            f"null sets (smallest adjusted p {tests / (1 + params.tcav_null_sets):.2g}); raise "
            f"bias.tcav_null_sets to at least {int(np.ceil(tests / params.tcav_p_value))}.")


def _finding(s: ConceptScore, params: BiasParams) -> list[Finding]:
    delta = s.score_mean - s.random_mean
    if s.p_adjusted > params.tcav_p_value or abs(delta) < params.tcav_score_difference:
        return []
    direction = "towards" if delta > 0 else "away from"
    caveat = ("" if s.class_matched else
              f" The counterexamples could not match the concept's class mix ({s.column} is confounded "
              f"with the label), so this direction mixes {s.column} and label.")
    return [Finding(
        id=f"concepts.{s.column}.{s.value}.{s.class_name}", check="concepts", column=s.column,
        severity="warning" if s.class_matched else "info",
        title=(f"the concept {s.column}={s.value} pushes decisions {direction} {s.class_name} "
               f"(TCAV {s.score_mean:.2f} vs random sets {s.random_mean:.2f}, p={s.p_adjusted:.2g})"),
        message=(f"Along the direction that separates {s.column}={s.value} subjects from others in the "
                 f"layer's activations, the {s.class_name} logit rises for {s.score_mean:.0%} of "
                 f"{s.n_class} subjects (random subject sets of the same size and class mix: "
                 f"{s.random_mean:.0%} +- {s.random_std:.0%}; "
                 f"Bonferroni p={s.p_adjusted:.2g})." + caveat),
        evidence=s.to_dict(),
        threshold={"tcav_p_value": params.tcav_p_value, "tcav_score_difference": params.tcav_score_difference},
        points_to="signature" if s.class_matched else "design",
    )]
