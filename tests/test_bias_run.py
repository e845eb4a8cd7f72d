"""Findings, verdict wording, params/input validation and the orchestrating run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from xaudit.analysis.bias import (
    BiasInputs,
    BiasParams,
    Finding,
    findings_at_or_above,
    max_severity,
    run_bias_checks,
    verdict,
)
from xaudit.errors import DataError

CLASSES = ["healthy", "lesion"]
FAST = BiasParams(permutations=19, probe_p_value=0.05, cv_folds=3, bootstrap=200, tcav_random_sets=5)


def _inputs(site_signal: float, confounded: bool = False, n_per_cell: int = 16, seed: int = 0) -> BiasInputs:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 0, 1, 1], n_per_cell)
    site = np.tile(np.repeat(["A", "B"], n_per_cell), 2)
    if confounded:
        site = np.where(labels == 0, "A", "B")
    features = rng.normal(size=(len(labels), 5))
    features[:, 0] += 3.0 * labels
    features[:, 1] += site_signal * (site == "B")
    p1 = np.clip(0.15 + 0.7 * labels + rng.normal(0, 0.1, len(labels)), 0.01, 0.99)
    probs = np.c_[1 - p1, p1]
    noise = rng.uniform(0.3, 0.7, len(labels))
    return BiasInputs(
        labels=labels, predicted=probs.argmax(1), probs=probs, class_names=CLASSES, groups={"site": site},
        features=features, probs_fg_blanked=np.c_[1 - noise, noise], probs_bg_blanked=probs,
    )


def test_clean_inputs_point_to_pathology():
    result = run_bias_checks(_inputs(site_signal=0.0), FAST)
    assert result.verdict["verdict"] == "pathology", result.verdict["sentence"]
    assert result.verdict["sentence"].startswith("The evidence points to pathology")
    assert not result.fails()


def test_planted_site_signature_points_to_signature_without_the_behaviour_rule():
    result = run_bias_checks(_inputs(site_signal=4.0), FAST.model_copy(update={"require_behaviour": False}))
    assert result.verdict["verdict"] == "signature"
    assert "subjects of different site values are told apart from the features" in result.verdict["sentence"]
    assert result.fails() and result.max_severity == "critical"


def test_a_signature_the_decisions_do_not_use_is_reported_as_info():
    """Features carry the site, predictions do not depend on it: indirect evidence only."""
    result = run_bias_checks(_inputs(site_signal=4.0), FAST)
    probes = [f for f in result.findings if f.id.startswith("probe.within_class.site.")]
    assert probes and all(f.severity == "info" for f in probes)
    assert all(f.threshold["severity_before"] == "critical" for f in probes)
    assert "decisions do not rest on it" in probes[0].message
    assert result.verdict["verdict"] == "pathology" and "does carry a site/scanner signature" in result.verdict["sentence"]
    assert result.verdict["top_findings"][0]["points_to"] == "pathology"  # the evidence the verdict rests on first
    assert not result.fails()


def test_demotion_reads_the_column_a_finding_names_even_with_dots():
    """Corroboration once parsed the column out of finding ids: `scanner.model` became `scanner`."""
    inputs = _inputs(site_signal=4.0)
    inputs = BiasInputs(labels=inputs.labels, predicted=inputs.predicted, probs=inputs.probs, class_names=CLASSES,
                        groups={"scanner.model": inputs.groups["site"]}, features=inputs.features)
    result = run_bias_checks(inputs, FAST)
    probes = [f for f in result.findings if f.check == "probes" and f.column == "scanner.model"]
    assert probes and all(f.severity == "info" for f in probes)
    assert any(f.threshold.get("severity_before") == "critical" for f in probes)
    assert all(f.to_dict()["column"] == "scanner.model" for f in probes)


def test_a_signature_the_decisions_use_keeps_its_severity():
    """Same features, but site_B subjects are misclassified: behaviour corroborates the probes."""
    inputs = _inputs(site_signal=4.0)
    site_b = inputs.groups["site"] == "B"
    flipped = np.where(site_b[:, None], inputs.probs[:, ::-1], inputs.probs)
    inputs = BiasInputs(labels=inputs.labels, predicted=flipped.argmax(1), probs=flipped, class_names=CLASSES,
                        groups=inputs.groups, features=inputs.features)
    result = run_bias_checks(inputs, FAST)
    assert any(f.id.startswith("group_metrics.cell.site") and f.severity != "info" for f in result.findings)
    probes = [f for f in result.findings if f.id.startswith("probe.within_class.site.")]
    assert probes and all(f.severity == "critical" for f in probes)
    assert result.verdict["verdict"] == "signature" and result.fails()


def test_confounded_inputs_are_inconclusive_and_say_why():
    result = run_bias_checks(_inputs(site_signal=0.0, confounded=True), FAST)
    assert result.verdict["verdict"] == "inconclusive"
    assert "fully confounded" in result.verdict["sentence"]
    assert "no statistic can separate" in result.verdict["sentence"]
    assert result.verdict["top_findings"][0]["id"] == "design.confounded.site"


def test_result_is_strict_json_and_lists_skipped_checks():
    result = run_bias_checks(_inputs(site_signal=4.0), FAST)
    payload = json.dumps({"bias": result.to_dict(), "findings": result.findings_to_dicts()}, allow_nan=False)
    data = json.loads(payload)
    assert data["bias"]["checks"]["spray"] == {"skipped": "no `spray_maps` given"}
    assert data["bias"]["finding_counts"]["info"] >= 1
    assert all(set(f) >= {"id", "check", "severity", "title", "message", "evidence", "threshold"}
               for f in data["findings"])


@pytest.mark.parametrize("labels, site", [
    (np.zeros(6, int), np.array(["A", "B"] * 3)),                  # one class
    (np.array([0, 1] * 3), np.array(["A"] * 6)),                    # one group value
    (np.array([0, 1, -1]), np.array(["A", "B", "B"])),              # tiny n, unknown label
])
def test_degenerate_inputs_run_with_notes(labels, site):
    n = len(labels)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1], n)
    inputs = BiasInputs(labels, probs.argmax(1), probs, CLASSES, {"site": site}, features=rng.normal(size=(n, 3)),
                        probs_fg_blanked=probs[::-1], spray_maps=rng.normal(size=(n, 4)),
                        tcav_activations=rng.normal(size=(n, 3)), tcav_gradients=rng.normal(size=(n, 3)),
                        attribution_shares=[{"label": int(max(lab, 0)), "site": s, "abs_background": 0.1}
                                            for lab, s in zip(labels, site)])
    result = run_bias_checks(inputs, FAST)
    notes = [n for check in result.checks.values() if check is not None for n in check.notes]
    assert notes
    assert result.verdict["verdict"] == "inconclusive"
    json.dumps(result.to_dict(), allow_nan=False)


def test_inputs_are_validated_with_named_errors():
    with pytest.raises(DataError, match="`predicted` must be a vector of 3"):
        BiasInputs([0, 1, 1], [0, 1], None, CLASSES)
    with pytest.raises(DataError, match=r"`labels` must hold class indices in \[-1, 1\]. Got 2 at row 1"):
        BiasInputs([0, 2], [0, 1], None, CLASSES)
    with pytest.raises(DataError, match=r"`features` must have shape \(2, F\)"):
        BiasInputs([0, 1], [0, 1], None, CLASSES, features=np.zeros((3, 2)))
    with pytest.raises(DataError, match="groups\\['site'\\]"):
        BiasInputs([0, 1], [0, 1], None, CLASSES, groups={"site": ["A"]})
    with pytest.raises(DataError, match="finite"):
        BiasInputs([0, 1], [0, 1], [[0.5, np.nan], [0.5, 0.5]], CLASSES)


def test_params_are_frozen_strict_and_consistent():
    params = BiasParams()
    with pytest.raises(ValidationError):
        params.seed = 3
    with pytest.raises(ValidationError, match="extra"):
        BiasParams(unknown=1)
    with pytest.raises(ValidationError, match="`permutations` must be >= 99"):
        BiasParams(permutations=50)
    with pytest.raises(ValidationError, match="`disparity_warning` must be <="):
        BiasParams(disparity_warning=0.5, disparity_critical=0.2)
    assert all(field.description for field in BiasParams.model_fields.values())


def _finding(fid: str, severity: str, points_to: str = "signature") -> Finding:
    return Finding(fid, "test", severity, fid, fid, points_to=points_to)


def test_severity_helpers():
    findings = [_finding("a", "info"), _finding("b", "critical"), _finding("c", "warning")]
    assert max_severity(findings) == "critical"
    assert max_severity([]) is None
    assert [f.id for f in findings_at_or_above(findings, "warning")] == ["b", "c"]
    with pytest.raises(ValueError, match="Unknown severity"):
        _finding("d", "fatal")


def test_verdict_without_any_test_is_inconclusive():
    out = verdict([], {"design": None})
    assert out["verdict"] == "inconclusive" and "could run" in out["sentence"]
