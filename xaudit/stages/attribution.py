"""The attribution stage: per-method self-check summaries, and mean maps per class x group (NIfTI)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xaudit.analysis.quality import conservation_findings
from xaudit.core.bids import bids_label
from xaudit.analysis.stats import mean_rows
from xaudit.data.cohort import Cohort
from xaudit.core.ids import distinct_file_ids
from xaudit.core.outputs import RunDirectory
from xaudit.data.native import downsample_affine, write_volume


@dataclass(frozen=True)
class AttributionSummary:
    """``audit.json``'s ``attribution``: per method its parameters, self-checks and shares; the
    mean maps written; the explanation-quality checks once the quality stage has run.
    ``findings`` (for ``audit.json``'s ``findings``): methods whose own accounting failed
    (`conservation_findings`)."""

    methods: dict
    mean_maps: tuple[str, ...] = ()
    quality: dict | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    findings: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        out: dict = {"methods": self.methods}
        if self.mean_maps:
            out["mean_maps"] = list(self.mean_maps)
        if self.quality is not None:
            out["quality"] = self.quality
        return out


def attribution_stage(cohort: Cohort, attribution_cfg, run_dir: RunDirectory, layout: str = "xaudit") -> AttributionSummary:
    """Summaries of every method's per-subject statistics, and the mean maps."""
    methods, artifacts = {}, {}
    for method, params in attribution_cfg.methods.items():
        stats = {k: _summary(v) for k, v in cohort.stats.get(method, {}).items()}
        shares = {k: _summary(v) for k, v in cohort.shares.get(method, {}).items()}
        methods[method] = {"params": params, "self_checks": stats, "shares": shares}
        artifacts[f"attributions/{method}"] = (f"attributions/{method}/" if layout != "bids" else
                                               f"sub-*/[ses-*/]anat/*_desc-{bids_label(method)}_attribution.nii.gz")
    written = write_mean_maps(cohort, run_dir)
    if written:
        artifacts["maps"] = "maps/"
    findings = tuple(f.to_dict() for f in conservation_findings(cohort.stats, cohort.subject_ids))
    return AttributionSummary(methods=methods, mean_maps=tuple(written), artifacts=artifacts, findings=findings)


def write_mean_maps(cohort: Cohort, run_dir: RunDirectory) -> list[str]:
    """Mean attribution per class (true label, else prediction) and per class x group value."""
    if cohort.n == 0 or not cohort.maps or any(m.dtype == object for m in cohort.maps.values()):
        return []
    first = next(iter(cohort.maps.values()))
    affine = downsample_affine(cohort.input_affines[0], tuple(cohort.input_shapes[0]), first.shape[1:])
    classes = np.where(cohort.labels >= 0, cohort.labels, cohort.predicted)
    written = []
    class_ids, column_ids = distinct_file_ids(cohort.classes), distinct_file_ids(cohort.groups)
    value_ids = {col: distinct_file_ids(str(v) for v in vals) for col, vals in cohort.groups.items()}
    for method, maps in cohort.maps.items():
        for k, name in enumerate(cohort.classes):
            keys = [(f"{class_ids[name]}", classes == k)]
            keys += [(f"{class_ids[name]}__{column_ids[col]}-{value_ids[col][str(v)]}", (classes == k) & (vals == v))
                     for col, vals in cohort.groups.items() for v in sorted(set(vals))]
            for key, sel in keys:
                if sel.any():
                    rel = f"maps/{method}/mean_{key}.nii.gz"
                    write_volume(mean_rows(maps, sel), affine, run_dir / rel)
                    written.append(rel)
    if cohort.images_small.dtype != object:
        write_volume(mean_rows(cohort.images_small, slice(None)), affine, run_dir / "maps/mean_image.nii.gz")
        written.append("maps/mean_image.nii.gz")
    return written


def _summary(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": 0}
    return {"n": int(finite.size), "mean": float(finite.mean()), "median": float(np.median(finite)),
            "p95": float(np.percentile(finite, 95)), "max": float(finite.max())}
