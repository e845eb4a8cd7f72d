"""The "can the explanations be trusted?" section: per-method self-checks and quality scores.

Self-checks are per-subject axioms computed with the maps (IG completeness, LRP
conservation, LIME's surrogate fit); quality scores come from the quality stage on a
sample of subjects: deletion/insertion curves against a random order (Samek et al.
2017) and the model-parameter randomisation test (Adebayo et al. 2018). A method that
fails them should not carry the "where the model looks" conclusions.
"""

from __future__ import annotations

from xaudit.report.document import Bullets, Note, Paragraph, Section, Table
from xaudit.report.figures_charts import quality_png
from xaudit.report.format import fmt_num
from xaudit.report.sections_common import safe_figure

SELF_CHECKS = {
    "completeness_error": "|sum of attribution - (f(x) - f(baseline))| / |f(x) - f(baseline)|; 0 when completeness "
                          "holds exactly, above ~0.05 suggests too few integration steps",
    "conservation_error": "|sum of relevance + relevance absorbed by biases and stabilisers - target logit| / "
                          "|target logit|: relevance lost or made up where no rule applies, or a numerical breakdown. "
                          "Near 1e-5 (float32) on the models tested; above 0.01 the map is not to be trusted",
    "absorbed_share": "relevance the LRP rules give to biases, folded BatchNorm shifts, the epsilon stabiliser and a "
                      "zero-padded input border, "
                      "as a share of the target logit: the part of the decision the map does not explain (large "
                      "for `epsilon` on networks with biases, ~0 for z+ and alpha-beta)",
    "relevance_sum": "sum of the relevance map (compare with the target logit)",
    "surrogate_r2": "R² of LIME's local linear surrogate; low values mean the explanation fits the model poorly",
}


def _self_check_blocks(methods: dict) -> list:
    rows, without = [], []
    for name, entry in methods.items():
        checks = entry.get("self_checks") or {}
        if not checks:
            without.append(name)
        for stat, summary in checks.items():
            rows.append([name, stat, fmt_num(summary.get("n")), fmt_num(summary.get("mean")), fmt_num(summary.get("median")),
                         fmt_num(summary.get("p95")), fmt_num(summary.get("max"))])
    blocks: list = []
    if rows:
        blocks.append(Table(["Method", "Self-check", "n", "Mean", "Median", "95th pct", "Max"], rows,
                            numeric=[False, False, True, True, True, True, True]))
        used = sorted({r[1] for r in rows})
        blocks.append(Bullets([f"{stat}: {SELF_CHECKS[stat]}" for stat in used if stat in SELF_CHECKS]))
    if without:
        blocks.append(Note("No self-check statistic for " + ", ".join(without)
                           + " (only methods with an axiom to verify, such as completeness, report one)."))
    return blocks


def _quality_blocks(quality: dict | None) -> list:
    if not isinstance(quality, dict):
        return [Note("The explanation-quality stage did not run (no result in audit.json).")]
    if "skipped" in quality:
        return [Note(f"The explanation-quality stage was skipped: {quality['skipped']}.")]
    methods = quality.get("methods") or {}
    rows, scored = [], {}
    for name, q in methods.items():
        if "skipped" in q:
            rows.append([name, "skipped: " + str(q["skipped"]), "", "", "", ""])
            continue
        scored[name] = q
        rows.append([name, f"{fmt_num(q.get('deletion_auc'))} ({fmt_num(q.get('random_deletion_auc'))})",
                     f"{fmt_num(q.get('insertion_auc'))} ({fmt_num(q.get('random_insertion_auc'))})",
                     fmt_num(q.get("deletion_gain")), fmt_num(q.get("insertion_gain")),
                     fmt_num(q.get("randomisation_final_spearman_abs"))])
    if not rows:
        return [Note("No method was scored.")]
    subjects = quality.get("subjects") or []
    blocks = [
        Paragraph(f"Scored on {len(subjects)} subjects ({', '.join(map(str, subjects))}). Deletion: the target "
                  "probability as the most-attributed regions are removed first (lower is better); insertion: as "
                  "they are added first (higher is better); both against a random order. Randomisation: rank "
                  "correlation of |map| with the map of a network whose layers were re-initialised (should fall "
                  "towards 0; a map that stays the same does not depend on what the model learned)."),
        Table(["Method", "Deletion AUC (random)", "Insertion AUC (random)", "Deletion gain", "Insertion gain",
               "Spearman after randomisation"], rows),
    ]
    if scored:
        blocks.append(safe_figure("explanation_quality", "Deletion and insertion curves (mean over the sampled "
                                  "subjects; grey: random order) and the randomisation test per method.",
                                  lambda: quality_png(scored)))
    return blocks


def self_checks_section(audit: dict) -> Section:
    """Per-method self-check statistics and explanation-quality scores."""
    section = Section("Can the explanations be trusted?", "self-checks")
    attribution = audit.get("attribution") or {}
    methods = attribution.get("methods") or {}
    if not methods:
        return section.add(Note("No attribution method ran."))
    section.add(*_self_check_blocks(methods))
    return section.add(*_quality_blocks(attribution.get("quality")))
