"""Source-resolution volumes for the figures: a subject's attribution NIfTI over its own image.

The dataset-level statistics use the downsampled maps of the per-subject records (32 voxels
on the longest side); a reader judging one subject's map needs it at the resolution of the
scan. The run writes ``attributions/<method>/<id>.nii.gz`` (or its BIDS name) on the grid of the subject's first
image, so the two can be drawn together voxel for voxel. Reading is best effort: a missing
or unreadable file gives None and the figure falls back to the record's downsampled map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from xaudit.core.bids import attribution_file

log = logging.getLogger("xaudit")

MAX_VOXELS = 400 ** 3  # larger volumes are not loaded for a figure


@dataclass
class NativeVolumes:
    """A subject's anatomy and map on one grid, its affine, and its ROI masks (name -> bool array)."""

    anatomy: np.ndarray
    attribution: np.ndarray
    affine: np.ndarray
    rois: dict[str, np.ndarray]


def _read(path: Path, dims: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        img = nib.load(str(path))
        if int(np.prod(img.shape)) > MAX_VOXELS:
            return None
        data = np.asanyarray(img.dataobj).astype(np.float32)
    except Exception as exc:  # noqa: BLE001 - any reader failure: the figure falls back
        log.debug("report: cannot read %s: %s", path, exc)
        return None
    while data.ndim > dims and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > dims:  # a multi-channel image: its first channel
        data = data[(Ellipsis, *([0] * (data.ndim - dims)))]
    affine = np.asarray(img.affine, dtype=float)
    if dims == 2:
        affine = affine[np.ix_([0, 1, 3], [0, 1, 3])]
    return data, affine


class SubjectScan:
    """A subject's first image and ROI masks, read once for all its methods' maps."""

    def __init__(self, subject, dims: int):
        self.subject, self.dims = subject, dims
        self.image = _read(subject.images[0], dims) if subject.images else None
        self.rois: dict[str, np.ndarray] = {}
        for name, roi_path in (subject.rois or {}).items() if self.image is not None else ():
            roi = _read(roi_path, dims)
            if roi is not None and roi[0].shape == self.image[0].shape:
                self.rois[name] = roi[0] > 0

    def with_map(self, run_dir, method: str, layout: str = "xaudit") -> NativeVolumes | None:
        """The subject's attribution volume of ``method`` over this scan, or None."""
        path = attribution_file(run_dir, layout, self.subject, method)
        if self.image is None or not Path(path).is_file():
            return None
        amap = _read(path, self.dims)
        if amap is None or amap[0].shape != self.image[0].shape:
            return None
        return NativeVolumes(self.image[0], amap[0], self.image[1], self.rois)


def load_native(run_dir, subject, method: str, dims: int, layout: str = "xaudit") -> NativeVolumes | None:
    """The subject's attribution volume of ``method`` over its own first image, or None.

    Args:
        run_dir: the `xaudit.core.outputs.RunDirectory`.
        subject: its `xaudit.data.manifest.Subject`.
        method: the attribution method.
        dims: 2 or 3, the spatial dimensions of the cohort.
        layout: the run's ``output_layout`` (where the volume lives).
    """
    path = attribution_file(run_dir, layout, subject, method)
    if not Path(path).is_file() or not subject.images:
        return None
    return SubjectScan(subject, dims).with_map(run_dir, method, layout)
