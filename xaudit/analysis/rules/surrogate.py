"""The surrogate: a random forest trained to reproduce the network's predictions.

Its cross-validated fidelity says how far the extracted rules can be trusted to speak for
the network: rules of a surrogate that disagrees with the network on a third of the
subjects explain the surrogate, not the network (Craven & Shavlik 1996, "Extracting
tree-structured representations of trained networks", NIPS 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold

from xaudit.config.rules import RulesParams


@dataclass
class SurrogateFit:
    """The final forest (fit on all subjects) and its fidelity.

    Attributes:
        forest: fitted on every subject, used for rule extraction.
        fidelity: cross-validated agreement with ``predicted``; None if CV was skipped.
        surrogate_accuracy: cross-validated agreement with known labels, or None.
        fidelity_train: agreement of `forest` on its own training subjects.
        folds: folds used, 0 if skipped.
        notes: why folds were reduced or skipped.
    """

    forest: RandomForestClassifier
    fidelity: float | None
    surrogate_accuracy: float | None
    fidelity_train: float
    folds: int
    notes: list[str] = field(default_factory=list)


def make_forest(params: RulesParams) -> RandomForestClassifier:
    """An unfitted forest configured from ``params``."""
    return RandomForestClassifier(
        n_estimators=params.n_estimators, max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf, max_features=params.max_features,
        random_state=params.seed, n_jobs=params.n_jobs,
    )


def choose_folds(predicted: np.ndarray, requested: int,
                 class_names: list[str]) -> tuple[int, list[str]]:
    """Folds for stratified CV: at most the size of the smallest predicted class.

    Returns:
        (folds, notes); folds is 0 when some predicted class has fewer than 2 subjects.
    """
    classes, counts = np.unique(predicted, return_counts=True)
    smallest = int(counts.min())
    name = class_names[int(classes[counts.argmin()])]
    if smallest < 2:
        return 0, [f"Cross-validation skipped: the network predicts class {name!r} for only "
                   f"{smallest} subject; stratified folds need at least 2 per class. Only the "
                   "training fidelity is reported, which overstates how well the rules "
                   "imitate the network."]
    if smallest < requested:
        return smallest, [f"cv_folds reduced from {requested} to {smallest}: the network "
                          f"predicts class {name!r} for only {smallest} subjects."]
    return requested, []


def cross_validated_predictions(x: np.ndarray, predicted: np.ndarray, folds: int,
                                params: RulesParams) -> np.ndarray:
    """Held-out surrogate predictions, stratified on the network's predicted class."""
    out = np.empty_like(predicted)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=params.seed)
    for train, test in splitter.split(x, predicted):
        forest = make_forest(params).fit(x[train], predicted[train])
        out[test] = forest.predict(x[test])
    return out


def fit_surrogate(x: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
                  params: RulesParams, class_names: list[str]) -> SurrogateFit:
    """Cross-validate the surrogate, then fit it on every subject.

    Args:
        x: features the forest sees ``(n, n_used)``.
        predicted: the network's class per subject (the surrogate's target).
        labels: true class per subject, -1 where unknown.
        params: forest and CV parameters.
        class_names: for notes.
    """
    folds, notes = choose_folds(predicted, params.cv_folds, class_names)
    fidelity = accuracy = None
    if folds:
        held_out = cross_validated_predictions(x, predicted, folds, params)
        fidelity = float(np.mean(held_out == predicted))
        known = labels >= 0
        if known.any():
            accuracy = float(np.mean(held_out[known] == labels[known]))
    forest = make_forest(params).fit(x, predicted)
    fidelity_train = float(np.mean(forest.predict(x) == predicted))
    return SurrogateFit(forest, fidelity, accuracy, fidelity_train, folds, notes)
