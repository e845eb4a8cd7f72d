"""Feature roles: does each feature track a group (site signature) or the label (pathology)?

Per feature, the association with the label and with each group column is measured as
epsilon-squared, the bias-corrected eta-squared of a one-way ANOVA (Kelley 1935; Okada
2013, Behaviormetrika 40:129), which is ~0 for a feature unrelated to the grouping even in
small samples. To tell a feature that tracks site *because* site is confounded with the
label from one that tracks site itself, both are also measured within strata: the group
association within each class, and the label association within each group value
(pooled one-way ANOVA in each stratum). Mutual information (Kraskov et al. 2004 via
``mutual_info_classif``) is reported alongside for non-linear association.

Tags (threshold ``role_effect`` on epsilon-squared):
    group-signature  associated with a group within class (or with a group but not the label)
    pathology        associated with the label within every group value that allows it
    mixed            both of the above
    confounded       associated with the label, and with a group that cannot be checked
                     within class (the two are the same partition there)
    neutral          neither
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.feature_selection import mutual_info_classif

from xaudit.analysis.bias.findings import Finding, severity_for
from xaudit.analysis.bias.inputs import group_strings
from xaudit.core.jsonable import to_jsonable
from xaudit.config.bias import BiasParams

TAGS = ("group-signature", "pathology", "mixed", "confounded", "neutral")
MAX_MI_FEATURES = 2048  # kNN mutual information costs O(n log n) per feature


@dataclass
class FeatureRole:
    """Associations of one feature; None where not estimable."""

    name: str
    tag: str
    label_effect: float | None
    label_effect_within_group: dict[str, float | None]
    group_effect: dict[str, float | None]
    group_effect_within_class: dict[str, float | None]
    mi_label: float | None = None
    mi_group: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


@dataclass
class RolesResult:
    """Per-feature roles, the share of features (and of importance) per tag, findings."""

    features: list[FeatureRole] = field(default_factory=list)
    tag_shares: dict[str, float] = field(default_factory=dict)
    importance_shares: dict[str, float] | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "features": [f.to_dict() for f in self.features], "tag_shares": self.tag_shares,
            "importance_shares": self.importance_shares, "notes": self.notes,
            "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings],
        })


def epsilon_squared(x: np.ndarray, codes: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray | None:
    """Epsilon-squared of each column of ``x`` for the grouping ``codes``, pooled within strata.

    epsilon^2 = (SS_between - df_between * MS_within) / SS_total, with all sums taken within
    each stratum and pooled (so the stratum means are removed first).

    Args:
        x: ``(n, F)`` values.
        codes: ``(n,)`` group of each row.
        strata: ``(n,)`` stratum of each row, or None for a single stratum.

    Returns:
        ``(F,)`` effects (may be slightly negative, meaning no effect), or None when no
        stratum has two groups or no within-group degrees of freedom remain.
    """
    strata = np.zeros(len(codes), dtype=int) if strata is None else strata
    ss_between = np.zeros(x.shape[1])
    ss_total = np.zeros(x.shape[1])
    df_between = n_used = k_used = 0
    for stratum in np.unique(strata):
        rows = strata == stratum
        groups = np.unique(codes[rows])
        if len(groups) < 2:
            continue
        xs = x[rows]
        mean = xs.mean(axis=0)
        ss_total += ((xs - mean) ** 2).sum(axis=0)
        for g in groups:
            xg = xs[codes[rows] == g]
            ss_between += len(xg) * (xg.mean(axis=0) - mean) ** 2
        df_between += len(groups) - 1
        n_used += int(rows.sum())
        k_used += len(groups)
    df_within = n_used - k_used
    if df_between == 0 or df_within <= 0:
        return None
    ms_within = (ss_total - ss_between) / df_within
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = (ss_between - df_between * ms_within) / ss_total
    return np.where(ss_total > 0, eps, 0.0)


def feature_roles(
    features: np.ndarray, feature_names: list[str], labels: np.ndarray,
    groups: dict[str, np.ndarray], params: BiasParams,
    importances: dict[str, float] | None = None,
) -> RolesResult:
    """Tag each feature by its label and group associations; weigh tags by importance.

    Args:
        features: ``(n, F)`` layer features.
        feature_names: the F names.
        labels: ``(n,)`` class indices, -1 unknown.
        groups: group column -> ``(n,)`` values.
        params: ``role_effect``, ``role_importance_share_*``, ``seed``.
        importances: feature name -> importance (e.g. the rule surrogate's); optional.

    Returns:
        A `RolesResult`.
    """
    result = RolesResult()
    known = labels >= 0
    if len(np.unique(labels[known])) < 2 and not groups:
        result.notes.append("Feature roles skipped: fewer than two known classes and no group columns.")
        return result
    effects = _effects(features, labels, groups, params, result.notes)
    t = params.role_effect
    for j, name in enumerate(feature_names):
        role = _role(j, name, effects, t)
        result.features.append(role)
    result.signature_tests = sum(e is not None for e in effects["group_within"].values())
    result.tag_shares = {tag: sum(f.tag == tag for f in result.features) / len(result.features) for tag in TAGS}
    if importances:
        result.importance_shares = _importance_shares(result.features, importances, result.notes)
        result.findings += _importance_findings(result.importance_shares, params)
    result.findings += _tag_findings(result, params)
    return result


def _effects(features, labels, groups, params, notes) -> dict[str, Any]:
    """All effect-size vectors (None where not estimable), and MI where affordable."""
    known = labels >= 0
    x, y = features[known], labels[known]
    out: dict[str, Any] = {"label": epsilon_squared(x, y), "label_within": {}, "group": {},
                           "group_within": {}, "mi_label": None, "mi_group": {}}
    if out["label"] is None:
        notes.append("Label effect not estimable (fewer than two known classes).")
    mi = features.shape[1] <= MAX_MI_FEATURES
    if not mi:
        notes.append(f"Mutual information skipped: {features.shape[1]} features > {MAX_MI_FEATURES}.")
    if mi and out["label"] is not None:
        out["mi_label"] = mutual_info_classif(x, y, random_state=params.seed)
    for column, raw in groups.items():
        values, has = group_strings(raw)
        both = known & has
        xv, gv, yv = features[both], values[both], labels[both]
        out["group"][column] = epsilon_squared(features[has], values[has])
        out["group_within"][column] = epsilon_squared(xv, gv, strata=yv)
        out["label_within"][column] = epsilon_squared(xv, yv, strata=gv)
        if out["group_within"][column] is None:
            notes.append(f"Feature roles: no class spans two {column} values; {column} association "
                         "is measured across classes only.")
        if mi and out["group"][column] is not None:
            out["mi_group"][column] = mutual_info_classif(features[has], values[has], random_state=params.seed)
    return out


def _at(vector: np.ndarray | None, j: int) -> float | None:
    return None if vector is None else float(vector[j])


def _role(j: int, name: str, e: dict[str, Any], t: float) -> FeatureRole:
    group = {c: _at(v, j) for c, v in e["group"].items()}
    group_within = {c: _at(v, j) for c, v in e["group_within"].items()}
    label_within = {c: _at(v, j) for c, v in e["label_within"].items()}
    label = _at(e["label"], j)
    group_assoc = any(v is not None and v >= t for v in group_within.values())
    ambiguous = any(group_within[c] is None and group[c] is not None and group[c] >= t for c in group)
    label_assoc = label is not None and label >= t and all(v >= t for v in label_within.values() if v is not None)
    if group_assoc and label_assoc:
        tag = "mixed"
    elif group_assoc:
        tag = "group-signature"
    elif label_assoc:
        tag = "confounded" if ambiguous else "pathology"
    elif ambiguous:
        tag = "group-signature"
    else:
        tag = "neutral"
    return FeatureRole(name, tag, label, label_within, group, group_within, _at(e["mi_label"], j),
                       {c: _at(v, j) for c, v in e["mi_group"].items()})


def _importance_shares(roles: list[FeatureRole], importances: dict[str, float], notes: list[str]) -> dict[str, float]:
    by_name = {r.name: r.tag for r in roles}
    unknown = sorted(set(importances) - set(by_name))
    if unknown:
        notes.append(f"Importances of {len(unknown)} unknown feature(s) ignored, e.g. {unknown[:5]}.")
    weights = {name: abs(float(w)) for name, w in importances.items() if name in by_name}
    total = sum(weights.values())
    if total == 0:
        notes.append("Importances sum to zero; no importance shares.")
        return {tag: float("nan") for tag in TAGS}
    return {tag: sum(w for n, w in weights.items() if by_name[n] == tag) / total for tag in TAGS}


def _importance_findings(shares: dict[str, float], params: BiasParams) -> list[Finding]:
    share = shares.get("group-signature", float("nan"))
    if not np.isfinite(share):
        return []
    severity = severity_for(share, params.role_importance_share_warning, params.role_importance_share_critical)
    threshold = {"role_importance_share_warning": params.role_importance_share_warning,
                 "role_importance_share_critical": params.role_importance_share_critical,
                 "role_effect": params.role_effect}
    if severity is not None:
        return [Finding(
            id="roles.importance.group_signature", check="roles", severity=severity,
            title=f"{share:.0%} of the rule surrogate's importance rests on group-signature features",
            message=(f"Features that track a group column within class carry {share:.0%} of the surrogate's "
                     f"importance (pathology features {shares['pathology']:.0%}, mixed {shares['mixed']:.0%})."),
            evidence={"importance_shares": shares}, threshold=threshold, points_to="signature",
        )]
    if shares["pathology"] >= 0.5:
        return [Finding(
            id="roles.importance.pathology", check="roles", severity="info",
            title=f"{shares['pathology']:.0%} of the surrogate's importance rests on pathology features",
            message=(f"Features that track the label within each group value carry {shares['pathology']:.0%} of "
                     f"the surrogate's importance; group-signature features carry {share:.0%}."),
            evidence={"importance_shares": shares}, threshold=threshold, points_to="pathology",
        )]
    return []


def _tag_findings(result: RolesResult, params: BiasParams) -> list[Finding]:
    shares = result.tag_shares
    if shares.get("group-signature", 0) + shares.get("mixed", 0) == 0:
        return []
    top = sorted((r for r in result.features if r.tag in ("group-signature", "mixed")),
                 key=lambda r: -max([v for v in r.group_effect_within_class.values() if v is not None] or [0]))
    return [Finding(
        id="roles.group_signature_features", check="roles", severity="info",
        title=f"{shares['group-signature']:.0%} of the features are group-signature features",
        message=(f"{shares['group-signature']:.0%} of the features track a group column (mixed: {shares['mixed']:.0%}, "
                 f"pathology: {shares['pathology']:.0%}, neutral: {shares['neutral']:.0%}). "
                 f"Strongest: {', '.join(r.name for r in top[:5])}."),
        evidence={"tag_shares": shares, "top_features": [r.name for r in top[:10]]},
        threshold={"role_effect": params.role_effect}, points_to="neutral",
    )]
