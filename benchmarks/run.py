"""Benchmark xaudit's per-subject pass against the machine's limit, a Captum script and MONAI.

Usage:
    python benchmarks/run.py [--quick | --micro] [--out FILE] [--threads N] [--skip rss,monai,...]
                             [--profile]

One run measures, on the same synthetic gzip NIfTI cohort and the same seeded MONAI
ResNet: (a) the limit, i.e. forward+backward and forward-only throughput times the passes
each method needs; (b) xaudit (one config per method, and all methods together); (c) the
peer script (`peer_script.run_peer`: nibabel + one Captum call per method); (d) MONAI's
``monai.visualize``; and the peak RSS of a whole xaudit run at two dataset sizes.
The machine is shared, so the limit is re-measured ("probed") between system runs and
each system is compared with the limit measured around it. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks.common:build_model` is the xaudit model factory

from benchmarks.common import (  # noqa: E402
    MODES, Mode, build_model, limit_seconds, probe, rates_around, read_manifest, sweep_limit, write_cohort,
)
from benchmarks.peer_script import run_monai, run_peer  # noqa: E402

TARGETS = {"efficiency": 0.85, "speedup_vs_peer": 1.5, "rss_growth_pct": 20.0}


# ---------------------------------------------------------------- xaudit
@contextmanager
def instrument_xaudit(methods: dict):
    """Time the sections of xaudit's per-subject pass and count the model's forward passes.

    Wraps module-level functions of `xaudit.stages.subject_pass` and each method's ``attribute``
    for the duration of one run (restored after); a forward pre-hook on the model counts
    samples evaluated with and without autograd. Writer-thread sections run alongside compute.
    """
    import xaudit.stages.subject_pass as subject_pass
    from xaudit.attribution import REGISTRY

    record = {"sections_s": defaultdict(float), "forward_samples": {"grad": 0, "no_grad": 0}, "forward_calls": {"grad": 0, "no_grad": 0}}
    lock = threading.Lock()

    def timer(name, fn):
        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    record["sections_s"][name] += time.perf_counter() - t0
        return wrapped

    def count(_module, args):
        kind = "grad" if torch.is_grad_enabled() else "no_grad"
        record["forward_samples"][kind] += int(args[0].shape[0])
        record["forward_calls"][kind] += 1

    def pass_with_hook(subjects, transforms, model, *rest, **kwargs):
        handle = model.register_forward_pre_hook(count)
        try:
            return original_pass(subjects, transforms, model, *rest, **kwargs)
        finally:
            handle.remove()

    patches = [(subject_pass, n, timer(n, getattr(subject_pass, n))) for n in
               ("load_subject", "preprocessed_foreground", "_forward_pass", "_masked_probs", "write_subject", "downsample_volumes")]
    patches += [(REGISTRY[n], "attribute", timer(f"method:{n}", REGISTRY[n].attribute)) for n in methods]
    original_pass = subject_pass.run_subject_pass
    patches.append((subject_pass, "run_subject_pass", pass_with_hook))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, new in patches:
            setattr(obj, name, new)
        yield record
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def profile_xaudit(run) -> str:
    """cProfile one xaudit run; the top functions by cumulative and by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    return text.getvalue()

def xaudit_config(manifest: Path, mode: Mode, methods: dict, out: Path) -> dict:
    """An xaudit config for the cohort: the stored grid as is, the seeded factory model."""
    return {
        "data": {"manifest": str(manifest), "group_columns": ["site"], "transforms": {}},
        "model": {
            "factory": {"function": "benchmarks.common:build_model", "args": mode.model_args},
            "classes": ["healthy", "lesion"], "layer": mode.layer,
        },
        "attribution": {"target": "predicted", "methods": methods, "seed": 0},
        "output": str(out),
    }


def run_xaudit(manifest: Path, mode: Mode, methods: dict, out: Path) -> dict:
    """One xaudit per-subject pass (``--shard 0/1``: the dataset-level stages are left out), plus
    the batch-size tuning that precedes it."""
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(xaudit_config(manifest, mode, methods, out)))
    with instrument_xaudit(methods) as record:
        t0 = time.perf_counter()
        result = run_audit(load_config(path), RunOptions(output=out, shard=(0, 1)))
        total = time.perf_counter() - t0
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    # the batch-size tuning at the start of a run counts: it is time the user waits for
    passes = result.timings["subject_pass"] + result.timings.get("batch_tuning", 0.0)
    return {"total_s": total, "subject_pass_s": passes, "timings_s": result.timings, "failed": result.failed,
            "max_batch": resolved["provenance"]["max_batch"], "batch_rates": resolved["provenance"].get("batch_rates"),
            **record}


def rss_child(config_path: str) -> None:
    """Entry of the RSS subprocess: a whole xaudit run; prints its peak RSS (MiB) as JSON."""
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    import psutil

    peak, current = {}, []

    from xaudit.core.progress import Step

    class Measured(Step):
        def advance(self, n: int = 1, detail: str | None = None) -> None:
            super().advance(n, detail)
            if self.label == "subjects" and n:  # as subjects finish; the last call ends the per-subject pass
                peak["subject_pass_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                current.append(psutil.Process().memory_info().rss / 2**20)

    def progress(label, total):
        return Measured(label, total)

    result = run_audit(load_config(config_path), progress=progress)
    peak["run_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # current RSS after the first and the last finished subject: growth during the pass itself
    peak["rss_first_subject_mib"], peak["rss_last_subject_mib"] = (current[0], current[-1]) if current else (None, None)
    print(json.dumps({"peak": peak, "timings_s": result.audit["run"]["timings_s"], "failed": result.failed}))


def measure_rss(manifest: Path, n: int, mode: Mode, work: Path, threads: int) -> dict:
    """Peak RSS of a whole xaudit run (all stages) over the first ``n`` subjects, in a fresh process."""
    subset = manifest.parent / f"manifest_{n}.csv"  # image paths are relative to the manifest
    lines = manifest.read_text().splitlines()
    subset.write_text("\n".join(lines[: n + 1]) + "\n")
    config = xaudit_config(subset, mode, mode.rss_methods, work / f"rss_{n}")
    config["quality"] = {"subjects": 0}  # a fixed cost per run, not per subject; it would dominate small runs
    path = work / f"rss_{n}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--rss-child", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS run with {n} subjects failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"subjects": n, "wall_s": time.perf_counter() - t0, **out}


# ---------------------------------------------------------------- the run
def machine_info() -> dict:
    import monai

    return {
        "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "platform": platform.platform(),
        "load_start": os.getloadavg(),
    }


def per_volume(seconds: dict, n: int, methods: list[str]) -> dict:
    """Seconds per volume from a peer run: a method alone = shared load/predict + its own calls."""
    rows = {m: (seconds["shared"] + seconds[m]) / n for m in methods if m in seconds}
    if all(m in seconds for m in methods):
        rows["all"] = (seconds["shared"] + sum(seconds[m] for m in methods)) / n
    return rows


def fresh_model(mode: Mode):
    """The seeded model and its Grad-CAM layer, new for each system run: MONAI's CAM leaves its
    hooks on the module (measured: 2 hooks remain after `monai.visualize.GradCAM`), which would
    slow every later pass on a shared instance."""
    model = build_model(**mode.model_args)
    return model, model.get_submodule(mode.layer)


def run_seconds(entry: dict) -> float:
    result = entry["result"]
    return result["subject_pass_s"] if "subject_pass_s" in result else sum(result.values())


def best_runs(runs: list[tuple[str, dict]]) -> dict:
    """Per system, its fastest repeat (the one least disturbed by other load on a shared machine)."""
    best: dict[str, dict] = {}
    for label, entry in runs:
        if label not in best or run_seconds(entry) < run_seconds(best[label]):
            best[label] = entry
    return best


def benchmark(mode: Mode, work: Path, skip: set[str], threads: int, repeats: int = 1,
              checkpoint=lambda result: None) -> dict:
    """Every measurement of one run; returns the JSON-able results.

    ``checkpoint(result)`` is called with the partial results once the timings are done, so a
    failure in the long RSS runs does not lose them.
    """
    t_start = time.perf_counter()
    result = {"mode": mode.name, "size": mode.size, "volumes": mode.volumes, "arch": mode.arch,
              "widen_factor": mode.widen_factor, "methods": mode.methods, "machine": machine_info()}
    manifest = write_cohort(work / "data", mode.volumes, mode.size)
    images = read_manifest(manifest)
    model = build_model(**mode.model_args)
    sweep = sweep_limit(model, mode)
    probes = [probe(model, mode, sweep, "start")]
    result["limit"] = {"sweep": sweep, "probes": probes}
    names = list(mode.methods)
    runs: list[tuple[str, dict]] = []

    def timed(label, fn, volumes, probe_after=True):
        runs.append((label, {"result": fn(), "volumes": volumes, "probes": [len(probes) - 1, None]}))
        if probe_after:
            probes.append(probe(model, mode, sweep, f"after {label}"))
            for _, entry in runs:  # every run still waiting for its closing probe
                entry["probes"][1] = entry["probes"][1] if entry["probes"][1] is not None else len(probes) - 1

    batch = sweep["best_batch_fb"]
    n = mode.volumes
    for _ in range(repeats):  # interleaved, so that a burst of load hits one repeat, not one system
        if "xaudit" not in skip:
            timed("xaudit:all", lambda: run_xaudit(manifest, mode, mode.methods, work / f"xaudit_all_{len(runs)}"), n)
        if "peer" not in skip:
            timed("peer", lambda: run_peer(images, *fresh_model(mode), mode.methods, work / "peer", batch), n)
        if "monai" not in skip:
            k = mode.monai_volumes  # batch size 1 makes MONAI the slowest; fewer volumes keep the run short
            timed("monai", lambda: run_monai(images[:k], fresh_model(mode)[0], mode.layer, mode.methods, work / "monai", batch), k)
        if "xaudit" not in skip and "per-method" not in skip:
            for i, name in enumerate(names):  # one probe around the block: a probe costs as much as a short run
                timed(f"xaudit:{name}", lambda name=name: run_xaudit(manifest, mode, {name: mode.methods[name]}, work / f"xaudit_{name}_{len(runs)}"),
                      n, probe_after=i == len(names) - 1)
    systems = best_runs(runs)
    result["systems"] = {k: {**v["result"], "volumes": v["volumes"], "probes": v["probes"]} for k, v in systems.items()}
    result["repeats"] = {label: [run_seconds(e) for lab, e in runs if lab == label] for label in systems}
    result["rows"] = table_rows(mode, systems, probes, names)
    checkpoint({**result, "partial": "timings only; the RSS runs had not finished"})
    if "rss" not in skip:
        rss_manifest = write_cohort(work / "rss_data", max(mode.rss_sizes), mode.size, seed=1)
        runs = [measure_rss(rss_manifest, k, mode, work, threads) for k in mode.rss_sizes]
        small, large = (r["peak"]["run_mib"] for r in runs)
        result["rss"] = {"methods": mode.rss_methods, "runs": runs, "growth_pct": 100.0 * (large - small) / small}
    result["amp"] = amp_check(model, mode)
    result["machine"]["load_end"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - t_start
    return result


def table_rows(mode: Mode, systems: dict, probes: list[dict], names: list[str]) -> dict:
    """Per method and for ``all``: seconds/volume of every system, the limit around it, the ratios.

    ``pass_efficiency`` compares the passes xaudit ran (counted by a hook on the model)
    with the passes the limit needs, both priced at the same rates: it is what the
    efficiency would be with zero overhead besides extra passes, and barely moves with load.
    """
    rows = {}
    per = {label: per_volume(systems[label]["result"], systems[label]["volumes"], names)
           for label in ("peer", "monai") if label in systems}
    for key in names + ["all"]:
        methods = mode.methods if key == "all" else {key: mode.methods[key]}
        row = {"limit_start_s": limit_seconds(methods, mode.size, probes[0]["fb"], probes[0]["fwd"])}
        for label, seconds in per.items():
            if key in seconds:
                fb, fwd = rates_around(probes, *systems[label]["probes"])
                row[f"{label}_s"] = seconds[key]
                row[f"{label}_limit_s"] = limit_seconds(methods, mode.size, fb, fwd)
        run = systems.get(f"xaudit:{key}")
        if run is not None:
            fb, fwd = rates_around(probes, *run["probes"])
            counts = run["result"]["forward_samples"]
            row["xaudit_s"] = run["result"]["subject_pass_s"] / run["volumes"]
            row["limit_s"] = limit_seconds(methods, mode.size, fb, fwd)
            row["efficiency"] = row["limit_s"] / row["xaudit_s"]
            row["xaudit_passes_s"] = (counts["grad"] / fb + counts["no_grad"] / fwd) / run["volumes"]
            row["pass_efficiency"] = row["limit_s"] / row["xaudit_passes_s"]
            for label in per:
                if f"{label}_s" in row:
                    row[f"{label}_over_xaudit"] = row[f"{label}_s"] / row["xaudit_s"]
                    # each time in units of the limit measured around it: cancels load drift between runs
                    row[f"{label}_over_xaudit_normalised"] = (row[f"{label}_s"] / row[f"{label}_limit_s"]) * row["efficiency"]
        rows[key] = row
    if "monai" in per:  # MONAI has no integrated gradients: its whole set is the other methods
        rows["all"]["monai_s_without_ig"] = per_volume(systems["monai"]["result"], systems["monai"]["volumes"],
                                                       [m for m in names if m != "integrated_gradients"]).get("all")
    return rows


def amp_check(model, mode: Mode) -> dict:
    """Mixed precision only matters on CUDA; on CPU it is skipped with a note."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the AMP check (attribution.amp) runs on CUDA only"}
    x = torch.randn(2, 1, mode.size, mode.size, mode.size, device="cuda")
    net = model.to("cuda")
    with torch.no_grad():
        full = net(x).float()
        with torch.autocast("cuda", dtype=torch.float16):
            half = net(x).float()
    net.to("cpu")
    return {"max_abs_logit_diff": float((full - half).abs().max())}


def print_table(result: dict) -> None:
    """The human summary: seconds/volume per system and the ratios, then RSS and targets."""
    def fmt(v, spec=".2f"):
        return format(v, spec) if isinstance(v, (int, float)) else "n/a"

    m = result["machine"]
    print(f"\nxaudit benchmark ({result['mode']}): {result['volumes']} volumes of {result['size']}^3, "
          f"{result['arch']} x{result['widen_factor']}, {m['device']}, {m['torch_threads']} torch threads, "
          f"load {m['load_start'][0]:.1f} -> {m['load_end'][0]:.1f}")
    sweep = result["limit"]["sweep"]
    print("limit sweep, samples/s  f+b: " + "  ".join(f"b{b}={r:.2f}" for b, r in sweep["fb_samples_per_s"].items())
          + " | fwd: " + "  ".join(f"b{b}={r:.2f}" for b, r in sweep["fwd_samples_per_s"].items()))
    head = (f"{'method':21}{'limit':>7}{'xaudit':>8}{'peer':>8}{'monai':>8}{'effic':>7}{'pass-eff':>9}"
            f"{'peer/xa':>8}{'norm':>6}{'monai/xa':>9}")
    print("seconds per volume\n" + head)
    for key, row in result.get("rows", {}).items():
        print(f"{key:21}{fmt(row.get('limit_s', row['limit_start_s'])):>7}{fmt(row.get('xaudit_s')):>8}{fmt(row.get('peer_s')):>8}"
              f"{fmt(row.get('monai_s', row.get('monai_s_without_ig'))):>8}{fmt(row.get('efficiency')):>7}"
              f"{fmt(row.get('pass_efficiency')):>9}{fmt(row.get('peer_over_xaudit')):>8}"
              f"{fmt(row.get('peer_over_xaudit_normalised')):>6}{fmt(row.get('monai_over_xaudit')):>9}")
    print("limit: at the rates probed around the xaudit run; effic = limit/xaudit; pass-eff = the same with xaudit's\n"
          "counted passes and no other overhead; norm = peer/xaudit with each time in units of the limit probed\n"
          "around it (cancels load drift); MONAI's 'all' lacks integrated gradients (it has none).")
    if "rss" in result:
        runs = result["rss"]["runs"]
        print("peak RSS of a whole xaudit run (" + ", ".join(result["rss"]["methods"]) + "): "
              + ", ".join(f"{r['subjects']} subjects {r['peak']['run_mib']:.0f} MiB (RSS after first/last subject "
                          f"{r['peak']['rss_first_subject_mib']:.0f}/{r['peak']['rss_last_subject_mib']:.0f})" for r in runs)
              + f" -> growth {result['rss']['growth_pct']:.1f}%")
    print("AMP: " + (result["amp"].get("skipped") or f"max |logit fp32 - fp16| = {result['amp']['max_abs_logit_diff']:.3g}"))
    if m["load_start"][0] >= 1.0:
        print(f"NOTE: load {m['load_start'][0]:.1f} on {m['affinity']} cores: other processes compete, single timings can swing\n"
              "several-fold (with 2 threads, 2.5x slower than 1 thread when the other core is busy). Use --threads 1\n"
              "--repeats 2 (each system keeps its fastest repeat) and compare pass-eff, which barely moves with load.")
    for line in check_targets(result):
        print(line)
    print(f"wall time {result['wall_s']:.0f} s")


def check_targets(result: dict) -> list[str]:
    rows, lines = result.get("rows", {}), []
    for key in ("integrated_gradients", "smoothgrad"):
        if rows.get(key, {}).get("efficiency") is not None:
            e = rows[key]["efficiency"]
            lines.append(f"target efficiency {key} >= {TARGETS['efficiency']}: {e:.2f} {'MET' if e >= TARGETS['efficiency'] else 'MISSED'}")
    if rows.get("all", {}).get("peer_over_xaudit") is not None:
        s = rows["all"]["peer_over_xaudit"]
        lines.append(f"target whole set >= {TARGETS['speedup_vs_peer']}x faster than peer: {s:.2f}x {'MET' if s >= TARGETS['speedup_vs_peer'] else 'MISSED'}")
    if "rss" in result:
        g = result["rss"]["growth_pct"]
        lines.append(f"target peak RSS growth < {TARGETS['rss_growth_pct']:.0f}%: {g:.1f}% {'MET' if g < TARGETS['rss_growth_pct'] else 'MISSED'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="32^3, a quarter-width ResNet-18, 4 volumes (minutes)")
    size.add_argument("--micro", action="store_true", help="16^3, a tiny net: checks the harness runs (tests)")
    parser.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/bench[-quick|-micro].json)")
    parser.add_argument("--workdir", type=Path, help="keep data and runs here (default: a temporary directory)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--skip", default="", help="comma list of: xaudit, per-method, peer, monai, rss")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; each system keeps its fastest")
    parser.add_argument("--profile", action="store_true", help="only cProfile xaudit's pass over all methods")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    mode = MODES["quick" if args.quick else "micro" if args.micro else "full"]
    suffix = "" if mode.name == "full" else f"-{mode.name}"
    out = args.out or ROOT / "benchmarks" / "results" / f"bench{suffix}.json"
    with tempfile.TemporaryDirectory(prefix="xaudit-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.profile:
            manifest = write_cohort(work / "data", mode.volumes, mode.size)
            report = profile_xaudit(lambda: run_xaudit(manifest, mode, mode.methods, work / "profile"))
            path = out.with_name(f"profile{suffix}.txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report)
            print(report[:6000])
            return 0
        out.parent.mkdir(parents=True, exist_ok=True)

        def save(result: dict) -> None:
            out.write_text(json.dumps(result, indent=1, default=str))

        result = benchmark(mode, work, {s.strip() for s in args.skip.split(",") if s.strip()}, args.threads,
                           args.repeats, checkpoint=save)
    save(result)
    print_table(result)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
