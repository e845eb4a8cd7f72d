"""`render_html`: the `Document` as one self-contained HTML page.

Everything is inline (CSS in a ``<style>``, figures as base64 PNG data URIs, system fonts),
so the file opens offline and can be mailed or archived alone. The one script is the group
view's (`html_groupview.SCRIPT`, inlined, only on a page that has a group view); a
Content-Security-Policy allows exactly that script by its hash and forbids every other
script and every external load, as a second line of defence behind escaping: every string
of the document goes through `html.escape` here and in `html_groupview`, nowhere else.
"""

from __future__ import annotations

import base64
from html import escape

from xaudit.report.document import (Badge, Bullets, Cell, Document, Figure, FindingCard, Link, Note, Paragraph, Section,
                                    StripPlots, Subheading, Table, Verdict)
from xaudit.report.html_groupview import CSS as GROUPVIEW_CSS
from xaudit.report.html_groupview import SCRIPT, SCRIPT_HASH, render_strips
from xaudit.report.format import verdict_words
from xaudit.report.plotting import SEVERITY_COLORS

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       f"script-src '{SCRIPT_HASH}'; base-uri 'none'; form-action 'none'")

CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d8dee4; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 18px; }
.verdict { border-radius: 8px; padding: 16px 20px; margin: 10px 0 18px; color: #fff; }
.verdict .label { font-size: 13px; letter-spacing: .06em; text-transform: uppercase; opacity: .92; }
.verdict .sentence { font-size: 19px; line-height: 1.4; margin: 4px 0 6px; font-weight: 600; }
.verdict .counts { font-size: 13px; opacity: .92; }
.badge { display: inline-block; border-radius: 4px; padding: 1px 7px; font-size: 12px; font-weight: 700;
         color: #fff; text-transform: uppercase; letter-spacing: .03em; white-space: nowrap; }
.finding { border: 1px solid var(--line); border-left: 6px solid; border-radius: 6px; padding: 10px 14px;
           margin: 12px 0; background: #fff; }
.finding h3 { font-size: 16px; margin: 0 0 4px; }
.finding .meta { color: var(--muted); font-size: 12px; margin-left: 6px; }
.finding p { margin: 4px 0 8px; }
.kv { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 6px 36px; font-size: 13px; }
.kv table { margin: 0; }
.kv td { padding: 1px 10px 1px 0; border: 0; }
.kv th { text-align: left; font-size: 11px; color: var(--muted); text-transform: uppercase; border: 0; padding: 0; }
table.data { border-collapse: collapse; margin: 10px 0 4px; font-size: 13.5px; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 4px 10px; vertical-align: top;
                              text-align: left; }
table.data th { background: var(--soft); font-weight: 600; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.tablewrap { overflow-x: auto; }
.caption { color: var(--muted); font-size: 13px; margin: 2px 0 12px; }
.note { color: var(--muted); font-size: 13.5px; margin: 4px 0; }
.note::before { content: "Note: "; font-weight: 600; }
figure { margin: 14px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
nav.toc { background: var(--soft); border-radius: 6px; padding: 8px 14px; font-size: 14px; margin: 22px 0 0; }
nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; }
nav.toc a { color: #0969da; text-decoration: none; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; border-top: 1px solid var(--line); padding-top: 8px; }
a.link { color: #0969da; }
@media print { .verdict, .badge { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
"""


def _color(kind: str) -> str:
    return SEVERITY_COLORS.get(kind, "#57606a")


def _badge(badge: Badge) -> str:
    return f'<span class="badge" style="background:{_color(badge.kind)}">{escape(badge.text)}</span>'


def _cell(cell: Cell) -> str:
    # a cell may hold several lines (e.g. a rule's coverage per group column)
    return _badge(cell) if isinstance(cell, Badge) else escape(str(cell)).replace("\n", "<br>")


def _table(table: Table) -> str:
    numeric = table.numeric or []
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = "".join(f'<td class="num">{_cell(c)}</td>' if j < len(numeric) and numeric[j] else f"<td>{_cell(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    return (f'<div class="tablewrap"><table class="data"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{caption}')


def _pairs(title: str, pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in pairs)
    return f"<table><tr><th colspan=2>{escape(title)}</th></tr>{rows}</table>"


def _finding(card: FindingCard) -> str:
    color = _color(card.severity)
    meta = f"{card.check} check · points to {card.points_to}" if card.points_to else f"{card.check} check"
    return (f'<div class="finding" style="border-left-color:{color}"><h3>{_badge(Badge(card.severity, card.severity))} '
            f'{escape(card.title)}<span class="meta">{escape(meta)}</span></h3><p>{escape(card.message)}</p>'
            f'<div class="kv">{_pairs("Evidence", card.evidence)}{_pairs("Threshold that fired", card.threshold)}</div></div>')


def _verdict(block: Verdict) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in block.counts.items() if n) or "no findings"
    severity = block.severity if block.severity != "none" else "no finding"
    return (f'<div class="verdict" style="background:{_color(block.severity)}"><div class="label">Verdict: '
            f'{escape(verdict_words(block.label))} · highest severity: {escape(severity)}</div>'
            f'<p class="sentence">{escape(block.sentence)}</p><div class="counts">Findings: {escape(counts)}</div></div>')


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    caption = f"Figure {figure.number}. {figure.caption}"
    return (f'<figure id="fig-{escape(figure.name)}"><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _block(block) -> str:
    if isinstance(block, Verdict):
        return _verdict(block)
    if isinstance(block, FindingCard):
        return _finding(block)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, Note):
        return f'<p class="note">{escape(block.text)}</p>'
    if isinstance(block, Link):
        return f'<p><a class="link" href="{escape(block.href)}">{escape(block.text)}</a></p>'
    if isinstance(block, StripPlots):
        return render_strips(block)
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Subheading):
        return f"<h3>{escape(block.text)}</h3>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _section(section: Section) -> str:
    body = "\n".join(_block(b) for b in section.blocks)
    return f'<section id="{escape(section.anchor)}">\n<h2>{escape(section.heading)}</h2>\n{body}\n</section>'


def _toc(sections: list[Section]) -> str:
    items = "".join(f'<li><a href="#{escape(s.anchor)}">{escape(s.title)}</a></li>' for s in sections)
    return f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>'


def render_html(doc: Document, footer: str = "") -> str:
    """The whole page; the first section (the verdict) comes before the contents list."""
    first, rest = doc.sections[:1], doc.sections[1:]
    subtitle = "".join(f"{escape(line)}<br>" for line in doc.subtitle).removesuffix("<br>")
    interactive = any(isinstance(b, StripPlots) for s in doc.sections for b in s.blocks)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(doc.title)}</title><style>{CSS}{GROUPVIEW_CSS if interactive else ''}</style></head><body><main>",
        f'<header><h1>{escape(doc.title)}</h1><p class="subtitle">{subtitle}</p></header>',
        *[_section(s) for s in first],
        _toc(doc.sections) if rest and doc.meta.get("contents", True) else "",
        *[_section(s) for s in rest],
        f"<footer>{escape(footer)}</footer>" if footer else "",
        "</main>",
        f"<script>{SCRIPT}</script>" if interactive else "",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
