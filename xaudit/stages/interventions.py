"""The interventions stage: load a few audited subjects per group value x class, move one site
property at a time (`xaudit.analysis.interventions`), run the model, count the flips; then fold
the findings into the bias stage's and state the verdict again with them.

The interventions act on the image after the run's spatial preprocessing and before its
intensity normalisation, which is applied to every intervened image as the model expects (a
background transplanted from a lesion subject then carries no trace of the donor's lesion
through the normalisation). With a user transform (``data.transforms.python``) the two cannot
be told apart, and the interventions act on the model's input.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import torch
from monai.data import MetaTensor

from xaudit.analysis.bias.corroboration import corroborate_with_interventions, require_behaviour
from xaudit.analysis.bias.findings import Finding, findings_at_or_above, max_severity, sort_findings, verdict
from xaudit.analysis.interventions import InterventionsResult, Sample, run_interventions
from xaudit.config.schema import TransformsConfig
from xaudit.config.user_code import import_object
from xaudit.data.loading import build_transforms, zscore_batch
from xaudit.errors import XauditError
from xaudit.stages.bias import BiasStageResult
from xaudit.stages.quality import sample_subjects

log = logging.getLogger("xaudit")


def chosen_subjects(cohort, column_names: list[str], per_cell: int) -> list:
    """At most ``per_cell`` labelled subjects per group value x class of every column, evenly spaced."""
    chosen: dict[str, object] = {}
    for column in column_names:
        values = cohort.groups.get(column)
        if values is None:
            continue
        for value in sorted(set(values.tolist()) - {""}):
            for c in sorted(set(cohort.labels.tolist()) - {-1}):
                cell = [s for s, v, y in zip(cohort.subjects, values, cohort.labels) if v == value and y == c]
                chosen.update({s.subject_id: s for s in sample_subjects(cell, per_cell)})
    return [s for s in cohort.subjects if s.subject_id in chosen]


def split_transforms(tcfg, spatial_dims: int):
    """``(spatial, intensity or None)``: the run's preprocessing without its normalisation, and
    the normalisation of a batch ``(B, C, *spatial)`` -> float32 batch."""
    if tcfg.python or tcfg.intensity == "none":
        return build_transforms(tcfg, spatial_dims), None
    spatial = build_transforms(tcfg.model_copy(update={"intensity": "none"}), spatial_dims)
    if tcfg.intensity in ("zscore", "zscore_nonzero"):
        return spatial, functools.partial(zscore_batch, nonzero=tcfg.intensity == "zscore_nonzero")
    one = build_transforms(TransformsConfig(intensity=tcfg.intensity), spatial_dims)
    # MONAI's transforms return MetaTensors, and every op on one pays a Python-level
    # __torch_function__: the model runs on plain tensors (measured: 40 % of this stage)
    return spatial, lambda batch: torch.stack([_plain(torch.as_tensor(one(i), dtype=torch.float32)) for i in batch])


def _predictor(setup, intensity, batch_size: int):
    model = setup.model.module

    def predict(images: list[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([torch.as_tensor(np.ascontiguousarray(i), dtype=torch.float32)
                                 for i in images[start:start + batch_size]])
            if intensity is not None:
                batch = intensity(batch)
            with torch.no_grad():
                logits = model(batch.to(setup.device))
            out.append(torch.softmax(logits.float(), 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(setup.config.model.classes)))

    return predict


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def _load(setup, subjects, spatial, classes) -> tuple[list[Sample], list[str]]:
    samples, notes = [], []
    for s in subjects:
        try:
            loaded, fg = setup.inputs.before_intensity(s, spatial, setup.spatial_dims)
            fg = fg.numpy().astype(bool)
        except XauditError as exc:
            notes.append(f"{s.subject_id}: left out of the interventions ({exc})")
            continue
        if not fg.any() or fg.all():
            notes.append(f"{s.subject_id}: left out of the interventions (its foreground is empty or the whole image)")
            continue
        samples.append(Sample(s.subject_id, classes[s.label], dict(s.groups), loaded.tensor.numpy(), fg))
    return samples, notes


def _custom(params) -> tuple[dict, dict[str, str]]:
    functions, failed = {}, {}
    for name, spec in params.custom.items():
        try:
            functions[name] = import_object(spec, f"interventions.custom.{name}")
        except XauditError as exc:
            log.warning("custom intervention %s not run: %s", name, exc)
            failed[name] = str(exc)
    return functions, failed


def interventions_stage(setup, cohort, params) -> InterventionsResult:
    """Every configured intervention on ``interventions.subjects_per_cell`` subjects per cell.

    Args:
        setup: the validated run (`xaudit.stages.validate.Setup`), or None (merge: no model).
        cohort: the run's records (which subjects finished, their labels and groups).
        params: the config's ``interventions:`` section.
    """
    if setup is None:
        return InterventionsResult(skipped="no model is loaded on merge; `xaudit run --resume` on the run directory runs them")
    if not params.enabled:
        return InterventionsResult(skipped="interventions.enabled is false")
    columns = list(setup.config.data.group_columns)
    if not columns:
        return InterventionsResult(skipped="no group columns (data.group_columns) to move properties between")
    spatial, intensity = split_transforms(setup.config.data.transforms, setup.spatial_dims)
    samples, notes = _load(setup, chosen_subjects(cohort, columns, params.subjects_per_cell), spatial, cohort.classes)
    if setup.config.data.transforms.python:
        notes.append("data.transforms.python is the user's own preprocessing: the interventions act on its output "
                     "(after any intensity normalisation it does).")
    functions, failed = _custom(params)
    try:
        result = run_interventions(samples, columns, _predictor(setup, intensity, params.batch_size), params, functions)
    except ValueError as exc:  # a custom intervention's output did not fit
        log.warning("interventions failed: %s", exc)
        return InterventionsResult(skipped=f"failed: {exc}")
    return dataclasses.replace(result, not_run={**result.not_run, **failed}, notes=[*result.notes, *notes])


def fold_into_bias(bias: BiasStageResult, interventions: InterventionsResult, params) -> BiasStageResult:
    """The bias stage's findings and verdict with the interventions' findings and summary added.

    A masked-input finding that a background transplant did not corroborate is reported as
    info (`corroborate_with_interventions`); then the behaviour rule runs again, since it
    kept indirect findings because of that masked-input finding.

    Args:
        bias: the bias stage's result.
        interventions: the interventions stage's result.
        params: the config's ``bias:`` section (``require_behaviour``, ``fail_severity``).
    """
    findings = [Finding(**f) for f in bias.findings] + list(interventions.findings)
    summary = interventions.summary()
    checks = dict(bias.checks)
    results = dict(checks.get("checks") or {})
    findings = corroborate_with_interventions(findings, summary)
    if params.require_behaviour:
        findings = require_behaviour(findings, results)
    findings = sort_findings(findings)
    fail_severity = params.fail_severity
    checks.update({
        "max_severity": max_severity(findings),
        "fails": bool(findings_at_or_above(findings, fail_severity)),
        "finding_counts": {s: sum(f.severity == s for f in findings) for s in ("info", "warning", "critical")},
    })
    return BiasStageResult(checks, [f.to_dict() for f in findings], verdict(findings, results, interventions=summary))
