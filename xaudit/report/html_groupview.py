"""The group view in HTML: inline SVG strip plots and the one small inline script of the report.

Like MRIQC's group report: one strip plot per per-subject statistic, every subject a point
(colour: the first group column; row: the class), each point a link to the subject's own
page. The script only adds what a plain page cannot: hovering a point highlights the same
subject in every plot, and a search box marks the subjects whose id contains the text
(Enter opens the page of a single match). Without the script every point still links.

The script is a constant, so the page's Content-Security-Policy allows exactly it by its
SHA-256 hash (`SCRIPT_HASH`) and nothing else; all text is escaped here.
"""

from __future__ import annotations

import base64
import hashlib
import math
from html import escape

from xaudit.report.document import StripPlots
from xaudit.report.plotting import group_color

WIDTH, ROW_H, LEFT, TOP, BOTTOM = 520, 24, 120, 8, 24

SCRIPT = """(function () {
  var root = document.getElementById("groupview");
  if (!root) { return; }
  var points = Array.prototype.slice.call(root.querySelectorAll("a[data-i]"));
  var byId = {};
  points.forEach(function (p) { (byId[p.getAttribute("data-i")] = byId[p.getAttribute("data-i")] || []).push(p); });
  function mark(i, on) { (byId[i] || []).forEach(function (p) { p.classList.toggle("hl", on); }); }
  points.forEach(function (p) {
    var i = p.getAttribute("data-i");
    p.addEventListener("mouseenter", function () { mark(i, true); });
    p.addEventListener("mouseleave", function () { mark(i, false); });
    p.addEventListener("focus", function () { mark(i, true); });
    p.addEventListener("blur", function () { mark(i, false); });
  });
  var box = document.getElementById("gv-search"), out = document.getElementById("gv-count");
  function matches() {
    var q = box.value.trim().toLowerCase(), found = {};
    points.forEach(function (p) {
      var hit = q !== "" && p.getAttribute("data-s").toLowerCase().indexOf(q) >= 0;
      p.classList.toggle("found", hit);
      p.classList.toggle("dim", q !== "" && !hit);
      if (hit) { found[p.getAttribute("data-i")] = p; }
    });
    return {query: q, found: found};
  }
  box.addEventListener("input", function () {
    var m = matches(), ids = Object.keys(m.found);
    out.textContent = m.query === "" ? "" : ids.length + (ids.length === 1 ? " subject matches" : " subjects match");
  });
  box.addEventListener("keydown", function (e) {
    if (e.key !== "Enter") { return; }
    var ids = Object.keys(matches().found);
    if (ids.length === 1) {
      var href = matches().found[ids[0]].getAttribute("href");
      if (href) { window.location.href = href; }
    }
  });
})();"""

SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")

CSS = """
.gv-legend { font-size: 13px; margin: 6px 0; display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: center; }
.gv-legend .sw { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 4px;
                 vertical-align: -1px; }
.gv-search { margin: 8px 0; font-size: 14px; }
.gv-search input { font: inherit; padding: 3px 8px; width: 240px; border: 1px solid var(--line); border-radius: 4px; }
.gv-count { color: var(--muted); margin-left: 8px; }
.gv-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(470px, 1fr)); gap: 6px 18px; }
.gv-plot h4 { font-size: 13px; margin: 6px 0 0; font-weight: 600; }
.gv-plot svg { width: 100%; height: auto; }
.gv-plot text { font: 11px system-ui, sans-serif; fill: #57606a; }
.gv-plot a circle { stroke: #fff; stroke-width: 0.8; }
.gv-plot a.hl circle, .gv-plot a.found circle { stroke: #000; stroke-width: 2; r: 6; }
.gv-plot a.dim circle { opacity: .15; }
"""


def _ticks(low: float, high: float) -> list[float]:
    span = high - low
    step = 10 ** math.floor(math.log10(span / 4)) if span > 0 else 1.0
    for mult in (1, 2, 5, 10):
        if span / (step * mult) <= 5:
            step *= mult
            break
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


def _jitter(i: int) -> float:
    """A fixed offset in [-0.3, 0.3] per subject: re-renders draw the same picture."""
    return ((i * 2654435761) % 1000) / 1000 * 0.6 - 0.3


def _plot(view: StripPlots, name: str, values: list[float], row_names: list[str], colors: dict[str, str]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    height = TOP + ROW_H * len(row_names) + BOTTOM

    def x(v: float) -> float:
        return LEFT + (v - low) / (high - low) * (WIDTH - LEFT - 10)

    parts = [f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(name)}">']
    for r, row in enumerate(row_names):
        y = TOP + ROW_H * (r + 0.5)
        parts.append(f'<rect x="{LEFT}" y="{TOP + ROW_H * r + 2}" width="{WIDTH - LEFT - 10}" height="{ROW_H - 4}" '
                     f'fill="{"#f6f8fa" if r % 2 == 0 else "#fff"}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(row[:20])}</text>')
    axis_y = TOP + ROW_H * len(row_names)
    parts.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{WIDTH - 10}" y2="{axis_y}" stroke="#999"/>')
    for t in _ticks(low, high):
        parts.append(f'<line x1="{x(t):.1f}" y1="{axis_y}" x2="{x(t):.1f}" y2="{axis_y + 4}" stroke="#999"/>'
                     f'<text x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle">{t:.3g}</text>')
    row_index = {row: r for r, row in enumerate(row_names)}
    for i, v in enumerate(values):
        if not math.isfinite(v):
            continue
        y = TOP + ROW_H * (row_index[view.rows[i]] + 0.5 + _jitter(i))
        sid = escape(view.subjects[i])
        href = f' href="{escape(view.hrefs[i])}"' if view.hrefs[i] else ""
        parts.append(f'<a{href} data-i="{i}" data-s="{sid}"><circle cx="{x(v):.1f}" cy="{y:.1f}" r="4" '
                     f'fill="{colors[view.colors[i]]}"><title>{sid}: {v:.4g}</title></circle></a>')
    parts.append("</svg>")
    return f'<div class="gv-plot"><h4>{escape(name)}</h4>{"".join(parts)}</div>'


def render_strips(view: StripPlots) -> str:
    """The group view block: legend, search box and the strip plots."""
    keys = sorted(set(view.colors), key=str)
    colors = {k: group_color(j) for j, k in enumerate(keys)}
    row_names = sorted(set(view.rows), key=str)
    legend = "".join(f'<span><span class="sw" style="background:{colors[k]}"></span>{escape(k)}</span>' for k in keys)
    title = f"<strong>{escape(view.color_title)}:</strong>" if view.color_title else ""
    plots = "".join(_plot(view, name, values, row_names, colors) for name, values in view.stats)
    caption = f'<p class="caption">{escape(view.caption)}</p>' if view.caption else ""
    return (f'<div id="groupview"><div class="gv-legend">{title}{legend}</div>'
            '<div class="gv-search"><label>Find a subject: <input id="gv-search" type="search" '
            'placeholder="subject id" autocomplete="off"></label><span id="gv-count" class="gv-count"></span></div>'
            f'<div class="gv-grid">{plots}</div>{caption}</div>')
