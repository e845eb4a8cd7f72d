"""A method's numerical failure is that subject's failure; a map whose accounting fails is a finding.

Through `run_audit` on a tiny cohort, with a method patched to fail on some subjects: NaN
maps used to reach the bias stage and end the whole run with "bias input `spray_maps` must
be finite" (exit 2, a data error); an LRP conservation error above tolerance had no finding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from conftest import make_cohort, make_config
from xaudit.analysis.quality import CONSERVATION_TOLERANCE, conservation_findings
from xaudit.attribution.base import AttributionResult
from xaudit.attribution.saliency import Saliency


def _patched_saliency(monkeypatch, nan_subjects: set[int], bad_conservation: set[int]):
    """Saliency without the shared pass; NaN maps and a large conservation error for chosen batch rows."""
    original = Saliency.attribute

    def attribute(self, model, inputs, targets, ctx):
        out = original(self, model, inputs, targets, ctx)
        maps = out.maps.clone()
        error = torch.zeros(inputs.shape[0])
        for i in range(inputs.shape[0]):
            if i in nan_subjects:
                maps[i].view(-1)[:5] = float("nan")
            if i in bad_conservation:
                error[i] = 0.5
        return AttributionResult(maps, stats={"conservation_error": error})

    monkeypatch.setattr(Saliency, "from_shared", lambda self, shared: None)
    monkeypatch.setattr(Saliency, "attribute", attribute)


def test_non_finite_maps_fail_their_subject_not_the_run(tmp_path, monkeypatch):
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    _patched_saliency(monkeypatch, nan_subjects={0}, bad_conservation={1})
    manifest = make_cohort(tmp_path / "c", n=6)
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}, data__batch_size=3), ["quality.subjects=0"])
    result = run_audit(config)
    errors = pd.read_csv(result.run_dir / "errors.csv").set_index("subject_id")
    assert set(errors.index) == {"sub-000", "sub-003"}, errors  # row 0 of each batch of 3
    reason = errors.loc["sub-000", "reason"]
    assert "method `saliency` gave a non-finite map" in reason and "5 of" in reason and errors.loc["sub-000", "stage"] == "attribution"
    assert result.audit["counts"]["audited"] == 4 and result.audit["counts"]["failed"] == 2
    found = [f for f in result.audit["findings"] if f["id"] == "attribution.conservation.saliency"]
    assert len(found) == 1 and found[0]["severity"] == "warning"
    assert found[0]["evidence"]["subjects_over"] == 2 and set(found[0]["evidence"]["worst"]) == {"sub-001", "sub-004"}
    checks = result.audit["attribution"]["methods"]["saliency"]["self_checks"]["conservation_error"]
    assert checks["n"] == 4 and checks["max"] == 0.5


def test_conservation_findings_fire_only_above_the_tolerance():
    ids = ["a", "b", "c"]
    assert conservation_findings({"lrp": {"conservation_error": np.array([1e-5, 2e-3, CONSERVATION_TOLERANCE])}}, ids) == []
    assert conservation_findings({"ig": {"completeness_error": np.array([0.9, 0.9, 0.9])}}, ids) == []
    (finding,) = conservation_findings({"lrp": {"conservation_error": np.array([1e-5, 0.3, np.nan])}}, ids)
    assert finding.id == "attribution.conservation.lrp" and finding.threshold == {"conservation_error": CONSERVATION_TOLERANCE}
    assert finding.evidence["subjects_over"] == 2 and finding.evidence["worst"] == ["c", "b"]
    assert "2 of 3 subjects" in finding.title
