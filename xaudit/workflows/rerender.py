"""Re-rendering a finished run's report from its ``audit.json`` and records (`xaudit report`)."""

from __future__ import annotations

import json
from pathlib import Path

from xaudit.data.cohort import feature_names_of, load_cohort
from xaudit.core.outputs import RunDirectory
from xaudit.core.provenance import load_run_config
from xaudit.data import load_manifest
from xaudit.errors import OutputError
from xaudit.stages.report import report_stage


def rerender_report(run_dir: Path) -> Path:
    """Rebuild ``report.html``/``report.md`` from ``audit.json`` and the records."""
    run = RunDirectory(run_dir)
    audit_path = run / "audit.json"
    if not audit_path.is_file():
        raise OutputError(f"{run_dir} has no audit.json; finish the run first (xaudit run ... --resume)")
    config = load_run_config(run.root)
    subjects = load_manifest(config.data, config.model.classes, check_files=False, problems=[])
    cohort = load_cohort(run, subjects, config.model.classes, feature_names_of(run))
    audit = json.loads(audit_path.read_text(encoding="utf-8"))
    report_stage(audit, cohort, config, run)
    return run / "report.html"
