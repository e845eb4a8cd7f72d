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
from functools import cached_property
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
    """A subject's first image and ROI masks, read once (on first use) for all its methods' maps."""

    def __init__(self, subject, dims: int):
        self.subject, self.dims = subject, dims

    @cached_property
    def image(self) -> tuple[np.ndarray, np.ndarray] | None:
        return _read(self.subject.images[0], self.dims) if self.subject.images else None

    @cached_property
    def rois(self) -> dict[str, np.ndarray]:
        rois = {}
        for name, roi_path in (self.subject.rois or {}).items() if self.image is not None else ():
            roi = _read(roi_path, self.dims)
            if roi is not None and roi[0].shape == self.image[0].shape:
                rois[name] = roi[0] > 0
        return rois

    def with_map(self, run_dir, method: str, layout: str = "xaudit") -> NativeVolumes | None:
        """The subject's attribution volume of ``method`` over this scan, or None."""
        return self.over(attribution_file(run_dir, layout, self.subject, method))

    def over(self, path: Path) -> NativeVolumes | None:
        """The attribution volume at ``path`` over this scan, or None (absent, unreadable, another grid)."""
        if not Path(path).is_file() or self.image is None:
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
    return SubjectScan(subject, dims).with_map(run_dir, method, layout)
