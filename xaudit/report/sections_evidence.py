"""The picture under the verdict: the evidence the verdict rests on, before any table.

For a signature (or inconclusive) verdict: the mean map per class and value of the first
group column, and within each class the difference between the two largest values, all as
maximum-intensity projections over the whole field of view, so a marker in a corner shows.
For a pathology verdict: example subjects' maps at the resolution of their scans with their
lesion/ROI masks outlined, when the manifest gives ROI masks; else the mean maps per class.
"""

from __future__ import annotations

import numpy as np

from xaudit.analysis.stats import mean_rows
from xaudit.report.document import Note
from xaudit.report.drawing import draw_now
from xaudit.report.figures_grids import mip_grid_png
from xaudit.report.figures_maps import PERCENTILE, MapRow
from xaudit.report.sections_common import maps_usable, safe_figure
from xaudit.report.sections_looking import subject_cells
from xaudit.report.volumes import load_native

MAX_ROI_EXAMPLES = 3


def evidence_method(audit: dict, cohort, config) -> str | None:
    """The method named by the top findings, else the bias checks' method, else the first usable one."""
    usable = [m for m in config.attribution.methods if maps_usable(cohort, m)]
    verdict = audit.get("verdict") if isinstance(audit.get("verdict"), dict) else {}
    bias = audit.get("bias") if isinstance(audit.get("bias"), dict) else {}
    named = [f.get("method") or (f.get("evidence") or {}).get("method") for f in verdict.get("top_findings") or []
             if isinstance(f, dict)]
    for method in [*named, bias.get("spray_method")]:
        if method in usable:
            return method
    return usable[0] if usable else None


def _site_grid(cohort, method: str):
    """Rows per class: the mean map at each value of the first group column, then last minus first value."""
    column, cells, _ = subject_cells(cohort)
    values = sorted({c.value for c in cells}, key=str)
    maps, images = cohort.maps[method], cohort.images_small
    grid, row_labels = [], []
    for name in cohort.classes:
        mine = {c.value: c for c in cells if c.class_name == name}
        if not mine:
            continue
        row = [MapRow(mine[v].label, mean_rows(images, mine[v].index), mean_rows(maps, mine[v].index))
               if v in mine else None for v in values]
        if len(values) >= 2:
            first, last = mine.get(values[0]), mine.get(values[-1])
            row.append(None if first is None or last is None else MapRow(
                "difference", mean_rows(images, np.concatenate([first.index, last.index])),
                mean_rows(maps, last.index) - mean_rows(maps, first.index)))
        grid.append(row)
        row_labels.append(f"{name} (n={sum(len(c.index) for c in mine.values())})")
    labels = ["all subjects" if v is None else f"{column} = {v}" for v in values]
    if len(values) >= 2:
        labels.append(f"{values[-1]} minus {values[0]}")
    return column, values, grid, row_labels, labels


def _roi_examples(cohort, method: str, run_dir, target_class: int, layout: str) -> list[tuple[str, MapRow]]:
    """Up to `MAX_ROI_EXAMPLES` subjects of the target class whose ROI masks and native maps can be read."""
    dims = cohort.images_small.ndim - 1
    order = np.argsort(-cohort.probs[:, target_class], kind="stable") if cohort.n else []
    found = []
    for i in order:
        subject = cohort.subjects[int(i)]
        if not subject.rois:
            continue
        native = load_native(run_dir, subject, method, dims, layout)
        if native is None or not native.rois:
            continue
        outline = np.any(np.stack(list(native.rois.values())), axis=0).astype(np.float32)
        found.append((subject.subject_id, MapRow(subject.subject_id, native.anatomy, native.attribution,
                                                 affine=native.affine, outline=outline)))
        if len(found) == MAX_ROI_EXAMPLES:
            break
    return found


def evidence_figure(audit: dict, cohort, config, run_dir) -> list:
    """The figure under the verdict (or a one-line note why there is none)."""
    verdict = audit.get("verdict") if isinstance(audit.get("verdict"), dict) else None
    method = evidence_method(audit, cohort, config)
    if verdict is None or method is None:
        return [Note("No attribution maps on a common grid: no picture of the evidence.")] if verdict else []
    label = str(verdict.get("verdict", ""))
    affine = cohort.input_affines[0] if len(cohort.input_affines) else None
    limit = f"colour limits ±{PERCENTILE:g}th percentile of |attribution|, red for the target class, blue against it"
    if label == "pathology":
        target = max(len(cohort.classes) - 1, 0)
        examples = _roi_examples(cohort, method, run_dir, target, config.output_layout)
        if examples:
            caption = (f"Does the model look at the lesion? {method} maps of the {len(examples)} subjects most confidently "
                       f"{cohort.classes[target]}, at the resolution of their scans, ROI masks outlined in green; "
                       f"maximum-intensity projections over the whole field of view; {limit}.")
            return [draw_now("evidence_verdict", caption, lambda: mip_grid_png(  # scan-resolution volumes
                [[row] for _, row in examples], [sid for sid, _ in examples], [f"{method}"], None,
                f"{method}\nattribution"))]
    column, values, grid, row_labels, labels = _site_grid(cohort, method)
    if not grid:
        return []
    if len(values) >= 2:
        what = (f"look for attribution at one {column} and not at the other within a class: the last column, "
                f"{values[-1]} minus {values[0]}, shows where the model looks differently by {column}")
    else:
        what = "look for attribution outside the anatomy"
    caption = (f"Where the model looks ({method}, mean maps per class" + (f" and {column}" if column else "")
               + f", maximum-intensity projections over the whole field of view): {what}; {limit}.")
    return [safe_figure("evidence_verdict", caption,
                        lambda: mip_grid_png(grid, row_labels, labels, affine, f"{method}\nattribution"))]

