"""Indirect signature evidence counts as a warning only when the behaviour corroborates it.

Probes, feature roles, attribution shares, TCAV concepts and SpRAy clusters show that a
scanner signature is *present* in the representation or in the explanations. Images from
two scanners differ, so almost any network's features carry the difference: a network
trained on balanced data decodes site as well as a shortcut learner does (measured on the
sample cohort, both at balanced accuracy >= 0.97). What separates the two is behaviour:
accuracy within a class that changes with the group value (`group_metrics`), or a decision
the background alone can make (`masked_input`). Where the behaviour was tested for a
group column and shows no dependence, the indirect findings on that column are reported
as ``info`` with the reason; where it could not be tested (one group value per class, too
few subjects), they keep their severity: absence of a test is not evidence.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from xaudit.analysis.bias.findings import Finding, severity_rank

INDIRECT_CHECKS = ("probes", "roles", "looking", "concepts", "spray")


def behaviour_tested_columns(group_metrics: Any) -> set[str]:
    """Group columns whose accuracy was compared across values within a class."""
    if group_metrics is None:
        return set()
    if isinstance(group_metrics, dict):  # its to_dict(), as audit.json holds it
        return {d["column"] for d in group_metrics.get("disparities") or [] if d.get("class_name") is not None}
    return {d.column for d in group_metrics.disparities if d.class_name is not None}


def require_behaviour(findings: list[Finding], checks: dict[str, Any]) -> list[Finding]:
    """Indirect signature findings as ``info`` where behaviour was tested and showed nothing.

    Args:
        findings: all findings of the bias checks.
        checks: check name -> result (None when skipped); reads ``group_metrics``.

    Returns:
        The findings, with uncorroborated indirect ones demoted (their message says why and
        their threshold records the rule).
    """
    def raised(f: Finding) -> bool:
        return f.points_to == "signature" and severity_rank(f.severity) >= severity_rank("warning")

    if any(raised(f) for f in findings if f.check == "masked_input"):
        return findings  # the background alone carries the decision: every column stays suspect
    tested = behaviour_tested_columns(checks.get("group_metrics"))
    if not tested:
        return findings
    behaving = {f.column for f in findings if f.id.startswith("group_metrics.cell.") and raised(f)}
    clean = tested - behaving
    out = []
    for f in findings:
        column = f.column
        # per-column evidence needs its column clean; column-free evidence needs every tested column clean
        demote = f.check in INDIRECT_CHECKS and raised(f) and (column in clean if column else not behaving)
        if demote:
            where = f"{column}" if column else ", ".join(sorted(clean))
            f = replace(
                f, severity="info",
                message=f"{f.message} Reported as info, not {f.severity}: within each class, the model's accuracy "
                        f"does not depend on {where} (no behaviour-by-group finding) and the background alone does "
                        "not carry its decisions, so the signature is present but the decisions do not rest on it.",
                threshold={**f.threshold, "require_behaviour": True, "severity_before": f.severity},
            )
        out.append(f)
    return out


def corroborate_with_interventions(findings: list[Finding], interventions: dict | None) -> list[Finding]:
    """The masked-input signature findings as info where a background transplant tested them.

    With the foreground blanked, the background may still separate the classes because it
    carries a class signal (a lesion moves a whole-image normalisation, so the background's
    level follows the class), not a site one. Transplanting the background of another
    site's subjects separates the two: where transplants ran with enough subjects and moved
    no decision, the masked-input finding is reported as info, pointing to neither.

    Args:
        findings: all findings.
        interventions: `InterventionsResult.summary()` (None or ``{"skipped": ...}`` when
            the interventions did not run: the findings are returned unchanged).
    """
    transplant = ((interventions or {}).get("by_intervention") or {}).get("background_transplant")
    if not transplant or transplant.get("moved") or not transplant.get("trials"):
        return findings
    out = []
    for f in findings:
        if f.check == "masked_input" and f.points_to == "signature" and f.severity != "info":
            f = replace(
                f, severity="info", points_to="neutral",
                message=f"{f.message} Reported as info, not {f.severity}: transplanting the background of another "
                        f"site's subjects moved {transplant['flips']} of {transplant['trials']} decisions, so the "
                        "background's signal is a class signal (it may come from the anatomy through preprocessing), "
                        "not shown to be a site signal, and the decisions on full images do not follow it.",
                threshold={**f.threshold, "interventions": True, "severity_before": f.severity},
            )
        out.append(f)
    return out
