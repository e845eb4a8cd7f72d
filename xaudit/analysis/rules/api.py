"""The rules stage: surrogate forest -> rules -> pruning and merging -> ranking -> coverage.

Method: layer features per subject train a random forest that imitates the network; its
root-to-leaf paths become rules, pruned and merged as in inTrees (Deng 2019), ranked by
RuleFit importance (Friedman & Popescu 2008), and each rule is linked back to the cohort:
how it covers every site/scanner group and how accurate it is on the true labels.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from xaudit.analysis.rules.coverage import group_coverage, label_accuracy
from xaudit.analysis.rules.extract import (
    CandidateSet,
    forest_rules,
    merge_duplicates,
    merge_equivalent,
    prune_all,
    rule_statistics,
)
from xaudit.analysis.rules.inputs import RulesInputs, validate_inputs
from xaudit.config.rules import RulesParams
from xaudit.analysis.rules.rank import rank_order, rule_importance
from xaudit.analysis.rules.result import Rule, RulesResult, SurrogateMetrics
from xaudit.analysis.rules.surrogate import SurrogateFit, fit_surrogate

log = logging.getLogger(__name__)


def extract_rules(features: np.ndarray, feature_names: list[str], predicted: np.ndarray,
                  labels: np.ndarray | None, class_names: list[str],
                  groups: dict[str, Any] | None, subject_ids: list[str],
                  params: RulesParams | None = None) -> RulesResult:
    """Extract ranked rules that imitate the network's predictions.

    Args:
        features: ``(n_subjects, n_features)`` layer features, finite.
        feature_names: ``layer:channel`` per column.
        predicted: the network's predicted class index per subject (the surrogate's target).
        labels: true class index per subject, -1 where unknown; or None.
        class_names: the network's classes.
        groups: group column -> one value per subject (e.g. ``{"site": [...]}``).
        subject_ids: unique id per subject (row).
        params: the ``rules:`` config section; defaults if None.

    Returns:
        `RulesResult`, rules sorted by rank. Degenerate inputs (one predicted class, only
        constant features) give no rules and a note saying why. Raises DataError for
        malformed inputs (shapes, NaN/Inf, class indices out of range).
    """
    params = params or RulesParams()
    inp = validate_inputs(features, feature_names, predicted, labels, class_names, groups,
                          subject_ids)
    notes = list(inp.notes)
    if inp.used.size == 0 or np.unique(inp.predicted).size < 2:
        if inp.used.size:  # else validate_inputs' note already says all features are constant
            notes.append(_single_class_note(inp))
        log.warning(notes[-1])
        return _result(inp, params, [], notes, None)
    fit = fit_surrogate(inp.features[:, inp.used], inp.predicted, inp.labels, params,
                        inp.class_names)
    notes += fit.notes
    rules, rule_notes = _ranked_rules(fit, inp, params)
    return _result(inp, params, rules, notes + rule_notes, fit)


def _single_class_note(inp: RulesInputs) -> str:
    name = inp.class_names[int(inp.predicted[0])]
    return (f"The network predicts a single class ({name!r}) for all {inp.predicted.size} "
            "subjects; rules need at least two predicted classes to separate, so none "
            "were extracted.")


def _candidates(fit: SurrogateFit, inp: RulesInputs,
                params: RulesParams) -> tuple[CandidateSet, np.ndarray, list[str]]:
    """Forest paths, pruned and merged, without uninformative rules, capped at max_rules."""
    notes: list[str] = []
    cands = CandidateSet.build(forest_rules(fit.forest, inp.feature_names, inp.used),
                               inp.features)
    prune_all(cands, inp.predicted, params.prune_threshold)
    merge_duplicates(cands)
    covered = cands.coverage()
    n_cov = covered.sum(axis=0)
    informative = np.flatnonzero((n_cov > 0) & (n_cov < covered.shape[0]))
    if informative.size < n_cov.size:
        notes.append(f"Dropped {n_cov.size - informative.size} rule(s) covering no subject "
                     "or every subject.")
    cands.keep(informative.tolist())
    covered = covered[:, informative]
    if params.merge_equivalent and cands.rules:
        covered = merge_equivalent(cands, covered)
    if len(cands.rules) > params.max_rules:
        notes.append(f"Kept the {params.max_rules} most frequent of {len(cands.rules)} rules "
                     "(max_rules).")
        support = covered.mean(axis=0)
        order = sorted(range(len(cands.rules)),
                       key=lambda i: (-cands.frequency[i], -support[i], i))[: params.max_rules]
        order.sort()
        cands.keep(order)
        covered = covered[:, order]
    return cands, covered, notes


def _ranked_rules(fit: SurrogateFit, inp: RulesInputs,
                  params: RulesParams) -> tuple[list[Rule], list[str]]:
    """Rules with statistics, importance, rank, group coverage and label accuracy."""
    cands, covered, notes = _candidates(fit, inp, params)
    if not cands.rules:
        return [], notes + ["No informative rule remained: every tree of the surrogate forest "
                            "is a single leaf or its rules cover all subjects."]
    k = len(inp.class_names)
    n_cov, support, majority, confidence = rule_statistics(covered, inp.predicted, k)
    importance, rank_notes = rule_importance(covered, inp.predicted, params)
    order = rank_order(importance, confidence, support)
    covered = covered[:, order]
    by_group = group_coverage(covered, inp.groups, params.skew_min_v, params.skew_alpha)
    acc, n_lab = label_accuracy(covered, inp.labels, majority[order], k)
    subject_ids = np.asarray(inp.subject_ids, dtype=object)
    rules = []
    for rank, i in enumerate(order, start=1):
        j = rank - 1
        rules.append(Rule(
            conditions=cands.rules[i], predicted_class=int(majority[i]),
            n_covered=int(n_cov[i]), support=float(support[i]),
            confidence=float(confidence[i]), frequency=int(cands.frequency[i]),
            importance=float(importance[i]), rank=rank, id=f"R{rank}",
            label_accuracy=None if np.isnan(acc[j]) else float(acc[j]),
            n_labelled=int(n_lab[j]), coverage_by_group=by_group[j],
            covered_subjects=(tuple(subject_ids[covered[:, j]]) if rank <= params.top_n
                              else ())))
    return rules, notes + rank_notes


def _result(inp: RulesInputs, params: RulesParams, rules: list[Rule], notes: list[str],
            fit: SurrogateFit | None) -> RulesResult:
    known = inp.labels >= 0
    network_acc = (float(np.mean(inp.predicted[known] == inp.labels[known]))
                   if known.any() else None)
    metrics = SurrogateMetrics(
        fidelity=fit.fidelity if fit else None,
        fidelity_train=fit.fidelity_train if fit else None,
        surrogate_accuracy=fit.surrogate_accuracy if fit else None,
        network_accuracy=network_acc, cv_folds=fit.folds if fit else 0,
        n_subjects=int(inp.predicted.size), n_labelled=int(known.sum()),
        n_features=len(inp.feature_names), n_features_used=int(inp.used.size))
    return RulesResult(rules=rules, class_names=inp.class_names, surrogate=metrics,
                       params=params, group_columns=list(inp.groups), notes=notes,
                       dropped_features=inp.dropped)
