"""The run's report: ``report.html`` (self-contained) and ``report.md``, plus ``figures/*.png``.

Modules: `document` (the content model both renderers share), `sections`,
`sections_evidence`, `sections_bias`, `sections_looking`, `sections_subjects`,
`sections_rules` (what the report says, in order), `subject_pages` (one page per subject),
`figures_maps`, `figures_grids` and `figures_charts` (the pictures), `volumes` (source-
resolution volumes), `plotting` (matplotlib set-up), `format` (numbers), `html` (with
`html_groupview`, the one inline script) and `markdown` (the renderers).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from xaudit.core.outputs import write_bytes, write_text
from xaudit.report.document import Document
from xaudit.report.html import render_html
from xaudit.report.markdown import render_markdown
from xaudit.report.sections import build_document
from xaudit.report.sections_evidence import evidence_method
from xaudit.report.subject_pages import build_subject_pages, start_pictures

__all__ = ["build_document", "render_html", "render_markdown", "start_pictures", "write_report"]

log = logging.getLogger("xaudit")


def write_report(audit, cohort, config, run_dir, pictures=None) -> Path:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` into the run directory.

    Args:
        audit: the ``audit.json`` content (verdict, findings, metrics, bias, rules, run).
        cohort: the run's `xaudit.data.cohort.Cohort` (maps and images for the figures).
        config: the run's `xaudit.config.Config` (title, slices, methods, model).
        run_dir: the `xaudit.core.outputs.RunDirectory`.
        pictures: the subject pages' pictures started ahead (`start_pictures`), or None.

    Returns:
        The path of ``report.html``.
    """
    t0 = time.perf_counter()
    doc = build_document(audit, cohort, config, run_dir)
    _write_figures(doc, run_dir)
    version = (audit.get("run") or {}).get("xaudit_version", "")
    footer = (f"xaudit {version} · every number in this report is in audit.json; figures are in figures/; "
              "rules in rules.json; per-subject predictions in predictions.csv.")
    write_text(run_dir / "report.md", render_markdown(doc, footer))
    _write_subject_pages(audit, cohort, config, run_dir, footer, pictures)
    path = write_text(run_dir / "report.html", render_html(doc, footer))
    log.info("report written in %.1f s: %s", time.perf_counter() - t0, path)
    return path


def _write_subject_pages(audit, cohort, config, run_dir, footer: str, pictures) -> None:
    """``subjects/<safe_id>.html`` for the paged subjects; the pages an earlier render recorded
    and this one no longer makes are removed (any other file is left alone)."""
    first = evidence_method(audit, cohort, config)
    methods = [m for m in config.attribution.methods if m in cohort.maps]
    methods = ([first] if first in methods else []) + [m for m in methods if m != first]
    pages = build_subject_pages(cohort, config, run_dir, methods, pictures)
    for page in pages:
        write_text(run_dir / f"subjects/{page.file_name}", render_html(page.document, footer))
    if hasattr(run_dir, "remove_owned_except"):
        run_dir.remove_owned_except("report_subject_pages", {f"subjects/{page.file_name}" for page in pages})


def _write_figures(doc: Document, run_dir) -> None:
    """Write the figures; remove the ones an earlier render recorded and this one no longer
    makes (a figure whose data is gone). Any other file in figures/ is left alone."""
    current = {f"figures/{figure.name}.png" for figure in doc.figures}
    for figure in doc.figures:
        write_bytes(run_dir / f"figures/{figure.name}.png", figure.png)
    if hasattr(run_dir, "remove_owned_except"):
        run_dir.remove_owned_except("report_figures", current)
