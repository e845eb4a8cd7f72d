"""The whole audit against the script users write today, side by side, A B A B.

Usage:
    python benchmarks/audit_speed.py [--sample-data DIR] [--repeats 2] [--out FILE] [--workdir DIR]

Workload (issue 16): the demo's 80 test volumes (40x48x40, `xaudit sample-data`) through
its small 3D BatchNorm CNN (a two-block MONAI DenseNet, the shipped confounded model), with
integrated gradients (16 steps) + SmoothGrad (8 samples) + saliency + Grad-CAM. Four
systems, each run as the user would run it, in a fresh process, alternated (A B A B) so that
a burst of load hits one repeat, not one system:

- **script**: ``benchmarks/peer_script.py``: per volume, nibabel in, the predicted class,
  one Captum call per method (batching knobs at the limit's best batch size), nibabel out.
  Its process time, and its loop time (what it spends after its imports).
- **xaudit pass**: the per-subject pass of that ``xaudit run`` (batch tuning included),
  from its ``audit.json``: the work the script does, plus features, masked-input
  probabilities and native-grid writing.
- **xaudit whole run**: ``xaudit run config.yaml -q`` with every default stage (metrics,
  attribution summaries, rules, bias, interventions, quality, report), process time.
- **limit**: forward+backward and forward samples/s at the best batch size (swept once
  here, in this process) times the passes the four methods need: with PyTorch's own
  gradients (what the script runs), and with xaudit's input gradient of the strided
  convolutions (`xaudit.models.strided_conv`, what xaudit runs).

Targets, each printed with MET or MISSED: the whole run at least 0.9 of the script's speed
(script process seconds / xaudit process seconds, fastest repeat of each), and the pass at
least as fast as the script's loop in every repeat.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import MODES, build_model, limit_seconds, sweep_limit  # noqa: E402
from xaudit.models.strided_conv import choose_layers, faster_input_gradients  # noqa: E402

MODE = MODES["audit"]
SHAPE = (40, 48, 40)  # the demo cohort's stored grid
TARGETS = {"whole_run_speed": 0.9, "pass_speed": 1.0}


THREADS: dict[str, str] = {}  # OMP_NUM_THREADS for both systems, when --threads is given


def environment() -> dict:
    """Subprocess environment: the benchmark's factory importable, no rich bar, no colour."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1", "TERM": "dumb", **THREADS}


def sample_cohort(work: Path, sample_dir: Path | None) -> Path:
    """The demo cohort's manifest: ``sample_dir``'s if it has one, else written by ``xaudit sample-data``."""
    if sample_dir is not None and (sample_dir / "cohort3d" / "manifest.csv").is_file():
        return sample_dir / "cohort3d" / "manifest.csv"
    target = work / "sample_data"
    _, proc = timed_process([sys.executable, "-m", "xaudit", "sample-data", str(target), "-q"], ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"xaudit sample-data failed:\n{proc.stderr[-3000:]}")
    return target / "cohort3d" / "manifest.csv"


def test_images(manifest: Path) -> list[Path]:
    with manifest.open() as handle:
        return [manifest.parent / row["image"] for row in csv.DictReader(handle) if row.get("split", "test") == "test"]


def first_test_rows(manifest: Path, n: int, work: Path) -> Path:
    """A manifest of the first ``n`` test rows in ``work``, its file paths made absolute, and the model beside it."""
    with manifest.open() as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if r.get("split", "test") == "test"][:n]
        fields = reader.fieldnames
    for row in rows:
        for key, value in row.items():
            if value and (manifest.parent / value).is_file():
                row[key] = str((manifest.parent / value).resolve())
    subset = work / "subset" / "manifest.csv"
    subset.parent.mkdir(parents=True, exist_ok=True)
    with subset.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy2(manifest.parent / "model_confounded.pth", subset.parent / "model_confounded.pth")
    return subset


def xaudit_config(manifest: Path, out: Path) -> dict:
    """configs/demo.yaml on this cohort, with the workload's methods; every other stage at its default
    (interrogation, which the demo adds, is not a default stage)."""
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config.pop("interrogate", None)
    config["data"]["manifest"] = str(manifest)
    config["model"]["monai"]["checkpoint"] = str(manifest.parent / "model_confounded.pth")
    config["attribution"]["methods"] = MODE.methods
    config["output"] = str(out)
    return config


def timed_process(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def run_script(images: list[Path], checkpoint: Path, out: Path, batch: int, device: str = "cpu",
               monai: bool = False) -> dict:
    """The Captum script (or, with ``monai``, the same loop with ``monai.visualize``) in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "peer_script.py"), *map(str, images), "-o", str(out),
               "--mode", MODE.name, "--batch", str(batch), "--json", "--checkpoint", str(checkpoint), "--zscore",
               "--device", device] + (["--monai"] if monai else [])
    wall, proc = timed_process(command, ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"the Captum script failed:\n{proc.stderr[-3000:]}")
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"process_s": wall, "loop_s": sum(seconds.values()), "sections_s": seconds}


def run_xaudit(manifest: Path, work: Path, label: str, device: str = "cpu", amp: str = "off") -> dict:
    out = work / label
    shutil.rmtree(out, ignore_errors=True)
    config = work / f"{label}.yaml"
    raw = xaudit_config(manifest, out)
    raw["attribution"]["amp"] = amp
    config.write_text(yaml.safe_dump(raw))
    wall, proc = timed_process([sys.executable, "-m", "xaudit", "run", str(config), "-q", "--device", device], ROOT)
    if proc.returncode not in (0, 1):  # 1: the audit found a problem, which is a result
        raise RuntimeError(f"xaudit run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    audit = json.loads((out / "audit.json").read_text())
    timings = audit["run"]["timings_s"]
    return {"process_s": wall, "exit": proc.returncode, "timings_s": timings,
            "pass_s": timings["subject_pass"] + timings.get("batch_tuning", 0.0),
            "max_batch": yaml.safe_load((out / "config.resolved.yaml").read_text())["provenance"].get("max_batch")}


def benchmark(work: Path, sample_dir: Path | None, repeats: int, log=print, device: str = "cpu",
              extra: tuple[str, ...] = (), subjects: int | None = None) -> dict:
    """``extra``: ``amp`` (an xaudit run with ``attribution.amp: auto``), ``monai`` (monai.visualize's loop);
    ``subjects``: only the first test subjects (a smoke run; its numbers mean little)."""
    t_start = time.perf_counter()
    manifest = sample_cohort(work, sample_dir)
    if subjects:
        manifest = first_test_rows(manifest, subjects, work)
    images = test_images(manifest)
    checkpoint = manifest.parent / "model_confounded.pth"
    mode = dataclasses.replace(MODE, size=SHAPE, batch_sizes=MODE.batch_sizes + ((32, 64) if device == "cuda" else ()))
    model = build_model(**MODE.model_args, checkpoint=str(checkpoint)).to(device).requires_grad_(False)
    sweep = sweep_limit(model, mode)
    fb, fwd = sweep["fb_samples_per_s"][sweep["best_batch_fb"]], sweep["fwd_samples_per_s"][sweep["best_batch_fwd"]]
    limit = len(images) * limit_seconds(MODE.methods, SHAPE, fb, fwd)
    log(f"limit: {limit:.1f} s ({fb:.1f} f+b samples/s at batch {sweep['best_batch_fb']})")
    # the same sweep with xaudit's input gradient of the strided convolutions (`xaudit.models.strided_conv`)
    strided = choose_layers(model, torch.randn(4, 1, *SHAPE, generator=torch.Generator().manual_seed(0)).to(device))
    with faster_input_gradients(model, strided):
        fast_sweep = sweep_limit(model, mode)
    fast_fb = fast_sweep["fb_samples_per_s"][fast_sweep["best_batch_fb"]]
    fast_limit = len(images) * limit_seconds(MODE.methods, SHAPE, fast_fb,
                                             fast_sweep["fwd_samples_per_s"][fast_sweep["best_batch_fwd"]])
    log(f"limit with xaudit's strided-convolution gradient: {fast_limit:.1f} s ({fast_fb:.1f} f+b samples/s)")
    rounds = []
    for k in range(repeats):  # A B A B
        script = run_script(images, checkpoint, work / "script_out", sweep["best_batch_fb"], device)
        log(f"round {k + 1}: script {script['process_s']:.1f} s (loop {script['loop_s']:.1f})")
        xa = run_xaudit(manifest, work, f"xaudit_{k}", device)
        log(f"round {k + 1}: xaudit {xa['process_s']:.1f} s (pass {xa['pass_s']:.1f}, batch {xa['max_batch']})")
        entry = {"script": script, "xaudit": xa}
        if "amp" in extra:
            entry["xaudit_amp"] = run_xaudit(manifest, work, f"xaudit_amp_{k}", device, amp="auto")
            log(f"round {k + 1}: xaudit amp {entry['xaudit_amp']['process_s']:.1f} s (pass {entry['xaudit_amp']['pass_s']:.1f})")
        if "monai" in extra:
            entry["monai"] = run_script(images, checkpoint, work / "monai_out", sweep["best_batch_fb"], device, monai=True)
            log(f"round {k + 1}: monai {entry['monai']['process_s']:.1f} s (no integrated gradients)")
        rounds.append(entry)
    return {"workload": {"volumes": len(images), "shape": SHAPE, "model": MODE.model_args, "methods": MODE.methods},
            "machine": {"cpu_count": os.cpu_count(), "load_end": os.getloadavg(), "threads": THREADS.get("OMP_NUM_THREADS"),
                        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__},
            "limit": {"seconds": limit, "sweep": sweep, "strided_seconds": fast_limit, "strided_sweep": fast_sweep,
                      "strided_layers": strided}, "rounds": rounds, "targets": check(rounds),
            "wall_s": time.perf_counter() - t_start}


def check(rounds: list[dict]) -> dict:
    """The two targets, from the fastest repeat (whole run) and from every repeat (pass)."""
    script = min(r["script"]["process_s"] for r in rounds)
    whole = min(r["xaudit"]["process_s"] for r in rounds)
    pass_ratios = [r["script"]["loop_s"] / r["xaudit"]["pass_s"] for r in rounds]
    return {
        "whole_run_speed": {"value": script / whole, "target": TARGETS["whole_run_speed"],
                            "met": script / whole >= TARGETS["whole_run_speed"]},
        "pass_speed": {"value": min(pass_ratios), "per_round": pass_ratios, "target": TARGETS["pass_speed"],
                       "met": min(pass_ratios) >= TARGETS["pass_speed"]},
    }


def table(result: dict) -> str:
    rounds, limit = result["rounds"], result["limit"]["seconds"]
    w = result["workload"]
    lines = [f"whole audit vs the Captum script on {result['machine']['device']}: {w['volumes']} volumes of {'x'.join(map(str, w['shape']))}, {w['model']['arch']}, "
             + " + ".join(f"{m}{'(' + str(next(iter(p.values()))) + ')' if p else ''}" for m, p in w["methods"].items()),
             f"{'system':28}" + "".join(f"{'round ' + str(k + 1):>10}" for k in range(len(rounds)))
             + f"{'best':>9}{'speed vs script':>17}"]
    script_best = min(r["script"]["process_s"] for r in rounds)
    loop_best = min(r["script"]["loop_s"] for r in rounds)

    def row(name, values, reference):
        best = min(values)
        return f"{name:28}" + "".join(f"{v:>9.1f}s" for v in values) + f"{best:>8.1f}s{reference / best:>16.2f}x"

    lines.append(f"{'limit (passes at best rate)':28}" + " " * 10 * len(rounds) + f"{limit:>8.1f}s{loop_best / limit:>16.2f}x")
    if "strided_seconds" in result["limit"]:
        fast = result["limit"]["strided_seconds"]
        lines.append(f"{'limit, strided-conv gradient':28}" + " " * 10 * len(rounds) + f"{fast:>8.1f}s{loop_best / fast:>16.2f}x")
    lines.append(row("script, process", [r["script"]["process_s"] for r in rounds], script_best))
    lines.append(row("script, loop", [r["script"]["loop_s"] for r in rounds], loop_best))
    lines.append(row("xaudit, per-subject pass", [r["xaudit"]["pass_s"] for r in rounds], loop_best))
    lines.append(row("xaudit, whole run (process)", [r["xaudit"]["process_s"] for r in rounds], script_best))
    if "xaudit_amp" in rounds[0]:
        lines.append(row("xaudit amp, pass", [r["xaudit_amp"]["pass_s"] for r in rounds], loop_best))
        lines.append(row("xaudit amp, whole run", [r["xaudit_amp"]["process_s"] for r in rounds], script_best))
    if "monai" in rounds[0]:
        lines.append(row("monai.visualize (no IG), loop", [r["monai"]["loop_s"] for r in rounds], loop_best))
    keys = {k for r in rounds for k in r["xaudit"]["timings_s"]} - {"subject_pass", "batch_tuning"}
    mean = {k: sum(r["xaudit"]["timings_s"].get(k, 0.0) for r in rounds) / len(rounds) for k in sorted(keys)}
    lines.append("xaudit stages, mean s: " + ", ".join(f"{k} {v:.1f}" for k, v in mean.items() if not k.startswith("pass.")))
    lines.append("xaudit pass by method, mean s: " + ", ".join(f"{k[5:]} {v:.1f}" for k, v in mean.items() if k.startswith("pass.")))
    lines.append("the pass is compared with the script's loop, the whole run with the script's process")
    for name, t in result["targets"].items():
        lines.append(f"target {name} >= {t['target']}: {t['value']:.2f} {'MET' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-data", type=Path, default=ROOT / "sample_data",
                        help="an `xaudit sample-data` folder to use (default: the checkout's; written if missing)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "audit_speed.json")
    parser.add_argument("--workdir", type=Path, help="keep data and runs here (default: a temporary directory)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both systems)")
    parser.add_argument("--subjects", type=int, help="only the first N test subjects (a smoke run)")
    parser.add_argument("--extra", default="", help="comma list: amp (an xaudit run with attribution.amp: auto), "
                        "monai (monai.visualize's loop)")
    parser.add_argument("--threads", type=int, help="torch threads of both systems (OMP_NUM_THREADS); default: torch's")
    args = parser.parse_args(argv)
    if args.threads:
        THREADS["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)  # the limit's sweep, in this process
    with tempfile.TemporaryDirectory(prefix="xaudit-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        extra = tuple(e.strip() for e in args.extra.split(",") if e.strip())
        result = benchmark(work, args.sample_data, args.repeats, device=args.device, extra=extra, subjects=args.subjects)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
