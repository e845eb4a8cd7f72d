"""Findings: what a bias check concludes, how severe it is, and the one-sentence verdict.

A `Finding` carries the numbers behind it (``evidence``) and the threshold that fired
(``threshold``) so a reader can judge it without rerunning anything. ``points_to`` says
which way it bears on the report's question "site/scanner signature or pathology?":

    signature  evidence that the decision rests on a group (site, scanner, ...) signature
    pathology  positive evidence that it rests on the label's own signal
    design     a property of the data (a confound) that limits what can be told apart
    neutral    context only
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xaudit.core.jsonable import to_jsonable
from xaudit.config.bias import Severity

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
POINTS_TO: tuple[str, ...] = ("signature", "pathology", "design", "neutral")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """Position of a severity in ``info < warning < critical``.

    Raises:
        ValueError: for an unknown severity name (a programming error, not user input).
    """
    if severity not in _RANK:
        raise ValueError(f"Unknown severity {severity!r}. Valid severities are {list(SEVERITIES)}.")
    return _RANK[severity]


@dataclass(frozen=True)
class Finding:
    """One conclusion of a bias check.

    Attributes:
        id: stable dotted identifier, e.g. ``probe.within_class.site.lesion``.
        check: the check that produced it (``design``, ``probes``, ...).
        severity: ``info`` | ``warning`` | ``critical``.
        title: one line with the headline number.
        message: what was measured, what it means, what to do.
        evidence: the numbers behind it.
        threshold: the threshold(s) that fired, by parameter name.
        points_to: ``signature`` | ``pathology`` | ``design`` | ``neutral`` (see module doc).
        column: the group column it is about (``site``...), None when it is not about one.
    """

    id: str
    check: str
    severity: Severity
    title: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] = field(default_factory=dict)
    points_to: str = "neutral"
    column: str | None = None

    def __post_init__(self) -> None:
        severity_rank(self.severity)
        if self.points_to not in POINTS_TO:
            raise ValueError(f"Unknown points_to {self.points_to!r}. Valid values are {list(POINTS_TO)}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN -> None, numpy scalars -> Python numbers)."""
        return to_jsonable({
            "id": self.id, "check": self.check, "severity": self.severity, "title": self.title,
            "message": self.message, "evidence": self.evidence, "threshold": self.threshold,
            "points_to": self.points_to, "column": self.column,
        })


def severity_for(value: float, warning: float, critical: float) -> Severity | None:
    """``critical`` if value >= critical, ``warning`` if >= warning, else None."""
    if value >= critical:
        return "critical"
    if value >= warning:
        return "warning"
    return None


def max_severity(findings: Iterable[Finding]) -> Severity | None:
    """The highest severity among the findings, or None when there are none."""
    ranks = [severity_rank(f.severity) for f in findings]
    return SEVERITIES[max(ranks)] if ranks else None  # type: ignore[return-value]


def findings_at_or_above(findings: Iterable[Finding], severity: str) -> list[Finding]:
    """The findings whose severity is at least ``severity``, most severe first."""
    floor = severity_rank(severity)
    kept = [f for f in findings if severity_rank(f.severity) >= floor]
    return sort_findings(kept)


_POINTS_TO_ORDER = {"signature": 0, "design": 1, "pathology": 2, "neutral": 3}


def finding_order(finding: Finding | Mapping[str, Any]) -> tuple[int, int, str]:
    """Sort key of a finding or its dict form (as in ``audit.json``): most severe first; within
    a severity, signature evidence first, then by id."""
    if isinstance(finding, Mapping):
        severity, points_to, id_ = finding["severity"], finding.get("points_to") or "neutral", finding["id"]
    else:
        severity, points_to, id_ = finding.severity, finding.points_to, finding.id
    return -severity_rank(severity), _POINTS_TO_ORDER[points_to], id_


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; within a severity, signature evidence first, then by id."""
    return sorted(findings, key=finding_order)


def verdict(findings: Iterable[Finding], results: Mapping[str, Any], top: int = 5,
            interventions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One sentence on whether the evidence points to a site/scanner signature or pathology.

    The rule, in order:
      1. any ``signature`` finding at warning or above -> ``signature``;
      2. else a critical ``design`` finding (group fully or nearly confounded with the
         label) -> ``consistent_with_pathology`` when interventions on site properties ran
         and moved no decision, else ``inconclusive``: the data cannot tell the two apart;
      3. else, when checks ran that could have found a signature (``signature_tests`` > 0
         on the results) and some finding gives positive ``pathology`` evidence, or the
         interventions ran and moved no decision -> ``pathology``;
      4. else ``inconclusive`` (no signature found, but no positive evidence either, or
         no check with power could run).
    A binary model near chance (balanced accuracy within 0.1 of 0.5) gets ``near_chance``
    unless a signature was found, and its sentence says so first: what such a model
    decides on is not the question.

    Args:
        findings: all findings of the run.
        results: check name -> its result object or ``to_dict()`` (None when skipped); a
            result's ``signature_tests`` counts the tests for a group signature it ran;
            ``group_metrics``'s overall balanced accuracy tells a near-chance model.
        top: how many findings to list.
        interventions: `xaudit.analysis.interventions.InterventionsResult.summary()`, or
            None when the run has none (``{"skipped": reason}`` when they could not run).

    Returns:
        ``{"verdict": "signature"|"pathology"|"consistent_with_pathology"|"inconclusive"|"near_chance", "sentence": str,
        "signature_tests": int, "top_findings": [finding dicts]}``.
    """
    findings = sort_findings(findings)
    signature = [f for f in findings if f.points_to == "signature" and f.severity != "info"]
    confounds = [f for f in findings if f.points_to == "design" and f.severity == "critical"]
    pathology = [f for f in findings if f.points_to == "pathology"]
    tests = sum(_signature_tests(r) for r in results.values() if r is not None)
    tests += int((interventions or {}).get("signature_tests") or 0)
    label, sentence = _sentence(signature, confounds, pathology, tests, interventions)
    demoted = [f for f in findings if f.threshold.get("require_behaviour")]
    if label != "signature" and demoted:
        sentence += (f" The representation does carry a site/scanner signature ({len(demoted)} indirect"
                     " findings, reported as info because the behaviour does not depend on it).")
    chance = near_chance(results.get("group_metrics"))
    if chance and label == "signature":  # said first; the signature found may be why the model fails
        sentence = f"{chance}. {sentence}"
    elif chance:
        label, sentence = "near_chance", (f"{chance}: what a model that does not separate the classes decides on "
                                          f"is not the question. {sentence}")
    lead = signature + confounds + (pathology if label == "pathology" else [])  # the evidence the sentence rests on
    shown = (lead + [f for f in findings if f not in lead])[:top]
    return {
        "verdict": label,
        "sentence": sentence,
        "signature_tests": tests,
        "top_findings": [f.to_dict() for f in shown],
    }


def _signature_tests(result: Any) -> int:
    """``signature_tests`` of a result object or of its ``to_dict()``."""
    value = result.get("signature_tests") if isinstance(result, Mapping) else getattr(result, "signature_tests", 0)
    return int(value or 0)


def _sentence(signature: list[Finding], confounds: list[Finding], pathology: list[Finding],
              tests: int, interventions: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The verdict label and its sentence, by the rule in `verdict`."""
    held = intervention_text(interventions)
    if signature:
        return "signature", "The evidence points to a site/scanner signature: " + _titles(signature, 3) + "."
    if confounds and held:
        return "consistent_with_pathology", (
            "Consistent with pathology: " + _titles(confounds, 2) + ", so accuracy cannot be trusted to "
            "measure pathology, but no intervention on site-specific properties moved the decisions (" + held + ")."
        )
    if confounds:
        return "inconclusive", (
            "Inconclusive: " + _titles(confounds, 2) + ", so no statistic can separate a "
            "site/scanner signature from pathology in this data; the checks that do not "
            "depend on the design found no signature." + _not_run_text(interventions)
        )
    if tests and (pathology or held):
        evidence = [_titles(pathology, 3)] if pathology else []
        evidence += [f"no intervention on site-specific properties moved the decisions ({held})"] if held else []
        return "pathology", (
            f"The evidence points to pathology: {tests} tests for a site/scanner signature in "
            f"the decisions found none, and " + "; ".join(evidence) + "."
        )
    if tests:
        return "inconclusive", (
            f"No site/scanner signature was found in {tests} tests, but no check gave "
            "positive evidence that the decision rests on pathology."
        )
    return "inconclusive", (
        "Inconclusive: no check that can detect a site/scanner signature could run on "
        "the inputs given (see the notes)."
    )


def intervention_text(interventions: Mapping[str, Any] | None) -> str:
    """What ran and how little moved, e.g. 'intensity harmonisation 0 of 16 decisions flipped; ...;
    not run: noise matching (...)'; empty unless interventions with power ran and moved nothing."""
    if not interventions or interventions.get("skipped") or interventions.get("moved"):
        return ""
    ran = {name: v for name, v in (interventions.get("by_intervention") or {}).items() if v.get("trials")}
    if not ran:
        return ""
    text = "; ".join(f"{name.replace('_', ' ')}: {v['flips']} of {v['trials']} decisions flipped" for name, v in ran.items())
    high = interventions.get("max_flip_rate_high")
    if high is not None:
        text += f"; no cell's flip rate above {high:.0%} at the interval's upper bound"
    not_run = interventions.get("not_run") or {}
    if not_run:
        text += "; not run: " + "; ".join(f"{name.replace('_', ' ')} ({why})" for name, why in not_run.items())
    return text


def _not_run_text(interventions: Mapping[str, Any] | None) -> str:
    """Why the interventions, which can test a confounded design, gave no evidence."""
    if interventions is None:
        return ""
    if interventions.get("skipped"):
        return f" The interventions, which can test a confounded design, did not run ({interventions['skipped']})."
    if not interventions.get("signature_tests"):
        return " The interventions had too few subjects per cell to test the decisions."
    return ""


def near_chance(group_metrics: Any, margin: float = 0.1, min_n: int = 10) -> str:
    """A sentence when a binary model's overall balanced accuracy, on at least ``min_n``
    labelled subjects of both classes, is within ``margin`` of chance; else ''."""
    def get(obj, key):
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    overall = get(group_metrics, "overall") if group_metrics is not None else None
    estimate = (overall or {}).get("balanced_accuracy")
    recalls = [get((overall or {}).get(k), "value") for k in ("sensitivity", "specificity")]
    if estimate is None or (get(group_metrics, "n_evaluated") or 0) < min_n or \
            not all(r is not None and r == r for r in recalls):
        return ""
    value, low, high = get(estimate, "value"), get(estimate, "low"), get(estimate, "high")
    chance = 0.5  # binary only (sensitivity and specificity exist): a K-class chance is 1/K
    if value > chance + margin:
        return ""
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"The model is near chance (balanced accuracy {value:.2f}{interval} on the labelled subjects, chance {chance:.2f})"


def _titles(findings: list[Finding], n: int) -> str:
    """'a; b; and 2 more' from the first ``n`` findings' titles."""
    titles = [f.title for f in findings[:n]]
    text = "; ".join(titles)
    if len(findings) > n:
        text += f"; and {len(findings) - n} more"
    return text
