"""The "every subject" section: the group view (strip plots linked to subject pages) and a mosaic.

Each per-subject statistic the run recorded (probabilities, shares of |attribution| by
region, the methods' self-check errors) is one strip plot; every subject is a point
coloured by the first group column, in the row of its class, and a link to its page in
``subjects/``. The mosaic shows every subject's map of one method side by side, like FSL's
``slicesdir``, so an odd one stands out; a big cohort is subsampled, and the figure says so.

Both are bounded: the group view draws at most `MAX_POINTS` subjects (evenly spaced in manifest
order, plus every statistic's `TAIL` lowest and highest values, where an odd subject sits), the
mosaic `MAX_TILES`; the section says how many of how many. `bounds` states every cap that
engages for a cohort, for ``audit.json``.
"""

from __future__ import annotations

import numpy as np

from xaudit.analysis.stats import evenly_spaced
from xaudit.report.document import Note, Paragraph, Section, StripPlots
from xaudit.report.figures_grids import mosaic_png
from xaudit.report.figures_maps import PERCENTILE
from xaudit.report.sections_common import maps_usable, safe_figure
from xaudit.report.subject_pages import MAX_PAGES, page_href, paged_subjects

MAX_TILES = 120
MAX_POINTS = 2000  # subjects drawn in the group view (each is one SVG point per statistic)
TAIL = 5  # of each statistic's lowest and highest values, always drawn
REGION_WORDS = {"background": "outside the foreground", "border": "in the border of the field of view",
                "foreground": "in the foreground"}


def strip_statistics(cohort) -> list[tuple[str, list[float]]]:
    """(name, values) of every per-subject statistic worth a strip plot, in reading order."""
    stats = []
    shown = cohort.classes[-1:] if len(cohort.classes) == 2 else cohort.classes
    for name in shown:
        k = cohort.classes.index(name)
        stats.append((f"P({name})", [float(v) for v in cohort.probs[:, k]]))
    for method in sorted(cohort.shares):
        for key in ["abs_background", "abs_border", *sorted(k for k in cohort.shares[method] if k.startswith("abs_roi_"))]:
            values = cohort.shares[method].get(key)
            if values is not None and np.isfinite(values).any():
                where = REGION_WORDS.get(key[4:], f"in ROI {key[8:]}")
                stats.append((f"{method}: share of |attribution| {where}", [float(v) for v in values]))
        for key, values in sorted(cohort.stats.get(method, {}).items()):
            if np.isfinite(values).any():
                stats.append((f"{method}: {key.replace('_', ' ')}", [float(v) for v in values]))
    return stats


def shown_subjects(stats: list[tuple[str, list[float]]], n: int, cap: int | None = None,
                   tail: int | None = None) -> np.ndarray:
    """Rows the group view draws: all ``n``, or ``cap`` evenly spaced plus each statistic's ``tail``
    lowest and highest finite values (so the outliers a group view is for are never dropped)."""
    cap, tail = MAX_POINTS if cap is None else cap, TAIL if tail is None else tail
    if n <= cap:
        return np.arange(n)
    keep = [evenly_spaced(n, cap)]
    for _, values in stats:
        v = np.asarray(values, dtype=float)
        finite = np.flatnonzero(np.isfinite(v))
        order = finite[np.argsort(v[finite], kind="stable")]
        keep += [order[:tail], order[-tail:]]
    return np.unique(np.concatenate(keep))


def bounds(cohort) -> dict:
    """What the report draws of ``cohort`` where a cap engages, with the numbers (for ``audit.json``)."""
    out, n = {}, cohort.n
    if n > MAX_POINTS:
        shown = len(shown_subjects(strip_statistics(cohort), n))
        out["group_view"] = {"shown": shown, "of": n, "note": (
            f"the group view draws {shown:,} of {n:,} subjects: {MAX_POINTS:,} evenly spaced in manifest order plus "
            f"each statistic's {TAIL} lowest and highest")}
    if n > MAX_TILES:
        out["mosaic"] = {"shown": MAX_TILES, "of": n,
                         "note": f"the mosaic shows {MAX_TILES} of {n:,} subjects, evenly spaced in manifest order"}
    if n > MAX_PAGES:
        out["subject_pages"] = {"shown": MAX_PAGES, "of": n,
                                "note": f"subject pages are written for {MAX_PAGES:,} of {n:,} subjects, evenly spaced"}
    return out


def _mosaic_figure(cohort, method: str):
    index = evenly_spaced(cohort.n, MAX_TILES)
    where = "all are in the group view" if cohort.n <= MAX_POINTS else "all are in predictions.csv and the records"
    note = (f"; {len(index)} of {cohort.n} subjects, evenly spaced in manifest order ({where})"
            if len(index) < cohort.n else "")
    caption = (f"Every subject's {method} map (maximum-intensity projection along the vertical axis over the "
               f"subject's mean-intensity projection, downsampled), one colour scale ±{PERCENTILE:g}th percentile of "
               f"|attribution|, as FSL's slicesdir lays out a cohort: an odd map stands out{note}.")
    affine = cohort.input_affines[0] if len(cohort.input_affines) else None
    return safe_figure(f"mosaic_{method}", caption, lambda: mosaic_png(
        [cohort.subjects[i].subject_id for i in index], cohort.images_small[index], cohort.maps[method][index], affine))


def _of(shown: int, n: int) -> str:
    return f"{n}" if shown == n else f"{shown:,} of {n:,}"


def subjects_section(cohort, method: str | None) -> Section:
    """The group view and the mosaic of ``method``'s maps."""
    section = Section("Every subject", "subjects")
    stats = strip_statistics(cohort)
    if cohort.n == 0 or not stats:
        return section.add(Note("No per-subject statistics: no group view."))
    paged = set(int(i) for i in paged_subjects(cohort.n))
    column = next(iter(cohort.groups), None)
    colors = [str(v) for v in cohort.groups[column]] if column else ["all subjects"] * cohort.n
    rows = [cohort.classes[int(s.label)] if s.label >= 0 else f"predicted {cohort.classes[int(p)]}"
            for s, p in zip(cohort.subjects, cohort.predicted)]
    shown = [int(i) for i in shown_subjects(stats, cohort.n)]
    ids = cohort.subject_ids
    section.add(Paragraph(("Every subject" if len(shown) == cohort.n else "Every subject drawn") + " is a point in each "
                          "plot below (colour: " + (column or "all subjects") + "; row: its class). Hover a point to "
                          "find the same subject in every plot; click it to open its page with its maps over its own "
                          "scan and its numbers; type in the box to find an id."))
    section.add(StripPlots(subjects=[ids[i] for i in shown],
                           hrefs=[page_href(cohort.subjects[i].safe_id) if i in paged else "" for i in shown],
                           colors=[colors[i] for i in shown], rows=[rows[i] for i in shown],
                           stats=[(name, [values[i] for i in shown]) for name, values in stats],
                           color_title=column or "",
                           caption=f"{len(stats)} per-subject statistics of {_of(len(shown), cohort.n)} subjects; "
                                   "every number is in the subject records and on the subject pages."))
    if len(shown) < cohort.n:
        section.add(Note(f"The group view draws {len(shown):,} of {cohort.n:,} subjects: {MAX_POINTS:,} evenly spaced in "
                         f"manifest order plus each statistic's {TAIL} lowest and highest values, so that one point per "
                         "subject stays a page a browser can draw; predictions.csv and the records hold every subject."))
    if cohort.n > MAX_PAGES:
        section.add(Note(f"Subject pages are written for {MAX_PAGES} of {cohort.n} subjects, evenly spaced in "
                         "manifest order; the others are points without a link."))
    if method is not None and maps_usable(cohort, method) and cohort.images_small.ndim >= 3:
        section.add(_mosaic_figure(cohort, method))
    return section
