"""compare.md, compare.html and the terminal summary, all from one list of blocks.

`build_blocks` turns compare.json into headings, paragraphs, bullet lists and tables;
`build_document` puts them in the report's document model, which the report's own
renderers turn into compare.md and compare.html (self-contained, escaped, the report's
content-security policy), so the views always say the same thing.
"""

from __future__ import annotations

import html
from typing import Any

from xaudit.report.document import Bullets, Document, Paragraph, Section, Subheading, Table
from xaudit.report.html import render_html as render_html_document
from xaudit.report.markdown import render_markdown as render_markdown_document

Block = tuple  # ("h1"|"h2"|"h3"|"p", text) | ("ul", [text]) | ("table", header, rows)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers to fixed precision; None (undefined) to an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def signed(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def ci_text(entry: dict) -> str:
    low, high = entry.get("ci_low"), entry.get("ci_high")
    return "–" if low is None else f"[{low:+.3f}, {high:+.3f}]"


def build_blocks(result: dict) -> list[Block]:
    """The whole comparison as blocks, summary first."""
    level = int(round(result["params"]["confidence"] * 100))
    blocks: list[Block] = [("h1", f"xaudit comparison: reference {result['reference']}")]
    blocks.append(("table", ["run", "subjects", "classes", "methods", "verdict", "findings", "path"],
                   [[r["name"], r["n_subjects"], ", ".join(r["classes"]), ", ".join(r["methods"]), fmt(r["verdict"]),
                     r["n_findings"], r["path"]] for r in result["runs"]]))
    blocks += _regression_blocks(result)
    blocks += _scope_blocks(result["scope"])
    for comp in result["comparisons"]:
        blocks.append(("h2", f"{comp['other']} compared with {comp['reference']}"))
        blocks += _metric_blocks(comp, level)
        blocks += _prediction_blocks(comp)
        blocks += _findings_blocks(comp)
        blocks += _rules_blocks(comp["rules"])
        blocks += _roles_blocks(comp["roles"])
        blocks += _attribution_blocks(comp["attribution"])
    return blocks


def _regression_blocks(result: dict) -> list[Block]:
    thresholds = result["params"].get("thresholds") or {}
    rule = ", ".join(f"{k} drop > {v}" for k, v in thresholds.items()) or "no metric thresholds"
    head = ("h2", "Regressions")
    rule_text = f"Rule: {rule}, and any finding that becomes critical."
    if not result["regressions"]:
        return [head, ("p", f"None. {rule_text}")]
    return [head, ("p", rule_text),
            ("ul", [f"{r['run']}: {r['message']}" for r in result["regressions"]])]


def _scope_blocks(scope: dict) -> list[Block]:
    blocks: list[Block] = []
    if scope["differences"] or scope["left_out"] or scope["notes"]:
        blocks.append(("h2", "What could be compared"))
    if scope["differences"]:
        blocks.append(("ul", ["Difference: " + d for d in scope["differences"]]))
    if scope["left_out"]:
        blocks.append(("ul", [f"Left out: {d['part']} ({', '.join(d['runs'])}): {d['reason']}" for d in scope["left_out"]]))
    if scope["notes"]:
        blocks.append(("ul", ["Note: " + n for n in scope["notes"]]))
    return blocks


def _metric_blocks(comp: dict, level: int) -> list[Block]:
    metrics = comp["metrics"]
    if metrics is None:
        return [("p", "Metrics and predictions were not compared (see what was left out).")]
    overall = metrics["overall"]
    n = overall["n"]
    blocks: list[Block] = [("h3", f"Metrics (labelled subjects: {n['reference']} vs {n['other']}; {metrics['pairing']} bootstrap)")]
    header = ["metric", comp["reference"], comp["other"], "difference", f"{level}% interval", "interval excludes 0"]
    rows = [[m, fmt(e["reference"]), fmt(e["other"]), signed(e["difference"]), ci_text(e), fmt(e["significant"])]
            for m, e in _metric_items(overall)]
    blocks.append(("table", header, rows))
    group_rows = []
    for column, values in metrics["by_group"].items():
        for value, entry in values.items():
            for m, e in _metric_items(entry):
                group_rows.append([f"{column}={value}", f"{entry['n']['reference']}/{entry['n']['other']}", m,
                                   fmt(e["reference"]), fmt(e["other"]), signed(e["difference"]), ci_text(e)])
    if group_rows:
        blocks += [("h3", "Metrics per group value"),
                   ("table", ["group", "n", "metric", comp["reference"], comp["other"], "difference", f"{level}% interval"], group_rows)]
    unmatched = [f"{c}: only in {comp['reference']}: {v['reference_only']}; only in {comp['other']}: {v['other_only']}"
                 for c, v in metrics["unmatched"].items()]
    if unmatched:
        blocks.append(("ul", ["Group values not in both runs — " + u for u in unmatched]))
    return blocks


def _metric_items(entry: dict):
    return [(k, v) for k, v in entry.items() if k != "n"]


def _prediction_blocks(comp: dict) -> list[Block]:
    shift = comp["predictions"]
    if shift is None:
        return []
    rows = [[p["class"], fmt(p["mean_reference"]), fmt(p["mean_other"]), fmt(p["ks_statistic"]), fmt(p["p_value"], 4)]
            for p in shift["probability"]]
    counts = shift["predicted_counts"]
    items = [f"Predicted classes: {counts['reference']} vs {counts['other']} (chi-square {fmt(counts['chi2'])},"
             f" p = {fmt(counts['p_value'], 4)})"]
    if shift["changes"]:
        ch = shift["changes"]
        items.append(f"{ch['n_changed']} of {ch['n_common']} subjects in both runs changed predicted class;"
                     f" mean |probability change| {fmt(ch['mean_abs_probability_change'])}")
    return [("h3", "Prediction distribution"),
            ("table", ["probability of", "mean " + comp["reference"], "mean " + comp["other"], "KS statistic", "p"], rows),
            ("ul", items)]


def _findings_blocks(comp: dict) -> list[Block]:
    f = comp["findings"]
    verdict = comp["verdict"]
    rows = [["appears", x["severity"], x["id"], x["title"]] for x in f["appearing"]]
    rows += [["disappears", x["severity"], x["id"], x["title"]] for x in f["disappearing"]]
    rows += [[f"persists ({x['change']})", f"{x['severity_reference']} → {x['severity_other']}", x["id"], x["title_other"]]
             for x in f["persisting"]]
    blocks: list[Block] = [("h3", "Findings"),
                           ("p", f"Verdict: {fmt(verdict['reference'])} → {fmt(verdict['other'])}. {f['counts']['appearing']} appear,"
                                 f" {f['counts']['disappearing']} disappear, {f['counts']['persisting']} persist"
                                 f" ({f['counts']['escalated']} escalated).")]
    if rows:
        blocks.append(("table", ["status", "severity", "id", "title"], rows))
    return blocks


def _rules_blocks(rules: dict) -> list[Block]:
    if "skipped" in rules:
        return [("h3", "Rules"), ("p", f"Not compared: {rules['skipped']}.")]
    if not rules["n_reference"] and not rules["n_other"]:
        return [("h3", "Rules"), ("p", "Neither run has rules (see each run's rules.md for why).")]
    fid = rules["fidelity"]
    rows = [["persists", f"{r['rank_reference']} → {r['rank_other']}", r["text_other"]] for r in rules["persisting"]]
    rows += [["appears", r["rank"], r["text"]] for r in rules["appearing"]]
    rows += [["disappears", r["rank"], r["text"]] for r in rules["disappearing"]]
    blocks: list[Block] = [("h3", f"Rules (top {rules['top_n']})"),
                           ("p", f"Feature overlap of the top rules (Jaccard): {fmt(rules['feature_jaccard'])};"
                                 f" surrogate fidelity {fmt(fid['reference'])} → {fmt(fid['other'])}.")]
    if rows:
        blocks.append(("table", ["status", "rank", "rule"], rows))
    return blocks


def _roles_blocks(roles: dict) -> list[Block]:
    if "skipped" in roles:
        return [("h3", "Feature roles"), ("p", f"Not compared: {roles['skipped']}.")]
    rows = [[t, fmt(v["reference"]), fmt(v["other"]), signed(v["difference"])] for t, v in roles["tag_shares"].items()]
    return [("h3", "Feature roles"),
            ("p", f"{roles['n_changed']} of {roles['n_common_features']} features (matched by name) changed role."),
            ("table", ["role", "share (reference)", "share (other)", "difference"], rows)]


def _attribution_blocks(attribution: dict) -> list[Block]:
    rows = [[m, name, fmt(e["reference"]), fmt(e["other"]), signed(e["difference"]), fmt(e["p_value"], 4), fmt(e.get("p_holm"), 4)]
            for m, shares in attribution["shares"].items() for name, e in shares.items()]
    blocks: list[Block] = [("h3", "Attribution")]
    if rows:
        blocks.append(("table", ["method", "share", "reference", "other", "difference", "p", "p (Holm)"], rows))
    maps = attribution["maps"]
    if maps is None:
        blocks.append(("p", "Mean-map differences were not computed (see what was left out)."))
    elif maps:
        map_rows = [[e["method"], e["class"], fmt(e.get("correlation")), _sig(e.get("mean_abs_difference")),
                     _sig(e.get("mean_abs_reference")),
                     e.get("path") or e.get("skipped", "")] for e in maps]
        blocks.append(("table", ["method", "class", "map correlation", "mean |difference|", "mean |reference|", "difference map"],
                       map_rows))
    return blocks


def _sig(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}"


def build_document(result: dict) -> Document:
    """The comparison in the report's document model (`xaudit.report.document`): one section
    for the runs and regressions, one per comparison, rendered by the report's own renderers
    (so compare.html gets the report's escaping and content-security policy)."""
    blocks = build_blocks(result)
    sections = [Section("Runs compared", "runs")]
    for block in blocks[1:]:
        kind = block[0]
        if kind == "h2":
            sections.append(Section(str(block[1]), f"s{len(sections) + 1}"))
        elif kind == "h3":
            sections[-1].add(Subheading(str(block[1])))
        elif kind == "p":
            sections[-1].add(Paragraph(str(block[1])))
        elif kind == "ul":
            sections[-1].add(Bullets([str(item) for item in block[1]]))
        else:
            header, rows = block[1], block[2]
            sections[-1].add(Table([str(h) for h in header], [[str(c) for c in row] for row in rows],
                                   numeric=[False] * len(header)))
    created = result.get("created", "")
    subtitle = [f"xaudit {result.get('xaudit_version', '')} · {created}".strip(" ·")]
    return Document(str(blocks[0][1]), subtitle, sections)


def render_markdown(result: dict) -> str:
    return render_markdown_document(build_document(result))


def render_html(result: dict) -> str:
    return render_html_document(build_document(result))


def print_summary(result: dict, console) -> None:
    """A rich table per comparison (overall metrics, findings, regressions) on ``console``."""
    from rich.table import Table

    for comp in result["comparisons"]:
        table = Table(title=f"{comp['other']} vs {comp['reference']}", show_lines=False)
        for col in ("", comp["reference"], comp["other"], "difference", "interval"):
            table.add_column(col, overflow="fold")
        overall = (comp["metrics"] or {}).get("overall") or {}
        for m, e in _metric_items(overall):
            table.add_row(m, fmt(e["reference"]), fmt(e["other"]), signed(e["difference"]), ci_text(e))
        counts = comp["findings"]["counts"]
        table.add_row("findings", "", "", f"+{counts['appearing']} / -{counts['disappearing']}", f"{counts['escalated']} escalated")
        pairing = (comp["metrics"] or {}).get("pairing")
        if pairing:
            console.print(f"metric intervals: {pairing} resamples", highlight=False)
        console.print(table)
    for note in result["scope"]["notes"]:  # unpaired ids, different manifests, class order: worth reading here
        console.print(f"note: {note}", markup=False, highlight=False)
    for r in result["regressions"]:
        console.print(f"[bold red]regression[/] {html.escape(r['run'])}: {r['message']}", markup=True, highlight=False)
    if not result["regressions"]:
        console.print("no regressions", highlight=False)
