"""The report in a real browser: headless Chromium loads report.html, a subject page and compare.html.

Checks what a reader's browser does with the files: no console error or CSP violation, no
request that leaves the file (nothing but file: and data: URLs), every image decoded, the
group view's script running (hover highlights a subject in every plot, search finds it) and
a click on a point opening that subject's page. Skipped when no Chromium is installed,
except under ``CI=true``, where a missing browser is a failure (CI installs Debian's
``chromium``, see ``.ci/run``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdp import Browser, find_browser
from conftest import make_cohort, make_config
from xaudit.config import load_config
from xaudit.workflows.audit import run_audit
from xaudit.workflows.compare import compare_runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMAGES = "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.currentSrc.slice(0, 22)])"


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_browser()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no Chromium found (apt-get install -y chromium); the browser tests must run in CI")
        pytest.skip("no Chromium/Chrome on PATH (apt-get install -y chromium, or set XAUDIT_CHROMIUM)")
    return binary


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    manifest = make_cohort(root / "cohort", n=8, shape=(14, 16, 12))
    return Path(run_audit(load_config(make_config(root, manifest))).run_dir)


def _offsite(requests: list[str]) -> list[str]:
    return [url for url in requests if not url.startswith(("file:", "data:", "about:"))]


def _assert_clean(browser: Browser, log, what: str) -> list:
    assert not log.errors, f"{what}: {log.errors}"
    assert not _offsite(log.requests), f"{what} requested {_offsite(log.requests)}"
    images = browser.evaluate(IMAGES)
    assert images, f"{what} shows no image"
    broken = [src for complete, width, src in images if not (complete and width > 0)]
    assert not broken, f"{what}: {len(broken)} images did not load"
    return images


def test_report_and_subject_page_in_chromium(chromium, run_dir):
    with Browser(chromium) as browser:
        log = browser.open((run_dir / "report.html").as_uri())
        _assert_clean(browser, log, "report.html")
        assert browser.evaluate("document.querySelectorAll('#groupview svg').length") >= 3
        # hover: the subject is highlighted in every plot (the script ran, under the page's CSP)
        point = browser.evaluate("""(() => { const a = document.querySelector('#groupview a[data-i]');
            a.scrollIntoView({block: 'center'}); const r = a.getBoundingClientRect();
            return {i: a.getAttribute('data-i'), href: a.getAttribute('href'), x: r.x + r.width / 2,
                    y: r.y + r.height / 2, n: document.querySelectorAll('#groupview a[data-i="' +
                    a.getAttribute('data-i') + '"]').length}; })()""")
        browser.mouse("mouseMoved", point["x"], point["y"])
        lit = browser.evaluate(f"document.querySelectorAll('#groupview a.hl[data-i=\"{point['i']}\"]').length")
        assert lit == point["n"] >= 3
        # search: typing an id marks that subject's points and dims the rest
        found = browser.evaluate("""(() => { const box = document.getElementById('gv-search'); box.value = 'sub-003';
            box.dispatchEvent(new Event('input')); return [document.querySelectorAll('#groupview a.found').length,
            document.getElementById('gv-count').textContent]; })()""")
        assert found[0] >= 3 and found[1] == "1 subject matches"
        browser.evaluate("(() => { const box = document.getElementById('gv-search'); box.value = '';"
                         " box.dispatchEvent(new Event('input')); })()")
        # a click on the point opens the subject's page
        browser.log.errors.clear()
        browser.click(point["x"], point["y"])
        browser.wait_for("Page.loadEventFired")
        href = browser.evaluate("location.href")
        assert href == (run_dir / point["href"]).as_uri()
        page = browser.log
        images = _assert_clean(browser, page, point["href"])
        assert all(src.startswith("data:image/png") for *_, src in images)
        assert "Subject sub-" in browser.evaluate("document.title")
        assert browser.evaluate("document.querySelectorAll('script').length") == 0  # pages without a group view


def test_compare_page_in_chromium(chromium, run_dir, tmp_path):
    out = tmp_path / "compare"
    compare_runs([run_dir, run_dir], output=out)
    with Browser(chromium) as browser:
        log = browser.open((out / "compare.html").as_uri())
        assert not log.errors and not _offsite(log.requests), (log.errors, log.requests)
        assert browser.evaluate("document.querySelectorAll('table').length") >= 1
        broken = [w for c, w, _ in browser.evaluate(IMAGES) if not (c and w > 0)]
        assert not broken
