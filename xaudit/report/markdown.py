"""`render_markdown`: the `Document` as Markdown, for terminals, diffs and code review.

Same sections, numbers and captions as the HTML; figures are referenced as the PNG files
in ``figures/``. Text from the manifest or config is neutralised by `md_escape`: Markdown
and HTML punctuation is backslash-escaped, so a subject id such as ``<script>`` shows as
text in every renderer and ``|`` cannot break a table row.
"""

from __future__ import annotations

import re

from xaudit.report.document import (Badge, Bullets, Cell, Document, Figure, FindingCard, Link, Note, Paragraph, Section,
                                    StripPlots, Subheading, Table, Verdict)
from xaudit.report.format import verdict_words

_SPECIAL = "\\`*[]|"
# `<` is escaped only where it could open a tag, comment or autolink (`<b`, `</`, `<!`, `<?`),
# so comparisons such as `ch3 <= 0.5` stay readable in a terminal.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def md_escape(text: str) -> str:
    """Neutralise Markdown and HTML in one line of text from the manifest, config or a check.

    Backslash-escapes Markdown punctuation (so ``|`` cannot split a table row) and every
    ``<`` that could start HTML; folds newlines into spaces (one line per cell or item);
    a leading ``>`` or ``#`` is escaped so text cannot become a quote or a heading.
    """
    flat = " ".join(str(text).splitlines())
    out = "".join("\\" + ch if ch in _SPECIAL else ch for ch in flat)
    out = _TAG_START.sub(r"\\<", out)
    return "\\" + out if out[:1] in (">", "#") else out


def _cell(cell: Cell) -> str:
    if isinstance(cell, Badge):
        return f"**{md_escape(cell.text.upper())}**"
    return md_escape(str(cell).replace("\n", "; ")) or " "  # a table row is one line


def _table(table: Table) -> list[str]:
    numeric = table.numeric or []
    align = ["---:" if j < len(numeric) and numeric[j] else "---" for j in range(len(table.header))]
    lines = ["| " + " | ".join(md_escape(h) or " " for h in table.header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{md_escape(table.caption)}*"]
    return lines


def _finding(card: FindingCard) -> list[str]:
    lines = [f"### **{card.severity.upper()}** {md_escape(card.title)}", "",
             f"{md_escape(card.message)}", "",
             f"- Check: {md_escape(card.check)}; points to: {md_escape(card.points_to)}"]
    if card.evidence:
        lines.append("- Evidence: " + "; ".join(f"{md_escape(k)}: {md_escape(v)}" for k, v in card.evidence))
    if card.threshold:
        lines.append("- Threshold that fired: " + "; ".join(f"{md_escape(k)}: {md_escape(v)}" for k, v in card.threshold))
    return lines


def _verdict(block: Verdict) -> list[str]:
    counts = ", ".join(f"{n} {s}" for s, n in block.counts.items() if n) or "no findings"
    severity = block.severity if block.severity != "none" else "no finding"
    return [f"> **VERDICT: {md_escape(verdict_words(block.label).upper())}** (highest severity: {md_escape(severity)}; findings: {counts})",
            ">", f"> {md_escape(block.sentence)}"]


def _block(block) -> list[str]:
    if isinstance(block, Verdict):
        return _verdict(block)
    if isinstance(block, FindingCard):
        return _finding(block)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        caption = md_escape(f"Figure {block.number}. {block.caption}")
        return [f"![{caption}](figures/{block.name}.png)", "", f"*{caption}*"]
    if isinstance(block, Note):
        return [f"*Note:* {md_escape(block.text)}"]
    if isinstance(block, Link):
        return [f"[{md_escape(block.text)}](<{block.href.replace('>', '%3E')}>)"]
    if isinstance(block, StripPlots):
        return [f"*The interactive group view ({len(block.stats)} strip plots of {len(block.subjects)} subjects, "
                "each linked to its page in subjects/) is in report.html.*"]
    if isinstance(block, Bullets):
        return [f"- {md_escape(item)}" for item in block.items]
    if isinstance(block, Paragraph):
        return [md_escape(block.text)]
    if isinstance(block, Subheading):
        return [f"### {md_escape(block.text)}"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def _section(section: Section) -> list[str]:
    lines = [f"## {md_escape(section.heading)}", ""]
    for block in section.blocks:
        lines += _block(block) + [""]
    return lines


def render_markdown(doc: Document, footer: str = "") -> str:
    """The whole report; the verdict section first, then the contents and the other sections."""
    lines = [f"# {md_escape(doc.title)}", ""] + [md_escape(s) + "  " for s in doc.subtitle] + [""]
    lines += _section(doc.sections[0])
    if len(doc.sections) > 1:
        lines += ["**Contents:** " + " · ".join(md_escape(s.heading) for s in doc.sections), ""]
    for section in doc.sections[1:]:
        lines += _section(section)
    if footer:
        lines += ["---", md_escape(footer), ""]
    return "\n".join(lines).rstrip() + "\n"
