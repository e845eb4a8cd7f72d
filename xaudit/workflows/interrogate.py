"""The interrogation stage: representation inversion and retention, folded into a run's audit.

`xaudit run` calls `interrogation_stage` when the config has an ``interrogate:`` section;
`xaudit interrogate RUN_DIR` calls `interrogate_finished_run` on a run that is already
finished, which updates ``audit.json`` and re-renders the report without redoing the rest.
The work itself lives in `xaudit.analysis.interrogate`; this module only decides what of it goes
into ``audit.json`` and keeps the run's findings and artifacts consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

from xaudit.analysis.bias.findings import finding_order
from xaudit.config import InterrogateParams
from xaudit.core.provenance import load_run_config
from xaudit.stages.interrogate import interrogate_run
from xaudit.workflows.rerender import rerender_report
from xaudit.errors import OutputError
from xaudit.core.outputs import write_json

CHECK = "retention"


def interrogation_stage(run_dir: Path, params, device) -> dict:
    """Run the interrogation on a run whose predictions (and rules) are written.

    Returns:
        The ``interrogation`` part of ``audit.json``, with its ``findings`` and ``artifacts``
        still inside (`merge_into_audit` moves them to the top level).
    """
    return summarise(interrogate_run(Path(run_dir), params, device))


def summarise(result: dict) -> dict:
    """What of an interrogation goes into ``audit.json``: everything but per-subject rows.

    The per-subject retention rows and optimiser traces stay in
    ``interrogate/interrogation.json`` and ``interrogate/retention.json``.
    """
    inversion = {
        layer: {k: v for k, v in record.items() if k not in ("runs", "representation_loss")}
        for layer, record in result.get("inversion", {}).items()
    }
    keep = ("schema_version", "params", "device", "spatial_dims", "layers", "subjects", "group_column",
            "maximisation", "retention", "findings", "notes", "artifacts", "time")
    return {**{k: result[k] for k in keep if k in result}, "inversion": inversion}


def merge_into_audit(audit: dict, interrogation: dict) -> dict:
    """Put an interrogation into an audit, replacing any earlier one.

    Its findings join the run's (earlier retention findings are dropped first, so running
    it twice does not duplicate them), in the bias stage's order (`finding_order`); its files
    join the artifacts.
    """
    if "failed" in interrogation:
        audit["interrogation"] = dict(interrogation)
        return audit
    interrogation = dict(interrogation)
    findings = interrogation.pop("findings", [])
    files = interrogation.pop("artifacts", {})
    kept = [f for f in audit.get("findings", []) if f.get("check") != CHECK]
    audit["findings"] = sorted(kept + findings, key=finding_order)
    artifacts = {k: v for k, v in audit.get("artifacts", {}).items() if not k.startswith("interrogation")}
    artifacts.update({"interrogation": files.get("interrogation"), "interrogation_retention": files.get("retention"),
                      "interrogation_plot": files.get("retention_plot"),
                      "interrogation_inversions": files.get("inversions")})
    audit["artifacts"] = {k: v for k, v in artifacts.items() if v is not None}
    interrogation["figures"] = files.get("figures", [])
    interrogation["retention_plot"] = files.get("retention_plot")
    audit["interrogation"] = interrogation
    return audit


def params_for_run(run_dir: Path, overrides: list[str] | None = None):
    """The run config's ``interrogate:`` section (defaults if it has none), with overrides.

    Args:
        run_dir: a run directory (``config.resolved.yaml``).
        overrides: ``key=value`` strings; keys with or without the ``interrogate.`` prefix.

    Returns:
        `InterrogateParams`, validated as part of the whole config, so an error names the
        key path (``interrogate.steps``) like `xaudit run` does.
    """

    keyed = [item if item.startswith("interrogate.") else f"interrogate.{item}" for item in overrides or []]
    return load_run_config(Path(run_dir), keyed).interrogate or InterrogateParams()


def interrogate_finished_run(run_dir: Path, params=None, device="auto") -> dict:
    """Interrogate a finished run, fold the result into its ``audit.json`` and re-render the report.

    Args:
        run_dir: a run directory with ``audit.json`` (``xaudit run`` finished).
        params: the ``interrogate:`` parameters; None = the run config's section, else defaults.
        device: "auto", "cpu", "cuda[:k]".

    Returns:
        The updated ``audit.json`` content.

    Raises:
        OutputError: no ``audit.json`` (the run did not finish).
        ConfigError, DataError: as `xaudit.analysis.interrogate.interrogate_run`.
    """
    run_dir = Path(run_dir)
    audit_path = run_dir / "audit.json"
    if not audit_path.is_file():
        raise OutputError(f"{run_dir} has no audit.json: finish the run first (xaudit run CONFIG --resume)")
    try:
        audit = json.loads(audit_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise OutputError(f"{audit_path} is not valid JSON ({exc}); re-run `xaudit run CONFIG --resume`") from exc
    interrogation = interrogation_stage(run_dir, params, device)
    merge_into_audit(audit, interrogation)
    write_json(audit_path, audit)
    rerender_report(run_dir)
    return audit
