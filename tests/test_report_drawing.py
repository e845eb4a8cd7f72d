"""The report's figures drawn at once (`xaudit.report.drawing`): in forked workers or here, the same
bytes in the same places; a failed figure is a note, a worker that dies costs nothing."""

from __future__ import annotations

import os

import pytest

from xaudit.core.workers import forks
from xaudit.report.document import Document, Figure, Note, Section
from xaudit.report.drawing import PendingFigure, draw_figures


def _png(k: int):
    return lambda: f"png {k} drawn by {'a worker' if os.getpid() != PARENT else 'the report'}".encode()


PARENT = os.getpid()


def _broken():
    raise ValueError("no data to plot")


def _sections() -> list[Section]:
    return [Section("one", "one").add(PendingFigure("a", "first", _png(0)), Note("between")),
            Section("two", "two").add(PendingFigure("b", "second", _broken), PendingFigure("c", "third", _png(2)))]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_figure_takes_its_place_and_a_failed_one_becomes_a_note(workers, caplog):
    sections = _sections()
    draw_figures(sections, workers=workers)
    blocks = [b for s in sections for b in s.blocks]
    assert [type(b).__name__ for b in blocks] == ["Figure", "Note", "Note", "Figure"]
    assert [b.name for b in blocks if isinstance(b, Figure)] == ["a", "c"]
    assert blocks[2].text == "Figure b could not be drawn (ValueError: no data to plot)."
    assert caplog.text.count("figure b could not be drawn") == 1  # logged once, here, with its traceback
    where = "a worker" if workers > 1 and forks() else "the report"
    assert [b.png for b in blocks if isinstance(b, Figure)] == [f"png {k} drawn by {where}".encode() for k in (0, 2)]
    doc = Document("t", [], sections)
    assert [f.number for f in doc.figures] == [1, 2]  # numbered after drawing: the note takes no number


@pytest.mark.skipif(not forks(), reason="workers are forked only on Linux")
def test_a_figure_whose_worker_dies_is_drawn_in_the_report_process():
    def dies_in_a_worker():
        if os.getpid() != PARENT:
            os._exit(1)
        return b"drawn here"

    sections = [Section("s", "s").add(PendingFigure("dies", "x", dies_in_a_worker), PendingFigure("ok", "y", _png(1)))]
    draw_figures(sections, workers=2)
    dead, other = sections[0].blocks
    assert dead.png == b"drawn here"
    # the other figure came back before the pool broke, or was drawn here after it: either way it is there
    assert other.png in (b"png 1 drawn by a worker", b"png 1 drawn by the report")


@pytest.mark.skipif(not forks(), reason="workers are forked only on Linux")
def test_figures_are_drawn_here_when_no_worker_can_be_forked(monkeypatch):
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    sections = _sections()
    draw_figures(sections, workers=2)
    assert [b.png for b in sections[0].blocks if isinstance(b, Figure)] == [b"png 0 drawn by the report"]
    assert [b.png for b in sections[1].blocks if isinstance(b, Figure)] == [b"png 2 drawn by the report"]


@pytest.mark.skipif(not forks(), reason="workers are forked only on Linux")
def test_a_stuck_worker_is_given_up_after_the_wait_and_its_figure_drawn_here(monkeypatch):
    import time

    import xaudit.report.drawing as drawing

    def stuck_in_a_worker():
        if os.getpid() != PARENT:
            time.sleep(120)
        return b"drawn here"

    monkeypatch.setattr(drawing, "WAIT_S", 2.0)
    sections = [Section("s", "s").add(PendingFigure("stuck", "x", stuck_in_a_worker), PendingFigure("ok", "y", _png(1)))]
    started = time.monotonic()
    draw_figures(sections, workers=2)
    assert sections[0].blocks[0].png == b"drawn here"
    assert sections[0].blocks[1].png in (b"png 1 drawn by a worker", b"png 1 drawn by the report")
    assert time.monotonic() - started < 60  # not the worker's 120 s
