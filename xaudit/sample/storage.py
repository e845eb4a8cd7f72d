"""Atomic writes of the sample data: a temporary file in the same folder, then `os.replace`.

An interrupted `xaudit sample-data` never leaves a half-written image, manifest or
checkpoint behind, so the next run can trust every file it finds.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from xaudit.data.native import nifti_bytes


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary sibling of `path` (same suffixes), then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)  # keep ".nii.gz" so nibabel compresses the temp file
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix,
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a 2D or 3D array as NIfTI-1 with `affine` as both qform and sform.

    Args:
        path: destination, ending in .nii.gz.
        data: float32 image or uint8 mask.
        affine: 4x4 voxel-to-RAS affine.
    """
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    image.set_qform(affine, code=1)  # 1 = scanner anatomical: plain RAS millimetres
    image.set_sform(affine, code=4)  # 4 = MNI152, which the grid is
    image.header.set_xyzt_units("mm")
    encoded = nifti_bytes(image, path)
    _atomic(path, lambda tmp: tmp.write_bytes(encoded))


def save_csv(path: Path, table: pd.DataFrame) -> None:
    """Write a table as CSV without the index."""
    _atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def save_json(path: Path, payload: dict[str, Any]) -> None:
    """Write a JSON document, indented and with sorted keys for stable diffs."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    _atomic(path, lambda tmp: tmp.write_text(text))


def save_state_dict(path: Path, model: torch.nn.Module) -> None:
    """Save a model's state_dict on CPU, loadable with `torch.load(weights_only=True)`."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    _atomic(path, lambda tmp: torch.save(state, tmp))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON document, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
