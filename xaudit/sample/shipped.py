"""The demo models shipped with xaudit: trained once by `xaudit sample-data --train` (seed 0,
the full design) and kept in ``xaudit/sample/weights/``, so `make demo` needs no training.

``--train`` remakes them from the generator and compares the result with the shipped ones
(`compare_with_shipped`): same per-cell test accuracy, and how far the weights differ.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xaudit.sample import storage
from xaudit.sample.nets import build_network
from xaudit.sample.shortcut import cell_accuracy, shortcut_verdict
from xaudit.sample.train import load_split, predict

WEIGHTS = Path(__file__).resolve().parent / "weights"
KINDS = ("confounded", "control")


def shipped_path(cohort: str, kind: str) -> Path:
    return WEIGHTS / f"{cohort}_model_{kind}.pth"


def shipped_check(cohort: str) -> dict[str, Any] | None:
    """The shortcut check the shipped models got when they were trained (or None)."""
    return storage.read_json(WEIGHTS / f"{cohort}_shortcut_check.json")


def has_shipped(cohort: str) -> bool:
    return all(shipped_path(cohort, kind).is_file() for kind in KINDS) and shipped_check(cohort) is not None


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_network(path: Path, spatial_dims: int, device: torch.device) -> torch.nn.Module:
    """A demo network with the weights of ``path``, in eval mode on ``device``."""
    model = build_network(spatial_dims)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.to(device).eval()


def install_shipped(folder: Path, spec, device: torch.device, report: Callable[[str], None]) -> dict[str, Any]:
    """Copy the shipped models into a cohort folder and run the shortcut check on its test split.

    Returns:
        The content of `shortcut_check.json` (``source: shipped``), with ``matches_shipped``:
        whether every per-cell accuracy equals the one recorded when the models were trained.
    """
    check_path = folder / "shortcut_check.json"
    fingerprint = {"cohort": storage.read_json(folder / "cohort.json"),
                   "shipped": {kind: digest(shipped_path(spec.name, kind)) for kind in KINDS}}
    check = storage.read_json(check_path)
    if check and check.get("fingerprint") == fingerprint and all((folder / f"model_{k}.pth").is_file() for k in KINDS):
        report(f"{spec.name}: shipped models in place, skipped")
        return {**check, "trained": False}
    check_path.unlink(missing_ok=True)
    test_x, _, test_rows = load_split(folder / "manifest.csv", "test", spec.transforms)
    recorded = shipped_check(spec.name) or {}
    models = {}
    for kind in KINDS:
        shutil.copyfile(shipped_path(spec.name, kind), folder / f"model_{kind}.pth")
        model = load_network(folder / f"model_{kind}.pth", len(spec.shape), device)
        cells = cell_accuracy(test_rows, predict(model, test_x, device))
        models[kind] = {**(recorded.get("models", {}).get(kind) or {}), "checkpoint": f"model_{kind}.pth",
                        "source": "shipped", "cells": cells,
                        "test_accuracy": round(sum(c["correct"] for c in cells.values()) / len(test_x), 4)}
    matches = all(models[k]["cells"] == (recorded.get("models", {}).get(k) or {}).get("cells") for k in KINDS)
    verdict = shortcut_verdict(models["confounded"]["cells"], models["control"]["cells"])
    check = {"fingerprint": fingerprint, "models": models, "verdict": verdict, "source": "shipped",
             "matches_shipped": matches, "device": str(device), "torch": torch.__version__}
    storage.save_json(check_path, check)
    report(f"{spec.name}: shipped models installed; shortcut {'holds' if verdict['holds'] else 'DOES NOT hold'}"
           f"{'' if matches else ' (per-cell accuracy differs from the shipped record)'}")
    return {**check, "trained": False}


def compare_with_shipped(folder: Path, spec, check: dict[str, Any]) -> dict[str, Any] | None:
    """How the models just trained in ``folder`` compare with the shipped ones (None: none shipped).

    Returns:
        Per model the largest absolute weight difference, and whether the per-cell test
        accuracy equals the shipped record's.
    """
    if not has_shipped(spec.name):
        return None
    recorded = shipped_check(spec.name) or {}
    out = {}
    for kind in KINDS:
        new = torch.load(folder / f"model_{kind}.pth", weights_only=True)
        old = torch.load(shipped_path(spec.name, kind), weights_only=True)
        diff = max(float((new[k].float() - old[k].float()).abs().max()) for k in old if k in new and old[k].numel())
        out[kind] = {"max_abs_weight_difference": diff,
                     "same_cells": check["models"][kind]["cells"] == recorded["models"][kind]["cells"]}
    return out


def ship(folder: Path, cohort: str) -> None:
    """Copy a freshly trained cohort's models and check into the package (maintainers only)."""
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        shutil.copyfile(folder / f"model_{kind}.pth", shipped_path(cohort, kind))
    shutil.copyfile(folder / "shortcut_check.json", WEIGHTS / f"{cohort}_shortcut_check.json")
