"""Time rule extraction and vectorised rule evaluation on a synthetic cohort.

Usage:
    python benchmarks/bench_rules.py [--subjects 3000] [--features 300] [--rules 1000]
                                     [--out benchmarks/results/rules.json]

Prints the timings and writes them as JSON. The cohort is synthetic: two sites, a site
signature channel and a pathology channel the "network" (its predictions) uses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import sklearn  # noqa: E402

from xaudit.analysis.rules import Condition, RulesParams, extract_rules, rule_coverage  # noqa: E402


def synthetic_cohort(n: int, n_feat: int, seed: int = 0) -> dict:
    """Features with a site signature (ch7) and a pathology signal (ch3)."""
    rng = np.random.default_rng(seed)
    site = np.where(rng.random(n) < 0.5, "A", "B")
    labels = (rng.random(n) < 0.4).astype(int)
    x = rng.normal(size=(n, n_feat)).astype(np.float32)
    x[:, 3] += 1.5 * labels
    x[:, 7] += 2.0 * (site == "B")
    score = 0.8 * x[:, 3] + 0.6 * x[:, 7] + 0.3 * rng.normal(size=n)
    return dict(features=x, feature_names=[f"features.denseblock4:ch{i}" for i in range(n_feat)],
                predicted=(score > 1.2).astype(int), labels=labels,
                class_names=["healthy", "lesion"], groups={"site": site},
                subject_ids=[f"sub-{i:05d}" for i in range(n)])


def random_rules(n_rules: int, x: np.ndarray, seed: int = 1) -> list[list[Condition]]:
    """Rules of 1-4 conditions with thresholds at data quantiles."""
    rng = np.random.default_rng(seed)
    rules = []
    for _ in range(n_rules):
        rule = []
        for _ in range(int(rng.integers(1, 5))):
            j = int(rng.integers(x.shape[1]))
            thr = float(np.quantile(x[:, j], rng.uniform(0.05, 0.95)))
            rule.append(Condition(f"f{j}", j, str(rng.choice(["<=", ">"])), thr))
        rules.append(rule)
    return rules


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=3000)
    ap.add_argument("--features", type=int, default=300)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/rules.json")
    args = ap.parse_args()

    cohort = synthetic_cohort(args.subjects, args.features)
    params = RulesParams()
    t0, c0 = time.perf_counter(), time.process_time()
    res = extract_rules(params=params, **cohort)
    t_extract, c_extract = time.perf_counter() - t0, time.process_time() - c0

    rules = random_rules(args.rules, cohort["features"])
    t_cov = best_of(lambda: rule_coverage(rules, cohort["features"]), repeats=3)

    top = res.rules[0] if res.rules else None
    out = {
        "subjects": args.subjects, "features": args.features, "params": params.model_dump(),
        "extract_rules_seconds": round(t_extract, 3),
        "extract_rules_cpu_seconds": round(c_extract, 3),  # wall time depends on machine load
        "rule_coverage_rules": args.rules, "rule_coverage_seconds": round(t_cov, 4),
        "n_rules_extracted": len(res.rules), "fidelity": res.surrogate.fidelity,
        "fidelity_train": res.surrogate.fidelity_train,
        "top_rule": None if top is None else top.to_dict(res.class_names)["text"],
        "top_rule_site_skewed": None if top is None else top.coverage_by_group["site"].skewed,
        "notes": res.notes,
        "env": {"python": platform.python_version(), "numpy": np.__version__,
                "sklearn": sklearn.__version__, "cpus": os.cpu_count(),
                "load_average_1min": os.getloadavg()[0]},
    }
    print(json.dumps(out, indent=2))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
