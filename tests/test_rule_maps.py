"""The top rules' feature maps: each feature's channel map averaged over the rule's subjects.

The batched computation (every subject loaded once for all the rules, every feature from
the same forward pass) must equal the plain one: one subject and one forward pass at a time.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from conftest import make_cohort, make_config
from xaudit.config import load_config
from xaudit.core.outputs import RunDirectory
from xaudit.data.cohort import feature_names_of, load_cohort
from xaudit.data import cache
from xaudit.data.loading import load_subject
from xaudit.stages import rules as rules_stage
from xaudit.stages.validate import validate_setup
from xaudit.workflows.audit import RunOptions, run_audit


def test_batched_rule_maps_equal_one_subject_at_a_time(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path / "cohort", n=11)
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}))
    run = run_audit(config, RunOptions(output=tmp_path / "run"))
    setup = validate_setup(config)
    run_dir = RunDirectory(run.run_dir)
    cohort = load_cohort(run_dir, setup.subjects, config.model.classes, feature_names_of(run_dir))
    features = [cohort.feature_names[0], cohort.feature_names[-1]]
    rule = {"id": "r9", "conditions": [{"feature": f} for f in features], "covered_subjects": cohort.subject_ids[:10]}
    other = {"id": "r2", "conditions": [{"feature": features[0]}], "covered_subjects": cohort.subject_ids[6:]}
    monkeypatch.setattr(rules_stage, "RULE_MAP_BATCH", 4)  # 11 subjects: batches of 4, 4 and 3
    loads = []
    monkeypatch.setattr(cache, "load_subject", lambda s, *a: loads.append(s.subject_id) or load_subject(s, *a))
    written = rules_stage.write_rule_maps(setup, cohort, [rule, other], run_dir)
    assert len(written) == 3 and written[2].startswith("maps/rules/r2__")
    assert sorted(loads[1:]) == sorted(cohort.subject_ids)  # each subject once (after the probe of the first)
    _assert_mean_maps(setup, cohort, run, features, written[:2], cohort.subjects[:10])
    _assert_mean_maps(setup, cohort, run, features[:1], written[2:], cohort.subjects[6:])


def _assert_mean_maps(setup, cohort, run, features, written, subjects):
    model = setup.model.module
    for feature, rel in zip(features, written):
        match = rules_stage.FEATURE.match(feature)
        first = load_subject(cohort.subjects[0], setup.transforms, setup.spatial_dims).tensor[None]
        width = rules_stage._feature_width(model, match["layer"], bool(match["input"]), first)
        module = rules_stage.spatial_module(model, match["layer"], bool(match["input"]), width, first)
        total = 0.0
        for subject in subjects:
            x = load_subject(subject, setup.transforms, setup.spatial_dims).tensor[None]
            out = []
            handle = module.register_forward_hook(lambda _m, _a, o: out.append(o))
            with torch.no_grad():
                model(x)
            handle.remove()
            channel = out[-1][:, int(match["channel"])][:, None].float()
            total = total + F.interpolate(channel, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)[0, 0]
        expected = (total / len(subjects)).numpy()
        saved = np.asarray(nib.load(str(run.run_dir / rel)).dataobj)
        np.testing.assert_allclose(saved, expected, rtol=1e-4, atol=1e-5)
