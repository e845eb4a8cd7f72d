"""Rules as Markdown (``rules.md``); a rule's one-line text is `Rule.text` / `format_rule`."""

from __future__ import annotations

from xaudit.analysis.rules.result import GroupCoverage, RulesResult, format_condition, format_percent, format_rule


def fidelity_line(result: RulesResult) -> str:
    """One sentence on how well the surrogate imitates the network."""
    s = result.surrogate
    if s.fidelity is None:
        head = ("Surrogate fidelity: not cross-validated; "
                f"{format_percent(s.fidelity_train)} agreement on its training subjects")
    else:
        head = (f"Surrogate fidelity ({s.cv_folds}-fold CV): {format_percent(s.fidelity)} "
                "agreement with the network's predictions on held-out subjects "
                f"(training: {format_percent(s.fidelity_train)})")
    if s.surrogate_accuracy is not None:
        head += (f"; accuracy on true labels {format_percent(s.surrogate_accuracy)} "
                 f"(network: {format_percent(s.network_accuracy)}, n={s.n_labelled})")
    return head + "."


def group_highlight(gc: GroupCoverage) -> str:
    """``site: B 94% of covered (cohort 50%), V=0.71 **skewed**``."""
    top = gc.top()
    text = (f"{gc.column}: {top.value} {format_percent(top.share_of_rule)} of covered "
            f"(cohort {format_percent(top.share_of_dataset)}), V={gc.cramers_v:.2f}")
    return text + (" **skewed**" if gc.skewed else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rules_markdown(result: RulesResult, top_n: int | None = None) -> str:
    """A Markdown section: fidelity, notes, and a table of the top-N rules.

    Args:
        result: the rules stage's output.
        top_n: rules shown (default ``result.params.top_n``).
    """
    lines = ["# Rules that imitate the network", "", fidelity_line(result), ""]
    lines += [f"- {note}" for note in result.notes] + ([""] if result.notes else [])
    rules = result.top(top_n)
    if not rules:
        return "\n".join(lines + ["No rules were extracted.", ""])
    lines += [f"Top {len(rules)} of {len(result.rules)} rules, ranked by RuleFit importance "
              "(|L1 logistic coefficient| x sqrt(support (1 - support))).", ""]
    n_nonzero = sum(r.importance > 0 for r in rules)
    if n_nonzero < len(rules):
        lines += [f"Only the first {n_nonzero} have non-zero importance; the L1 regression "
                  "found the others redundant given them, so they are ordered by confidence, "
                  "then support.", ""]
    lines += ["| Rank | Rule | Class | Support | Confidence | Importance | Label accuracy "
              "| Group coverage |",
              "|---:|---|---|---:|---:|---:|---:|---|"]
    for r in rules:
        body = " AND ".join(format_condition(c) for c in r.conditions)
        groups = "<br>".join(group_highlight(g) for g in r.coverage_by_group.values()) or "-"
        lines.append(
            f"| {r.rank} | {_cell(body)} | {_cell(result.class_names[r.predicted_class])} "
            f"| {format_percent(r.support)} ({r.n_covered}) | {format_percent(r.confidence)} "
            f"| {r.importance:.3g} | {format_percent(r.label_accuracy)} | {_cell(groups)} |")
    return "\n".join(lines + [""])
