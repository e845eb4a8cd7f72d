"""The bias stage: feed the cohort's arrays to the checks in `xaudit.bias`.

Everything statistical lives in `xaudit.bias`; this module only gathers its inputs from
a run (predictions, features, attribution shares, masked-input probabilities, TCAV
activations and gradients, downsampled maps) and returns the JSON for ``audit.json``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from xaudit.cohort import Cohort

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


def spray_method(cohort: Cohort, config) -> str | None:
    """The method whose maps SpRAy clusters: the first configured one with maps."""
    for name in config.attribution.methods:
        maps = cohort.maps.get(name)
        if maps is not None and maps.dtype != object:
            return name
    return None


def run_bias_stage(cohort: Cohort, config, audit: dict, run_dir) -> dict:
    """Run every bias check the run's outputs allow; returns findings, verdict, results."""
    from xaudit.bias import BiasInputs, run_bias_checks

    importances = None
    rules = audit.get("rules") or {}
    if isinstance(rules, dict) and rules.get("feature_importances"):
        importances = rules["feature_importances"]
    method = spray_method(cohort, config)
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
        importances=importances,
        attribution_shares=shares_table(cohort),
        probs_fg_blanked=cohort.probs_fg_blanked,
        probs_bg_blanked=cohort.probs_bg_blanked,
        tcav_activations=cohort.concept_acts if has_concepts else None,
        tcav_gradients=cohort.concept_grads if has_concepts else None,
        tcav_targets=cohort.targets if has_concepts else None,
        spray_maps=cohort.maps[method].reshape(cohort.n, -1) if method else None,
        spray_classes=cohort.targets if method else None,
    )
    result = run_bias_checks(inputs, config.bias)
    out = result.to_dict()
    out["findings"] = result.findings_to_dicts()
    if method:
        out.setdefault("spray_method", method)
    return out
