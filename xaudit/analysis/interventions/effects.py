"""How far decisions move under an intervention: flip rates and probability changes, and findings.

A *trial* is one subject's output before and after one intervention (a property of a
subject from group value ``source`` replaced by that of ``reference``). Trials are pooled
into *cells* (group column, intervention, source, reference, class, donor) and each cell
reports its flip rate with a Wilson interval (valid at small n and at 0 % or 100 %) and the
mean change of the probability of the originally predicted class with a percentile
bootstrap interval. A cell whose flip rate's lower bound reaches ``flip_rate_warning``
raises a finding.

What a flip means depends on what the intervention kept:

    harmonisation, bias field, noise,          the anatomy kept, a site property moved:
      resolution, custom                       a flip is direct evidence of a site signature
    transplant from another site, same class   background moved, class kept: site signature
    transplant from another site that holds    background of the other class and site, which
      none of the subject's class              the data cannot tell apart: evidence that the
                                               decision rests outside the anatomy (signature)
    transplant within a site, other class      a class signal in the background (neutral:
                                               it may come from the anatomy, e.g. through
                                               intensity normalisation)
    transplant from another site, other class, site and class moved at once although the
      where the subject's class exists too       clean test exists: tabled, no finding
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaudit.analysis.stats import Estimate, percentile_interval, wilson_interval
from xaudit.analysis.bias.findings import Finding, severity_for
from xaudit.core.jsonable import to_jsonable

#: what each intervention moves, and why a flip under it matters (the report quotes these)
WHY = {
    "background_transplant": "the subject's anatomy is placed on the background of another subject: a decision "
                             "that follows the background reads something outside the anatomy (padding, markers, "
                             "noise, field of view)",
    "intensity_harmonisation": "the foreground intensities are mapped onto another site's intensity landmarks, the "
                               "anatomy kept (small lesions keep their contrast): a decision that follows them "
                               "rests on the scanner's gain or contrast",
    "bias_field_matching": "the foreground's smooth multiplicative field (a coil's bias field) is replaced by "
                           "another site's mean field, the anatomy kept: a decision that follows it rests on the "
                           "scanner's intensity non-uniformity",
    "noise_matching": "noise is added until the background noise equals the noisier site's: a decision that "
                      "follows it rests on the noise level",
    "resolution_matching": "the sharper site's images are blurred to the smoother site's smoothness: a decision "
                           "that follows it rests on the effective resolution",
}
#: what a flip follows, for the titles
PROPERTY = {"background_transplant": "background", "intensity_harmonisation": "intensities",
            "bias_field_matching": "bias field",
            "noise_matching": "noise level", "resolution_matching": "resolution"}
CUSTOM_WHY = "the user's own intervention (config `interventions.custom`): a decision that follows it rests on " \
             "the property it changes"


@dataclass(frozen=True)
class Trial:
    """One subject's output before and after one intervention.

    Attributes:
        column: the group column (``site``).
        intervention: its name.
        source: the subject's group value.
        reference: the group value whose property it received.
        class_name: the subject's class.
        donor: for a transplant, the donor's class relative to the subject's
            (``same class`` / ``other class``); None otherwise.
        subject_id: the subject.
        before, after: ``(K,)`` probabilities.
    """

    column: str
    intervention: str
    source: str
    reference: str
    class_name: str
    donor: str | None
    subject_id: str
    before: np.ndarray
    after: np.ndarray


@dataclass(frozen=True)
class CellEffect:
    """The effect of one intervention on one cell of subjects."""

    column: str
    intervention: str
    source: str
    reference: str
    class_name: str
    donor: str | None
    n: int
    flips: int
    flip_rate: Estimate
    mean_change: Estimate
    tested: bool
    kind: str  # "site" (a flip points to a signature), "class" (a class signal in the background) or
    #            "both" (another site's other class where its own class exists: tabled, no finding)
    confounded: bool = False  # the reference holds none of the subject's class
    subjects: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class InterventionsResult:
    """Every cell's effect, the findings, and what ran and what did not (with reasons)."""

    cells: list[CellEffect] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    subjects: int = 0
    skipped: str | None = None

    @property
    def signature_tests(self) -> int:
        """Cells with enough subjects whose flips would point to a site signature."""
        return sum(c.tested and c.kind == "site" for c in self.cells)

    @property
    def moved(self) -> bool:
        """Whether an intervention that moves a site property moved the decisions."""
        return any(f.points_to == "signature" and f.severity != "info" for f in self.findings)

    def summary(self) -> dict[str, Any]:
        """What the verdict reads: what ran, what did not, whether decisions moved."""
        if self.skipped:
            return {"skipped": self.skipped}
        site = [c for c in self.cells if c.tested and c.kind == "site"]
        by_name = {name: {"trials": sum(c.n for c in site if c.intervention == name),
                          "flips": sum(c.flips for c in site if c.intervention == name),
                          "moved": any(f.points_to == "signature" and f.severity != "info" and
                                       f.id.startswith(f"interventions.{name}.") for f in self.findings)}
                   for name in self.ran}
        return to_jsonable({
            "by_intervention": by_name, "ran": self.ran, "not_run": self.not_run, "signature_tests": self.signature_tests, "moved": self.moved,
            "flips": sum(c.flips for c in site), "trials": sum(c.n for c in site),
            "max_flip_rate_high": max((c.flip_rate.high for c in site), default=None),
        })

    def to_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped, "summary": self.summary()}
        return to_jsonable({
            "summary": self.summary(), "subjects": self.subjects, "cells": [c.to_dict() for c in self.cells],
            "why": {name: WHY.get(name, CUSTOM_WHY) for name in [*self.ran, *self.not_run]},
            "notes": self.notes, "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings],
        })


def cell_effect(trials: list[Trial], params, classes_at_reference: set[str], seed: list[int]) -> CellEffect:
    """Flip rate (Wilson) and mean change of the predicted class's probability (bootstrap) of one cell."""
    first = trials[0]
    before = np.stack([t.before for t in trials])
    after = np.stack([t.after for t in trials])
    predicted = before.argmax(axis=1)
    flips = int(np.sum(after.argmax(axis=1) != predicted))
    n = len(trials)
    change = after[np.arange(n), predicted] - before[np.arange(n), predicted]
    rng = np.random.default_rng(seed)
    means = change[rng.integers(0, n, (params.bootstrap, n))].mean(axis=1)
    confounded = first.class_name not in classes_at_reference
    kind = "site"
    if first.intervention == "background_transplant" and first.source == first.reference:
        kind = "class"  # another class's background at the same site
    elif first.intervention == "background_transplant" and first.donor != "same class" and not confounded:
        kind = "both"  # site and class moved together although a same-class donor exists: no test
    return CellEffect(
        first.column, first.intervention, first.source, first.reference, first.class_name, first.donor, n, flips,
        Estimate(flips / n, *wilson_interval(flips, n, params.confidence)),
        Estimate(float(change.mean()), *percentile_interval(means, params.confidence)),
        n >= params.min_subjects, kind, confounded, tuple(t.subject_id for t in trials),
    )


def summarise_trials(trials: Iterable[Trial], params, classes_by_value: dict[str, dict[str, set[str]]],
                     ran: list[str], not_run: dict[str, str], notes: list[str] | None = None) -> InterventionsResult:
    """Cells, their findings and the summary of all trials.

    Args:
        trials: every subject's before/after outputs.
        params: `xaudit.config.interventions.InterventionsParams`.
        classes_by_value: column -> group value -> the classes audited there (to tell a
            confounded transplant from one whose class exists at the reference).
        ran: the interventions that produced trials.
        not_run: intervention -> why it did not run (anywhere).
        notes: extra notes.
    """
    cells_trials: dict[tuple, list[Trial]] = {}
    for t in trials:
        cells_trials.setdefault((t.column, t.intervention, t.source, t.reference, t.class_name, t.donor or ""), []).append(t)
    cells = [cell_effect(group, params, classes_by_value.get(key[0], {}).get(key[3], set()), [params.seed, i])
             for i, (key, group) in enumerate(sorted(cells_trials.items(), key=lambda kv: kv[0]))]
    findings = []
    for (column, name, kind), group in _by_kind(cells).items():
        finding = None if kind == "both" else _finding(column, name, kind, group, params)
        if finding is not None:
            findings.append(finding)
    subjects = len({t.subject_id for key in cells_trials for t in cells_trials[key]})
    return InterventionsResult(cells, findings, list(ran), dict(not_run), list(notes or []), subjects)


def _by_kind(cells: list[CellEffect]) -> dict[tuple[str, str, str], list[CellEffect]]:
    out: dict[tuple[str, str, str], list[CellEffect]] = {}
    for c in cells:
        out.setdefault((c.column, c.intervention, c.kind), []).append(c)
    return out


def _cell_text(c: CellEffect) -> str:
    where = (f"{c.class_name} subjects of {c.column} {c.source}" +
             (f" on the background of {c.donor} subjects of {c.column} {c.reference}" if c.donor
              else f" given {c.column} {c.reference}'s property"))
    return (f"{where}: {c.flips} of {c.n} decisions flip ({c.flip_rate.value:.0%} [{c.flip_rate.low:.0%}, "
            f"{c.flip_rate.high:.0%}]), probability of the original decision {c.mean_change.value:+.2f} "
            f"[{c.mean_change.low:+.2f}, {c.mean_change.high:+.2f}]")


def _finding(column: str, name: str, kind: str, cells: list[CellEffect], params) -> Finding | None:
    fired = [(c, s) for c in cells if c.tested
             and (s := severity_for(c.flip_rate.low, params.flip_rate_warning, params.flip_rate_critical))]
    if not fired:
        return None
    top = max((c for c, _ in fired), key=lambda c: (c.flip_rate.low, c.flips))
    severity = "critical" if any(s == "critical" for _, s in fired) else "warning"
    label = name.replace("_", " ")
    listed = "; ".join(_cell_text(c) for c, _ in fired)
    if kind == "class":
        title = (f"{label}: decisions follow a class signal in the background ({top.flips} of {top.n} flip "
                 f"for {top.class_name} at {column} {top.source})")
        meaning = ("The background carries a class signal the model reads. That is not shown to be a site signal: "
                   "it may come from the anatomy itself (e.g. through intensity normalisation of the whole image); "
                   "only a transplant between sites within a class separates the two.")
        points_to = "neutral"
    else:
        title = (f"{label} moves the decisions: {top.flips} of {top.n} {top.class_name} subjects at {column} "
                 f"{top.source} flip with {column} {top.reference}'s {PROPERTY.get(name, repr(name) + ' property')}")
        meaning = WHY.get(name, CUSTOM_WHY).capitalize() + "."
        if any(c.confounded for c, _ in fired if name == "background_transplant"):
            meaning += (f" The donors' {column} holds none of the subjects' class, so the background's signal may "
                        f"be the {column}'s or the class's; either way it lies outside the anatomy.")
        points_to = "signature"
    return Finding(
        id=f"interventions.{name}.{column}" + (".class_signal" if kind == "class" else ""), check="interventions",
        severity=severity, title=title, message=f"{listed}. {meaning}", column=column, points_to=points_to,
        evidence={"cells": [c.to_dict() for c, _ in fired]},
        threshold={"flip_rate_warning": params.flip_rate_warning, "flip_rate_critical": params.flip_rate_critical,
                   "min_subjects": params.min_subjects, "confidence": params.confidence, "interval": "wilson"},
    )
