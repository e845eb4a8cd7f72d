"""Progress of long steps: a rich bar on a terminal, and a log line at least every 30 s.

The log lines go through the ``xaudit`` logger, so they reach ``run.log`` always and
stderr unless ``-q``: a cron job's or SLURM job's log shows done/total, the rate and the
time left even when nothing else happens (a background timer writes them, so a stage that
reports no steps of its own still shows it is alive). With a bar on the terminal the
lines go to ``run.log`` only (logged at DEBUG level: the file handler takes them, the
terminal handler does not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("xaudit")
INTERVAL_S = 30.0

#: ``progress(label, total) -> Step``
ProgressFactory = Callable[[str, int], "Step"]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Step:
    """One long step with ``total`` units (subjects, methods, stages); use as a context manager.

    Args:
        label: what is counted, e.g. ``"subjects"`` or ``"dataset-level stages"``.
        total: units in all.
        bar: a rich progress bar (a terminal); None: log lines only.
        interval: seconds between log lines at most.
    """

    def __init__(self, label: str, total: int, bar=None, interval: float = INTERVAL_S):
        self.label, self.total, self.done = label, max(int(total), 0), 0
        self.detail = ""
        self.interval = interval
        self._bar, self._task = bar, None
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._level = logging.DEBUG if bar is not None else logging.INFO
        self._timer = threading.Thread(target=self._beat, name="xaudit-progress", daemon=True)

    def __enter__(self) -> Step:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._timer.join(timeout=1)
        if self._bar is not None:
            self._bar.stop()
        log.log(self._level, "%s: %d/%d done in %s", self.label, self.done, self.total,
                _duration(time.monotonic() - self._start))

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """``n`` more units done; ``detail`` names what runs now (shown in the next line)."""
        self.done += n
        if detail is not None:
            self.detail = detail
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n, description=f"{self.label} {self.detail}".strip())

    def describe(self, detail: str) -> None:
        """Name what runs now without counting a unit (e.g. the stage that starts)."""
        self.advance(0, detail)

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        what = f" ({self.detail})" if self.detail else ""
        eta = f", about {_duration(left)} left" if left is not None else ""
        return (f"{self.label}{what}: {self.done}/{self.total} after {_duration(elapsed)}"
                f" ({rate * 60:.3g} per minute{eta})")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            log.log(self._level, "%s", self.line())


def log_progress(label: str, total: int) -> Step:
    """Log lines only (scripts, cron, SLURM, the Python API)."""
    return Step(label, total)


def bar_progress(console) -> ProgressFactory:
    """Rich bars on ``console`` (the terminal's stderr), log lines into ``run.log``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    def factory(label: str, total: int) -> Step:
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=console, transient=False)
        return Step(label, total, bar=bar)

    return factory
