"""Rules as text, Markdown and files (``rules.json``, ``rules.md``)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xaudit.errors import OutputError

if TYPE_CHECKING:
    from xaudit.rules.result import Condition, GroupCoverage, Rule, RulesResult


def format_threshold(value: float) -> str:
    """Three significant digits, enough to read; rules.json keeps full precision."""
    return f"{value:.3g}"


def format_percent(fraction: float | None) -> str:
    """``0.314 -> '31%'``; tiny non-zero fractions show as ``'<1%'``."""
    if fraction is None:
        return "n/a"
    if 0 < fraction < 0.005:
        return "<1%"
    return f"{100 * fraction:.0f}%"


def format_condition(c: Condition) -> str:
    return f"{c.feature} {c.op} {format_threshold(c.threshold)}"


def format_rule(rule: Rule, class_names: Sequence[str]) -> str:
    """``IF a:ch1 > 0.83 AND a:ch3 <= 0.1 THEN lesion (support 31%, confidence 96%)``."""
    body = " AND ".join(format_condition(c) for c in rule.conditions) or "TRUE"
    return (f"IF {body} THEN {class_names[rule.predicted_class]} "
            f"(support {format_percent(rule.support)}, "
            f"confidence {format_percent(rule.confidence)})")


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


def write_rules(result: RulesResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``rules.json`` and ``rules.md`` into ``out_dir``, each atomically.

    Returns:
        (json path, markdown path). Raises OutputError if the directory is not writable.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {str(out)!r}: {exc}") from exc
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    json_path = _atomic_write(out / "rules.json", text)
    md_path = _atomic_write(out / "rules.md", rules_markdown(result))
    return json_path, md_path


def _atomic_write(path: Path, text: str) -> Path:
    """Write to a temp file in the same directory, then rename over ``path``.

    Readers see the old file or the new one, never half of one.
    """
    tmp = None
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent,
                                         prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False) as fh:
            tmp = fh.name
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a run's results are for others to read
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"cannot write {str(path)!r}: {exc}") from exc
    return path
