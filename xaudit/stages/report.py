"""The report stage: ``report.html``, ``report.md`` and ``figures/`` from a run's results."""

from __future__ import annotations

from pathlib import Path

from xaudit.data.cohort import Cohort
from xaudit.core.outputs import RunDirectory
from xaudit.report import write_report


def report_stage(audit: dict, cohort: Cohort, config, run_dir: RunDirectory) -> Path:
    """Render the report of ``audit`` (the ``audit.json`` content); returns ``report.html``'s path."""
    return write_report(audit, cohort, config, run_dir)
