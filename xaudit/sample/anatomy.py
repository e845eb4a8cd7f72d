"""Real anatomy for the sample cohort: the MNI ICBM152 template on a small working grid.

The 2009a nonlinear symmetric ICBM152 T1 template and its grey/white-matter and brain
maps ship inside nilearn, so nothing is downloaded (Fonov et al., "Unbiased average
age-appropriate atlases for pediatric studies", NeuroImage 54, 2011). They are resampled
to a coarse grid (4 mm for the 3D demo, one 2 mm axial slice for the 2D demo) so a small
CNN trains in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from xaudit.errors import DataError

# Centre of the template's brain mask in MNI millimetres; the working grid is centred here.
BRAIN_CENTRE_MM = (0.0, -17.0, 5.0)
# The axial level of the 2D demo: body of the lateral ventricles / centrum semiovale,
# where MS lesions typically sit (periventricular and deep white matter).
SLICE_Z_MM = 24.0


@dataclass(frozen=True)
class Anatomy:
    """Template images on one working grid.

    Attributes:
        t1: T1 intensities scaled so the median white-matter value is 1.
        gm, wm: grey- and white-matter probabilities in [0, 1].
        brain: brain probability in [0, 1].
        affine: 4x4 voxel-to-RAS-millimetre affine of the grid (also for 2D grids,
            where the third column is the slice normal).
        voxel_mm: voxel edge length in millimetres.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    voxel_mm: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.t1.shape)

    @property
    def ndim(self) -> int:
        return self.t1.ndim


def grid_affine(shape: tuple[int, ...], voxel_mm: float, z_mm: float | None = None) -> np.ndarray:
    """The RAS affine of a working grid centred on the template's brain.

    Args:
        shape: grid shape, 3 axes, or 2 axes for an axial slice.
        voxel_mm: isotropic voxel size in millimetres.
        z_mm: for a 2D grid, the slice's MNI z coordinate.

    Returns:
        4x4 float64 affine mapping voxel indices to MNI millimetres (RAS).
    """
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    for axis, size in enumerate(shape):
        affine[axis, 3] = BRAIN_CENTRE_MM[axis] - (size - 1) / 2.0 * voxel_mm
    if len(shape) == 2:
        affine[2, 3] = SLICE_Z_MM if z_mm is None else z_mm
    return affine


@lru_cache(maxsize=1)
def _load_template_images() -> dict[str, object]:
    """The four ICBM152 images bundled with nilearn (2 mm); no network access.

    Cached: the 3D and the 2D cohort both start from them, and loading costs seconds. Loaded
    in four threads (nilearn resamples each from 1 mm, partly outside the GIL): 2.8-3.1 s
    against 3.3-4.0 s one after the other, in a fresh process on 2 cores (alternated x3); the
    written cohort is byte for byte the same.
    """
    from concurrent.futures import ThreadPoolExecutor

    from nilearn import datasets  # heavy import, only when the cohort is generated

    loaders = {"t1": datasets.load_mni152_template, "gm": datasets.load_mni152_gm_template,
               "wm": datasets.load_mni152_wm_template, "brain": datasets.load_mni152_brain_mask}
    try:
        with ThreadPoolExecutor(max_workers=len(loaders), thread_name_prefix="xaudit-template") as pool:
            futures = {name: pool.submit(load, resolution=2) for name, load in loaders.items()}
            return {name: future.result() for name, future in futures.items()}
    except Exception as exc:  # nilearn raises plain OSError/ValueError for broken installs
        raise DataError(
            f"Cannot load the MNI152 template bundled with nilearn: {exc}. "
            "Expected the files in nilearn/datasets/data/; reinstall nilearn."
        ) from exc


def _resample(data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
              shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling onto a coarser 3D grid, with Gaussian anti-aliasing.

    Args:
        data: 3D source volume.
        src_affine, dst_affine: 4x4 voxel-to-world affines.
        shape: destination shape (3D; a 2D slice is a grid of depth 1).
    """
    ratio = abs(dst_affine[0, 0] / src_affine[0, 0])
    if ratio > 1:
        # sigma of a Gaussian matching a box filter of the new voxel width
        data = ndimage.gaussian_filter(data, sigma=0.42 * (ratio - 1) + 1e-6)
    vox_to_vox = np.linalg.inv(src_affine) @ dst_affine
    return ndimage.affine_transform(data, vox_to_vox[:3, :3], offset=vox_to_vox[:3, 3],
                                    output_shape=shape, order=1, mode="constant", cval=0.0)


def load_anatomy(shape: tuple[int, ...], voxel_mm: float) -> Anatomy:
    """The template on a working grid: a 3D volume or, for a 2-axis shape, an axial slice.

    Args:
        shape: (X, Y, Z) for a 3D grid, or (X, Y) for the axial slice at SLICE_Z_MM.
        voxel_mm: isotropic voxel size in millimetres.

    Returns:
        An `Anatomy` whose T1 is scaled to median white matter = 1.
    """
    images = _load_template_images()
    affine = grid_affine(shape, voxel_mm)
    shape3 = tuple(shape) if len(shape) == 3 else (*shape, 1)
    maps = {}
    for name, img in images.items():
        src = np.asarray(img.get_fdata(), dtype=np.float64)
        out = _resample(src, img.affine, affine, shape3)
        maps[name] = np.clip(out.reshape(shape), 0.0, None)
    brain = np.clip(maps["brain"], 0.0, 1.0)
    wm = np.clip(maps["wm"], 0.0, 1.0) * brain
    gm = np.clip(maps["gm"], 0.0, 1.0) * brain
    wm_values = maps["t1"][wm > 0.9]
    scale = float(np.median(wm_values)) if wm_values.size else float(maps["t1"].max())
    t1 = maps["t1"] / scale
    return Anatomy(t1=t1, gm=gm, wm=wm, brain=brain, affine=affine, voxel_mm=float(voxel_mm))
