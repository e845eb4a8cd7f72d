"""Masks derived from an image itself (numpy only): the foreground when no mask is given."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from xaudit.errors import DataError


def foreground_from_image(img: np.ndarray) -> np.ndarray:
    """Foreground mask of one spatial image: Otsu threshold, largest component, holes filled.

    Otsu (1979, IEEE SMC 9:62) separates the bright head from the dark air; keeping the
    largest connected component drops noise specks, and hole filling restores dark
    enclosed structures (ventricles) that belong to the anatomy.

    Args:
        img: spatial intensities (2D or 3D, one channel).

    Returns:
        Boolean mask of ``img``'s shape.

    Raises:
        DataError: for a constant or non-finite image (no foreground can be found).
    """
    img = np.asarray(img, dtype=float)
    if not np.all(np.isfinite(img)):
        raise DataError("cannot derive a foreground mask: the image has NaN or inf voxels.")
    if img.max() == img.min():
        raise DataError("cannot derive a foreground mask: the image is constant; give a mask instead.")
    mask = img > threshold_otsu(img)
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(components.ravel())[1:]
        mask = components == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)
