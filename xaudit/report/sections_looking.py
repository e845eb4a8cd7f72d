"""The "where the model looks" section: attribution shares by region, mean maps per class x
group value, example subjects, and the share of attribution outside the anatomy.

Subjects are placed in cells by class (the true label, or the prediction when unlabelled,
as the mean-map NIfTIs in ``maps/`` are) and by the value of the first group column, so a
reader can compare, within a class, where the model looks at each site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaudit.analysis.stats import evenly_spaced, mean_rows
from xaudit.core.pages import take_rows
from xaudit.report.document import Note, Paragraph, Section, Table
from xaudit.report.drawing import draw_now
from xaudit.report.figures_charts import ShareBox, shares_png
from xaudit.report.figures_maps import PERCENTILE, MapRow, map_grid_png
from xaudit.report.format import fmt_num, fmt_p, fmt_pct
from xaudit.report.plotting import group_color
from xaudit.report.sections_common import maps_usable, notes, safe_figure
from xaudit.report.volumes import load_native

MAX_VALUES = 6  # group values per figure; more would make the map grids unreadable
MAX_CELLS = 12  # rows of a map figure (classes x values)
MAX_TESTS = 12  # rows of the share-test table; methods x shares x columns x classes runs to hundreds
MAX_TYPICAL = 1000  # members searched for a cell's typical example (each a float64 copy of its map)
REGIONS = ("foreground", "background", "border")


@dataclass
class Cell:
    """Subjects of one class and one group value."""

    class_name: str
    value: str | None
    index: np.ndarray

    @property
    def label(self) -> str:
        where = "" if self.value is None else f" · {self.value}"
        return f"{self.class_name}{where} (n={len(self.index)})"

    @property
    def stacked_label(self) -> str:
        """The label on up to three short lines, for chart axes."""
        return "\n".join([self.class_name, *([] if self.value is None else [self.value]), f"(n={len(self.index)})"])


def subject_cells(cohort) -> tuple[str | None, list[Cell], list[str]]:
    """Class x value cells of the first group column (largest values first if too many).

    Returns:
        ``(column, cells, dropped values)``.
    """
    classes = np.where(cohort.labels >= 0, cohort.labels, cohort.predicted)
    column = next(iter(cohort.groups), None)
    values: list[str | None] = [None]
    dropped: list[str] = []
    group = None
    if column is not None:
        group = np.asarray(cohort.groups[column]).astype(str)
        found, counts = np.unique(group, return_counts=True)
        order = [str(v) for v in found[np.argsort(-counts, kind="stable")]]
        keep = max(1, min(MAX_VALUES, MAX_CELLS // max(1, len(cohort.classes))))
        values, dropped = sorted(order[:keep]), order[keep:]
    cells = []
    for k, name in enumerate(cohort.classes):
        for value in values:
            sel = (classes == k) & (True if value is None else group == value)
            if np.any(sel):
                cells.append(Cell(name, value, np.flatnonzero(sel)))
    return column, cells, dropped


def _share_tables(summary: dict, uniform: dict[str, dict[str, float]], class_names: list[str], columns: list[str]) -> list[Table]:
    header = ["Method", "Region", "Uniform map", "All subjects", *class_names]
    rows = []
    for method, entry in summary.items():
        for region in [*REGIONS] + sorted(k[4:] for k in entry if k.startswith("abs_roi_")):
            stats = entry.get(f"abs_{region}")
            if not isinstance(stats, dict):
                continue
            rows.append([method, region, fmt_pct(uniform.get(method, {}).get(region)), fmt_pct(stats.get("mean")),
                         *[fmt_pct((stats.get("by_class") or {}).get(c)) for c in class_names]])
    tables = [Table(header, rows, caption="Mean share of |attribution| in each region; 'uniform map' is the region's "
                                          "share of the voxels, what attribution spread evenly would give.",
                    numeric=[False, False] + [True] * (len(header) - 2))] if rows else []
    for c in columns:
        by_class = {m: (e.get("abs_background") or {}).get(f"by_class_{c}") or {} for m, e in summary.items()}
        values = sorted({v for per in by_class.values() for row in per.values() for v in row})
        rows = [[m, class_name, *[fmt_pct(row.get(v)) for v in values]]
                for m, per in by_class.items() for class_name, row in per.items()]
        if rows:
            tables.append(Table(["Method", "Class", *[f"{c}={v}" for v in values]], rows,
                                caption=f"Share of |attribution| outside the foreground by class and {c}: within a "
                                        "class, a share that differs between values means the model looks at "
                                        "different places depending on the group.",
                                numeric=[False, False] + [True] * len(values)))
    return tables


def _tests_table(tests: list[dict]) -> list:
    """The within-class comparisons of absolute shares, most significant first (all in audit.json)."""
    kept = sorted((t for t in tests if str(t.get("share", "")).startswith("abs_")),
                  key=lambda t: (1.0 if t.get("q_value") is None else t["q_value"], -(t.get("eta2_h") or 0)))
    if not kept:
        return []
    significant = sum(1 for t in kept if t.get("q_value") is not None and t["q_value"] < 0.05)
    shown = kept[:MAX_TESTS]
    rows = [[str(t.get("method")), str(t.get("share")), str(t.get("column")), str(t.get("class_name")), str(t.get("test")),
             fmt_p(t.get("p_value")), fmt_p(t.get("q_value")), fmt_num(t.get("eta2_h")),
             ", ".join(f"{k}: {fmt_pct(v)}" for k, v in (t.get("means") or {}).items())] for t in shown]
    caption = (f"Do the shares of |attribution| differ between group values within a class? {significant} of "
               f"{len(kept)} comparisons have q < 0.05 (Benjamini-Hochberg)"
               + (f"; the {len(shown)} most significant are shown, all are in audit.json." if len(shown) < len(kept) else "."))
    return [Table(["Method", "Share", "Column", "Class", "Test", "p", "q (BH)", "eta² (H)", "Means"], rows, caption=caption,
                  numeric=[False] * 5 + [True] * 3 + [False])]


def _share_figure(cohort, cells: list[Cell], column: str | None, params) -> object | None:
    panels, uniform = {}, {}
    for method, shares in cohort.shares.items():
        values = shares.get("abs_background")
        if values is None or not np.isfinite(values).any():
            continue
        colors = {v: group_color(k) for k, v in enumerate(sorted({c.value for c in cells}, key=str))}
        panels[method] = [ShareBox(c.stacked_label, values[c.index], colors[c.value]) for c in cells]
        volume = shares.get("vol_background")
        uniform[method] = float(np.nanmean(volume)) if volume is not None and np.isfinite(volume).any() else float("nan")
    if not panels:
        return None
    thresholds = {"warning level": params.background_share_warning, "critical level": params.background_share_critical}
    return safe_figure("share_outside_foreground", "Share of |attribution| outside the foreground per subject, by class"
                       + (f" and {column}" if column else "") + "; dotted: the background's share of the voxels; dashed: "
                       "the warning and critical levels of the background-share check.",
                       lambda: shares_png(panels, uniform, thresholds, "share of |attribution| outside foreground"))


def _typical(maps: np.ndarray, index: np.ndarray, cap: int | None = None) -> int:
    """The member whose map correlates best with its cell's mean map (a typical example).

    A cell of more than `MAX_TYPICAL` subjects is searched among that many, evenly spaced
    (the float64 copy of every member's map grows with the cell); the figure says so.
    """
    index = index[evenly_spaced(len(index), MAX_TYPICAL if cap is None else cap)]
    flat = take_rows(maps, index).reshape(len(index), -1).astype(float)
    mean = flat.mean(axis=0)
    centred, ref = flat - flat.mean(axis=1, keepdims=True), mean - mean.mean()
    norms = np.linalg.norm(centred, axis=1) * (np.linalg.norm(ref) or 1.0)
    corr = np.divide(centred @ ref, norms, out=np.zeros(len(index)), where=norms > 0)
    return int(index[int(np.argmax(corr))])


def _map_figures(cohort, config, cells: list[Cell], column: str | None, run_dir) -> list:
    methods = [m for m in config.attribution.methods if maps_usable(cohort, m)]
    if not methods or not cells:
        return [Note("No attribution maps on a common grid: the map figures are left out.")]
    affine = cohort.input_affines[0] if len(cohort.input_affines) else None
    target = config.attribution.target
    blocks = []
    cuts = ("; the coronal and sagittal cuts go through the peak of the mean |attribution|, the axial slices span "
            "the anatomy, the maximum-intensity projections (MIP) span the whole field of view"
            if cohort.images_small.ndim == 4 else "")
    for method in methods:
        maps = cohort.maps[method]
        rows = [MapRow(c.label, mean_rows(cohort.images_small, c.index), mean_rows(maps, c.index)) for c in cells]
        blocks.append(safe_figure(f"mean_map_{method}", f"Mean {method} attribution (target: {target}) per class"
                                  + (f" x {column}" if column else "") + ", over the mean anatomy of the same subjects. "
                                  f"Red: evidence for the target class, blue: against it{cuts}; colour limits "
                                  f"±{PERCENTILE:g}th percentile of |attribution|.",
                                  lambda r=rows, m=method: map_grid_png(r, affine, config.report.slices, f"{m}\nattribution")))
    blocks.append(_examples_figure(cohort, config, cells, column, methods[0], affine, run_dir))
    return blocks


def _examples_figure(cohort, config, cells: list[Cell], column: str | None, method: str, affine, run_dir):
    """One typical subject per cell, at the resolution of its scan where its attribution volume can be read."""
    rows, native_rows = [], []
    dims = cohort.images_small.ndim - 1
    for c in cells:
        i = _typical(cohort.maps[method], c.index)
        subject = cohort.subjects[i]
        pred = cohort.classes[int(cohort.predicted[i])]
        label = (f"{subject.subject_id} · {c.class_name}" + (f" · {c.value}" if c.value else "")
                 + f"\npredicted {pred} ({fmt_num(float(cohort.probs[i].max()))})")
        rows.append(MapRow(label, cohort.images_small[i], cohort.maps[method][i]))
        native = load_native(run_dir, subject, method, dims, config.output_layout) if run_dir is not None else None
        if native is not None:
            native_rows.append(MapRow(label, native.anatomy, native.attribution, affine=native.affine))
    source = dims == 3 and len(native_rows) == len(rows)
    where = ("at the resolution of each scan, three cuts through the subject's own peak and maximum-intensity "
             "projections over the whole field of view" if source else "downsampled, on the model-input grid")
    searched = (f", searched among {MAX_TYPICAL:,} evenly spaced members in cells larger than that"
                if any(len(c.index) > MAX_TYPICAL for c in cells) else "")
    caption = ("One typical subject per class" + (f" x {column}" if column else "")
               + f" (the map closest to its cell's mean{searched}), {method}, {where}; colour limits "
               f"±{PERCENTILE:g}th percentile of |attribution|.")
    shown = native_rows if source else rows
    figure = draw_now if source else safe_figure  # scan-resolution volumes are freed as soon as they are drawn
    return figure(f"examples_{method}", caption, lambda: map_grid_png(
        shown, affine, config.report.slices, f"{method}\nattribution", layout="planes" if source else "slices"))


def looking_section(audit: dict, cohort, config, run_dir=None) -> Section:
    """Shares by region, within-class tests, the share figure, mean maps and examples."""
    section = Section("Where the model looks", "looking")
    section.add(Paragraph("A model that decides on pathology puts its attribution on the anatomy; one that reads a "
                          "scanner signature often looks at the background, the border of the field of view or "
                          "markers. Mean maps are on the model-input grid, downsampled; the examples are drawn at the resolution "
                          "of their scans where their attribution volumes are in attributions/."))
    bias = audit.get("bias") if isinstance(audit.get("bias"), dict) else {}
    check = (bias.get("checks") or {}).get("looking")
    column, cells, dropped = subject_cells(cohort)
    if isinstance(check, dict) and "summary" in check:
        methods = (audit.get("attribution") or {}).get("methods") or {}
        uniform = {m: {k[4:]: v.get("mean") for k, v in (e.get("shares") or {}).items() if k.startswith("vol_")}
                   for m, e in methods.items()}
        section.add(*_share_tables(check["summary"], uniform, cohort.classes, list(cohort.groups)))
        section.add(*_tests_table(check.get("tests") or []))
    else:
        reason = check.get("skipped") if isinstance(check, dict) else "no result in audit.json"
        section.add(Note(f"The attribution-share check was skipped: {reason}."))
    figure = _share_figure(cohort, cells, column, config.bias)
    if figure is not None:
        section.add(figure)
    section.add(*_map_figures(cohort, config, cells, column, run_dir))
    if dropped:
        section.add(Note(f"The map figures show the {len({c.value for c in cells})} largest values of {column}; "
                         f"left out: {', '.join(dropped)}."))
    return section.add(*(notes(check) if isinstance(check, dict) else []))
