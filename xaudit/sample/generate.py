"""`generate_sample_data`: the demo cohorts, their models and the shortcut check, on disk.

Three parts per cohort (3D and 2D), each skipped when it is already complete for the same
parameters, so re-running `make demo` costs seconds:

1. the images and masks with `manifest.csv` (stamped by `cohort.json`, written last); by
   default only the test split, the one the demo audits;
2. `model_confounded.pth` (split `train`) and `model_control.pth` (split `train_control`):
   by default the ones shipped in `xaudit/sample/weights/`, trained once by ``--train``;
3. `shortcut_check.json`: per-cell test accuracy of both models and the verdict
   (written last, so it also stamps the models).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from xaudit.core.jsonable import to_jsonable
from xaudit.core.workers import cpu_count, worker_pool
from xaudit.errors import ConfigError
from xaudit.sample import storage
from xaudit.sample.anatomy import load_anatomy
from xaudit.sample.cohort import AnatomyParams, synthesize_anatomy
from xaudit.sample.design import (FULL_DESIGN, MANIFEST_COLUMNS, QUICK_DESIGN, CohortDesign,
                                  subject_table)
from xaudit.sample.nets import network_args
from xaudit.sample.scanner import SITES, apply_scanner
from xaudit.sample.shipped import compare_with_shipped, has_shipped, install_shipped
from xaudit.sample.shortcut import cell_accuracy, shortcut_verdict
from xaudit.sample.train import TrainParams, load_split, predict, train_classifier

FORMAT_VERSION = 1  # bump when the synthesis changes, so old sample data is rebuilt
MODELS = (("confounded", "train"), ("control", "train_control"))


@dataclass(frozen=True)
class CohortSpec:
    """One cohort's grid, preprocessing and training settings.

    Attributes:
        name: folder name under the output directory.
        shape: working grid shape (3 axes, or 2 for the axial-slice cohort).
        voxel_mm: isotropic voxel size in millimetres.
        transforms: the demo config's `data.transforms`, also used for training.
        train: optimiser settings of both models.
        anatomy: subject variation and lesion parameters.
    """

    name: str
    shape: tuple[int, ...]
    voxel_mm: float
    transforms: dict[str, Any]
    train: TrainParams
    anatomy: AnatomyParams = field(default_factory=AnatomyParams)


def _transforms_3d(shape: tuple[int, ...], voxel_mm: float) -> dict[str, Any]:
    return {"orientation": "RAS", "spacing": [voxel_mm] * 3, "spatial_size": list(shape),
            "intensity": "zscore"}


# Lesion size and contrast, site signatures (`scanner.SITES`) and training settings were
# tuned together so the shortcut holds for several seeds (sample_data/README.md).
LESIONS_3D = AnatomyParams(lesions=(3, 6), lesion_radius_mm=(8.0, 14.0),
                           lesion_contrast=(0.25, 0.45))
LESIONS_2D = AnatomyParams(lesions=(2, 5), lesion_radius_mm=(3.0, 6.0),
                           lesion_contrast=(0.2, 0.35))
FULL_COHORTS = (
    CohortSpec("cohort3d", (40, 48, 40), 4.0, _transforms_3d((40, 48, 40), 4.0),
               TrainParams(), LESIONS_3D),
    CohortSpec("cohort2d", (80, 96), 2.0, {"intensity": "zscore"}, TrainParams(), LESIONS_2D),
)
# Tests only: tiny grids, one epoch. The networks are the same, so the configs load them.
QUICK_COHORTS = (
    CohortSpec("cohort3d", (20, 24, 20), 8.0, _transforms_3d((20, 24, 20), 8.0),
               TrainParams(epochs=1), LESIONS_3D),
    CohortSpec("cohort2d", (40, 48), 4.0, {"intensity": "zscore"}, TrainParams(epochs=1),
               LESIONS_2D),
)


def default_sample_dir() -> Path:
    """`sample_data/` at the root of the xaudit repository (the CLI's default)."""
    return Path(__file__).resolve().parents[2] / "sample_data"


def _cohort_fingerprint(spec: CohortSpec, design: CohortDesign, seed: int) -> dict[str, Any]:
    return to_jsonable({
        "format_version": FORMAT_VERSION, "seed": seed, "name": spec.name,
        "shape": spec.shape, "voxel_mm": spec.voxel_mm, "design": asdict(design),
        "anatomy": asdict(spec.anatomy), "sites": {k: asdict(v) for k, v in SITES.items()},
    })


def _manifest_complete(manifest: Path) -> bool:
    """The manifest exists and every file it names exists."""
    try:
        table = pd.read_csv(manifest)
    except (OSError, ValueError):
        return False
    paths = table[["image", "mask", "lesion_mask"]].to_numpy().ravel()
    return all((manifest.parent / p).is_file() for p in paths)


def write_cohort(folder: Path, spec: CohortSpec, design: CohortDesign, seed: int,
                 report: Callable[[str], None], splits: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Synthesise the subjects of one cohort and write images, masks and the manifest.

    Args:
        folder: the cohort's folder (created if needed).
        spec: grid and anatomy parameters.
        design: subjects per split and cell.
        seed: random seed; subject i of a cohort always gets the same random stream.
        report: progress callback.
        splits: write only the subjects of these splits (None: all). Subject i keeps its
            random stream either way, so a test-only cohort holds the very test subjects of
            the full one.

    Returns:
        {"manifest", "n_subjects", "generated" (False when skipped), "seconds"}.
    """
    start = time.perf_counter()
    manifest = folder / "manifest.csv"
    fingerprint = {**_cohort_fingerprint(spec, design, seed), "splits": list(splits) if splits else None}
    stamp = folder / "cohort.json"
    if storage.read_json(stamp) == fingerprint and _manifest_complete(manifest):
        report(f"{spec.name}: complete, skipped")
        return {"manifest": str(manifest), "n_subjects": len(pd.read_csv(manifest)),
                "generated": False, "seconds": 0.0}
    stamp.unlink(missing_ok=True)  # from here on the folder is incomplete until re-stamped
    table = subject_table(design, seed)
    wanted = table["split"].isin(splits) if splits else pd.Series(True, index=table.index)
    report(f"{spec.name}: synthesising {int(wanted.sum())} subjects on a {spec.shape} grid")
    anatomy = load_anatomy(spec.shape, spec.voxel_mm)
    stream = 2 + len(spec.shape)  # separate random streams for the 2D and 3D cohorts
    jobs = [(number, row) for number, row in enumerate(table.to_dict("records")) if wanted.iloc[number]]
    _write_subjects(_Synthesis(folder, spec, anatomy, seed, stream), jobs, report)
    table = table[wanted.to_numpy()].reset_index(drop=True)
    table["image"] = [f"images/{s}.nii.gz" for s in table["subject_id"]]
    table["mask"] = [f"masks/{s}_brain.nii.gz" for s in table["subject_id"]]
    table["lesion_mask"] = [f"masks/{s}_lesion.nii.gz" for s in table["subject_id"]]
    storage.save_csv(manifest, table[MANIFEST_COLUMNS])
    storage.save_json(stamp, fingerprint)
    return {"manifest": str(manifest), "n_subjects": len(table), "generated": True,
            "seconds": round(time.perf_counter() - start, 2)}


@dataclass(frozen=True)
class _Synthesis:
    """What every subject of one cohort is synthesised from."""

    folder: Path
    spec: CohortSpec
    anatomy: Any
    seed: int
    stream: int

    def write(self, job: tuple[int, dict]) -> None:
        """Subject ``number``'s image and masks; its own random stream, so any order gives the same files."""
        number, row = job
        rng = np.random.default_rng([self.seed, self.stream, number])
        subject = synthesize_anatomy(self.anatomy, row["label"] == "lesion", self.spec.anatomy, rng)
        image = apply_scanner(subject.image, SITES[row["site"]], self.spec.voxel_mm, rng)
        for path, data in ((f"images/{row['subject_id']}.nii.gz", image),
                           (f"masks/{row['subject_id']}_brain.nii.gz", subject.brain_mask),
                           (f"masks/{row['subject_id']}_lesion.nii.gz", subject.lesion_mask)):
            storage.save_nifti(self.folder / path, data, self.anatomy.affine)


_SYNTHESIS: _Synthesis | None = None  # a worker's cohort, set when it starts


def _start_worker(synthesis: _Synthesis) -> None:
    global _SYNTHESIS
    _SYNTHESIS = synthesis
    # one worker per core: a multithreaded BLAS in each (the warp fields' tensordot) would
    # oversubscribe the cores (measured on 2 cores: `xaudit sample-data` 16.8-17.8 s with this,
    # 18.1-20.5 s without; the 480 files byte for byte the same)
    threadpool_limits(1)


def _write_in_worker(job: tuple[int, dict]) -> None:
    _SYNTHESIS.write(job)


def _write_subjects(synthesis: _Synthesis, jobs: list[tuple[int, dict]], report: Callable[[str], None]) -> None:
    """Write every job's subject, on every CPU (forked workers; here alone where none start).

    The subjects are independent (each its own random stream), and synthesis plus gzip was
    most of `xaudit sample-data`: 12 s of its 26 on 2 cores, one core idle.
    """
    workers = min(4, cpu_count()) if len(jobs) >= 8 else 1
    pool = worker_pool(workers, initializer=_start_worker, initargs=(synthesis,)) if workers > 1 else None
    name, total = synthesis.spec.name, len(jobs)
    try:
        done = pool.map(_write_in_worker, jobs, chunksize=4) if pool is not None else map(synthesis.write, jobs)
        for count, _ in enumerate(done, 1):
            if count % 40 == 0 and count < total:
                report(f"{name}: {count} of {total} subjects written")
    finally:
        if pool is not None:  # on Ctrl-C or an error: the chunks not started are dropped
            pool.shutdown(wait=True, cancel_futures=True)


def train_and_check(folder: Path, spec: CohortSpec, seed: int, device: torch.device,
                    report: Callable[[str], None]) -> dict[str, Any]:
    """Train the confounded and the control model of a cohort and run the shortcut check.

    Args:
        folder: the cohort's folder, holding a complete manifest.
        spec: preprocessing and training settings.
        seed: seeds the networks' initialisation and batch order.
        device: where to train.
        report: progress callback.

    Returns:
        The content of `shortcut_check.json`: fingerprint, per-model training time and
        per-cell test accuracy, verdict, and "trained" (False when skipped).
    """
    manifest = folder / "manifest.csv"
    fingerprint = to_jsonable({
        "cohort": storage.read_json(folder / "cohort.json"), "seed": seed,
        "train": asdict(spec.train), "transforms": spec.transforms,
        "network": network_args(len(spec.shape)),
    })
    check_path = folder / "shortcut_check.json"
    check = storage.read_json(check_path)
    if (check and check.get("fingerprint") == fingerprint
            and all((folder / f"model_{kind}.pth").is_file() for kind, _ in MODELS)):
        report(f"{spec.name}: models complete, skipped")
        return {**check, "trained": False}
    check_path.unlink(missing_ok=True)
    test_x, _, test_rows = load_split(manifest, "test", spec.transforms)
    models = {}
    for kind, split in MODELS:
        inputs, labels, _ = load_split(manifest, split, spec.transforms)
        report(f"{spec.name}: training model_{kind} on {len(inputs)} subjects "
               f"({spec.train.epochs} epochs, {device})")
        model, seconds = train_classifier(
            inputs, labels, spec.train, seed, device,
            on_epoch=lambda e, n, loss, kind=kind: report(f"{spec.name}: model_{kind} epoch {e}/{n}, loss {loss:.3f}"))
        storage.save_state_dict(folder / f"model_{kind}.pth", model)
        cells = cell_accuracy(test_rows, predict(model, test_x, device))
        models[kind] = {
            "checkpoint": f"model_{kind}.pth", "train_split": split, "n_train": len(inputs),
            "train_seconds": round(seconds, 2),
            "test_accuracy": round(sum(c["correct"] for c in cells.values()) / len(test_x), 4),
            "cells": cells,
        }
    verdict = shortcut_verdict(models["confounded"]["cells"], models["control"]["cells"])
    check = {"fingerprint": fingerprint, "models": models, "verdict": verdict,
             "device": str(device), "torch": torch.__version__}
    storage.save_json(check_path, check)
    report(f"{spec.name}: shortcut {'holds' if verdict['holds'] else 'DOES NOT hold'} "
           f"(confounded off-diagonal drop {verdict['confounded']['drop']:.2f})")
    return {**check, "trained": True}


def _checked_design(quick: bool, n_test: int | None) -> CohortDesign:
    design = QUICK_DESIGN if quick else FULL_DESIGN
    if n_test is None:
        return design
    n_cells = 2 * len(SITES)
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < n_cells \
            or n_test % n_cells:
        raise ConfigError(f"`n_test` must be a positive multiple of {n_cells} (one subject "
                          f"per class x site cell). Got {n_test!r} instead.")
    return replace(design, test_per_cell=n_test // n_cells)


def generate_sample_data(out_dir: Path, seed: int = 0, n_test: int | None = None,
                         quick: bool = False, progress: Callable[[str], None] | None = None,
                         device: str | torch.device | None = None, train: bool = False) -> dict[str, Any]:
    """Write the demo cohorts (3D and 2D), their models and the shortcut check.

    With the defaults (seed 0, the full design) and without ``train``, only the test split
    is synthesised and the models shipped with xaudit are installed (`xaudit.sample.shipped`):
    no training at demo time. ``train`` (or any other seed or design) synthesises every
    split and trains both models; with the shipped design it then compares them with the
    shipped ones (``shipped_comparison``).

    Args:
        out_dir: destination; gets `cohort3d/` and `cohort2d/`.
        seed: random seed of the cohort and of the models' training.
        n_test: test subjects in total (a multiple of 4, equally split over the
            class x site cells); None = 80 (quick: 12).
        quick: tiny grids, few subjects, one epoch: for tests, takes seconds.
        progress: called with one line of text per step, for a progress display.
        device: training device; None = CUDA when available, else CPU.
        train: synthesise the training splits and train the models even when shipped ones apply.

    Returns:
        Summary: per cohort the manifest, subject count, per-model training time and
        per-cell test accuracy, and the shortcut verdict; plus total seconds.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"`seed` must be an int in [0, inf). Got {seed!r} instead.")
    design = _checked_design(quick, n_test)
    report = progress or (lambda message: None)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    summary: dict[str, Any] = {"out_dir": str(out_dir), "seed": seed, "quick": quick}
    specs = QUICK_COHORTS if quick else FULL_COHORTS
    shipped = {spec.name: not train and not quick and seed == 0 and design == FULL_DESIGN and has_shipped(spec.name)
               for spec in specs}
    # every cohort is written before any model runs: the writers fork, and a process
    # should fork before PyTorch starts its thread pool
    cohorts = {spec.name: write_cohort(out_dir / spec.name, spec, design, seed, report,
                                       ("test",) if shipped[spec.name] else None) for spec in specs}
    for spec in specs:
        folder, use_shipped, cohort = out_dir / spec.name, shipped[spec.name], cohorts[spec.name]
        if use_shipped:
            check = install_shipped(folder, spec, device, report)
        else:
            check = train_and_check(folder, spec, seed, device, report)
            if not quick and seed == 0 and design == FULL_DESIGN:
                check["shipped_comparison"] = compare_with_shipped(folder, spec, check)
        summary[spec.name] = {
            **cohort, "trained": check["trained"], "shortcut": check["verdict"],
            "models": {kind: {k: v for k, v in m.items()} for kind, m in check["models"].items()},
            "shortcut_check": str(folder / "shortcut_check.json"),
            "models_source": "shipped" if use_shipped else "trained",
            **({"shipped_comparison": check["shipped_comparison"]} if "shipped_comparison" in check else {}),
        }
    summary["shortcut_holds"] = all(summary[s.name]["shortcut"]["holds"] for s in specs)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary
