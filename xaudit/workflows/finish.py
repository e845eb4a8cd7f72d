"""The dataset-level stages, run on the per-subject records of a finished (or merged) run.

Each stage (`xaudit.stages`) is a plain function that writes its own artifact and returns
a frozen result; `finish_run` calls them in order and writes ``audit.json`` last, from
those results.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from xaudit._version import __version__
from xaudit.analysis.bias.findings import finding_order
from xaudit.core import versions
from xaudit.data.cohort import Cohort, feature_names_of, load_cohort, write_features, write_predictions
from xaudit.core.ids import safe_file_id
from xaudit.core.outputs import RunDirectory, unescape_cell, write_json
from xaudit.core.progress import ProgressFactory, log_progress
from xaudit.core.provenance import run_provenance
from xaudit.errors import DataError, OutputError
from xaudit.report.sections_subjects import bounds as report_bounds
from xaudit.stages.attribution import attribution_stage
from xaudit.stages.bias import bias_stage
from xaudit.stages.interventions import fold_into_bias, interventions_stage
from xaudit.stages.metrics import metrics_stage
from xaudit.stages.quality import quality_stage
from xaudit.stages.report import report_stage, start_report
from xaudit.stages.rules import rules_stage
from xaudit.workflows.interrogate import interrogation_stage, merge_into_audit

log = logging.getLogger("xaudit")

QUALITY_MIN_BUDGET_S = 2.5  # the quality stage's budget on a short pass (its first method always runs)


def finish_run(run_dir: RunDirectory, config, subjects, timings: dict | None = None, started: float | None = None,
               device: str = "", setup=None, progress: ProgressFactory = log_progress) -> dict:
    """Run metrics, attribution summaries, rules, bias, interventions, quality, interrogation and the report;
    write ``audit.json``.

    ``setup`` (the validated model and preprocessing) enables the stages that need the
    model again: the top rules' feature maps, the interventions, explanation quality, interrogation.
    ``progress`` shows which stage runs (a bar, and a log line at least every 30 s).

    Returns:
        The ``audit.json`` content.
    """
    timings = dict(timings or {})
    with progress("dataset-level stages", _stage_count(config, setup)) as step:

        def timed(name, stage, *args):
            step.describe(name)
            t0 = time.perf_counter()
            out = stage(*args)
            timings[name] = time.perf_counter() - t0
            for arg in args:  # what the stage read of the file-mapped maps leaves the resident set
                if isinstance(arg, Cohort):
                    arg.release()
            step.advance(1)
            log.info("%s stage done in %.1f s", name, timings[name])
            return out

        return _finish(run_dir, config, subjects, timings, started, device, setup, timed)


def _stage_count(config, setup) -> int:
    """metrics, attribution, rules, bias, interventions, report; quality and interrogation with the model."""
    return 6 + (setup is not None) + (setup is not None and config.interrogate is not None)


def _finish(run_dir, config, subjects, timings, started, device, setup, timed) -> dict:
    """`finish_run`'s stages in order; ``timed(name, stage, *args)`` runs and times one."""
    t0 = time.perf_counter()
    cohort = load_cohort(run_dir, subjects, config.model.classes, feature_names_of(run_dir))
    timings["records"] = time.perf_counter() - t0  # reading the per-subject records back: grows with the cohort
    if cohort.n == 0:
        raise DataError(f"no subject finished (see {run_dir / 'errors.csv'}); nothing to report")
    artifacts = {"predictions": "predictions.csv", "errors": "errors.csv", "config": "config.resolved.yaml", "log": "run.log"}
    write_predictions(cohort, run_dir / "predictions.csv")
    if cohort.features.shape[1]:
        write_features(cohort, run_dir / "features.csv")
        artifacts["features"] = "features.csv"
    with start_report(cohort, config, run_dir) as pictures:  # the subject pages' pictures, drawn meanwhile
        metrics = timed("metrics", metrics_stage, cohort)
        attribution = timed("attribution", attribution_stage, cohort, config.attribution, run_dir,
                            config.output_layout)
        rules = timed("rules", rules_stage, cohort, config.rules, run_dir, setup)
        bias = timed("bias", bias_stage, cohort, config.bias, list(config.attribution.methods), rules.feature_importances)
        interventions = timed("interventions", interventions_stage, setup, cohort, config.interventions)
        bias = fold_into_bias(bias, interventions, config.bias)
        if setup is not None:
            budget = max(QUALITY_MIN_BUDGET_S, config.quality.budget * timings["subject_pass"]) if "subject_pass" in timings else None
            costs = {name[len("pass."):]: v for name, v in timings.items() if name.startswith("pass.")}
            quality = timed("quality", quality_stage, setup, cohort, config.quality, pass_batch(run_dir, config), budget,
                            costs)
            attribution = dataclasses.replace(attribution, quality=quality.to_dict())
        interrogation = None
        if setup is not None and config.interrogate is not None:
            interrogation = timed("interrogation", _optional_interrogation, run_dir, config.interrogate, setup.device)
        failed, bad_rows = count_failed(run_dir)
        audit = {
            "schema_version": versions.AUDIT,
            "metrics": metrics.to_dict(),
            "attribution": attribution.to_dict(),
            "rules": rules.to_dict(),
            "bias": bias.to_dict(),
            "interventions": interventions.to_dict(),
            "run": _run_metadata(config, started, device, timings),
            "counts": {"subjects": len(subjects) + bad_rows, "audited": cohort.n, "failed": failed + bad_rows,
                       "missing": len(subjects) - cohort.n - failed},
            "findings": sorted([*bias.findings, *attribution.findings], key=finding_order),
            "verdict": bias.verdict,
            "artifacts": {**artifacts, **attribution.artifacts, **rules.artifacts},
        }
        scale = bounded(bias.to_dict(), cohort)
        if scale:
            audit["scale"] = scale
        if interrogation is not None:
            merge_into_audit(audit, interrogation)
        timed("report", report_stage, audit, cohort, config, run_dir, pictures)
        audit["run"]["timings_s"]["report"] = round(timings["report"], 3)
        audit["artifacts"].update({"report_html": "report.html", "report_md": "report.md", "subject_pages": "subjects/*.html"})
        write_json(run_dir / "audit.json", audit)
        return audit


def bounded(bias: dict, cohort) -> dict:
    """What a big cohort made approximate or subsampled, with the numbers (``audit.json``'s ``scale``).

    Empty for a cohort below every cap: SpRAy's ``bias.spray_max_maps`` per class, and the
    report's group view, mosaic and subject pages (`xaudit.report.sections_subjects.bounds`).
    """
    out = {}
    for cls in ((bias.get("checks") or {}).get("spray") or {}).get("classes") or []:
        if cls.get("n_class"):
            out[f"spray.{cls['class_name']}"] = {
                "shown": cls["n"], "of": cls["n_class"],
                "note": f"SpRAy clustered {cls['n']:,} of {cls['n_class']:,} maps of class {cls['class_name']}, "
                        "drawn evenly in manifest order"}
    return {**out, **report_bounds(cohort)}


def _optional_interrogation(run_dir: RunDirectory, params, device) -> dict:
    """The interrogation, or why it failed: an optional stage must not cost the audit."""
    try:
        return interrogation_stage(run_dir.root, params, device)
    except Exception as exc:  # noqa: BLE001 - an optional stage must not cost the audit
        log.warning("interrogation failed (%s: %s); the audit goes on without it. Re-run it with "
                    "`xaudit interrogate %s` once fixed.", type(exc).__name__, exc, run_dir.root, exc_info=True)
        return {"failed": f"{type(exc).__name__}: {exc}"}


def pass_batch(run_dir: RunDirectory, config) -> int:
    """The batch size the subject pass ran with (set, or tuned and recorded in the provenance)."""
    if config.attribution.max_batch:
        return config.attribution.max_batch
    try:
        return int(run_provenance(run_dir.root).get("max_batch") or 8)
    except OutputError:
        return 8


def count_failed(run_dir: RunDirectory) -> tuple[int, int]:
    """Subjects that failed (listed in ``errors*.csv`` and not finished since), and manifest
    rows that were no subject (``stage`` "manifest", counted once per line)."""
    done = run_dir.completed()
    failed, bad_rows = set(), set()
    for path in Path(run_dir.root).glob("errors*.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                sid = unescape_cell(row["subject_id"])
                if row.get("stage") == "manifest":
                    bad_rows.add((sid, row.get("manifest_line")))
                else:
                    failed.add(sid)
    return len({f for f in failed if safe_file_id(f) not in done}), len(bad_rows)


def _run_metadata(config, started: float | None, device: str, timings: dict) -> dict:
    now = datetime.now(timezone.utc)
    return {
        "xaudit_version": __version__,
        "config_hash": config.digest(),
        "device": device,
        "seed": config.seed,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat() if started else None,
        "finished": now.isoformat(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
