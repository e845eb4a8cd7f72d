"""`run_bias_checks`: every bias check whose inputs are present, their findings and the verdict.

The pipeline's bias stage builds a `BiasInputs` from the run directory, calls this, and
writes ``BiasResult.to_dict()`` into ``audit.json`` under ``"bias"`` and
``BiasResult.findings_to_dicts()`` under ``"findings"``. A check whose inputs are missing
is skipped with the reason in ``skipped``; a check that runs but cannot compute part of
its work says so in its own ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threadpoolctl import threadpool_limits

from xaudit.analysis.bias.concepts import tcav
from xaudit.core import versions
from xaudit.analysis.bias.corroboration import require_behaviour
from xaudit.analysis.bias.design import check_design
from xaudit.analysis.bias.findings import Finding, findings_at_or_above, max_severity, sort_findings, verdict
from xaudit.analysis.bias.group_metrics import group_metrics
from xaudit.analysis.bias.inputs import BiasInputs
from xaudit.core.jsonable import to_jsonable
from xaudit.analysis.bias.looking import compare_attribution_shares
from xaudit.analysis.bias.masked_input import masked_input_summary
from xaudit.config.bias import BiasParams
from xaudit.analysis.bias.probes import run_probes
from xaudit.analysis.bias.roles import feature_roles
from xaudit.analysis.bias.spray import spray



@dataclass
class BiasResult:
    """Results of all bias checks.

    Attributes:
        params: the thresholds used.
        checks: check name -> its result object (None when skipped).
        skipped: check name -> why it did not run.
        findings: all findings, most severe first.
        verdict: `xaudit.analysis.bias.findings.verdict` output (its sentence opens the report).
    """

    params: BiasParams
    checks: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def max_severity(self) -> str | None:
        """The highest finding severity, or None."""
        return max_severity(self.findings)

    def fails(self, severity: str | None = None) -> bool:
        """True when a finding is at or above ``severity`` (default ``params.fail_severity``)."""
        return bool(findings_at_or_above(self.findings, severity or self.params.fail_severity))

    def findings_to_dicts(self) -> list[dict[str, Any]]:
        """The findings as JSON-able dicts, for ``audit.json``'s ``"findings"``."""
        return [f.to_dict() for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The ``"bias"`` section of ``audit.json`` (findings are referenced by id)."""
        counts = {s: sum(f.severity == s for f in self.findings) for s in ("info", "warning", "critical")}
        return to_jsonable({
            "schema_version": versions.BIAS,
            "verdict": self.verdict,
            "max_severity": self.max_severity,
            "fails": self.fails(),
            "finding_counts": counts,
            "params": self.params.model_dump(),
            "checks": {name: (r.to_dict() if r is not None else {"skipped": self.skipped.get(name)})
                       for name, r in self.checks.items()},
        })


def _plan(x: BiasInputs, p: BiasParams) -> dict[str, tuple[str | None, Callable[[], Any]]]:
    """Check name -> (reason to skip or None, how to run it)."""
    groups, names = x.groups, x.class_names
    return {
        "design": (None if groups else "no group columns given",
                   lambda: check_design(x.labels, groups, names, p, x.splits)),
        "probes": (None if x.features is not None else "no `features` given",
                   lambda: run_probes(x.features, x.labels, groups, names, p)),
        "roles": (None if x.features is not None else "no `features` given",
                  lambda: feature_roles(x.features, x.feature_names, x.labels, groups, p, x.importances)),
        "looking": (None if x.attribution_shares is not None else "no `attribution_shares` table given",
                    lambda: compare_attribution_shares(x.attribution_shares, names, list(groups), p)),
        "group_metrics": (None if groups else "no group columns given",
                          lambda: group_metrics(x.labels, x.predicted, x.probs, names, groups, p, x.splits)),
        "masked_input": (_masked_reason(x),
                         lambda: masked_input_summary(x.probs, x.probs_fg_blanked, x.probs_bg_blanked,
                                                      x.labels, x.predicted, p)),
        "concepts": (_tcav_reason(x),
                     lambda: tcav(x.tcav_activations, x.tcav_gradients,
                                  x.predicted if x.tcav_targets is None else x.tcav_targets,
                                  x.labels, groups, names, p)),
        "spray": (None if x.spray_maps is not None else "no `spray_maps` given",
                  lambda: spray(x.spray_maps, x.predicted if x.spray_classes is None else x.spray_classes,
                                x.labels, groups, names, p, x.subject_ids)),
    }


def _masked_reason(x: BiasInputs) -> str | None:
    if x.probs_fg_blanked is None and x.probs_bg_blanked is None:
        return "no masked-input probabilities given"
    return None if x.probs is not None else "no full-image `probs` given"


def _tcav_reason(x: BiasInputs) -> str | None:
    if x.tcav_activations is None or x.tcav_gradients is None:
        return "no `tcav_activations` and `tcav_gradients` given"
    return None if x.groups else "no group columns given"


def run_bias_checks(inputs: BiasInputs, params: BiasParams | None = None) -> BiasResult:
    """Run every check whose inputs are present; collect findings; state the verdict.

    Args:
        inputs: the validated per-subject arrays (see `BiasInputs`).
        params: thresholds; defaults to ``BiasParams()``.

    Returns:
        A `BiasResult`.
    """
    params = params or BiasParams()
    result = BiasResult(params=params)
    for name, (reason, run) in _plan(inputs, params).items():
        if reason is not None:
            result.checks[name] = None
            result.skipped[name] = reason
            continue
        with threadpool_limits(limits=1):  # many small fits: BLAS threads only contend
            check = run()
        check.notes[:] = list(dict.fromkeys(check.notes))  # the same note from several loops once
        result.checks[name] = check
        result.findings += check.findings
    if params.require_behaviour:
        result.findings = require_behaviour(result.findings, result.checks)
    result.findings = sort_findings(result.findings)
    result.verdict = verdict(result.findings, result.checks)
    return result
