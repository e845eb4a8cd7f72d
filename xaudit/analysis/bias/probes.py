"""Representation probes: can a linear model read the site (or the label) off the features?

A cross-validated linear probe (standardise + L2 logistic regression; Alain & Bengio 2017,
"Understanding intermediate layers using linear classifier probes") predicts each group
column and the label from the model's layer features. Its balanced accuracy is tested
against label permutations (Ojala & Garriga 2010, JMLR 11:1833). The decisive probe runs
**within each class**: if site is decodable among patients alone, the representation
carries a site signature that the label does not explain ("Name that dataset",
Wachinger et al. 2021, NeuroImage 228:117652, found 71.5 % across 17 MRI datasets).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from xaudit.analysis.stats import roc_auc_point
from xaudit.analysis.bias.findings import Finding, severity_for
from xaudit.analysis.bias.inputs import group_strings, values_with_count
from xaudit.core.jsonable import to_jsonable
from xaudit.analysis.bias.logistic import MAX_FEATURES, balanced_weights, decision_function, fit_logistic
from xaudit.config.bias import BiasParams

LABEL = "label"
EXCEEDANCES_TO_STOP = 10  # Besag & Clifford's h: enough null exceedances to call a probe null
PERMUTATION_BATCH = 50  # permutations fit together by the batched solver


@dataclass
class ProbeScore:
    """One cross-validated probe.

    Attributes:
        target: ``label`` or a group column.
        scope: ``all`` or ``class=<name>`` (only subjects of that class).
        values: the target values that entered, with their counts.
        chance: balanced accuracy of guessing (1 / number of values).
        null_mean: mean balanced accuracy over the permutations.
    """

    target: str
    scope: str
    n: int
    values: dict[str, int]
    folds: int
    balanced_accuracy: float
    roc_auc: float
    p_value: float
    chance: float
    null_mean: float

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


@dataclass
class ProbeResult:
    """All probes of a run, their notes (probes that could not run) and findings."""

    scores: list[ProbeScore] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def get(self, target: str, scope: str = "all") -> ProbeScore | None:
        """The probe of ``target`` in ``scope``, or None when it did not run."""
        return next((s for s in self.scores if s.target == target and s.scope == scope), None)

    def to_dict(self) -> dict[str, Any]:
        return {"scores": [s.to_dict() for s in self.scores], "notes": list(self.notes),
                "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings]}


def linear_probe(
    features: np.ndarray, target: np.ndarray, folds: int, permutations: int, seed: int,
    solver: str = "auto",
) -> tuple[float, float, float, float]:
    """Cross-validated balanced accuracy, ROC AUC and permutation p-value of a linear probe.

    The probe is L2 logistic regression (C=1, ``class_weight="balanced"``) on standardised
    features; standardisation uses all subjects, which is label-free and so cannot leak the
    target into the test folds. The null distribution refits the probe on label
    permutations with stratified folds drawn anew for each (Ojala & Garriga's test 1, as
    in ``sklearn.model_selection.permutation_test_score``); p = (1 + #{null >= observed}) /
    (1 + permutations). Permuting stops early once `EXCEEDANCES_TO_STOP` null scores reach
    the observed one, with the sequential p-value h / L of Besag & Clifford (1991,
    Biometrika 78:301): a clearly null probe costs a few dozen fits.

    Args:
        features: ``(n, F)``.
        target: ``(n,)`` classes, each with at least ``folds`` members.
        folds: stratified folds (shuffled with ``seed``).
        permutations: most label permutations of the test.
        seed: seed of the folds and the permutations.
        solver: ``batched`` (`xaudit.analysis.bias.logistic`, two classes only), ``sklearn``, or
            ``auto`` (batched for two classes and at most `MAX_FEATURES` features after
            reducing F > n features to their n-dimensional row space, which leaves the
            predictions unchanged). Both minimise the same objective.

    Returns:
        ``(balanced_accuracy, roc_auc, p_value, null_mean)``; balanced accuracy and AUC
        (one-vs-rest macro for more than two values) are means over the folds.
    """
    _, y = np.unique(np.asarray(target), return_inverse=True)
    x = _row_space(_standardise(features))
    binary = int(y.max()) == 1
    if solver == "batched" and not binary:
        raise ValueError("the batched solver fits two classes only")
    batched = solver == "batched" or (solver == "auto" and binary and x.shape[1] <= MAX_FEATURES)
    score = _batched_scores if batched else _sklearn_scores
    rng = np.random.default_rng(seed)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # tiny fits: BLAS threads only contend; a probe that stops short of full
        # convergence in 2000 steps still measures decodability
        warnings.simplefilter("ignore", ConvergenceWarning)
        ba, auc = score(x, y[None], folds, [seed], with_auc=True)
        observed = float(ba[0])
        null: list[float] = []
        exceed = 0
        for start in range(0, permutations, PERMUTATION_BATCH):
            count = min(PERMUTATION_BATCH, permutations - start)
            labelings = np.stack([rng.permutation(y) for _ in range(count)])
            for value in score(x, labelings, folds, [seed + 1 + start + i for i in range(count)])[0]:
                null.append(float(value))
                exceed += value >= observed
                if exceed >= EXCEEDANCES_TO_STOP:
                    return observed, auc, exceed / len(null), float(np.mean(null))
    p_value = (1 + exceed) / (1 + permutations)
    return observed, auc, float(p_value), float(np.mean(null)) if null else float("nan")


def _standardise(features: np.ndarray) -> np.ndarray:
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    return (features - features.mean(axis=0)) / scale


def _row_space(x: np.ndarray) -> np.ndarray:
    """Coordinates of the rows in an orthonormal basis of their span, when F > n.

    The L2-penalised weights lie in the span of the rows (the part orthogonal to every
    row changes no prediction and only adds penalty), and the basis is orthonormal, so the
    probe on these <= n coordinates has exactly the same predictions; it is just cheaper.
    """
    if x.shape[1] <= x.shape[0]:
        return x
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    keep = s > s[0] * 1e-10 if s.size and s[0] > 0 else np.zeros(s.shape, bool)
    return u[:, keep] * s[keep] if keep.any() else x[:, :1] * 0.0


def _fold_index(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each row under a shuffled stratified split.

    The rows, class after class, each class in a seeded random order, are dealt to the folds in turn, so every fold
    holds the floor or the ceiling of each class's share, as in sklearn's ``StratifiedKFold``
    (whose object cost 2 ms per split, measured: 1.6 s of a permutation test's 2.6 s).
    """
    order = np.random.default_rng(seed).permutation(len(y))
    by_class = order[np.argsort(np.asarray(y)[order], kind="stable")]  # shuffled within each class
    index = np.empty(len(y), dtype=int)
    index[by_class] = np.arange(len(y)) % folds  # dealt on across classes: fold sizes differ by one at most
    return index


def _balanced_accuracy(y: np.ndarray, predicted: np.ndarray, test: np.ndarray) -> np.ndarray:
    """``(B,)`` mean recall over the classes present in each problem's test rows."""
    recalls = []
    for c in range(int(y.max()) + 1):
        member = test & (y == c)
        count = member.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(count > 0, (member & (predicted == c)).sum(axis=1) / count, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def _batched_scores(x, labelings, folds, seeds, with_auc=False) -> tuple[np.ndarray, float]:
    """Fold-mean balanced accuracy of B binary labelings, all fit at once per fold."""
    fold_of = np.stack([_fold_index(y, folds, s) for y, s in zip(labelings, seeds)])
    total, aucs = np.zeros(len(labelings)), []
    for j in range(folds):
        test = fold_of == j
        coef = fit_logistic(x, labelings, balanced_weights(labelings, ~test))
        z = decision_function(x, coef)
        total += _balanced_accuracy(labelings, (z > 0).astype(int), test)
        if with_auc:
            aucs.append(roc_auc_point(labelings[0][test[0]], np.c_[-z[0][test[0]], z[0][test[0]]]))
    return total / folds, float(np.mean(aucs)) if with_auc else float("nan")


def _sklearn_scores(x, labelings, folds, seeds, with_auc=False) -> tuple[np.ndarray, float]:
    """As `_batched_scores`, one ``LogisticRegression`` per labeling and fold (any classes)."""
    total, aucs = np.zeros(len(labelings)), []
    for b, (y, seed) in enumerate(zip(labelings, seeds)):
        fold_of = _fold_index(y, folds, seed)
        for j in range(folds):
            test = fold_of == j
            probe = LogisticRegression(class_weight="balanced", max_iter=2000).fit(x[~test], y[~test])
            proba = probe.predict_proba(x[test])
            predicted = probe.classes_[proba.argmax(axis=1)]
            total[b] += _balanced_accuracy(y[None, test], predicted[None], np.ones((1, test.sum()), bool))[0]
            if with_auc and b == 0:
                aucs.append(roc_auc_point(np.searchsorted(probe.classes_, y[test]), proba))
    return total / folds, float(np.mean(aucs)) if with_auc else float("nan")


def probe_target(
    features: np.ndarray, values: np.ndarray, keep: np.ndarray, target: str, scope: str,
    params: BiasParams, notes: list[str],
) -> ProbeScore | None:
    """Probe ``values[keep]`` from ``features[keep]``, or add a note and return None.

    Values with fewer than ``min_group_size`` subjects are left out (with a note); folds
    shrink to the smallest remaining count when it is below ``cv_folds``.
    """
    usable = values_with_count(values, keep, params.min_group_size)
    dropped = sorted(set(values[keep].tolist()) - set(usable))
    where = f"{target} ({scope})"
    if dropped:
        notes.append(f"Probe {where}: left out values with < {params.min_group_size} subjects: {dropped}.")
    if len(usable) < 2:
        notes.append(f"Probe {where} skipped: fewer than two values with >= {params.min_group_size} subjects.")
        return None
    rows = keep & np.isin(values, usable)
    y = values[rows]
    counts = {str(v): int(np.sum(y == v)) for v in usable}
    folds = min(params.cv_folds, min(counts.values()))
    if folds < params.cv_folds:
        notes.append(f"Probe {where}: {folds} folds instead of {params.cv_folds} (smallest value has {folds} subjects).")
    ba, auc, p, null = linear_probe(features[rows], y, folds, params.permutations, params.seed)
    return ProbeScore(target, scope, int(rows.sum()), counts, folds, ba, auc, p, 1.0 / len(usable), null)


def run_probes(
    features: np.ndarray, labels: np.ndarray, groups: dict[str, np.ndarray],
    class_names: list[str], params: BiasParams,
) -> ProbeResult:
    """Probe the label, each group column, and each group column within each class.

    Args:
        features: ``(n, F)`` layer features.
        labels: ``(n,)`` class indices, -1 unknown.
        groups: group column -> ``(n,)`` values.
        class_names: the class names.
        params: ``cv_folds``, ``permutations``, ``seed``, ``min_group_size`` and the probe
            thresholds.

    Returns:
        A `ProbeResult` whose ``signature_tests`` counts the within-class group probes run.
    """
    result = ProbeResult()
    names = np.array([class_names[c] if c >= 0 else "" for c in labels], dtype=object).astype(str)
    known_label = labels >= 0
    label_score = probe_target(features, names, known_label, LABEL, "all", params, result.notes)
    if label_score is not None:
        result.scores.append(label_score)
        result.findings += _label_finding(label_score, params)
    for column, raw in groups.items():
        values, known = group_strings(raw)
        overall = probe_target(features, values, known, column, "all", params, result.notes)
        if overall is not None:
            result.scores.append(overall)
        within = []
        for c, name in enumerate(class_names):
            keep = known & (labels == c)
            if not keep.any():
                continue
            score = probe_target(features, values, keep, column, f"class={name}", params, result.notes)
            if score is not None:
                within.append(score)
                result.findings += _within_class_finding(score, name, params)
        result.scores += within
        result.signature_tests += len(within)
        if not within and overall is not None:
            result.findings += _confounded_overall_finding(overall, params)
    return result


def _significant(score: ProbeScore, params: BiasParams) -> bool:
    return score.p_value <= params.probe_p_value


def _evidence(score: ProbeScore) -> dict[str, Any]:
    return {k: getattr(score, k) for k in
            ("balanced_accuracy", "roc_auc", "p_value", "chance", "null_mean", "n", "values", "folds")}


def _threshold(params: BiasParams) -> dict[str, float]:
    return {"probe_balanced_accuracy_warning": params.probe_balanced_accuracy_warning,
            "probe_balanced_accuracy_critical": params.probe_balanced_accuracy_critical,
            "probe_p_value": params.probe_p_value}


def _numbers(score: ProbeScore) -> str:
    return (f"balanced accuracy {score.balanced_accuracy:.2f} vs chance {score.chance:.2f}, "
            f"AUC {score.roc_auc:.2f}, permutation p={score.p_value:.3g}, n={score.n}, {score.folds}-fold")


def _within_class_finding(score: ProbeScore, class_name: str, params: BiasParams) -> list[Finding]:
    severity = severity_for(score.balanced_accuracy, params.probe_balanced_accuracy_warning,
                            params.probe_balanced_accuracy_critical)
    if severity is None or not _significant(score, params):
        return []
    return [Finding(
        id=f"probe.within_class.{score.target}.{class_name}", check="probes", severity=severity, column=score.target,
        title=(f"the {class_name} subjects of different {score.target} values are told apart from the features "
               f"(balanced accuracy {score.balanced_accuracy:.2f}, p={score.p_value:.3g})"),
        message=(f"A linear probe on the layer features tells {score.target} values apart among "
                 f"{class_name} subjects alone ({_numbers(score)}). The representation of these subjects carries a "
                 f"difference between {score.target} values that the label does not explain: a {score.target}-wide "
                 f"signature, or a property of the audited {class_name} subjects of one {score.target} (a marker "
                 "only some of them carry); this measures the subjects of this cell, not the scanner."),
        evidence=_evidence(score), threshold=_threshold(params), points_to="signature",
    )]


def _label_finding(score: ProbeScore, params: BiasParams) -> list[Finding]:
    if score.balanced_accuracy < params.probe_balanced_accuracy_warning or not _significant(score, params):
        return []
    return [Finding(
        id="probe.label", check="probes", severity="info",
        title=f"the label is decodable from the features (balanced accuracy {score.balanced_accuracy:.2f})",
        message=f"A linear probe on the layer features predicts the label ({_numbers(score)}).",
        evidence=_evidence(score), threshold=_threshold(params), points_to="pathology",
    )]


def _confounded_overall_finding(score: ProbeScore, params: BiasParams) -> list[Finding]:
    if score.balanced_accuracy < params.probe_balanced_accuracy_warning or not _significant(score, params):
        return []
    return [Finding(
        id=f"probe.overall.{score.target}", check="probes", severity="info", column=score.target,
        title=f"{score.target} is decodable from the features (balanced accuracy {score.balanced_accuracy:.2f})",
        message=(f"A linear probe predicts {score.target} from the features ({_numbers(score)}), but no class "
                 f"spans two {score.target} values with enough subjects, so this cannot be told apart "
                 f"from the label being decodable."),
        evidence=_evidence(score), threshold=_threshold(params), points_to="design",
    )]
