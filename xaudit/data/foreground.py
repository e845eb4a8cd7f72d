"""Foreground (brain/body) masks and atlas labels on the model-input grid.

Masks come from the manifest when given, otherwise are estimated.

Used to ask where the model looks (inside the anatomy, or in the background and borders
where scanner artefacts live) and for the masked-input tests.
"""

from __future__ import annotations

import numpy as np
import torch

from xaudit.data.masks import foreground_from_image
from xaudit.data.loading import LoadedImage, check_header, native_grid, read_mask
from xaudit.data.manifest import Subject
from xaudit.data.native import resample_between_grids
from xaudit.errors import DataError


def preprocessed_foreground(subject: Subject, loaded: LoadedImage, spatial_dims: int) -> torch.Tensor:
    """The subject's foreground on the model-input grid (bool tensor ``(*spatial)``)."""
    shape = tuple(loaded.tensor.shape[1:])
    if subject.mask is not None:
        mask_affine, _mask_shape, _img = native_grid(subject.mask, spatial_dims)
        mask = torch.from_numpy(read_mask(subject.mask, spatial_dims, subject.max_image_bytes).astype(np.float32))
        on_grid = resample_between_grids(mask, mask_affine, loaded.affine, shape, mode="nearest") > 0.5
        if not on_grid.any():
            what = "is empty" if not mask.any() else "does not overlap the image (compare the two files' affines)"
            raise DataError(f"mask {subject.mask} of subject {subject.subject_id!r} {what}: every 'where the model "
                            "looks' number would be wrong. Fix the mask, or leave the mask column empty for this "
                            "row to have the foreground estimated from the image.")
        return on_grid
    return torch.from_numpy(foreground_from_image(loaded.tensor[0].numpy()))


def atlas_on_grid(atlas_path, loaded: LoadedImage, spatial_dims: int) -> torch.Tensor:
    """An integer label map (world space) on the subject's model-input grid (nearest)."""
    check_header(atlas_path, spatial_dims)  # before its voxels are read
    atlas_affine, _shape, image = native_grid(atlas_path, spatial_dims)
    labels = np.asarray(image.dataobj)
    while labels.ndim > spatial_dims and labels.shape[-1] == 1:
        labels = labels[..., 0]
    volume = torch.from_numpy(np.rint(labels).astype(np.float32))
    shape = tuple(loaded.tensor.shape[1:])
    return resample_between_grids(volume, atlas_affine, loaded.affine, shape, mode="nearest").round().long()
