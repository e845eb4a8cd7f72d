"""`compare_runs`: compare finished runs with the first one; `regressions`: what got worse.

    load runs ─► common scope (or refuse) ─► per other run: metrics, prediction shift,
    findings, roles, rules, attribution ─► regressions ─► compare.md/html, compare.json

``compare.json`` is written last, so its presence means the comparison is complete.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from xaudit._version import __version__
from xaudit.analysis.compare.attribution_diff import compare_mean_maps, compare_shares
from xaudit.analysis.compare.compat import Scope, resolve_scope
from xaudit.analysis.compare.findings_diff import compare_findings, compare_roles, new_critical
from xaudit.analysis.compare.load import RunData, load_run, run_names
from xaudit.core.ids import safe_file_id
from xaudit.analysis.compare.metrics_diff import aligned, compare_metrics, point_metrics
from xaudit.analysis.compare.params import METRICS, CompareParams, check_thresholds
from xaudit.analysis.compare.rules_diff import compare_rules
from xaudit.analysis.compare.shift import prediction_shift
from xaudit.errors import XauditUsageError
from xaudit.core import versions
from xaudit.core.jsonable import to_jsonable
from xaudit.core.outputs import RunDirectory, check_output_folder, write_json, write_text

SCHEMA_VERSION = versions.COMPARE


def compare_runs(run_dirs: list[Path], output: Path | None = None, params: CompareParams | None = None) -> dict:
    """Compare every run with the first (the reference) and write the results.

    Args:
        run_dirs: two or more finished run directories; the first is the reference.
        output: where to write compare.json/.md/.html and ``maps/``; default
            ``<first run>/../compare-<name>-vs-<name>``.
        params: resampling sizes, seed, ``allow_partial``, regression ``thresholds``.

    Returns:
        The ``compare.json`` content (see ``xaudit/schemas/compare.schema.json``).

    Raises:
        XauditUsageError: fewer than two runs; `OutputError`/`DataError` for a run that
            cannot be read; `IncompatibleRunsError` for runs that differ (without
            ``allow_partial``).
    """
    params = params or CompareParams()
    check_thresholds(params.thresholds)
    if len(run_dirs) < 2:
        raise XauditUsageError(f"compare needs at least two run directories (the first is the reference); got {len(run_dirs)}")
    names = run_names([Path(p) for p in run_dirs])
    runs = [load_run(p, n) for p, n in zip(run_dirs, names)]
    scope = resolve_scope(runs, params.allow_partial)
    out_dir = Path(output) if output is not None else default_output(Path(run_dirs[0]), names)
    check_output_folder(out_dir)
    if RunDirectory(out_dir).is_run():
        raise XauditUsageError(f"{out_dir} is an xaudit run: compare writes its results beside runs, never into one; "
                               "name another -o folder")
    result = {
        "schema_version": SCHEMA_VERSION,
        "xaudit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(),
        "params": params.model_dump(mode="json"),
        "reference": runs[0].name,
        "runs": [_run_entry(run, scope) for run in runs],
        "scope": scope.to_dict(),
        "comparisons": [_compare_pair(runs[0], other, scope, params, out_dir, i) for i, other in enumerate(runs[1:], 1)],
    }
    result = to_jsonable(result)  # NaN -> None: the returned dict equals compare.json
    result["regressions"] = regressions(result, params.thresholds)
    result["output"] = str(out_dir.resolve())
    result["artifacts"] = {"json": "compare.json", "markdown": "compare.md", "html": "compare.html"}
    write_outputs(result, out_dir)
    return result


def regressions(result: dict, thresholds: dict[str, float]) -> list[dict]:
    """What got worse in each compared run, relative to the reference.

    A metric regresses when its drop's point estimate exceeds its threshold
    (``reference - other > threshold``); the interval and whether it excludes zero are
    reported alongside so a reader can tell a clear drop from noise. A threshold that
    cannot be evaluated (metrics not compared, or undefined in a run) is reported as
    ``unevaluated`` and counts, so a gate never passes silently. A finding that is
    critical in the other run and was absent or less severe in the reference always counts.

    Args:
        result: `compare_runs`' return value (or compare.json read back).
        thresholds: metric -> largest tolerated drop, e.g. ``{"accuracy": 0.05}``.

    Returns:
        One dict per regression: ``{"run", "kind": "metric"|"unevaluated"|"finding", ...}``.
    """
    check_thresholds(thresholds)
    found: list[dict] = []
    for comp in result["comparisons"]:
        overall = (comp.get("metrics") or {}).get("overall")
        for metric, limit in thresholds.items():
            found.extend(_metric_regression(comp["other"], metric, limit, overall))
        for finding in new_critical(comp["findings"]):
            found.append({"run": comp["other"], "kind": "finding", "id": finding["id"], "title": finding["title"],
                          "was": finding["was"], "message": f"new critical finding {finding['id']}: {finding['title']}"
                          + ("" if finding["was"] is None else f" (was {finding['was']})")})
    return found


def _metric_regression(run: str, metric: str, limit: float, overall: dict | None) -> list[dict]:
    entry = (overall or {}).get(metric) or {}
    diff = entry.get("difference")
    if diff is None:
        why = "metrics were not compared (see scope.left_out)" if overall is None else "the metric is undefined in a run"
        return [{"run": run, "kind": "unevaluated", "metric": metric, "threshold": limit,
                 "message": f"{metric}: cannot check the threshold {limit}: {why}"}]
    drop = -diff
    if drop <= limit:
        return []
    ci = "" if entry.get("ci_low") is None else f", {_pct(entry['ci_low'])} to {_pct(entry['ci_high'])} difference interval"
    return [{"run": run, "kind": "metric", "metric": metric, "reference_value": entry["reference"],
             "other_value": entry["other"], "drop": drop, "threshold": limit, "ci_low": entry.get("ci_low"),
             "ci_high": entry.get("ci_high"), "significant": entry.get("significant"),
             "message": f"{metric} dropped by {drop:.3f} ({entry['reference']:.3f} -> {entry['other']:.3f}{ci}),"
                        f" more than the allowed {limit}"}]


def _pct(x: float) -> str:
    return f"{x:+.3f}"


def default_output(first_run: Path, names: list[str]) -> Path:
    """``<first run>/../compare-<a>-vs-<b>[-vs-<c>...]`` (file-name safe)."""
    return first_run.resolve().parent / safe_file_id("compare-" + "-vs-".join(names))


def _run_entry(run: RunData, scope: Scope) -> dict:
    labels, probs = aligned(run, scope.classes) if scope.metrics else (run.labels, run.probs)
    verdict = run.audit.get("verdict") if isinstance(run.audit.get("verdict"), dict) else {}
    return {
        "name": run.name, "path": str(run.path.resolve()), "config_hash": (run.audit.get("run") or {}).get("config_hash"),
        "xaudit_version": (run.audit.get("run") or {}).get("xaudit_version"), "n_subjects": run.n,
        "classes": run.classes, "methods": sorted(run.methods), "group_columns": sorted(run.groups),
        "metrics": point_metrics(labels, probs) if scope.metrics else None,
        "verdict": verdict.get("verdict"), "n_findings": len(run.findings),
    }


def _compare_pair(ref: RunData, other: RunData, scope: Scope, params: CompareParams, out_dir: Path, index: int) -> dict:
    """Everything compared between the reference and one other run."""
    key = f"{index}:{other.name}"
    comp: dict = {"reference": ref.name, "other": other.name}
    if scope.metrics:
        paired = other.name not in scope.unpaired  # its shared ids name other subjects: never paired
        comp["metrics"] = compare_metrics(ref, other, scope.classes,
                                          params if paired else params.model_copy(update={"pairing": "independent"}), key)
        comp["predictions"] = prediction_shift(ref, other, scope.classes, paired=paired)
    else:
        comp["metrics"] = comp["predictions"] = None
    comp["findings"] = compare_findings(ref.findings, other.findings)
    comp["verdict"] = {"reference": (ref.audit.get("verdict") or {}).get("verdict"),
                       "other": (other.audit.get("verdict") or {}).get("verdict")}
    comp["roles"] = compare_roles(ref.audit, other.audit)
    comp["rules"] = compare_rules(ref, other, params.top_n_rules)
    maps = (compare_mean_maps(ref, other, scope.methods, scope.classes, out_dir / "maps" / safe_file_id(other.name), out_dir)
            if scope.maps else None)
    comp["attribution"] = {"shares": compare_shares(ref, other, scope.methods, params, key), "maps": maps}
    return comp


def write_outputs(result: dict, out_dir: Path) -> None:
    """compare.md, compare.html, then compare.json (last: its presence means complete)."""
    from xaudit.report.compare import render_html, render_markdown

    write_text(out_dir / "compare.md", render_markdown(result))
    write_text(out_dir / "compare.html", render_html(result))
    write_json(out_dir / "compare.json", result)


__all__ = ["METRICS", "SCHEMA_VERSION", "compare_runs", "default_output", "regressions"]
