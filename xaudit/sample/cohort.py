"""Per-subject anatomy: a deformed template, tissue contrast variation and MS-like lesions.

Each subject starts from the ICBM152 template (`xaudit.sample.anatomy`), warped by a
smooth random displacement field (a few millimetres, as in the random elastic
deformations of Simard et al., ICDAR 2003, used for MRI augmentation since), with its own
grey/white-matter contrast. Lesion subjects get a few white-matter hyperintense ellipsoids,
the synthetic-lesion recipe of lesion-simulation studies such as Salem et al., "A
supervised framework with intensity subtraction and deformation field features for the
detection of new T2-w lesions in multiple sclerosis", NeuroImage: Clinical 17, 2018.
The scanner signature is added afterwards by `xaudit.sample.scanner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from xaudit.sample.anatomy import Anatomy


@dataclass(frozen=True)
class AnatomyParams:
    """How much subjects differ from the template, and what their lesions look like.

    Attributes:
        warp_mm: standard deviation of the displacement at its control points (mm).
        warp_spacing_mm: distance between the displacement field's control points (mm).
        tissue_contrast_sd: standard deviation of the per-subject GM and WM gain.
        lesions: (min, max) number of lesions of a lesion subject, inclusive.
        lesion_radius_mm: (min, max) semi-axis length of a lesion ellipsoid (mm).
        lesion_contrast: (min, max) lesion brightness over white matter, as a fraction
            of the median white-matter intensity.
    """

    warp_mm: float = 3.0
    warp_spacing_mm: float = 24.0
    tissue_contrast_sd: float = 0.05
    lesions: tuple[int, int] = (3, 6)
    lesion_radius_mm: tuple[float, float] = (4.0, 8.0)
    lesion_contrast: tuple[float, float] = (0.3, 0.5)


@dataclass(frozen=True)
class SubjectAnatomy:
    """One subject before the scanner: noise-free intensities and its masks.

    Attributes:
        image: float64 intensities (template scale: median white matter = 1).
        brain_mask: uint8 0/1 brain mask.
        lesion_mask: uint8 0/1 lesion mask (all zero for a healthy subject).
    """

    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray


@lru_cache(maxsize=32)
def _spline_matrix(n_fine: int, n_coarse: int) -> np.ndarray:
    """(n_fine, n_coarse) weights of cubic-spline interpolation from a coarse 1D grid."""
    coarse_x = np.linspace(0.0, 1.0, n_coarse)
    fine_x = (np.arange(n_fine) + 0.5) / n_fine
    return CubicSpline(coarse_x, np.eye(n_coarse), bc_type="natural")(fine_x)


def smooth_random_field(shape: tuple[int, ...], voxel_mm: float, spacing_mm: float,
                        rng: np.random.Generator) -> np.ndarray:
    """A smooth zero-mean, unit-variance random field: cubic upsampling of a coarse grid.

    Args:
        shape: output grid shape.
        voxel_mm: voxel size in millimetres.
        spacing_mm: distance between the coarse grid's random values (mm).
        rng: random generator.

    Returns:
        float64 array of `shape`.
    """
    coarse_shape = [max(2, int(np.ceil(n * voxel_mm / spacing_mm)) + 1) for n in shape]
    field = rng.standard_normal(coarse_shape)
    # separable spline matrices: ~50x faster than ndimage.zoom(order=3) on these sizes
    for axis, (n_fine, n_coarse) in enumerate(zip(shape, coarse_shape)):
        weights = _spline_matrix(n_fine, n_coarse)
        field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    return (field - field.mean()) / (field.std() + 1e-12)


def random_warp_coordinates(shape: tuple[int, ...], voxel_mm: float, params: AnatomyParams,
                            rng: np.random.Generator) -> np.ndarray:
    """Sampling coordinates of a smooth random deformation, for `ndimage.map_coordinates`.

    Returns:
        float64 array (ndim, *shape): identity grid plus a displacement in voxels.
    """
    grid = np.indices(shape, dtype=np.float64)
    for axis in range(len(shape)):
        field = smooth_random_field(shape, voxel_mm, params.warp_spacing_mm, rng)
        grid[axis] += field * params.warp_mm / voxel_mm
    return grid


def _random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    return q * np.sign(np.diag(r))


def lesion_profile(shape: tuple[int, ...], centre: np.ndarray, radii_vox: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """A soft-edged, randomly oriented ellipsoid in [0, 1] (0.5 on its surface).

    Args:
        shape: grid shape.
        centre: centre in voxel coordinates.
        radii_vox: semi-axes in voxels, one per axis.
        rng: random generator (for the orientation).
    """
    rotation = _random_rotation(len(shape), rng)
    # evaluate only in a box around the centre: the profile is ~0 two radii away
    reach = 2.0 * float(radii_vox.max()) + 2.0
    lower = [max(0, int(np.floor(c - reach))) for c in centre]
    upper = [min(n, int(np.ceil(c + reach)) + 1) for c, n in zip(centre, shape)]
    box = tuple(slice(lo, hi) for lo, hi in zip(lower, upper))
    box_shape = tuple(hi - lo for lo, hi in zip(lower, upper))
    offsets = (np.indices(box_shape, dtype=np.float64).reshape(len(shape), -1)
               + np.asarray(lower, dtype=np.float64)[:, None] - centre[:, None])
    local = rotation.T @ offsets
    distance = np.sqrt(((local / radii_vox[:, None]) ** 2).sum(axis=0)).reshape(box_shape)
    # a logistic edge about one voxel wide: partial-volume blur, as in real lesions
    steepness = 3.0 * float(radii_vox.mean())
    profile = np.zeros(shape)
    profile[box] = 1.0 / (1.0 + np.exp(np.clip((distance - 1.0) * steepness, -50, 50)))
    return profile


def add_lesions(image: np.ndarray, wm: np.ndarray, voxel_mm: float, params: AnatomyParams,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint a few hyperintense ellipsoids into deep white matter.

    Args:
        image: subject intensities (not modified).
        wm: the subject's (deformed) white-matter probability.
        voxel_mm: voxel size in millimetres.
        params: lesion count, size and contrast ranges.
        rng: random generator.

    Returns:
        (image with lesions, uint8 lesion mask). The mask always holds at least one voxel.
    """
    candidates = np.argwhere(wm > 0.9)
    if candidates.size == 0:  # tiny grids: fall back to the most white-matter-like voxels
        candidates = np.argwhere(wm >= np.quantile(wm, 0.99))
    # lesions stay inside white matter: their brightness fades with its probability
    confinement = np.clip((wm - 0.3) / 0.4, 0.0, 1.0)
    lesion = np.zeros_like(image)
    for _ in range(int(rng.integers(params.lesions[0], params.lesions[1] + 1))):
        centre = candidates[rng.integers(len(candidates))].astype(np.float64)
        centre += rng.uniform(-0.5, 0.5, size=centre.shape)
        radii = rng.uniform(*params.lesion_radius_mm, size=image.ndim) / voxel_mm
        contrast = rng.uniform(*params.lesion_contrast)
        lesion = np.maximum(lesion, contrast * lesion_profile(image.shape, centre, radii, rng))
    lesion *= confinement
    peak = float(lesion.max())
    mask = lesion >= 0.5 * peak if peak > 0 else np.zeros(image.shape, dtype=bool)
    mask &= lesion > 0.1
    if not mask.any():
        mask = lesion == peak
    return image + lesion, mask.astype(np.uint8)


def synthesize_anatomy(anatomy: Anatomy, has_lesions: bool, params: AnatomyParams,
                       rng: np.random.Generator) -> SubjectAnatomy:
    """One subject's noise-free image and masks on the anatomy's grid.

    Args:
        anatomy: template on the working grid.
        has_lesions: whether to add MS-like lesions.
        params: variation and lesion parameters.
        rng: random generator; the same state gives the same subject.

    Returns:
        A `SubjectAnatomy`.
    """
    coords = random_warp_coordinates(anatomy.shape, anatomy.voxel_mm, params, rng)

    def warp(volume: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0)

    # tissue contrast on the template grid, then one warp for image, WM and brain
    gain_gm, gain_wm = params.tissue_contrast_sd * rng.standard_normal(2)
    image = warp(anatomy.t1 * (1.0 + gain_gm * anatomy.gm + gain_wm * anatomy.wm))
    wm, brain = warp(anatomy.wm), warp(anatomy.brain)
    if has_lesions:
        image, lesion_mask = add_lesions(image, wm, anatomy.voxel_mm, params, rng)
    else:
        lesion_mask = np.zeros(anatomy.shape, dtype=np.uint8)
    brain_mask = (brain > 0.5).astype(np.uint8)
    return SubjectAnatomy(image=image, brain_mask=brain_mask, lesion_mask=lesion_mask)
