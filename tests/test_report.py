"""The report: self-contained HTML, verdict first, escaping, numbers from audit.json, 2D, gaps.

Two tiny pipeline runs (3D, and 2D with hostile manifest strings) are shared by the
module; the other tests re-render their results with `write_report` into fresh
directories, after changing the audit or the cohort on purpose.
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import hashlib
import io
import json
import re
import shutil
import time
from html import escape
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import make_cohort, make_config
from xaudit.data.cohort import load_cohort
from xaudit.config import load_config
from xaudit.data import load_manifest
from xaudit.core.outputs import RunDirectory
from xaudit.core.provenance import load_run_config
from xaudit.workflows.audit import run_audit
from xaudit.report import write_report
from xaudit.report.figures_maps import MapRow, map_grid_png, to_ras
from xaudit.report.format import fmt_ci, fmt_num, fmt_p, fmt_pct
from xaudit.report.html_groupview import SCRIPT
from xaudit.report.markdown import md_escape

HOSTILE = "<script>alert(1)</script>"


@dataclasses.dataclass
class Run:
    root: Path
    audit: dict
    config: object
    cohort: object

    @property
    def html(self) -> str:
        return (self.root / "report.html").read_text(encoding="utf-8")

    @property
    def md(self) -> str:
        return (self.root / "report.md").read_text(encoding="utf-8")


def _load(root: Path) -> Run:
    config = load_run_config(root)
    run = RunDirectory(root)
    features = json.loads((root / "features.json").read_text())["names"] if (root / "features.json").is_file() else []
    cohort = load_cohort(run, load_manifest(config.data, config.model.classes, check_files=False), config.model.classes, features)
    return Run(root, json.loads((root / "audit.json").read_text()), config, cohort)


@pytest.fixture(scope="module")
def run3d(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("report3d")
    manifest = make_cohort(root / "cohort", n=8, shape=(14, 16, 12))
    result = run_audit(load_config(make_config(root, manifest)))
    return _load(Path(result.run_dir))


@pytest.fixture(scope="module")
def run2d_hostile(tmp_path_factory) -> Run:
    """A 2D run whose manifest and config carry HTML/Markdown in ids, groups, classes and the title."""
    root = tmp_path_factory.mktemp("report2d")
    manifest = make_cohort(root / "cohort", n=8, spatial_dims=2, shape=(20, 24))
    rows = list(csv.DictReader(open(manifest, newline="")))
    rows[0]["subject_id"] = HOSTILE
    for row in rows:
        row["site"] = {"A": "<b>A|1</b>", "B": "B & $x$"}[row["site"]]
        row["label"] = {"lesion": HOSTILE}.get(row["label"], row["label"])
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path = make_config(root, manifest, spatial_dims=2, methods={"saliency": {}, "gradcam": {}})
    raw = yaml.safe_load(path.read_text())
    raw["model"]["classes"] = ["healthy", HOSTILE]
    raw["report"] = {"title": f"{HOSTILE} audit", "slices": 3}
    path.write_text(yaml.safe_dump(raw))
    result = run_audit(load_config(path))
    return _load(Path(result.run_dir))


def rerender(run: Run, root: Path, audit: dict | None = None, cohort=None) -> Run:
    """Render the report of ``run`` (or a changed audit/cohort) into ``root``."""
    out = RunDirectory(root)
    write_report(audit if audit is not None else run.audit, cohort if cohort is not None else run.cohort, run.config, out)
    return Run(root, audit or run.audit, run.config, cohort or run.cohort)


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_html_is_self_contained(run3d):
    html = run3d.html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html
    # one script, the group view's, inline and allowed by its hash, nothing else may run
    assert re.findall(r"<script[^>]*>", html, re.I) == ["<script>"] and f"<script>{SCRIPT}</script>" in html
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in html and "script-src 'unsafe" not in html
    images = embedded_pngs(html)
    files = sorted((run3d.root / "figures").glob("*.png"))
    assert len(images) == len(files) == html.count("<img ") >= 6
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert {f.read_bytes() for f in files} == set(images)
    # Markdown references the same files, and they exist
    referenced = re.findall(r"\]\((figures/[^)]+\.png)\)", run3d.md)
    assert sorted(referenced) == sorted(f"figures/{f.name}" for f in files)


def test_verdict_opens_both_reports(run3d):
    sentence = run3d.audit["verdict"]["sentence"]
    html, md = run3d.html, run3d.md
    where = html.index(escape(sentence))
    for anchor in ("summary", "design", "performance", "looking", "rules", "errors"):
        assert where < html.index(f'id="{anchor}"')
    severity = run3d.audit["bias"]["max_severity"] or "none"
    assert html.index('class="verdict"') < html.index('id="summary"') and severity in html[:where]
    assert md.index(md_escape(sentence)) < md.index("## 2. ")
    for finding in run3d.audit["verdict"]["top_findings"]:
        assert escape(finding["title"]) in html and escape(finding["message"]) in html


@pytest.mark.parametrize("label, words", [("consistent_with_pathology", "consistent with pathology"),
                                          ("near_chance", "near chance"), ("signature", "site/scanner signature")])
def test_the_verdict_is_said_in_words(run3d, tmp_path, label, words):
    audit = copy.deepcopy(run3d.audit)
    audit["verdict"]["verdict"] = label
    out = rerender(run3d, tmp_path, audit=audit)
    assert f"Verdict: {escape(words)} ·" in out.html and f"VERDICT: {md_escape(words.upper())}" in out.md
    banner = out.html.split('class="verdict"')[1].split("</div>")[0]
    assert "_" not in banner.split("Verdict:")[1]  # no machine label such as consistent_with_pathology


def test_numbers_match_audit(run3d):
    html, audit = run3d.html, run3d.audit
    overall = audit["metrics"]["overall"]
    assert f"<td class=\"num\">{overall['balanced_accuracy']:#.3g}</td>" in html
    checks = audit["bias"]["checks"]
    for group in checks["group_metrics"]["groups"]:
        est = group["metrics"]["balanced_accuracy"]
        assert fmt_ci(est) in html and f"{est['value']:#.3g}" in fmt_ci(est)
    ig = audit["attribution"]["methods"]["integrated_gradients"]["self_checks"]["completeness_error"]
    assert f"<td class=\"num\">{fmt_num(ig['mean'])}</td>" in html
    looking = checks["looking"]["summary"]["saliency"]["abs_background"]
    assert f"{100 * looking['mean']:.1f}%" in html
    table = checks["design"]["tables"][0]
    assert f"Cramér&#x27;s V {fmt_num(table['cramers_v'])}" in html
    assert run3d.audit["run"]["config_hash"] in html and run3d.audit["run"]["config_hash"] in run3d.md


def test_numbers_come_from_audit_not_recomputed(run3d, tmp_path):
    audit = copy.deepcopy(run3d.audit)
    audit["metrics"]["overall"]["balanced_accuracy"] = 0.123456
    audit["verdict"]["sentence"] = "Planted verdict sentence."
    audit["verdict"]["top_findings"][0]["evidence"] = {"mean_share": 0.98765, "p_value": 0.0004321}
    out = rerender(run3d, tmp_path, audit=audit)
    for text in (out.html, out.md):
        assert "0.123" in text and "Planted verdict sentence." in text
    assert "<td>mean share</td><td>98.8%</td>" in out.html and "<td>p value</td><td>0.00043</td>" in out.html
    assert "mean share: 98.8%" in out.md and "p value: 0.00043" in out.md


def test_hostile_strings_are_escaped(run2d_hostile):
    html, md = run2d_hostile.html, run2d_hostile.md
    assert html.count(f"<script>{SCRIPT}</script>") == 1
    html = html.replace(f"<script>{SCRIPT}</script>", "")  # the group view's own script; nothing else
    assert "<script" not in html.lower()
    pages = list((run2d_hostile.root / "subjects").glob("*.html"))
    assert len(pages) == run2d_hostile.cohort.n
    for page in pages:  # the subject pages: ids, classes, sites as text too
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text.lower() and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in "".join(p.read_text(encoding="utf-8") for p in pages)
    assert "<b>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the ids and classes are shown, as text
    assert "&lt;b&gt;A|1&lt;/b&gt;" in html and "B &amp; $x$" in html
    assert "<title>&lt;script&gt;" in html
    # Markdown: no unescaped '<' anywhere, and '|' inside cells cannot split a row
    assert not re.search(r"(?<!\\)<[A-Za-z/!?]", md)
    assert "\\<b>A\\|1\\</b>" in md
    for line in md.splitlines():
        if line.startswith("| ") and "A\\|1" in line:
            assert len(re.findall(r"(?<!\\)\|", line)) == line.count(" | ") + 2


def test_2d_cohort_renders_maps(run2d_hostile):
    assert run2d_hostile.cohort.maps["saliency"].ndim == 3  # (n, H, W)
    names = {p.name for p in (run2d_hostile.root / "figures").glob("*.png")}
    first = next(iter(run2d_hostile.config.attribution.methods))
    assert {"mean_map_saliency.png", "mean_map_gradcam.png", f"examples_{first}.png"} <= names
    assert "evidence_verdict.png" in names and any(n.startswith("mosaic_") for n in names)
    assert "could not be drawn" not in run2d_hostile.html
    img = np.asarray(Image.open(run2d_hostile.root / "figures" / "mean_map_saliency.png").convert("RGB")).astype(int)
    assert img.std() > 20  # not blank
    assert len(embedded_pngs(run2d_hostile.html)) == len(names)


def test_missing_sections_render_with_a_note(run3d, tmp_path):
    audit = copy.deepcopy(run3d.audit)
    audit["rules"] = {"skipped": "no layer features (TorchScript model, or no linear layer)"}
    audit["bias"]["checks"] = {"design": {"skipped": "no group columns given"}}
    audit["verdict"] = None
    audit["attribution"]["methods"] = {}
    cohort = dataclasses.replace(run3d.cohort, maps={}, shares={})
    out = rerender(run3d, tmp_path, audit=audit, cohort=cohort)
    html = out.html
    assert "Rule extraction was skipped: no layer features" in html
    assert "No verdict: the bias checks did not run" in html
    assert "The design check was skipped: no group columns given." in html
    for what in ("The probes", "SpRAy", "TCAV", "The masked-input test"):
        assert f"{what} did not run" in html
    assert "No attribution maps on a common grid" in html
    assert "<img" not in html  # every figure lacked its data
    assert "No attribution maps on a common grid: no picture of the evidence" not in html  # no verdict: no picture
    assert re.search(r"## \d+\. Rules that imitate the network", out.md)


def test_failed_subjects_are_listed(run3d, tmp_path):
    with open(tmp_path / "errors.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["subject_id", "manifest_line", "stage", "reason"],
                                  ["sub-bad", "9", "load", "cannot read image <x>.nii.gz | truncated"],
                                  ["sub-000", "2", "attribution", "stale failure, finished on resume"]])
    (tmp_path / "subjects").mkdir()
    (tmp_path / "subjects" / "sub-000.npz").write_bytes(b"")  # its record exists: it finished later
    out = rerender(run3d, tmp_path)
    assert "1 subject(s) failed" in out.html and "stale failure" not in out.html
    assert "cannot read image &lt;x&gt;.nii.gz | truncated" in out.html
    assert "cannot read image \\<x>.nii.gz \\| truncated" in out.md


def test_formatters():
    assert fmt_num(0.75) == "0.750" and fmt_num(1.0) == "1.00" and fmt_num(12) == "12" and fmt_num(None) == "n/a"
    assert fmt_num(0.000123456) == "0.000123" and fmt_num(float("nan")) == "n/a"
    assert fmt_pct(0.5996) == "60.0%" and fmt_pct(0.000412) == "0.041%"
    assert fmt_p(0.00498) == "0.00498" and fmt_p(1.1e-06) == "1.1e-06" and fmt_p(0.0123) == "0.0123"
    assert fmt_ci({"value": 0.5, "low": 0.25, "high": 0.75}) == "0.500 [0.250, 0.750]"
    assert fmt_ci({"value": 0.5, "low": None, "high": None}) == "0.500"
    assert md_escape("a|b <i>*x*</i>\nnext <= 2") == "a\\|b \\<i>\\*x\\*\\</i> next <= 2"
    assert md_escape("> quoted") == "\\> quoted" and md_escape("<!-- c -->") == "\\<!-- c -->"


def _colours(png: bytes) -> tuple[float, float]:
    """Shares of clearly red and clearly blue pixels of an image."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return float(np.mean((r > g + 60) & (r > b + 60))), float(np.mean((b > r + 60) & (b > g + 20)))


@pytest.mark.parametrize("shape", [(12, 14, 10), (20, 24)])
def test_positive_attribution_is_red_negative_blue(shape):
    anatomy = np.ones(shape)
    blob = np.zeros(shape)
    blob[tuple(slice(s // 2 - 2, s // 2 + 2) for s in shape)] = 1.0
    eye = np.eye(len(shape) + 1)
    red0, blue0 = _colours(map_grid_png([MapRow("zero", anatomy, 0 * blob)], eye, 3, "a"))  # colorbar only
    red, blue = _colours(map_grid_png([MapRow("pos", anatomy, blob)], eye, 3, "a"))
    assert red - red0 > 0.003 and abs(blue - blue0) < 0.0005
    red, blue = _colours(map_grid_png([MapRow("neg", anatomy, -blob)], eye, 3, "a"))
    assert blue - blue0 > 0.003 and abs(red - red0) < 0.0005


def test_volumes_are_shown_in_ras_orientation():
    volume = np.arange(24, dtype=float).reshape(2, 3, 4)
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    out, zooms = to_ras(volume, lps)
    np.testing.assert_array_equal(out, volume[::-1, ::-1, :])
    np.testing.assert_array_equal(zooms, [1.0, 1.0, 2.0])
    swapped = np.array([[0, 3.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # axis 0 runs A, axis 1 runs R
    out, zooms = to_ras(volume, swapped)
    assert out.shape == (3, 2, 4) and list(zooms) == [3.0, 1.0, 1.0]


def _red_share(png: bytes) -> float:
    return _colours(png)[0]


def test_hot_spot_outside_the_drawn_slices_shows_in_the_projections():
    """A marker in a corner, in no axial slice and off the peak's cuts, is red in the MIP panels."""
    shape = (24, 28, 20)
    grid = np.indices(shape)
    centre = np.array(shape).reshape(3, 1, 1, 1) / 2
    anatomy = ((((grid - centre) / (np.array(shape).reshape(3, 1, 1, 1) / 2.6)) ** 2).sum(0) < 1).astype(float)
    amap = np.zeros(shape)
    amap[10:14, 12:16, 8:12] = -2.0  # the strongest spot: the coronal and sagittal cuts go through it
    amap[:3, -3:, :2] = 1.0  # the marker: a corner, below the anatomy's axial extent
    png = map_grid_png([MapRow("marker", anatomy, amap)], np.eye(4), 4, "a")
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red = (img[..., 0] > img[..., 1] + 60) & (img[..., 0] > img[..., 2] + 60)
    columns = np.flatnonzero(red.any(axis=0))
    # the colorbar holds red too; the marker's red lies left of it, in the MIP panels (the last three before it)
    assert red[:, : img.shape[1] - 150].sum() > 20
    assert columns.min() > img.shape[1] * 0.55  # none in the cuts and slices, all in the projections


def test_positive_everywhere_maps_do_not_saturate():
    """A Grad-CAM-like map, positive over the whole field of view, colours only where it is high."""
    shape = (20, 24, 18)
    grid = np.indices(shape).astype(float)
    smooth = 1.0 + 0.5 * np.exp(-(((grid - np.array([10, 12, 9]).reshape(3, 1, 1, 1)) / 3.0) ** 2).sum(0))
    anatomy = np.ones(shape)
    from xaudit.report.figures_maps import THRESHOLD, figure_scale
    scale = figure_scale([anatomy], [smooth])
    assert scale.floor > 5 * THRESHOLD * scale.vmax  # transparent up to about the median, not 12% of the limit
    red = _red_share(map_grid_png([MapRow("cam", anatomy, smooth)], np.eye(4), 3, "a"))
    assert red < 0.12  # before: every voxel above 0.5 x the limit, the whole slab opaque red


def test_evidence_picture_opens_the_report(run3d):
    html, md = run3d.html, run3d.md
    verdict, first_figure = html.index('class="verdict"'), html.index("<figure")
    assert first_figure > verdict and first_figure < html.index('class="finding"') < html.index('id="summary"')
    assert html[first_figure:].startswith('<figure id="fig-evidence_verdict">')
    caption = re.search(r"<figcaption>Figure 1\. ([^<]+)</figcaption>", html).group(1)
    assert "maximum-intensity projections over the whole field of view" in caption
    assert "B minus A" in caption and "99th percentile" in caption
    assert md.index("figures/evidence_verdict.png") < md.index("## 2. ")
    assert (run3d.root / "figures" / "evidence_verdict.png").is_file()


def test_group_view_links_every_subject_to_its_page(run3d):
    html, cohort = run3d.html, run3d.cohort
    section = html[html.index('<section id="subjects">'):]
    section = section[: section.index("</section>")]
    hrefs = set(re.findall(r'<a href="(subjects/[^"]+\.html)" data-i="\d+"', section))
    assert hrefs == {f"subjects/{s.safe_id}.html" for s in cohort.subjects}
    n_plots = section.count("<svg ")
    assert n_plots >= 1 + 2 * len(cohort.shares)  # P(lesion), background and border shares per method, errors
    assert section.count('data-i="0"') == n_plots  # one point per subject per plot
    assert 'id="gv-search"' in section and "fig-mosaic_" in section
    for s in cohort.subjects:
        page = (run3d.root / "subjects" / f"{s.safe_id}.html").read_text(encoding="utf-8")
        assert f"<title>Subject {escape(s.subject_id)}</title>" in page and 'href="../report.html#subjects"' in page
        assert "at the resolution of the scan (14x16x12 voxels)" in page  # drawn from attributions/, not the record
        assert page.count("data:image/png;base64,") == len(run3d.config.attribution.methods)
        assert f"<td>{fmt_num(float(cohort.probs[cohort.subject_ids.index(s.subject_id), 1]))}</td>" in page


def test_pages_and_mosaic_are_bounded(run3d, tmp_path, monkeypatch):
    import xaudit.report.sections_subjects as sections_subjects
    import xaudit.report.subject_pages as subject_pages
    monkeypatch.setattr(sections_subjects, "MAX_TILES", 4)
    (tmp_path / "subjects").mkdir()
    (tmp_path / "subjects" / "notes.html").write_text("the user's own file")
    rerender(run3d, tmp_path)  # every subject gets a page, recorded as the run's own
    assert len(list((tmp_path / "subjects").glob("sub-*.html"))) == 8
    monkeypatch.setattr(subject_pages, "MAX_PAGES", 3)
    monkeypatch.setattr(sections_subjects, "MAX_PAGES", 3)
    out = rerender(run3d, tmp_path)  # the pages this render no longer writes are removed; notes.html stays
    pages = sorted(p.name for p in (tmp_path / "subjects").glob("sub-*.html"))
    assert len(pages) == 3 and (tmp_path / "subjects" / "notes.html").read_text() == "the user's own file"
    assert "4 of 8 subjects, evenly spaced" in out.html and "Subject pages are written for 3 of 8 subjects" in out.html
    assert len(set(re.findall(r'<a href="(subjects/[^"]+)"', out.html))) == 3
    # with 3 pages and a budget of 400 pictures, every page still shows every method
    assert all((tmp_path / "subjects" / p).read_text().count("data:image/png") == 3 for p in pages)


def test_group_view_is_bounded_and_says_so(run3d, tmp_path, monkeypatch):
    import xaudit.report.sections_subjects as sections_subjects
    monkeypatch.setattr(sections_subjects, "MAX_POINTS", 3)
    monkeypatch.setattr(sections_subjects, "TAIL", 1)
    out = rerender(run3d, tmp_path)
    section = out.html[out.html.index('<section id="subjects">'):]
    section = section[: section.index("</section>")]
    stats = sections_subjects.strip_statistics(run3d.cohort)
    shown = sections_subjects.shown_subjects(stats, run3d.cohort.n)
    assert 3 < len(shown) < 8 and {0, 7} <= set(shown.tolist())  # 3 evenly spaced, plus each statistic's extremes
    for _, values in stats:
        assert {int(np.nanargmin(values)), int(np.nanargmax(values))} <= set(shown.tolist())
    drawn = {int(i) for i in re.findall(r'data-i="(\d+)"', section)}
    assert drawn == set(range(len(shown)))  # one point per drawn subject
    assert f"The group view draws {len(shown)} of 8 subjects: 3 evenly spaced" in out.html
    assert f"group view ({len(stats)} strip plots of {len(shown)} subjects" in out.md
    assert sections_subjects.bounds(run3d.cohort)["group_view"]["shown"] == len(shown)


def test_pathology_verdict_shows_maps_against_roi_masks(run3d, tmp_path):
    audit = copy.deepcopy(run3d.audit)
    audit["verdict"]["verdict"] = "pathology"
    subjects = [dataclasses.replace(s, rois={"lesion": s.mask}) for s in run3d.cohort.subjects]
    shutil.copytree(run3d.root / "attributions", tmp_path / "attributions")  # the native maps drawn
    out = rerender(run3d, tmp_path, audit=audit, cohort=dataclasses.replace(run3d.cohort, subjects=subjects))
    caption = re.search(r"<figcaption>Figure 1\. ([^<]+)</figcaption>", out.html).group(1)
    assert "ROI masks outlined in green" in caption and "at the resolution of their scans" in caption
    png = (tmp_path / "figures" / "evidence_verdict.png").read_bytes()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert np.sum((img[..., 1] > 180) & (img[..., 0] < 80) & (img[..., 2] < 100)) > 30  # the green outlines


def test_points_to_is_said_in_words(run3d, tmp_path):
    audit = copy.deepcopy(run3d.audit)
    audit["findings"] = [*audit["findings"], {"id": "planted", "severity": "critical", "check": "quality",
                                              "points_to": "neutral", "title": "Planted critical finding"}]
    out = rerender(run3d, tmp_path, audit=audit)
    row = out.html[out.html.index("Planted critical finding") - 400:out.html.index("Planted critical finding")]
    assert "<td>neither signature nor pathology (a check of the data or the method)</td>" in row


@pytest.mark.parametrize("scale", [1e-5, 3e-4, 0.0123, 1234.5])
def test_colorbar_label_is_not_clipped(scale):
    """Tick labels such as -0.0006 pushed the colour bar's label past the figure's right edge."""
    amap = np.random.default_rng(0).standard_normal((12, 14, 10)) * scale
    png = map_grid_png([MapRow("x", np.ones((12, 14, 10)), amap)], np.eye(4), 3, "integrated_gradients\nattribution")
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert (grey[:, -3:] < 200).sum() == 0 and (grey[:3, :] < 200).sum() == 0  # nothing drawn at the edges


def test_pictures_drawn_ahead_in_workers_equal_those_drawn_in_the_report(run3d):
    from concurrent.futures import wait

    from xaudit.report.subject_pictures import SubjectPictures

    methods, run_dir, n = list(run3d.config.attribution.methods), RunDirectory(run3d.root), run3d.cohort.n
    with SubjectPictures(run3d.cohort, run_dir, "xaudit", workers=1) as ahead:
        ahead.ahead(range(n), methods)
        assert len(ahead._futures) == n
        wait(list(ahead._futures.values()), timeout=120)  # every job drawn by the worker, none left to cancel
        drawn = [ahead.pictures(i, methods) for i in range(n)]
    here = SubjectPictures(run3d.cohort, run_dir, "xaudit", workers=0)
    for i in range(n):
        mine = here.pictures(i, methods)
        assert list(drawn[i]) == list(mine) == methods
        assert all(p.png and p.png == mine[m].png and p.text == mine[m].text for m, p in drawn[i].items())


def _wedged(job):
    time.sleep(600)  # a worker that never answers (stuck on a lock inherited at the fork, or starved)


def test_a_wedged_picture_worker_costs_at_most_its_wait(run3d, monkeypatch):
    import xaudit.report.subject_pictures as subject_pictures

    methods, n = list(run3d.config.attribution.methods), run3d.cohort.n
    real = subject_pictures.render_pictures
    monkeypatch.setattr(subject_pictures, "render_pictures", _wedged)  # what the forked worker runs
    monkeypatch.setattr(subject_pictures, "WAIT_S", 1.0)
    with subject_pictures.SubjectPictures(run3d.cohort, RunDirectory(run3d.root), "xaudit", workers=1) as pictures:
        pictures.ahead(range(n), methods)
        worker = next(iter(pictures._executor._processes.values()))
        monkeypatch.setattr(subject_pictures, "render_pictures", real)  # the report's own drawing works
        started = time.monotonic()
        got = [pictures.pictures(i, methods) for i in range(n)]
        waited = time.monotonic() - started
    assert waited < 30, f"the report waited {waited:.0f} s on a wedged worker"
    assert all(p.png for g in got for p in g.values())
    worker.join(timeout=30)
    assert not worker.is_alive(), "the wedged worker outlived the report"


def test_a_dead_picture_worker_costs_only_time(run3d):
    import os
    import signal

    from xaudit.report.subject_pictures import SubjectPictures

    methods, n = list(run3d.config.attribution.methods), run3d.cohort.n
    with SubjectPictures(run3d.cohort, RunDirectory(run3d.root), "xaudit", workers=1) as pictures:
        pictures.ahead(range(n), methods)
        for process in list(pictures._executor._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
        got = [pictures.pictures(i, methods) for i in range(n)]  # drawn here instead
    assert all(p.png and p.text.startswith(f"{m}, at the resolution of the scan") for g in got for m, p in g.items())
