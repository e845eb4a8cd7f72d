"""Putting voxel-wise results back on an image's own stored grid and affine.

A map computed on the preprocessed grid (affine ``A_pre``) is resampled onto the native
grid (affine ``A_nat``, shape ``S_nat``): each native voxel ``v`` sits at world point
``A_nat @ v``, i.e. at preprocessed voxel ``inv(A_pre) @ A_nat @ v``, where the map is
interpolated (linear; zero outside the preprocessed field of view). This holds for any
chain of MONAI transforms that tracks the affine (orientation, spacing, crop, pad, resize).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from xaudit.core.outputs import atomic_path, write_bytes

try:  # ISA-L's deflate (python-isal): 5-6x zlib's speed at level 1 on attribution maps, the same size
    from isal import igzip as _gzip
except ImportError:  # no wheel for this platform: the standard library's zlib
    import gzip as _gzip


def resample_between_grids(
    volume: torch.Tensor,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Resample ``volume`` (``*S_src``) from one voxel grid onto another.

    Args:
        volume: 2D or 3D tensor on the source grid.
        src_affine: ``(D+1, D+1)`` voxel-to-world affine of the source grid.
        dst_affine: affine of the destination grid.
        dst_shape: spatial shape of the destination grid.
        mode: "bilinear" (trilinear in 3D) or "nearest".

    Returns:
        float32 tensor of shape ``dst_shape`` on ``volume``'s device.
    """
    dims = volume.ndim
    if tuple(volume.shape) == tuple(dst_shape) and np.allclose(src_affine, dst_affine, atol=1e-5):
        return volume.float()
    device = volume.device
    # native voxel index -> source voxel index, as one affine
    mapping = torch.as_tensor(np.linalg.inv(src_affine) @ dst_affine, dtype=torch.float64, device=device)
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in dst_shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*S_dst, D)
    src = grid @ mapping[:dims, :dims].T + mapping[:dims, dims]
    del grid
    # grid_sample wants (x, y, z) = (last, ..., first) axis, normalised to [-1, 1]
    sizes = torch.tensor(volume.shape, dtype=torch.float64, device=device)
    norm = (2.0 * src / torch.clamp(sizes - 1, min=1) - 1.0).flip(-1).float()
    del src
    out = F.grid_sample(
        volume.float()[None, None],
        norm[None],
        mode="bilinear" if mode != "nearest" else "nearest",
        padding_mode="zeros",
        align_corners=True,
    )
    return out[0, 0]


def write_volume_like(data: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    """Write ``data`` as float32 NIfTI on exactly ``reference``'s grid and affine.

    The reference's header (sform/qform codes, units) is kept; the data shape is
    reshaped to the reference's full shape (e.g. a 2D map into an ``(X, Y, 1)`` file).
    """
    shape = tuple(reference.shape[: max(data.ndim, len(reference.shape))])
    if len(reference.shape) > data.ndim:
        data = data.reshape(tuple(reference.shape[: data.ndim]) + (1,) * (len(reference.shape) - data.ndim))
        shape = data.shape
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), reference.affine, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    sform, scode = reference.header.get_sform(coded=True)
    qform, qcode = reference.header.get_qform(coded=True)
    image.set_sform(reference.affine if sform is None else sform, int(scode) if scode else 2)
    image.set_qform(reference.affine if qform is None else qform, int(qcode) if qcode else 2)
    return save_image(image, path)


def write_volume(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write float32 NIfTI with a given ``(D+1)x(D+1)`` or 4x4 affine (dataset-level maps)."""
    if affine.shape[0] == 3:
        full = np.eye(4)
        full[:2, :2] = affine[:2, :2]
        full[:2, 3] = affine[:2, 2]
        affine = full
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.set_sform(affine, 2)
    image.set_qform(affine, 2)
    return save_image(image, path)


def downsample_affine(affine: np.ndarray, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]) -> np.ndarray:
    """The affine of a grid that covers the same field of view with ``dst_shape`` voxels.

    Matches ``F.interpolate(..., align_corners=False)``: voxel centres are scaled about
    the field-of-view corners.
    """
    dims = len(src_shape)
    scale = np.array(src_shape, dtype=float) / np.array(dst_shape, dtype=float)
    step = np.eye(dims + 1)
    step[:dims, :dims] = np.diag(scale)
    step[:dims, dims] = (scale - 1.0) / 2.0
    return affine @ step


def downsample_volumes(volumes: torch.Tensor, largest: int) -> np.ndarray:
    """``(N, *S)`` -> float32 ``(N, *S')`` with no side above ``largest`` (area averaging).

    Every side is divided by the same integer factor, so the small grid keeps the voxel
    aspect ratio; `downsample_affine` gives its affine.
    """
    shape = volumes.shape[1:]
    factor = max(1, int(np.ceil(max(shape) / largest)))
    if factor == 1:
        return volumes.float().numpy()
    target = tuple(max(1, s // factor) for s in shape)
    pool = F.adaptive_avg_pool3d if len(shape) == 3 else F.adaptive_avg_pool2d
    return pool(volumes.float()[:, None], target)[:, 0].numpy()


def nifti_bytes(image: nib.Nifti1Image, path: Path | str) -> bytes:
    """The bytes of ``image`` as the file ``path`` (``.nii`` or ``.nii.gz``).

    The same file ``nib.save`` writes, but a ``.nii.gz`` is compressed with ISA-L's deflate
    at level 1 instead of zlib's: gzip members any reader decompresses, with a zero mtime as
    nibabel's (the same image gives the same bytes). Measured on the demo's 40x48x40 float32
    maps: 1.3-1.7 ms a map against 8.4-9.2 ms, 0.578 of the raw size against 0.584; the
    per-subject pass writes one map per method and subject, on the threads that share the
    CPU with the attribution methods.
    """
    raw = image.to_bytes()
    return _gzip.compress(raw, compresslevel=1, mtime=0) if str(path).lower().endswith(".gz") else raw


def save_image(image: nib.Nifti1Image, path: Path | str) -> Path:
    """``nib.save(image, path)`` for a ``.nii`` or ``.nii.gz`` path, atomically (`nifti_bytes`)."""
    name = str(path)
    if name.lower().endswith((".nii", ".nii.gz")):
        return write_bytes(path, nifti_bytes(image, name))
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)
