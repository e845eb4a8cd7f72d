"""Report section for the counterfactual interventions: what ran, what each moved, how far the
decisions followed (``audit.json``'s ``interventions``), and why each matters."""

from __future__ import annotations

from xaudit.report.document import Bullets, Note, Paragraph, Section, Table
from xaudit.report.format import fmt_ci, fmt_num
from xaudit.report.sections_common import notes, skipped


_KIND = {"site": "site", "class": "class signal", "both": "none (site and class moved together)"}


def _pct(estimate: dict | None) -> str:
    if not isinstance(estimate, dict) or estimate.get("value") is None:
        return "n/a"
    low, high = estimate.get("low"), estimate.get("high")
    interval = f" [{low:.0%}, {high:.0%}]" if low is not None and high is not None else ""
    return f"{estimate['value']:.0%}{interval}"


def interventions_section(block: dict | None) -> Section:
    """Which interventions ran, their flip rates and probability changes per cell, and what did not run."""
    section = Section("Interventions: do the decisions follow a site property?", "interventions")
    if skipped(section, block, "The interventions"):
        return section
    summary = block.get("summary") or {}
    why = block.get("why") or {}
    section.add(Paragraph(
        "Each intervention moves one property of a subject's image to another site's and keeps the anatomy; a "
        "decision that flips follows that property, whatever the design (even when every image of a class comes "
        "from one site). Flip rates carry Wilson intervals, mean changes of the originally predicted class's "
        f"probability bootstrap intervals. {fmt_num(block.get('subjects'))} subjects were intervened on."))
    ran = summary.get("ran") or []
    if ran:
        section.add(Bullets([f"{name.replace('_', ' ')}: {why.get(name, '')}" for name in ran]))
    cells = block.get("cells") or []
    rows = [[c.get("intervention", "").replace("_", " "), f"{c.get('source')} -> {c.get('reference')}",
             c.get("class_name", ""), c.get("donor") or "", fmt_num(c.get("n")), fmt_num(c.get("flips")),
             _pct(c.get("flip_rate")), fmt_ci(c.get("mean_change")),
             _KIND.get(c.get("kind"), "") + ("" if c.get("tested") else " (too few)")]
            for c in cells]
    if rows:
        section.add(Table(["Intervention", "Site", "Class", "Donor", "n", "Flips", "Flip rate", "Change of p",
                           "Tests"], rows, caption="Per cell: subjects of one site and class given a property of "
                           "another site (a transplant within a site tests a class signal in the background).",
                           numeric=[False, False, False, False, True, True, False, False, False]))
    not_run = summary.get("not_run") or {}
    if not_run:
        section.add(Note("Not run: " + "; ".join(f"{k.replace('_', ' ')} ({v})" for k, v in not_run.items()) + "."))
    return section.add(*notes(block))
