"""Shared fixtures: tiny synthetic NIfTI cohorts written into tmp_path, tiny models."""

from __future__ import annotations

import csv
import gc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

import xaudit.workflows.audit  # noqa: F401 - every module the audit imports, before the freeze below

# tiny tensors: more threads only add contention (measured 20x slower with 2 under load)
torch.set_num_threads(1)

# The imports above leave about a million objects that live as long as the test process. Each
# full collection walked them all again: 11 s of each of two workers' `make test-fast` went to
# them (gc.callbacks), 6-9 s with them frozen (what the tests keep alive is still walked).
# What the tests make is collected as usual.
gc.freeze()

#: The longest test modules, longest first (fresh-clone CI on 2 cores, 2026-12-02: about 225,
#: 170, 120, 65, 50, 50, 30, 30 and 25 s). `make test` runs each module whole on one
#: pytest-xdist worker in collection order (--no-loadscope-reorder); these go first, so that no
#: worker starts a long module when the others are nearly done. xdist's own order (most tests
#: first) started the SLURM tests, seven tests that mostly wait on the scheduler, last.
LONGEST_FIRST = ("test_slurm.py", "test_bench_smoke.py", "test_demo_verdict.py", "test_sample.py", "test_faults.py",
                 "test_pipeline.py", "test_compare.py", "test_interrogate.py", "test_cli.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


OBLIQUE_AFFINE = np.array(
    [[0.0, -1.6, 0.3, 40.0], [1.2, 0.0, 0.0, -30.0], [0.0, 0.25, 2.5, 12.0], [0.0, 0.0, 0.0, 1.0]]
)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def make_cohort(root: Path, n: int = 8, shape=(12, 14, 10), affine=None, spatial_dims: int = 3, seed: int = 0,
                sites=("A", "B"), with_masks: bool = True) -> Path:
    """A tiny cohort: lesion subjects carry a bright blob; site B adds a bright corner artefact."""
    rng = np.random.default_rng(seed)
    affine = OBLIQUE_AFFINE if affine is None else affine
    shape = tuple(shape[:spatial_dims])
    rows = []
    grid = np.indices(shape)
    centre = np.array(shape).reshape(-1, *([1] * spatial_dims)) / 2
    body = (((grid - centre) / (np.array(shape).reshape(-1, *([1] * spatial_dims)) / 2.6)) ** 2).sum(0) < 1
    for i in range(n):
        label = i % 2
        site = sites[(i // 2) % len(sites)]
        img = body * (1.0 + 0.1 * rng.standard_normal(shape)) + 0.05 * rng.standard_normal(shape)
        if label:
            img[tuple(slice(s // 2 - 1, s // 2 + 1) for s in shape)] += 2.0
        if site == "B":
            img[tuple(slice(0, 2) for _ in shape)] += 3.0
        sid = f"sub-{i:03d}"
        write_nifti(root / "images" / f"{sid}.nii.gz", img, affine)
        row = {"subject_id": sid, "image": f"images/{sid}.nii.gz", "label": ["healthy", "lesion"][label],
               "site": site, "split": "test" if i < n else "train"}
        if with_masks:
            write_nifti(root / "masks" / f"{sid}.nii.gz", body.astype(np.float32), affine)
            row["mask"] = f"masks/{sid}.nii.gz"
        rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def make_config(root: Path, manifest: Path, spatial_dims: int = 3, methods=None, **extra) -> Path:
    cfg = {
        "data": {"manifest": str(manifest), "group_columns": ["site"], "mask_column": "mask", "batch_size": 3,
                 "transforms": {"intensity": "zscore"}},
        "model": {"factory": {"function": "tiny_nets:build", "args": {"spatial_dims": spatial_dims}},
                  "classes": ["healthy", "lesion"], "layer": "features.3"},
        "attribution": {"methods": methods if methods is not None else {"saliency": {}, "integrated_gradients": {"steps": 4}, "gradcam": {}}},
        "rules": {"n_estimators": 10, "cv_folds": 2},
        "bias": {"permutations": 99, "bootstrap": 50},
        "output": str(root / "run"),
    }
    for key, value in extra.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg.setdefault(section, {})[sub] = value
        else:
            cfg[section] = value
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def cohort3d(tmp_path) -> Path:
    return make_cohort(tmp_path / "cohort")


@pytest.fixture
def config3d(tmp_path, cohort3d) -> Path:
    return make_config(tmp_path, cohort3d)


@pytest.fixture(scope="session")
def full_sample_data(tmp_path_factory, request) -> tuple[Path, dict]:
    """The demo cohort at full size, seed 0, generated once per test run (15-25 s): under
    pytest-xdist the first worker that needs it writes it in the run's shared temporary
    folder, under a file lock, and the others read it (the tests only read it).

    Returns (folder, summary of `generate_sample_data`).
    """
    import json
    import os

    from filelock import FileLock

    from xaudit.sample import generate_sample_data

    # a worker's basetemp is <run>/popen-gwN: its parent is this run's, shared by its workers
    if not hasattr(request.config, "workerinput"):  # no xdist worker: this process alone
        return _generate_full(tmp_path_factory.mktemp("sample_full"), generate_sample_data)
    shared = tmp_path_factory.getbasetemp().parent
    folder, done = shared / "sample_full", shared / "sample_full.summary.json"
    with FileLock(str(shared / "sample_full.lock"), timeout=900):  # a worker stuck generating fails the others
        if not done.is_file():
            summary = _generate_full(folder, generate_sample_data)[1]
            partial = done.with_suffix(".partial")
            partial.write_text(json.dumps(summary))
            os.replace(partial, done)  # last, and whole: a worker killed midway leaves none
    return folder, json.loads(done.read_text())


def _generate_full(folder: Path, generate) -> tuple[Path, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return folder, generate(folder, seed=0)
    finally:
        torch.set_num_threads(threads)
