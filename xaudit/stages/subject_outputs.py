"""Writing one subject's artifacts: native-space volumes, region tables, its record.

Runs on the writer threads of the per-subject pass. The record (``subjects/<id>.npz``)
is written last, so it exists only when everything else of the subject does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from xaudit.analysis.bias.looking import attribution_shares
from xaudit.data.loading import native_grid, read_mask
from xaudit.data.manifest import Subject
from xaudit.data.native import downsample_volumes, resample_between_grids, write_volume_like
from xaudit.core.bids import attribution_file, write_sidecar
from xaudit.core.outputs import RunDirectory, save_record, write_csv


@dataclass
class SubjectOutputs:
    """Where and what to write per subject."""

    run_dir: RunDirectory
    write_maps: bool = True
    border: int = 2
    layout: str = "xaudit"  # or "bids": `xaudit.core.bids`
    method_params: dict = field(default_factory=dict)  # for the BIDS sidecars
    classes: tuple[str, ...] = ()


def write_subject(outputs: SubjectOutputs, subject: Subject, record: dict, spatial_dims: int) -> None:
    """Resample each map onto the subject's stored grid, write it, then the record."""
    native_affine, native_shape, reference = native_grid(subject.images[0], spatial_dims)
    foreground = _native_foreground(subject, record, native_affine, native_shape, spatial_dims)
    rois = {name: _mask_on_grid(path, native_affine, native_shape, spatial_dims) for name, path in subject.rois.items()}
    arrays: dict[str, np.ndarray] = {
        "subject_id": np.array(subject.subject_id),
        "probs": np.asarray(record["probs"], np.float32),
        "logits": np.asarray(record["logits"], np.float32),
        "target": np.array(record["target"]),
        "label": np.array(subject.label),
        "features": np.asarray(record["features"], np.float32),
        "concept_acts": np.asarray(record["concept_acts"], np.float32),
        "concept_grads": np.asarray(record["concept_grads"], np.float32),
        "probs_fg_blanked": np.asarray(record["probs_fg_blanked"], np.float32),
        "probs_bg_blanked": np.asarray(record["probs_bg_blanked"], np.float32),
        "image_small": np.asarray(record["image_small"], np.float16),
        "input_affine": np.asarray(record["affine"], np.float64),
        "input_shape": np.array(record["foreground"].shape),
        "foreground_fraction": np.array(float(foreground.mean())),
    }
    for method, map_pre in record["maps"].items():
        native = resample_between_grids(map_pre, record["affine"], native_affine, native_shape).numpy()
        if outputs.write_maps:
            _write_map(outputs, subject, method, native, reference, int(record["target"]))
        for key, value in attribution_shares(native, foreground, rois, border=outputs.border).items():
            arrays[f"share__{method}__{key}"] = np.array(value, np.float32)
        for key, value in record["stats"][method].items():
            arrays[f"stat__{method}__{key}"] = np.array(value, np.float32)
        arrays[f"map__{method}"] = downsample_volumes(map_pre[None].float(), record["downsample"])[0].astype(np.float16)
        weights = record["regions"].get(method)
        if weights:
            rows = [[int(k), float(v)] for k, v in sorted(weights.items())]
            write_csv(outputs.run_dir.root / "attributions" / method / f"{subject.safe_id}_regions.csv", ["region", "weight"], rows)
    save_record(outputs.run_dir.record_path(subject.safe_id), arrays)


def _write_map(outputs: SubjectOutputs, subject: Subject, method: str, native, reference, target: int) -> None:
    path = write_volume_like(native, reference, attribution_file(outputs.run_dir, outputs.layout, subject, method))
    if outputs.layout == "bids":
        name = outputs.classes[target] if 0 <= target < len(outputs.classes) else str(target)
        write_sidecar(path, method, outputs.method_params.get(method, {}), name, subject.images[0])


def _native_foreground(subject, record, native_affine, native_shape, spatial_dims) -> np.ndarray:
    if subject.mask is not None:
        return _mask_on_grid(subject.mask, native_affine, native_shape, spatial_dims)
    fg = torch.from_numpy(record["foreground"].astype(np.float32))
    return resample_between_grids(fg, record["affine"], native_affine, native_shape, mode="nearest").numpy() > 0.5


def _mask_on_grid(path, affine, shape, spatial_dims) -> np.ndarray:
    mask_affine, mask_shape, _ = native_grid(path, spatial_dims)
    mask = read_mask(path, spatial_dims)
    if tuple(mask_shape) == tuple(shape) and np.allclose(mask_affine, affine, atol=1e-4):
        return mask
    resampled = resample_between_grids(torch.from_numpy(mask.astype(np.float32)), mask_affine, affine, shape, mode="nearest")
    return resampled.numpy() > 0.5
