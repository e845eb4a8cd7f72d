"""The report's figures, drawn all at once after the sections are built: `draw_figures`.

A section builder says what to draw (`PendingFigure`: a name, a caption and a function that
returns PNG bytes); `draw_figures` draws every one of them, in forked worker processes where
more than one core is free, and puts each in its place as a `Figure`, or as a `Note` saying
why it could not be drawn: one failed plot must not cost the report.

Drawing is the report's main cost (5 of its 6 s on the demo cohort, 13 figures, one core),
and the figures do not depend on each other. A worker is forked once the figures' data is in
memory, so it inherits each drawing function with what it closes over (nothing is pickled but
the PNG bytes coming back), and must not touch torch or the run directory (`xaudit.core.workers`).
A figure a worker could not return (it failed, its worker died or could not be started, or
no answer came within `WAIT_S`) is drawn again here, where its error is logged with its
traceback; where processes cannot be forked, every figure is drawn here. A figure drawn from
scan-resolution volumes is drawn at once instead (`draw_now`), so that those volumes are freed
figure by figure rather than held until every figure is drawn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from xaudit.core.workers import cpu_count, forks, stop_pool, worker_pool
from xaudit.report.document import Figure, Note, Section

log = logging.getLogger("xaudit")

MAX_WORKERS = 8  # each a fork of the report's process; more than the figures is pointless anyway
WAIT_S = 120.0  # for all the workers' figures (~0.3 s each); a worker stuck past it is killed, its figures drawn here


@dataclass
class PendingFigure:
    """A figure to draw: ``draw()`` returns its PNG bytes (`xaudit.report.plotting.to_png`)."""

    name: str
    caption: str
    draw: Callable[[], bytes]


_DRAWS: list[Callable[[], bytes]] = []  # what a forked worker inherits: the pending figures' functions


def draw_figures(sections: list[Section], workers: int | None = None) -> None:
    """Replace every `PendingFigure` in ``sections`` by its `Figure`, or by a `Note` if drawing it failed.

    Args:
        sections: the report's sections, changed in place.
        workers: processes to draw in; default one per CPU this process may use (at most
            `MAX_WORKERS` and the number of figures); 0 or 1 draws them all here.
    """
    places = [(section, k) for section in sections for k, block in enumerate(section.blocks)
              if isinstance(block, PendingFigure)]
    pending = [section.blocks[k] for section, k in places]
    drawn = _draw_all(pending, workers)
    for (section, k), figure, png in zip(places, pending, drawn):
        section.blocks[k] = _drawn_here(figure) if png is None else Figure(figure.name, figure.caption, png)


def draw_now(name: str, caption: str, draw: Callable[[], bytes]) -> Figure | Note:
    """The figure drawn here and now, or a `Note` if drawing it failed (for figures of large data)."""
    return _drawn_here(PendingFigure(name, caption, draw))


def _draw_all(pending: list[PendingFigure], workers: int | None) -> list[bytes | None]:
    """Each figure's PNG bytes from a worker, or None where it is to be drawn here."""
    workers = min(MAX_WORKERS, cpu_count(), len(pending)) if workers is None else min(workers, len(pending))
    pool = worker_pool(workers) if workers > 1 and forks() else None
    if pool is None:
        return [None] * len(pending)
    global _DRAWS
    _DRAWS = [figure.draw for figure in pending]  # set before the pool forks its workers (on the first submit)
    futures, finished = [], False
    try:
        try:
            futures = [pool.submit(_draw_in_worker, i) for i in range(len(pending))]
        except Exception as exc:  # noqa: BLE001 - no worker could be forked, or one died early: drawn here
            log.debug("report: figures not drawn in workers (%s: %s)", type(exc).__name__, exc)
        deadline = time.monotonic() + WAIT_S
        drawn = [_result(future, figure.name, deadline) for future, figure in zip(futures, pending)]
        finished = len(futures) == len(pending) and all(png is not None for png in drawn)
        return drawn + [None] * (len(pending) - len(drawn))
    finally:
        _DRAWS = []
        if finished:
            pool.shutdown(wait=True)
        else:  # Ctrl-C, a failed or stuck worker: nothing more is waited for
            stop_pool(pool, now=True)


def _draw_in_worker(i: int) -> bytes:
    return _DRAWS[i]()


def _result(future, name: str, deadline: float) -> bytes | None:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except Exception as exc:  # noqa: BLE001 - failed, died or stuck (TimeoutError): drawn again here
        log.debug("report: figure %s not drawn by a worker (%s: %s)", name, type(exc).__name__, exc)
        return None


def _drawn_here(figure: PendingFigure) -> Figure | Note:
    try:
        return Figure(figure.name, figure.caption, figure.draw())
    except Exception as exc:  # noqa: BLE001 - any plotting failure; logged with its traceback
        log.warning("report: figure %s could not be drawn: %s", figure.name, exc, exc_info=True)
        return Note(f"Figure {figure.name} could not be drawn ({type(exc).__name__}: {exc}).")
