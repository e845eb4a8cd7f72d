"""The growth curve of a whole audit: 100, 1,000 and 10,000 small subjects.

Usage:
    python benchmarks/scale.py [--sizes 100,1000,10000] [--size 16] [--arch tiny]
                               [--workdir DIR] [--out FILE] [--threads 1]

Workload (issue 16, item "Scale"): ONE synthetic cohort of ``max(--sizes)`` gzip NIfTI
volumes of ``--size``^3 (`common.write_cohort`: ellipsoid body, lesion blob for label 1,
corner artefact at site B, oblique affine), audited by a whole ``xaudit run`` with every
default dataset-level stage (metrics, attribution summaries, rules, bias, interventions,
quality, report) and two cheap methods (saliency + Grad-CAM), on the seeded tiny MONAI
ResNet (`common.build_model`). Each size N audits the first N rows of the manifest, in a
fresh subprocess, so nothing is shared between sizes.

Per size it records: process wall time, the per-subject pass (batch tuning included) and
its cost per subject, every dataset-level stage's seconds (``audit.json``
``run.timings_s``), peak RSS (``ru_maxrss`` of the child, and a psutil sampler's peak per
phase: the pass and each stage), the current RSS after the first and the last subject,
the scale notes the run wrote (what was capped or subsampled), and the report's size.

Targets, each printed MET or MISSED (largest size against the one before it):
- per-subject cost (pass seconds / N) at most 1.5x that of the smaller size;
- peak RSS at most 1.25x that of the smaller size, and the same for peak anonymous memory
  (``RssAnon``: RSS less the file pages the kernel can drop, `anonymous_mib`).

Nothing is downloaded; results go to ``--out`` (default ``benchmarks/results/scale.json``); the
cohort and the runs stay in ``--workdir`` (default ``benchmarks/results/scale_work``), and a cohort
already there with enough subjects is reused. The numbers measured so far, and where the memory
goes, are in benchmarks/README.md, "Scale".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_cohort  # noqa: E402

TARGETS = {"per_subject_cost": 1.5, "peak_rss": 1.25}
METHODS = {"saliency": {}, "gradcam": {}}
LAYERS = {"tiny": "layer2", "densenet": "features.denseblock2"}


def xaudit_config(manifest: Path, out: Path, arch: str) -> dict:
    """Only what the workload fixes; every stage at its default."""
    return {
        "data": {"manifest": str(manifest), "group_columns": ["site"], "transforms": {}},
        "model": {"factory": {"function": "benchmarks.common:build_model", "args": {"arch": arch}},
                  "classes": ["healthy", "lesion"], "layer": LAYERS[arch]},
        "attribution": {"target": "predicted", "methods": METHODS, "seed": 0},
        "output": str(out),
    }


# ---------------------------------------------------------------- the child: one whole run
def child(config_path: str) -> None:
    """A whole xaudit run in this (fresh) process; prints its timings and memory as JSON."""
    import psutil

    from xaudit.config import load_config
    from xaudit.core.progress import Step
    from xaudit.workflows.audit import run_audit

    proc = psutil.Process()
    phase = {"now": "setup"}
    peaks: dict[str, float] = {}
    current: list[float] = []
    stop = threading.Event()

    anon_peaks: dict[str, float] = {}

    def sample() -> None:
        while not stop.wait(0.05):
            rss = proc.memory_info().rss / 2**20
            peaks[phase["now"]] = max(peaks.get(phase["now"], 0.0), rss)
            anon = anonymous_mib()
            if anon is not None:
                anon_peaks[phase["now"]] = max(anon_peaks.get(phase["now"], 0.0), anon)

    class Measured(Step):
        def advance(self, n: int = 1, detail: str | None = None) -> None:
            super().advance(n, detail)
            if self.label == "subjects":
                phase["now"] = "subject_pass"
                if n:
                    current.append(proc.memory_info().rss / 2**20)
            elif self.label == "dataset-level stages" and self.detail:
                phase["now"] = self.detail

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = run_audit(load_config(config_path), progress=lambda label, total: Measured(label, total))
    run_s = time.perf_counter() - t0
    stop.set()
    sampler.join()
    print(json.dumps({
        "run_s": run_s, "failed": result.failed, "timings_s": result.audit["run"]["timings_s"],
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_by_phase_mib": {k: round(v, 1) for k, v in peaks.items()},
        "peak_anon_mib": max(anon_peaks.values()) if anon_peaks else None,
        "peak_anon_by_phase_mib": {k: round(v, 1) for k, v in anon_peaks.items()},
        "rss_first_subject_mib": current[0] if current else None,
        "rss_last_subject_mib": current[-1] if current else None,
        "scale": result.audit.get("scale", {}),
    }))


def anonymous_mib() -> float | None:
    """This process's resident anonymous memory (``RssAnon``, Linux), MiB: what it needs of RAM.

    RSS also counts file pages the process has touched (the run's records and volumes as it
    reads them, and the cohort arrays `xaudit.data.cohort.spilled` maps from a file), which
    the kernel drops under memory pressure; ``RssAnon`` does not.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- the parent
def sub_manifest(manifest: Path, n: int) -> Path:
    """The first ``n`` rows, next to the full manifest (its image paths are relative to it)."""
    subset = manifest.parent / f"manifest_{n}.csv"
    lines = manifest.read_text().splitlines()
    if len(lines) - 1 < n:
        raise ValueError(f"the cohort has {len(lines) - 1} subjects; {n} were asked for")
    subset.write_text("\n".join(lines[: n + 1]) + "\n")
    return subset


def run_size(manifest: Path, n: int, work: Path, arch: str, threads: int) -> dict:
    out = work / f"run_{n}"
    shutil.rmtree(out, ignore_errors=True)
    config = work / f"run_{n}.yaml"
    config.write_text(yaml.safe_dump(xaudit_config(sub_manifest(manifest, n), out, arch)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": str(threads), "NO_COLOR": "1", "TERM": "dumb"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(config)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the run with {n} subjects failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    timings = measured["timings_s"]
    pass_s = timings.get("subject_pass", 0.0) + timings.get("batch_tuning", 0.0)
    report = {name: (out / name).stat().st_size for name in ("report.html", "report.md", "audit.json") if (out / name).is_file()}
    pages = sum(p.stat().st_size for p in (out / "subjects").glob("*.html")) if (out / "subjects").is_dir() else 0
    return {"subjects": n, "wall_s": wall, "pass_s": pass_s, "ms_per_subject": 1000 * pass_s / n,
            "report_bytes": report, "subject_pages_bytes": pages, **measured}


def check(rows: list[dict]) -> dict:
    """The largest size against the size before it."""
    if len(rows) < 2:
        return {}
    small, big = rows[-2], rows[-1]
    cost = big["ms_per_subject"] / small["ms_per_subject"]
    rss = big["ru_maxrss_mib"] / small["ru_maxrss_mib"]
    out = {
        "per_subject_cost": {"value": cost, "target": TARGETS["per_subject_cost"], "met": cost <= TARGETS["per_subject_cost"],
                             "sizes": [small["subjects"], big["subjects"]]},
        "peak_rss": {"value": rss, "target": TARGETS["peak_rss"], "met": rss <= TARGETS["peak_rss"],
                     "sizes": [small["subjects"], big["subjects"]]},
    }
    if small.get("peak_anon_mib") and big.get("peak_anon_mib"):
        anon = big["peak_anon_mib"] / small["peak_anon_mib"]
        out["peak_anonymous_memory"] = {"value": anon, "target": TARGETS["peak_rss"], "met": anon <= TARGETS["peak_rss"],
                                        "sizes": [small["subjects"], big["subjects"]]}
    return out


def table(result: dict) -> str:
    rows = result["runs"]
    stages = [k for k in rows[-1]["timings_s"] if k not in ("subject_pass", "batch_tuning")]
    head = f"{'N':>7}{'wall s':>9}{'pass s':>9}{'ms/subj':>9}" + "".join(f"{k[:11]:>12}" for k in stages) \
        + f"{'RSS MiB':>9}{'anon MiB':>9}{'report KiB':>11}"
    lines = [f"growth of a whole audit: {result['workload']['size']}^3, {result['workload']['arch']}, "
             f"{' + '.join(METHODS)}; cohort written in {result['cohort_s']:.1f} s", head]
    for r in rows:
        lines.append(f"{r['subjects']:>7}{r['wall_s']:>9.1f}{r['pass_s']:>9.1f}{r['ms_per_subject']:>9.1f}"
                     + "".join(f"{r['timings_s'].get(k, 0.0):>12.1f}" for k in stages)
                     + f"{r['ru_maxrss_mib']:>9.0f}{r.get('peak_anon_mib') or 0:>9.0f}"
                     + f"{r['report_bytes'].get('report.html', 0) / 1024:>11.0f}")
    for r in rows:
        if r.get("scale"):
            lines.append(f"N={r['subjects']} bounded: " + "; ".join(f"{k}: {v.get('note', v)}" for k, v in r["scale"].items()))
    for name, t in result["targets"].items():
        lines.append(f"target {name} (N={t['sizes'][1]} / N={t['sizes'][0]}) <= {t['target']}: "
                     f"{t['value']:.2f} {'MET' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated subject counts, ascending")
    parser.add_argument("--size", type=int, default=16, help="edge of each volume, voxels")
    parser.add_argument("--arch", choices=sorted(LAYERS), default="tiny")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument("--workdir", type=Path, help="keep data and runs here (default: under benchmarks/results/)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = args.workdir or ROOT / "benchmarks" / "results" / "scale_work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = work / "data" / "manifest.csv"
    if not manifest.is_file() or len(manifest.read_text().splitlines()) - 1 < sizes[-1]:
        manifest = write_cohort(work / "data", sizes[-1], args.size)
    cohort_s = time.perf_counter() - t0
    print(f"cohort of {sizes[-1]} volumes ready in {cohort_s:.1f} s", flush=True)
    result = {"workload": {"size": args.size, "arch": args.arch, "methods": METHODS, "threads": args.threads,
                           "cpu_count": os.cpu_count(), "load_start": os.getloadavg()},
              "cohort_s": cohort_s, "runs": []}
    for n in sizes:
        row = run_size(manifest, n, work, args.arch, args.threads)
        print(f"N={n}: wall {row['wall_s']:.1f} s, pass {row['pass_s']:.1f} s ({row['ms_per_subject']:.1f} ms/subject), "
              f"peak RSS {row['ru_maxrss_mib']:.0f} MiB", flush=True)
        result["runs"].append(row)
        result["targets"] = check(result["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    result["load_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"results: {args.out}")
    return 0 if all(t["met"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
