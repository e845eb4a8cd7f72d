"""The rules section: the surrogate's fidelity and the top-N rules with their coverage by group.

A rule that covers mostly one site (its coverage skewed, Cramér's V high) is a decision
path of the network that runs through a site signature; the per-value coverage is what
lets a reader see that without opening ``rules.json``.
"""

from __future__ import annotations

from xaudit.report.document import Note, Paragraph, Section, Table
from xaudit.report.format import fmt_num, fmt_p, fmt_pct


def fidelity_text(surrogate: dict) -> str:
    """One sentence on how well the rule surrogate imitates the network."""
    if surrogate.get("fidelity") is None:
        text = ("Surrogate fidelity: not cross-validated; "
                f"{fmt_pct(surrogate.get('fidelity_train'))} agreement with the network on its training subjects")
    else:
        text = (f"Surrogate fidelity ({fmt_num(surrogate.get('cv_folds'))}-fold CV): {fmt_pct(surrogate.get('fidelity'))} "
                "agreement with the network's predictions on held-out subjects "
                f"(training: {fmt_pct(surrogate.get('fidelity_train'))})")
    if surrogate.get("surrogate_accuracy") is not None:
        text += (f"; accuracy on the true labels {fmt_pct(surrogate.get('surrogate_accuracy'))} "
                 f"(network: {fmt_pct(surrogate.get('network_accuracy'))}, n={fmt_num(surrogate.get('n_labelled'))})")
    return (text + f". {fmt_num(surrogate.get('n_features_used'))} of {fmt_num(surrogate.get('n_features'))} "
            "features entered the surrogate forest.")


def rule_text(rule: dict) -> str:
    """``IF a > 0.83 AND b <= 0.1 THEN lesion`` (thresholds with three significant digits)."""
    conditions = rule.get("conditions") or []
    body = " AND ".join(f"{c.get('feature')} {c.get('op')} {fmt_num(c.get('threshold'))}" for c in conditions) or "TRUE"
    return f"IF {body} THEN {rule.get('predicted_class')}"


def coverage_text(coverage: dict) -> str:
    """Per group value: covered subjects of that value; then the skew statistics."""
    parts = []
    for column, gc in coverage.items():
        values = ", ".join(f"{v.get('value')} {fmt_num(v.get('n_covered'))}/{fmt_num(v.get('n_value'))}"
                           f" ({fmt_pct(v.get('fraction_covered'))})" for v in gc.get("values") or [])
        skew = f"V={fmt_num(gc.get('cramers_v'))}, p={fmt_p(gc.get('p_value'))}"
        parts.append(f"{column}: {values}; {skew}" + (" SKEWED" if gc.get("skewed") else ""))
    return "\n".join(parts) or "-"


def rules_section(rules: dict | None) -> Section:
    """Fidelity, notes and the top-N rules as readable text with support, confidence and coverage."""
    section = Section("Rules that imitate the network", "rules")
    if not isinstance(rules, dict):
        return section.add(Note("Rule extraction did not run (no result in audit.json)."))
    if "skipped" in rules:
        return section.add(Note(f"Rule extraction was skipped: {rules['skipped']}."))
    section.add(Paragraph("A random forest is fit to the network's predictions from the layer features; its paths "
                          "become IF-THEN rules, ranked by RuleFit importance. Coverage shows, per group value, how "
                          "many of its subjects a rule covers: a rule skewed to one site is a site-specific decision path."))
    surrogate = rules.get("surrogate") or {}
    if surrogate.get("fidelity") is not None or surrogate.get("fidelity_train") is not None:
        section.add(Paragraph(fidelity_text(surrogate)))
    section.add(*[Note(str(n)) for n in rules.get("notes") or []])
    top = rules.get("rules") or []
    if not top:
        return section.add(Note("No rules were extracted."))
    rows = [[fmt_num(r.get("rank")), rule_text(r), fmt_pct(r.get("support")) + f" ({fmt_num(r.get('n_covered'))})",
             fmt_pct(r.get("confidence")), fmt_pct(r.get("label_accuracy")), fmt_num(r.get("importance")),
             coverage_text(r.get("coverage_by_group") or {})] for r in top]
    return section.add(Table(["Rank", "Rule", "Support", "Confidence", "Label accuracy", "Importance", "Coverage by group"],
                             rows, caption=f"The top {len(top)} rules (all of them in rules.json and rules.md).",
                             numeric=[True, False, True, True, True, True, False]))
