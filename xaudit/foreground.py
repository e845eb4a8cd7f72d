"""Foreground (brain/body) masks: from the manifest when given, otherwise estimated.

Used to ask where the model looks (inside the anatomy, or in the background and borders
where scanner artefacts live) and for the masked-input tests.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from xaudit.data.loading import LoadedImage, native_grid, read_mask
from xaudit.data.manifest import Subject
from xaudit.data.native import resample_between_grids


def estimate_foreground(image: np.ndarray) -> np.ndarray:
    """Otsu threshold, largest connected component, holes filled.

    Args:
        image: 2D or 3D intensity array.

    Returns:
        Boolean mask of the same shape (all True when no threshold separates anything).
    """
    from skimage.filters import threshold_otsu

    finite = np.nan_to_num(np.asarray(image, dtype=np.float32))
    if finite.max() == finite.min():
        return np.ones(finite.shape, dtype=bool)
    mask = finite > threshold_otsu(finite)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    return mask if mask.any() else np.ones(finite.shape, dtype=bool)


def preprocessed_foreground(subject: Subject, loaded: LoadedImage, spatial_dims: int) -> torch.Tensor:
    """The subject's foreground on the model-input grid (bool tensor ``(*spatial)``)."""
    shape = tuple(loaded.tensor.shape[1:])
    if subject.mask is not None:
        mask_affine, _mask_shape, _img = native_grid(subject.mask, spatial_dims)
        mask = torch.from_numpy(read_mask(subject.mask, spatial_dims).astype(np.float32))
        return resample_between_grids(mask, mask_affine, loaded.affine, shape, mode="nearest") > 0.5
    return torch.from_numpy(estimate_foreground(loaded.tensor[0].numpy()))
