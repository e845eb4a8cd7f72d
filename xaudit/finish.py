"""The dataset-level stages, run on the per-subject records of a finished (or merged) run.

Each stage is a plain function that writes its own artifact and returns the part of
``audit.json`` it owns; `finish_run` calls them in order and writes ``audit.json`` last.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from xaudit import __version__
from xaudit.cohort import Cohort, load_cohort, write_features, write_predictions
from xaudit.data.manifest import safe_file_id
from xaudit.data.native import downsample_affine, write_volume
from xaudit.metrics import classification_metrics, metrics_by_group
from xaudit.errors import OutputError
from xaudit.outputs import SCHEMA_VERSION, RunDirectory, run_provenance, write_json

log = logging.getLogger("xaudit")


def finish_run(run_dir: RunDirectory, config, subjects, timings: dict | None = None, started: float | None = None,
               device: str = "", setup=None) -> dict:
    """Run metrics, rules, bias, mean maps and the report; write ``audit.json``.

    ``setup`` (the validated model and preprocessing) enables the stages that need the
    model again: the activation maps of the top rules' features.

    Returns:
        The ``audit.json`` content.
    """
    timings = dict(timings or {})
    feature_names = _feature_names(run_dir)
    cohort = load_cohort(run_dir, subjects, config.model.classes, feature_names)
    if cohort.n == 0:
        from xaudit.errors import DataError

        raise DataError(f"no subject finished (see {run_dir / 'errors.csv'}); nothing to report")
    artifacts = {"predictions": "predictions.csv", "errors": "errors.csv", "config": "config.resolved.yaml", "log": "run.log"}
    write_predictions(cohort, run_dir / "predictions.csv")
    if cohort.features.shape[1]:
        write_features(cohort, run_dir / "features.csv")
        artifacts["features"] = "features.csv"
    audit: dict = {"schema_version": SCHEMA_VERSION}
    stages = [
        ("metrics", lambda: metrics_stage(cohort)),
        ("attribution", lambda: attribution_stage(cohort, config, run_dir)),
        ("rules", lambda: rules_stage(cohort, config, run_dir, setup)),
        ("bias", lambda: bias_stage(cohort, config, audit, run_dir)),
    ]
    for name, stage in stages:
        t0 = time.perf_counter()
        audit[name] = stage()
        timings[name] = time.perf_counter() - t0
    if setup is not None:
        from xaudit.quality_stage import quality_stage

        t0 = time.perf_counter()
        audit["attribution"]["quality"] = quality_stage(setup, cohort, config.quality, _pass_batch(run_dir, config))
        timings["quality"] = time.perf_counter() - t0
    interrogation = None
    if setup is not None and config.interrogate is not None:
        from xaudit.interrogate_stage import interrogation_stage

        t0 = time.perf_counter()
        try:
            interrogation = interrogation_stage(run_dir.root, config.interrogate, setup.device)
        except Exception as exc:  # noqa: BLE001 - an optional stage must not cost the audit
            log.warning("interrogation failed (%s: %s); the audit goes on without it. Re-run it with "
                        "`xaudit interrogate %s` once fixed.", type(exc).__name__, exc, run_dir.root, exc_info=True)
            interrogation = {"failed": f"{type(exc).__name__}: {exc}"}
        timings["interrogation"] = time.perf_counter() - t0
    artifacts.update(audit["attribution"].pop("artifacts", {}))
    artifacts.update(audit["rules"].pop("artifacts", {}) if isinstance(audit["rules"], dict) else {})
    findings = audit["bias"].pop("findings", []) if isinstance(audit["bias"], dict) else []
    failed = _count_failed(run_dir)
    audit.update(
        {
            "run": _run_metadata(config, started, device, timings),
            "counts": {"subjects": len(subjects), "audited": cohort.n, "failed": failed, "missing": len(subjects) - cohort.n - failed},
            "findings": findings,
            "verdict": audit["bias"].pop("verdict", None) if isinstance(audit["bias"], dict) else None,
            "artifacts": artifacts,
        }
    )
    if interrogation is not None:
        from xaudit.interrogate_stage import merge_into_audit

        merge_into_audit(audit, interrogation)
    t0 = time.perf_counter()
    report_stage(audit, cohort, config, run_dir)
    audit["run"]["timings_s"]["report"] = round(time.perf_counter() - t0, 3)
    audit["artifacts"].update({"report_html": "report.html", "report_md": "report.md"})
    write_json(run_dir / "audit.json", audit)
    return audit


def metrics_stage(cohort: Cohort) -> dict:
    """Accuracy, balanced accuracy, ROC AUC and counts, overall and per group value."""
    return {
        "overall": classification_metrics(cohort.labels, cohort.probs),
        "by_group": metrics_by_group(cohort.labels, cohort.probs, cohort.groups),
        "prediction_counts": {c: int((cohort.predicted == k).sum()) for k, c in enumerate(cohort.classes)},
    }


def attribution_stage(cohort: Cohort, config, run_dir: RunDirectory) -> dict:
    """Per-method self-check summaries, and mean maps per class x group value (NIfTI)."""
    out: dict = {"methods": {}, "artifacts": {}}
    for method, params in config.attribution.methods.items():
        stats = {k: _summary(v) for k, v in cohort.stats.get(method, {}).items()}
        shares = {k: _summary(v) for k, v in cohort.shares.get(method, {}).items()}
        out["methods"][method] = {"params": params, "self_checks": stats, "shares": shares}
        out["artifacts"][f"attributions/{method}"] = f"attributions/{method}/"
    written = write_mean_maps(cohort, run_dir)
    if written:
        out["artifacts"]["maps"] = "maps/"
        out["mean_maps"] = written
    return out


def write_mean_maps(cohort: Cohort, run_dir: RunDirectory) -> list[str]:
    """Mean attribution per class (true label, else prediction) and per class x group value."""
    if cohort.n == 0 or not cohort.maps or any(m.dtype == object for m in cohort.maps.values()):
        return []
    first = next(iter(cohort.maps.values()))
    affine = downsample_affine(cohort.input_affines[0], tuple(cohort.input_shapes[0]), first.shape[1:])
    classes = np.where(cohort.labels >= 0, cohort.labels, cohort.predicted)
    written = []
    for method, maps in cohort.maps.items():
        for k, name in enumerate(cohort.classes):
            keys = [(f"{safe_file_id(name)}", classes == k)]
            keys += [(f"{safe_file_id(name)}__{safe_file_id(col)}-{safe_file_id(str(v))}", (classes == k) & (vals == v))
                     for col, vals in cohort.groups.items() for v in sorted(set(vals))]
            for key, sel in keys:
                if sel.any():
                    rel = f"maps/{method}/mean_{key}.nii.gz"
                    write_volume(maps[sel].mean(axis=0), affine, run_dir / rel)
                    written.append(rel)
    if cohort.images_small.dtype != object:
        write_volume(cohort.images_small.mean(axis=0), affine, run_dir / "maps/mean_image.nii.gz")
        written.append("maps/mean_image.nii.gz")
    return written


def rules_stage(cohort: Cohort, config, run_dir: RunDirectory, setup=None) -> dict:
    """Surrogate forest rules on the layer features (skipped without features)."""
    if cohort.features.shape[1] == 0:
        return {"skipped": "no layer features (TorchScript model, or no linear layer)"}
    from xaudit.rules import extract_rules, write_rules

    result = extract_rules(
        cohort.features, cohort.feature_names, cohort.predicted, cohort.labels, cohort.classes,
        {k: v.astype(str) for k, v in cohort.groups.items()}, cohort.subject_ids, config.rules,
    )
    write_rules(result, run_dir.root)
    summary = result.to_dict()
    summary["feature_importances"] = feature_importances(summary.get("rules", []))
    summary["rules"] = summary.get("rules", [])[: config.rules.top_n]
    summary["artifacts"] = {"rules_json": "rules.json", "rules_md": "rules.md"}
    if setup is not None:
        from xaudit.rule_maps import write_rule_maps

        summary["feature_maps"] = write_rule_maps(setup, cohort, summary["rules"], run_dir)
    return summary


def feature_importances(rules: list[dict]) -> dict[str, float]:
    """Each rule's importance shared equally among the features its conditions use."""
    totals: dict[str, float] = {}
    for rule in rules:
        features = {c["feature"] for c in rule.get("conditions", [])}
        for f in features:
            totals[f] = totals.get(f, 0.0) + float(rule.get("importance") or 0.0) / len(features)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def bias_stage(cohort: Cohort, config, audit: dict, run_dir: RunDirectory) -> dict:
    from xaudit.bias_stage import run_bias_stage

    return run_bias_stage(cohort, config, audit, run_dir)


def report_stage(audit: dict, cohort: Cohort, config, run_dir: RunDirectory) -> None:
    from xaudit.report import write_report

    write_report(audit, cohort, config, run_dir)


def _summary(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": 0}
    return {"n": int(finite.size), "mean": float(finite.mean()), "median": float(np.median(finite)),
            "p95": float(np.percentile(finite, 95)), "max": float(finite.max())}


def _pass_batch(run_dir: RunDirectory, config) -> int:
    """The batch size the subject pass ran with (set, or tuned and recorded in the provenance)."""
    if config.attribution.max_batch:
        return config.attribution.max_batch
    try:
        return int(run_provenance(run_dir.root).get("max_batch") or 8)
    except OutputError:
        return 8


def _feature_names(run_dir: RunDirectory) -> list[str]:
    import json

    path = run_dir / "features.json"
    return json.loads(path.read_text())["names"] if path.is_file() else []


def _count_failed(run_dir: RunDirectory) -> int:
    import csv

    done = run_dir.completed()
    failed = set()
    for path in Path(run_dir.root).glob("errors*.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            failed |= {row["subject_id"] for row in csv.DictReader(fh)}
    return len({f for f in failed if safe_file_id(f) not in done})


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
