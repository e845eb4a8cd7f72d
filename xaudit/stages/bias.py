"""The bias stage: feed the cohort's arrays to the checks in `xaudit.analysis.bias`.

Everything statistical lives in `xaudit.analysis.bias`; this module only gathers its inputs from
a run (predictions, features, attribution shares, masked-input probabilities, TCAV
activations and gradients, downsampled maps) and returns the JSON for ``audit.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xaudit.analysis.bias import BiasInputs, run_bias_checks
from xaudit.data.cohort import Cohort

log = logging.getLogger("xaudit")


def shares_table(cohort: Cohort) -> pd.DataFrame | None:
    """One row per subject x method: attribution shares, label name, group values."""
    frames = []
    label_names = np.array([cohort.classes[k] if k >= 0 else "" for k in cohort.labels], dtype=object)
    for method, shares in cohort.shares.items():
        if not shares:
            continue
        frame = pd.DataFrame(shares)
        frame["method"] = method
        frame["label"] = label_names
        frame["subject_id"] = cohort.subject_ids
        for col, values in cohort.groups.items():
            frame[col] = values
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def spray_method(cohort: Cohort, methods) -> str | None:
    """The method whose maps SpRAy clusters: the first configured one with maps."""
    for name in methods:
        maps = cohort.maps.get(name)
        if maps is not None and maps.dtype != object:
            return name
    return None


@dataclass(frozen=True)
class BiasStageResult:
    """``audit.json``'s ``bias`` (every check's result), its findings and the verdict."""

    checks: dict
    findings: list[dict] = field(default_factory=list)
    verdict: dict | None = None

    def to_dict(self) -> dict:
        return self.checks


def bias_stage(cohort: Cohort, bias_cfg, methods, importances: dict[str, float] | None = None) -> BiasStageResult:
    """Run every bias check the run's outputs allow.

    Args:
        cohort: the run's records.
        bias_cfg: the config's ``bias:`` section (`BiasParams`).
        methods: the configured attribution method names, in order (SpRAy clusters the first with maps).
        importances: the rules' feature importances (feature roles weigh them), if rules ran.
    """
    method = spray_method(cohort, methods)
    has_concepts = cohort.concept_acts.ndim == 2 and cohort.concept_acts.shape[1] > 0
    inputs = BiasInputs(
        labels=cohort.labels,
        predicted=cohort.predicted,
        probs=cohort.probs,
        class_names=cohort.classes,
        groups={k: v.astype(str) for k, v in cohort.groups.items()},
        splits=cohort.splits.astype(str),
        subject_ids=np.array(cohort.subject_ids),
        features=cohort.features if cohort.features.shape[1] else None,
        feature_names=cohort.feature_names if cohort.features.shape[1] else None,
        importances=importances or None,
        attribution_shares=shares_table(cohort),
        probs_fg_blanked=cohort.probs_fg_blanked,
        probs_bg_blanked=cohort.probs_bg_blanked,
        tcav_activations=cohort.concept_acts if has_concepts else None,
        tcav_gradients=cohort.concept_grads if has_concepts else None,
        tcav_targets=cohort.targets if has_concepts else None,
        spray_maps=cohort.maps[method].reshape(cohort.n, -1) if method else None,
        spray_classes=cohort.targets if method else None,
    )
    result = run_bias_checks(inputs, bias_cfg)
    checks = result.to_dict()
    if method:
        checks.setdefault("spray_method", method)
    verdict = checks.pop("verdict", None)
    checks.pop("findings", None)
    return BiasStageResult(checks, result.findings_to_dicts(), verdict)
