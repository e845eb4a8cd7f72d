"""One page per subject, ``subjects/<safe_id>.html``: its maps over its own scan and its numbers.

The group view of ``report.html`` links every point to its subject's page. A page is a
`Document` rendered by the same `render_html` as the report (self-contained: the pictures
are data URIs). Each map is drawn at the resolution of the subject's scan from
``attributions/<method>/<id>.nii.gz`` over its first image, in three planes through the
map's peak and three maximum-intensity projections; where that volume is absent (the run
wrote no maps) the record's downsampled map over the downsampled image is drawn instead.

Bounded for big cohorts: at most `MAX_PAGES` pages (an evenly spaced subsample beyond, said
in the report), and about `PICTURE_BUDGET` pictures in all (fewer methods per subject in a
big cohort, the evidence method first), so the report stays a matter of a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from xaudit.report.document import Document, Figure, Link, Note, Section, Table
from xaudit.report.figures_grids import planes_png
from xaudit.report.figures_maps import PERCENTILE, MapRow
from xaudit.report.format import fmt_num, fmt_pct
from xaudit.report.sections_common import maps_usable
from xaudit.report.volumes import SubjectScan

MAX_PAGES = 1000
PICTURE_BUDGET = 400


@dataclass
class SubjectPage:
    """A page to write: its file name under ``subjects/`` and its document."""

    file_name: str
    document: Document


def page_href(safe_id: str) -> str:
    """The report's relative link to a subject's page (the id is file-safe; quoted for the URL)."""
    return f"subjects/{quote(safe_id)}.html"


def paged_subjects(n: int) -> np.ndarray:
    """Indices of the subjects that get a page: all, or `MAX_PAGES` evenly spaced."""
    return np.arange(n) if n <= MAX_PAGES else np.unique(np.linspace(0, n - 1, MAX_PAGES).round().astype(int))


def _numbers(cohort, i: int) -> Table:
    subject = cohort.subjects[i]
    rows = [["Subject", subject.subject_id], ["Split", subject.split or "n/a"],
            ["Label", cohort.classes[subject.label] if subject.label >= 0 else "unknown"],
            *[[column, str(value)] for column, value in subject.groups.items()],
            ["Predicted", cohort.classes[int(cohort.predicted[i])]],
            ["Attribution target", cohort.classes[int(cohort.targets[i])]],
            *[[f"P({name})", fmt_num(float(cohort.probs[i, k]))] for k, name in enumerate(cohort.classes)]]
    for method in sorted(cohort.shares):
        for key, values in sorted(cohort.shares[method].items()):
            if key.startswith("abs_"):
                rows.append([f"{method}: share of |attribution| in {key[4:]}", fmt_pct(float(values[i]))])
        for key, values in sorted(cohort.stats.get(method, {}).items()):
            rows.append([f"{method}: {key.replace('_', ' ')}", fmt_num(float(values[i]))])
    return Table(["Item", "Value"], rows, numeric=[False, False])


def _picture(cohort, run_dir, i: int, method: str, dims: int, layout: str, scan: SubjectScan) -> Figure | Note:
    subject = cohort.subjects[i]
    native = scan.with_map(run_dir, method, layout)
    if native is not None:
        outline = np.any(np.stack(list(native.rois.values())), axis=0).astype(np.float32) if native.rois else None
        row, where = MapRow(subject.subject_id, native.anatomy, native.attribution, native.affine, outline), \
            f"at the resolution of the scan ({'x'.join(str(s) for s in native.anatomy.shape)} voxels)"
    elif maps_usable(cohort, method):
        affine = cohort.input_affines[i] if len(cohort.input_affines) else None
        row, where = MapRow(subject.subject_id, cohort.images_small[i], cohort.maps[method][i], affine), \
            "downsampled (no attribution volume in attributions/)"
    else:
        return Note(f"No {method} map of this subject could be read.")
    png, vmax = planes_png(row)
    panels = "the cut" if dims == 2 else ("coronal, sagittal and axial cuts through the peak of |attribution|, then "
                                          "maximum-intensity projections over the whole field of view")
    caption = (f"{method}, {where}: {panels}; red for the target class, blue against it, colour limits "
               f"±{fmt_num(vmax)} (the {PERCENTILE:g}th percentile of |attribution|)"
               + ("; ROI masks outlined in green." if row.outline is not None else "."))
    return Figure(f"subject_{method}", caption, png)


def build_subject_pages(cohort, config, run_dir, methods: list[str]) -> list[SubjectPage]:
    """The pages of the paged subjects, each with its maps (``methods``, most telling first) and numbers."""
    picks = paged_subjects(cohort.n)
    if not len(picks):
        return []
    dims = cohort.images_small.ndim - 1 if cohort.images_small.dtype != object else len(cohort.input_shapes[0])
    per_subject = max(1, min(len(methods), PICTURE_BUDGET // len(picks)))

    def page(i: int) -> SubjectPage:
        subject = cohort.subjects[i]
        maps = Section("Maps over the subject's scan", "maps")
        maps.add(Link("← Back to the report's group view", "../report.html#subjects"))
        scan = SubjectScan(subject, dims)
        maps.add(*[_picture(cohort, run_dir, i, m, dims, config.output_layout, scan) for m in methods[:per_subject]])
        if per_subject < len(methods):
            maps.add(Note(f"Maps of {', '.join(methods[per_subject:])} are left out of the subject pages of a cohort "
                          f"this big; their volumes are in attributions/."))
        numbers = Section("Numbers", "numbers").add(_numbers(cohort, i))
        doc = Document(title=f"Subject {subject.subject_id}", subtitle=[config.report.title],
                       sections=[maps, numbers], meta={"contents": False})
        return SubjectPage(f"{subject.safe_id}.html", doc)

    return [page(int(i)) for i in picks]  # a thread pool gained nothing here (measured): numpy holds the GIL
