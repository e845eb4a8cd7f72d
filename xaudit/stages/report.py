"""The report stage: ``report.html``, ``report.md`` and ``figures/*.png`` from a run's results.

`start_report` begins the subject pages' pictures in worker processes as soon as the
records are read, so they are drawn while the other dataset-level stages run.
"""

from __future__ import annotations

from pathlib import Path

from xaudit.data.cohort import Cohort
from xaudit.core.outputs import RunDirectory
from xaudit.report import start_pictures, write_report


def start_report(cohort: Cohort, config, run_dir: RunDirectory):
    """The subject pages' pictures (`xaudit.report.subject_pictures.SubjectPictures`), started in
    the background unless they wait on the verdict; pass it to `report_stage`, and close it (a
    context manager) when the run ends or stops."""
    return start_pictures(cohort, config, run_dir)


def report_stage(audit: dict, cohort: Cohort, config, run_dir: RunDirectory, pictures=None) -> Path:
    """Render the report of ``audit`` (the ``audit.json`` content); returns ``report.html``'s path."""
    return write_report(audit, cohort, config, run_dir, pictures)
