"""One page per subject, ``subjects/<safe_id>.html``: its maps over its own scan and its numbers.

The group view of ``report.html`` links every point to its subject's page. A page is a
`Document` rendered by the same `render_html` as the report (self-contained: the pictures
are data URIs). Each map is drawn at the resolution of the subject's scan from
``attributions/<method>/<id>.nii.gz`` over its first image, in three planes through the
map's peak and three maximum-intensity projections; where that volume is absent (the run
wrote no maps) the record's downsampled map over the downsampled image is drawn instead.

Bounded for big cohorts: at most `MAX_PAGES` pages (an evenly spaced subsample beyond, said
in the report), and about `PICTURE_BUDGET` pictures in all (fewer methods per subject in a
big cohort, the evidence method first), so the report stays a matter of a minute. The
pictures are drawn in worker processes while the dataset-level stages run
(`xaudit.report.subject_pictures`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from xaudit.report.document import Document, Figure, Link, Note, Section, Table
from xaudit.report.format import fmt_num, fmt_pct
from xaudit.report.subject_pictures import SubjectPictures

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


def subject_page_methods(n_pages: int, methods: list[str]) -> list[str]:
    """The methods drawn on each page (most telling first): all, or fewer in a big cohort (`PICTURE_BUDGET`)."""
    return methods[:max(1, min(len(methods), PICTURE_BUDGET // max(n_pages, 1)))]


def start_pictures(cohort, config, run_dir) -> SubjectPictures:
    """The subject pages' pictures, started in worker processes unless the methods shown wait on
    the verdict (in a cohort too big to show every method, the evidence method is shown first)."""
    pictures = SubjectPictures(cohort, run_dir, config.output_layout)
    methods = [m for m in config.attribution.methods if m in cohort.maps]
    picks = paged_subjects(cohort.n)
    if len(subject_page_methods(len(picks), methods)) == len(methods):
        pictures.ahead(picks, methods)
    return pictures


def build_subject_pages(cohort, config, run_dir, methods: list[str], pictures: SubjectPictures | None = None) -> list[SubjectPage]:
    """The pages of the paged subjects, each with its maps (``methods``, most telling first) and numbers.

    ``pictures``: started ahead (`start_pictures`); those not drawn yet are drawn now.
    """
    picks = paged_subjects(cohort.n)
    if not len(picks):
        return []
    shown = subject_page_methods(len(picks), methods)
    drawn = pictures or SubjectPictures(cohort, run_dir, config.output_layout)
    drawn.ahead(picks, shown)  # those not started yet: the workers and this process draw them together
    with drawn if pictures is None else nullcontext(drawn):  # started by the caller: the caller stops it

        def page(i: int) -> SubjectPage:
            subject = cohort.subjects[i]
            maps = Section("Maps over the subject's scan", "maps")
            maps.add(Link("← Back to the report's group view", "../report.html#subjects"))
            for picture in drawn.pictures(i, shown).values():
                maps.add(Figure(f"subject_{picture.method}", picture.text, picture.png) if picture.png is not None
                         else Note(picture.text))
            if len(shown) < len(methods):
                maps.add(Note(f"Maps of {', '.join(methods[len(shown):])} are left out of the subject pages of a cohort "
                              f"this big; their volumes are in attributions/."))
            numbers = Section("Numbers", "numbers").add(_numbers(cohort, i))
            doc = Document(title=f"Subject {subject.subject_id}", subtitle=[config.report.title],
                           sections=[maps, numbers], meta={"contents": False})
            return SubjectPage(f"{subject.safe_id}.html", doc)

        # from the last subject back: the workers draw from the first on, so the two meet halfway
        return [page(int(i)) for i in picks[::-1]][::-1]
