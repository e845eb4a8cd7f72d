"""The benchmark harness runs end to end in its micro mode and writes valid JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_micro(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--micro", "--threads", "1", "--out", str(out),
         "--workdir", str(tmp_path / "work"), *extra],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "seconds per volume" in proc.stdout
    return json.loads(out.read_text())


def test_micro_bench_writes_results(tmp_path):
    result = run_micro(tmp_path, "--skip", "per-method,monai,rss")
    assert result["mode"] == "micro"
    assert {"cpu_count", "torch_threads", "torch", "device", "load_start", "load_end"} <= set(result["machine"])
    row = result["rows"]["all"]
    assert row["limit_s"] > 0 and row["xaudit_s"] > 0 and row["peer_s"] > 0
    assert row["efficiency"] > 0 and row["peer_over_xaudit"] > 0
    run = result["systems"]["xaudit:all"]
    assert run["failed"] == 0
    # xaudit evaluated at least the passes the limit counts (gradient samples per volume)
    assert run["forward_samples"]["grad"] >= result["volumes"] * (2 + 2 + 1)
    written = sorted(p.name for p in (tmp_path / "work" / "xaudit_all_0" / "attributions").iterdir())
    assert written == sorted(result["methods"])


@pytest.mark.slow
def test_micro_bench_full_harness(tmp_path):
    result = run_micro(tmp_path)
    assert set(result["rows"]) == set(result["methods"]) | {"all"}
    assert all("efficiency" in row for row in result["rows"].values())
    assert "monai_s" in result["rows"]["smoothgrad"] and "monai_s" not in result["rows"]["integrated_gradients"]
    sizes = [r["subjects"] for r in result["rss"]["runs"]]
    assert sizes == [2, 4] and all(r["peak"]["run_mib"] > 0 for r in result["rss"]["runs"])
    assert "growth_pct" in result["rss"] and "skipped" in result["amp"] or "max_abs_logit_diff" in result["amp"]


@pytest.mark.slow
def test_scale_bench_runs_two_small_sizes_and_checks_its_targets(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "4,8", "--workdir", str(tmp_path / "work"),
         "--out", str(out)], capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a target missed, which is a result
    result = json.loads(out.read_text())
    assert [r["subjects"] for r in result["runs"]] == [4, 8]
    for run in result["runs"]:
        assert run["pass_s"] > 0 and run["ru_maxrss_mib"] > 0 and run["report_bytes"]["report.html"] > 0
        assert {"records", "rules", "bias", "report"} <= set(run["timings_s"])
        assert run["peak_anon_mib"] > 0  # Linux: RssAnon sampled
    assert set(result["targets"]) == {"per_subject_cost", "peak_rss", "peak_anonymous_memory"}
    assert "MET" in proc.stdout or "MISSED" in proc.stdout


@pytest.mark.slow
def test_whole_audit_bench_runs_both_systems_and_checks_its_targets(tmp_path, full_sample_data):
    folder, _ = full_sample_data
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "audit_speed.py"), "--sample-data", str(folder), "--subjects", "4",
         "--repeats", "1", "--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["workload"]["volumes"] == 4
    rounds = result["rounds"][0]
    assert rounds["script"]["process_s"] > rounds["script"]["loop_s"] > 0
    assert rounds["xaudit"]["process_s"] > rounds["xaudit"]["pass_s"] > 0 and rounds["xaudit"]["exit"] in (0, 1)
    assert len(list((tmp_path / "work" / "script_out").glob("*.nii.gz"))) == 4 * 4  # four maps per volume
    assert set(result["targets"]) == {"whole_run_speed", "pass_speed"}
    assert "target whole_run_speed >= 0.9" in proc.stdout and "limit (passes at best rate)" in proc.stdout
