"""The report's sections in order, built once and rendered twice (HTML and Markdown).

`build_document` is the single place that decides what the report says and in which
order: the verdict and top findings first (the answer to "does the model decide on
pathology or on a site/scanner signature?"), then the evidence check by check, then the
run's housekeeping. A section whose data is absent says so in one line instead of
disappearing, so a reader knows the check was not forgotten.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from xaudit.core.ids import safe_file_id
from xaudit.core.outputs import unescape_cell
from xaudit.report.document import Badge, Document, FindingCard, Paragraph, Section, Table, Verdict
from xaudit.report.drawing import draw_figures
from xaudit.report.format import fmt_num, fmt_seconds, fmt_time, fmt_value, humanize
from xaudit.report.sections_checks import self_checks_section
from xaudit.report.sections_evidence import evidence_figure, evidence_method
from xaudit.report.sections_subjects import subjects_section
from xaudit.report.sections_bias import (concepts_section, design_section, masked_input_section, performance_section,
                                         probes_section, roles_section, spray_section)
from xaudit.report.sections_interrogation import interrogation_section
from xaudit.report.sections_interventions import interventions_section
from xaudit.report.sections_looking import looking_section
from xaudit.report.sections_rules import rules_section

log = logging.getLogger("xaudit")

# What a finding's ``points_to`` means, in words: "neutral" on a critical row read as "harmless".
POINTS_TO_TEXT = {"signature": "a site/scanner signature", "pathology": "pathology", "design": "the study design",
                  "neutral": "neither signature nor pathology (a check of the data or the method)"}

def build_document(audit: dict, cohort, config, run_dir) -> Document:
    """All sections of the report, numbered, with their figures drawn (in workers where there are cores).

    Args:
        audit: the ``audit.json`` content.
        cohort: the run's `xaudit.data.cohort.Cohort` (maps and images for the figures).
        config: the run's `xaudit.config.Config`.
        run_dir: the `xaudit.core.outputs.RunDirectory` (for ``errors.csv``).
    """
    bias = audit.get("bias") if isinstance(audit.get("bias"), dict) else {}
    checks = bias.get("checks") or {}
    sections = [
        verdict_section(audit, evidence_figure(audit, cohort, config, run_dir)),
        summary_section(audit, config),
        design_section(checks.get("design")),
        performance_section(audit.get("metrics") or {}, checks.get("group_metrics")),
        looking_section(audit, cohort, config, run_dir),
        subjects_section(cohort, evidence_method(audit, cohort, config)),
        masked_input_section(checks.get("masked_input")),
        interventions_section(audit.get("interventions")),
        probes_section(checks.get("probes")),
        roles_section(checks.get("roles")),
        concepts_section(checks.get("concepts")),
        spray_section(checks.get("spray"), bias.get("spray_method"), cohort, config),
        rules_section(audit.get("rules")),
        interrogation_section(audit.get("interrogation"), run_dir),
        self_checks_section(audit),
        errors_section(run_dir),
    ]
    draw_figures(sections)
    finished = (audit.get("run") or {}).get("finished") or ""
    counts = audit.get("counts") or {}
    subtitle = [f"{counts.get('audited', cohort.n)} subjects audited" + (f" · run finished {fmt_time(finished)}" if finished else "")]
    return Document(title=config.report.title, subtitle=subtitle, sections=sections)


def finding_card(finding: dict) -> FindingCard:
    """A finding dict of ``audit.json`` as a card with formatted evidence and threshold."""
    def pairs(values: Any) -> list[tuple[str, str]]:
        if not isinstance(values, dict):
            return []
        return [(k.replace("_", " "), fmt_value(k, v)) for k, v in values.items()]

    return FindingCard(
        severity=str(finding.get("severity", "info")), title=str(finding.get("title", "")),
        message=str(finding.get("message", "")), check=str(finding.get("check", "")),
        points_to=POINTS_TO_TEXT.get(str(finding.get("points_to", "")), str(finding.get("points_to", ""))),
        evidence=pairs(finding.get("evidence")),
        threshold=pairs(finding.get("threshold")),
    )


def verdict_section(audit: dict, evidence: list | None = None) -> Section:
    """The verdict sentence, the picture it rests on (``evidence``), the top findings, the others listed."""
    section = Section("Verdict and top findings", "verdict")
    verdict = audit.get("verdict")
    bias = audit.get("bias") if isinstance(audit.get("bias"), dict) else {}
    counts = bias.get("finding_counts") or {}
    if not isinstance(verdict, dict):
        reason = bias.get("skipped") if isinstance(bias, dict) else None
        return section.add(Verdict("none", "No verdict: the bias checks did not run" + (f" ({reason})." if reason else "."),
                                   "none", counts))
    section.add(Verdict(str(verdict.get("verdict", "inconclusive")), str(verdict.get("sentence", "")),
                        str(bias.get("max_severity") or "none"), counts))
    section.add(*(evidence or []))
    top = verdict.get("top_findings") or []
    if not top:
        return section.add(Paragraph("No check raised a finding."))
    section.add(Paragraph(f"Top {len(top)} of {sum(counts.values()) or len(top)} findings, the evidence the verdict "
                          "rests on first; each lists the numbers behind it and the threshold that fired."))
    section.add(*[finding_card(f) for f in top])
    shown = {f.get("id") for f in top}
    rest = [f for f in audit.get("findings") or [] if f.get("id") not in shown]
    if rest:
        rows = [[Badge(f.get("severity", "info"), f.get("severity", "info")), f.get("check", ""),
                 POINTS_TO_TEXT.get(f.get("points_to", ""), f.get("points_to", "")),
                 f.get("title", "")] for f in rest]
        section.add(Table(["Severity", "Check", "Points to", "Finding"], rows, caption="The other findings",
                          numeric=[False] * 4))
    return section


def _model_text(config) -> str:
    model = config.model
    if model.monai is not None:
        checkpoint = f", checkpoint {model.monai.checkpoint}" if model.monai.checkpoint else ", no checkpoint"
        return f"MONAI {model.monai.network}{checkpoint}"
    if model.factory is not None:
        factory = model.factory_config
        return f"factory {factory.function}" + (f", checkpoint {factory.checkpoint}" if factory.checkpoint else "")
    return f"TorchScript {model.torchscript}"


def summary_section(audit: dict, config) -> Section:
    """Subjects, model, device, methods, config hash and timings."""
    run = audit.get("run") or {}
    counts = audit.get("counts") or {}
    methods = (audit.get("attribution") or {}).get("methods") or {}
    method_text = "; ".join(
        f"{name} ({', '.join(f'{k}={v}' for k, v in (m.get('params') or {}).items()) or 'defaults'})"
        for name, m in methods.items()) or ", ".join(config.attribution.methods)
    timings = run.get("timings_s") or {}
    rows = [
        ["Subjects audited", f"{fmt_num(counts.get('audited'))} of {fmt_num(counts.get('subjects'))}"],
        ["Subjects failed / missing", f"{fmt_num(counts.get('failed', 0))} / {fmt_num(counts.get('missing', 0))}"],
        ["Model", _model_text(config)],
        ["Classes", ", ".join(config.model.classes)],
        ["Layer (Grad-CAM, features)", config.model.layer or "none"],
        ["Attribution target", config.attribution.target],
        ["Methods", method_text],
        ["Manifest", str(config.data.manifest)],
        ["Split audited", "all rows" if config.data.split is None else str(config.data.split)],
        ["Group columns", ", ".join(config.data.group_columns) or "none"],
        ["Device", str(run.get("device") or config.device)],
        ["Seed", fmt_num(run.get("seed", config.seed))],
        ["Config hash", str(run.get("config_hash") or config.digest())],
        ["xaudit version", str(run.get("xaudit_version", ""))],
        ["Started / finished", f"{fmt_time(run.get('started'))} / {fmt_time(run.get('finished'))}"],
        ["Timings", ", ".join(f"{humanize(k)} {fmt_seconds(v)}" for k, v in timings.items()) or "n/a"],
    ]
    return Section("Run summary", "summary").add(Table(["Item", "Value"], rows, numeric=[False, False]))


def read_errors(run_dir) -> list[dict[str, str]]:
    """Rows of ``errors.csv`` (and shards' ``errors-*.csv``) of subjects still unfinished.

    A subject that failed once and finished on ``--resume`` is not an error any more (the
    same rule as the run's ``counts.failed``).
    """
    done = run_dir.completed() if hasattr(run_dir, "completed") else set()
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for path in sorted(Path(run_dir / "errors.csv").parent.glob("errors*.csv")):
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                for raw in csv.DictReader(fh):
                    row = {k: unescape_cell(v or "") for k, v in raw.items()}  # undo the CSV formula guard
                    rows[(row.get("subject_id", ""), row.get("manifest_line", ""))] = row
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            log.warning("report: cannot read %s: %s", path, exc)
    # a manifest row that is not a subject (a repeated id, say) stays an error even when its id finished
    return [row for (sid, _), row in rows.items() if row.get("stage") == "manifest" or safe_file_id(sid) not in done]


def errors_section(run_dir) -> Section:
    """Subjects that failed, with the stage and the reason."""
    section = Section("Errors", "errors")
    rows = read_errors(run_dir)
    if not rows:
        return section.add(Paragraph("No subject failed."))
    table = [[r.get("subject_id", ""), r.get("manifest_line", ""), r.get("stage", ""), r.get("reason", "")] for r in rows]
    return section.add(
        Paragraph(f"{len(rows)} subject(s) failed and are not in the statistics above (errors.csv)."),
        Table(["Subject", "Manifest line", "Stage", "Reason"], table, numeric=[False, True, False, False]),
    )
