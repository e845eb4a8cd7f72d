"""Manual visual check of a run's report: screenshot ``report.html`` with headless Chromium.

A manual companion of tests/test_report_browser.py (which CI runs headlessly): it writes a
screenshot to look at. Run it after ``make demo`` or on any run directory:

    apt-get install -y chromium            # once, if no Chromium/Chrome is installed
    .venv/bin/python tests/render_report_screenshot.py runs/demo [-o shot.png] [--height 5000]

It renders the page exactly as a reader's browser would (offline: the page may load
nothing external), writes the PNG, and checks that

  * the HTML holds the verdict sentence of ``audit.json`` before any other section,
  * every figure of ``report.md`` exists in ``figures/`` and is embedded in the HTML as a
    data URI, and nothing is loaded from the network,
  * the screenshot is not blank (enough non-white pixels, some in colour), and the
    verdict banner's colour appears in its top part.

Exit code 0 when all checks pass, 1 when one fails, 2 when Chromium is missing. Then look
at the PNG yourself: these checks catch a broken page, not an ugly one.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
SEVERITY_RGB = {"critical": (0xC0, 0x39, 0x2B), "warning": (0xD6, 0x89, 0x10), "info": (0x28, 0x74, 0xA6),
                "none": (0x1E, 0x84, 0x49)}


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, html: Path, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
               f"--window-size={width},{height}", html.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def check_html(run_dir: Path, text: str) -> list[str]:
    """Problems with the HTML itself (empty list when fine)."""
    problems = []
    audit_path = run_dir / "audit.json"
    if audit_path.is_file():
        audit = json.loads(audit_path.read_text(encoding="utf-8"))
        sentence = escape(((audit.get("verdict") or {}).get("sentence")) or "")
        where = text.find(sentence) if sentence else -1
        if where < 0:
            problems.append("the verdict sentence of audit.json is not in the HTML")
        elif where > text.find('id="summary"') > 0:
            problems.append("the verdict comes after the run summary")
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    md = run_dir / "report.md"
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", md.read_text(encoding="utf-8")) if md.is_file() else []
    if len(embedded) != len(figures) or not embedded:
        problems.append(f"{len(embedded)} embedded images, {len(figures)} figures referenced by report.md")
    problems += [f"{name} is missing" for name in figures if not (run_dir / name).is_file()]
    for data in embedded:
        if not base64.b64decode(data).startswith(b"\x89PNG"):
            problems.append("an embedded image is not a PNG")
    if re.search(r'(src|href)\s*=\s*"(https?:)?//', text):
        problems.append("the HTML loads something from the network")
    return problems


def check_png(path: Path, severity: str) -> list[str]:
    """Problems with the screenshot: blank, colourless, or no verdict banner at the top."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    problems = []
    non_white = np.mean(img.min(axis=2) < 235)
    coloured = np.mean(img.max(axis=2) - img.min(axis=2) > 60)
    if non_white < 0.03:
        problems.append(f"the screenshot is nearly blank ({non_white:.1%} non-white pixels)")
    if coloured < 0.005:
        problems.append(f"the screenshot has almost no colour ({coloured:.2%}): figures missing?")
    top = img[: min(700, img.shape[0])]
    target = np.array(SEVERITY_RGB.get(severity, SEVERITY_RGB["none"]))
    if np.mean(np.abs(top - target).sum(axis=2) < 30) < 0.01:
        problems.append(f"no {severity} verdict banner in the top of the page")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with report.html (or the HTML file itself)")
    parser.add_argument("-o", "--output", type=Path, help="screenshot path (default: RUN_DIR/report_screenshot.png)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    html = args.run_dir if args.run_dir.is_file() else args.run_dir / "report.html"
    run_dir = html.parent
    if not html.is_file():
        print(f"{html} does not exist", file=sys.stderr)
        return 1
    browser = find_browser()
    if browser is None:
        print("no Chromium or Chrome found; install one, e.g. apt-get install -y chromium", file=sys.stderr)
        return 2
    out = args.output or run_dir / "report_screenshot.png"
    screenshot(browser, html, out, args.width, args.height)
    audit_path = run_dir / "audit.json"
    audit = json.loads(audit_path.read_text(encoding="utf-8")) if audit_path.is_file() else {}
    severity = ((audit.get("bias") or {}).get("max_severity")) or "none"
    problems = check_html(run_dir, html.read_text(encoding="utf-8")) + check_png(out, severity)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"screenshot: {out}" + ("" if problems else " (all checks passed)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
