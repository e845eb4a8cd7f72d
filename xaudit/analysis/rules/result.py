"""What rule extraction returns: conditions, rules, their coverage of groups, and metrics.

Everything here is plain data with a JSON form (``to_dict`` / ``from_dict``); the layout
of ``rules.json`` is part of the run-directory contract (``schema_version`` below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ValidationError

from xaudit.core import versions
from xaudit.core.jsonable import to_jsonable
from xaudit.errors import DataError
from xaudit.config.rules import RulesParams

Op = Literal["<=", ">"]


@dataclass(frozen=True)
class Condition:
    """One threshold test ``features[:, index] <op> threshold``.

    Attributes:
        feature: the feature's name (``layer:channel``).
        index: its column in the feature matrix the rules were extracted from.
        op: ``"<="`` (scikit-learn's left branch) or ``">"``.
        threshold: the split value, full precision.
    """

    feature: str
    index: int
    op: Op
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "index": self.index, "op": self.op,
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Condition:
        if d["op"] not in ("<=", ">"):
            raise ValueError(f"op must be '<=' or '>', got {d['op']!r}")
        return cls(str(d["feature"]), int(d["index"]), d["op"], float(d["threshold"]))


@dataclass(frozen=True)
class ValueCoverage:
    """How a rule covers the subjects of one group value (e.g. site ``B``).

    Attributes:
        value: the group value.
        n_value: subjects with this value in the dataset.
        n_covered: of those, how many the rule covers.
        fraction_covered: ``n_covered / n_value``.
        share_of_rule: ``n_covered / (subjects the rule covers)``.
        share_of_dataset: ``n_value / n_subjects``; compare with ``share_of_rule``.
    """

    value: str
    n_value: int
    n_covered: int
    fraction_covered: float
    share_of_rule: float
    share_of_dataset: float


@dataclass(frozen=True)
class GroupCoverage:
    """A rule's coverage broken down by one group column, and how skewed it is.

    Attributes:
        column: the group column (e.g. ``site``).
        values: one entry per value, in sorted order.
        cramers_v: association between "covered by the rule" and the value, in [0, 1].
        p_value: chi-square test (uncorrected); Fisher's exact test for two values when
            an expected count is below 5.
        test: ``"fisher"``, ``"chi2"`` or ``"none"`` (single value or full coverage).
        top_value: the value whose share of the rule exceeds its dataset share the most.
        skewed: ``cramers_v >= skew_min_v`` and ``p_value`` below the Bonferroni level.
    """

    column: str
    values: list[ValueCoverage]
    cramers_v: float
    p_value: float
    test: str
    top_value: str
    skewed: bool

    def top(self) -> ValueCoverage:
        """The entry of `top_value`."""
        return next(v for v in self.values if v.value == self.top_value)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "values": [vars(v) for v in self.values],
                "cramers_v": self.cramers_v, "p_value": self.p_value, "test": self.test,
                "top_value": self.top_value, "skewed": self.skewed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupCoverage:
        values = [ValueCoverage(**v) for v in d["values"]]
        return cls(d["column"], values, float(d["cramers_v"]), float(d["p_value"]),
                   d["test"], d["top_value"], bool(d["skewed"]))


@dataclass(frozen=True)
class Rule:
    """A conjunction of conditions and what it does on the audited cohort.

    Attributes:
        conditions: the tests, all of which must hold.
        predicted_class: majority network prediction among the covered subjects.
        n_covered: subjects covered; ``support = n_covered / n_subjects``.
        support: fraction of subjects covered.
        confidence: fraction of covered subjects the network assigns `predicted_class`.
        frequency: tree paths of the forest that gave this rule (after merging).
        importance: ``max_k |coef_k| * sqrt(support * (1 - support))`` (RuleFit).
        rank: 1 = most important; 0 before ranking.
        id: ``"R<rank>"``.
        label_accuracy: fraction of covered subjects with a known label equal to
            `predicted_class`; None when none of them has a label.
        n_labelled: covered subjects with a known label.
        coverage_by_group: group column -> breakdown.
        covered_subjects: ids of the covered subjects, kept for the top-N rules only
            (empty for the others, to keep rules.json small).
    """

    conditions: tuple[Condition, ...]
    predicted_class: int
    n_covered: int
    support: float
    confidence: float
    frequency: int = 1
    importance: float = 0.0
    rank: int = 0
    id: str = ""
    label_accuracy: float | None = None
    n_labelled: int = 0
    coverage_by_group: dict[str, GroupCoverage] = field(default_factory=dict)
    covered_subjects: tuple[str, ...] = ()

    @property
    def length(self) -> int:
        return len(self.conditions)

    @property
    def error(self) -> float:
        return 1.0 - self.confidence

    def to_dict(self, class_names: list[str]) -> dict[str, Any]:
        return {
            "id": self.id, "rank": self.rank, "text": format_rule(self, class_names),
            "conditions": [c.to_dict() for c in self.conditions],
            "length": self.length, "support": self.support, "n_covered": self.n_covered,
            "confidence": self.confidence, "error": self.error,
            "predicted_class": class_names[self.predicted_class],
            "predicted_index": self.predicted_class,
            "importance": self.importance, "frequency": self.frequency,
            "label_accuracy": self.label_accuracy, "n_labelled": self.n_labelled,
            "coverage_by_group": {k: g.to_dict() for k, g in self.coverage_by_group.items()},
            "covered_subjects": list(self.covered_subjects),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        acc = d["label_accuracy"]
        return cls(
            conditions=tuple(Condition.from_dict(c) for c in d["conditions"]),
            predicted_class=int(d["predicted_index"]), n_covered=int(d["n_covered"]),
            support=float(d["support"]), confidence=float(d["confidence"]),
            frequency=int(d["frequency"]), importance=float(d["importance"]),
            rank=int(d["rank"]), id=str(d["id"]),
            label_accuracy=None if acc is None else float(acc),
            n_labelled=int(d["n_labelled"]),
            coverage_by_group={k: GroupCoverage.from_dict(g)
                               for k, g in d["coverage_by_group"].items()},
            covered_subjects=tuple(str(s) for s in d["covered_subjects"]),
        )


@dataclass(frozen=True)
class SurrogateMetrics:
    """How well the surrogate forest imitates the network.

    Attributes:
        fidelity: cross-validated agreement with the network's predictions (held-out
            subjects); None when cross-validation was skipped.
        fidelity_train: agreement of the final forest on the subjects it was fit on.
        surrogate_accuracy: cross-validated agreement with the true labels, over
            subjects with a known label; None without labels or cross-validation.
        network_accuracy: the network's own accuracy on those subjects, for comparison.
        cv_folds: folds used (0 = skipped).
        n_subjects, n_labelled, n_features, n_features_used: sizes.
    """

    fidelity: float | None = None
    fidelity_train: float | None = None
    surrogate_accuracy: float | None = None
    network_accuracy: float | None = None
    cv_folds: int = 0
    n_subjects: int = 0
    n_labelled: int = 0
    n_features: int = 0
    n_features_used: int = 0


@dataclass
class RulesResult:
    """The rules stage's output, rules sorted by rank.

    Attributes:
        rules: ranked rules (rank 1 first); empty in the degenerate cases in `notes`.
        class_names: the network's classes; ``Rule.predicted_class`` indexes them.
        surrogate: fidelity and sizes.
        params: the parameters used.
        group_columns: group columns the coverage is broken down by.
        notes: what was dropped, reduced or skipped, and why, in plain sentences.
        dropped_features: constant features left out of the forest.
    """

    rules: list[Rule]
    class_names: list[str]
    surrogate: SurrogateMetrics
    params: RulesParams
    group_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped_features: list[str] = field(default_factory=list)

    def top(self, n: int | None = None) -> list[Rule]:
        """The first ``n`` rules (default ``params.top_n``)."""
        return self.rules[: self.params.top_n if n is None else n]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (no NaN: undefined values are None)."""
        return to_jsonable({
            "schema_version": versions.RULES,
            "class_names": list(self.class_names),
            "surrogate": vars(self.surrogate),
            "params": self.params.model_dump(mode="json"),
            "group_columns": list(self.group_columns),
            "notes": list(self.notes),
            "dropped_features": list(self.dropped_features),
            "rules": [r.to_dict(self.class_names) for r in self.rules],
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "rules.json") -> RulesResult:
        """Read back `to_dict`'s output; raises DataError naming what is wrong in ``source``."""
        version = d.get("schema_version") if isinstance(d, dict) else None
        if not versions.compatible(version, versions.RULES):
            raise DataError(f"{source}: schema_version must be {versions.RULES}. "
                            f"Got {version!r} instead.")
        try:
            return cls(
                rules=[Rule.from_dict(r) for r in d["rules"]],
                class_names=list(d["class_names"]),
                surrogate=SurrogateMetrics(**d["surrogate"]),
                params=RulesParams.model_validate(d["params"]),
                group_columns=list(d["group_columns"]), notes=list(d["notes"]),
                dropped_features=list(d["dropped_features"]),
            )
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise DataError(f"{source}: not a valid rules file ({type(exc).__name__}: "
                            f"{exc}).") from exc


def format_threshold(value: float) -> str:
    """Three significant digits, enough to read; rules.json keeps full precision."""
    return f"{value:.3g}"


def format_percent(fraction: float | None) -> str:
    """``0.314 -> '31%'``; tiny non-zero fractions show as ``'<1%'``."""
    if fraction is None:
        return "n/a"
    if 0 < fraction < 0.005:
        return "<1%"
    return f"{100 * fraction:.0f}%"


def format_condition(c: Condition) -> str:
    return f"{c.feature} {c.op} {format_threshold(c.threshold)}"


def format_rule(rule: Rule, class_names: Sequence[str]) -> str:
    """``IF a:ch1 > 0.83 AND a:ch3 <= 0.1 THEN lesion (support 31%, confidence 96%)``."""
    body = " AND ".join(format_condition(c) for c in rule.conditions) or "TRUE"
    return (f"IF {body} THEN {class_names[rule.predicted_class]} "
            f"(support {format_percent(rule.support)}, "
            f"confidence {format_percent(rule.confidence)})")
