"""Reliability round two: xaudit touches only its own files, and no input hangs, exhausts
or crashes it (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_cohort, make_config
from xaudit.cli import app

runner = CliRunner()


def _user_folder(root: Path) -> dict[Path, bytes]:
    files = {root / "report.html": b"<p>mine</p>", root / "predictions.csv": b"a,b\n1,2\n",
             root / "audit.json": b"{}", root / "figures" / "mean_map_mine.png": b"png", root / "notes.txt": b"notes"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def test_a_users_non_empty_folder_is_refused_and_left_untouched(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    out = tmp_path / "mine"
    files = _user_folder(out)
    result = runner.invoke(app, ["run", str(config), "-q", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "is not an xaudit run" in result.output and "(-o)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_re_render_removes_only_figures_the_run_recorded(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    assert runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0"]).exit_code == 0
    run = tmp_path / "run"
    assert (run / ".xaudit-run.json").is_file()
    figures = run / "figures"
    recorded = sorted(p.name for p in figures.glob("*.png"))
    assert recorded
    mine = figures / "mean_map_mine.png"
    mine.write_bytes(b"the user's own")
    # an earlier render's figure that this render no longer makes
    from xaudit.core.outputs import RunDirectory

    run_dir = RunDirectory(run)
    run_dir.own("report_figures", run_dir.owned("report_figures") | {"figures/mean_map_gone.png"})
    (figures / "mean_map_gone.png").write_bytes(b"stale")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == b"the user's own"
    assert not (figures / "mean_map_gone.png").exists()
    assert sorted(p.name for p in figures.glob("*.png")) == sorted([*recorded, mine.name])
