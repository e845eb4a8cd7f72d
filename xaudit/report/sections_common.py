"""Helpers every section builder shares: skipped-check notes, a check's notes, figures to draw."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xaudit.report.document import Bullets, Note, Section
from xaudit.report.drawing import PendingFigure


def skipped(section: Section, check: dict | None, what: str) -> Section | None:
    """The section with a one-line note when the check did not run, else None."""
    if not isinstance(check, dict):
        return section.add(Note(f"{what} did not run (no result in audit.json)."))
    if "skipped" in check:
        return section.add(Note(f"{what} was skipped: {check['skipped']}."))
    return None


def notes(check: dict) -> list[Note | Bullets]:
    """A check's own notes: one line each, or a list under one line when there are many."""
    items = [str(n) for n in check.get("notes") or []]
    if len(items) <= 2:
        return [Note(n) for n in items]
    return [Note(f"{len(items)} notes from this check:"), Bullets(items)]


def safe_figure(name: str, caption: str, draw: Callable[[], bytes]) -> PendingFigure:
    """A figure to draw with the report's others (`xaudit.report.drawing.draw_figures`): it
    becomes a `Figure`, or a note saying why it could not be drawn."""
    return PendingFigure(name, caption, draw)


def maps_usable(cohort, method: str) -> bool:
    """Whether a method's maps exist on one grid with the anatomy, so they can be drawn."""
    maps = cohort.maps.get(method)
    return (maps is not None and maps.dtype != object and cohort.images_small.dtype != object
            and cohort.n > 0 and maps.shape[1:] == cohort.images_small.shape[1:] and _any_finite(maps))


def _any_finite(maps: np.ndarray, chunk: int = 256) -> bool:
    """``np.isfinite(maps).any()`` a few subjects at a time (no mask the size of every map)."""
    return any(bool(np.isfinite(maps[i:i + chunk]).any()) for i in range(0, len(maps), chunk))
