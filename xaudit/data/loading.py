"""Reading images with MONAI and preprocessing them as the model expects.

MONAI's MetaTensor carries the affine through every spatial transform, so after
preprocessing we know, for each model-input voxel, where it sits in the scanner's world
space; `xaudit.data.native` uses that to put results back on the stored grid.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import (
    Compose,
    LoadImage,
    NormalizeIntensity,
    Orientation,
    Resize,
    ResizeWithPadOrCrop,
    ScaleIntensity,
    Spacing,
)

from xaudit.data.manifest import DEFAULT_MAX_IMAGE_BYTES, Subject
from xaudit.config.user_code import import_object
from xaudit.errors import ConfigError, DataError, first_line

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class LoadedImage:
    """A preprocessed model input and where its voxels sit in world space.

    Attributes:
        tensor: float32 ``(C, *spatial)``.
        affine: ``(D+1, D+1)`` voxel-to-world affine of the preprocessed grid.
        before_intensity: the same voxels before the intensity normalisation (what the
            interventions work on), when asked for and the preprocessing is xaudit's own.
    """

    tensor: torch.Tensor
    affine: np.ndarray
    before_intensity: torch.Tensor | None = None


class Preprocess:
    """xaudit's preprocessing: the spatial steps (orientation, spacing, size), then the intensity one."""

    def __init__(self, spatial: list, intensity: list):
        self.spatial, self.intensity = Compose(spatial), (Compose(intensity) if intensity else None)

    def __call__(self, image):
        out = self.spatial(image)
        return self.intensity(out) if self.intensity is not None else out


def build_transforms(tcfg, spatial_dims: int):
    """The configured MONAI preprocessing, applied to a channel-first MetaTensor.

    Args:
        tcfg: `xaudit.config.TransformsConfig`.
        spatial_dims: 2 or 3.

    Returns:
        A callable: a `Preprocess` (MONAI ``Compose`` of the spatial steps, then of the
        intensity step), or the user's own transform.
    """
    if tcfg.python:
        return import_object(tcfg.python, "data.transforms.python")()
    steps, intensity = [], []
    if tcfg.orientation:
        steps.append(Orientation(axcodes=tcfg.orientation[:spatial_dims], labels=None))
    if tcfg.spacing:
        _check_len(tcfg.spacing, spatial_dims, "data.transforms.spacing")
        steps.append(Spacing(pixdim=tcfg.spacing, mode="bilinear"))
    if tcfg.spatial_size:
        _check_len(tcfg.spatial_size, spatial_dims, "data.transforms.spatial_size")
        size = list(tcfg.spatial_size)
        steps.append(ResizeWithPadOrCrop(size) if tcfg.size_mode == "pad_crop" else Resize(size, mode="trilinear" if spatial_dims == 3 else "bilinear"))
    if tcfg.intensity == "zscore":
        intensity.append(NormalizeIntensity(channel_wise=True))
    elif tcfg.intensity == "zscore_nonzero":
        intensity.append(NormalizeIntensity(nonzero=True, channel_wise=True))
    elif tcfg.intensity == "minmax":
        intensity.append(ScaleIntensity(channel_wise=True))
    return Preprocess(steps, intensity)


def zscore_batch(images: torch.Tensor, nonzero: bool = False) -> torch.Tensor:
    """``data.transforms.intensity: zscore`` (or ``zscore_nonzero``) of a whole batch at once.

    What MONAI's ``NormalizeIntensity(channel_wise=True[, nonzero=True])`` gives one image at a
    time (its population sd, a zero sd taken as 1; with ``nonzero``, statistics over the
    non-zero voxels and only those changed, a channel without any left as it is), to float32
    rounding (tested); a constant channel maps to 0 (`_divisor`). MONAI's costs 0.8-1.0 ms an
    image at 40x48x40, its MetaTensor mostly: 1.3 s of the demo's interventions stage, which
    normalises some 700 intervened images.

    Args:
        images: ``(B, C, *spatial)``.

    Returns:
        float32 ``(B, C, *spatial)``, a new tensor.
    """
    x = images.float()
    dims = tuple(range(2, x.ndim))
    if not nonzero:
        mean = x.mean(dim=dims, keepdim=True)
        sd = x.std(dim=dims, keepdim=True, unbiased=False)
        return (x - mean) / _divisor(sd, mean)
    inside = x != 0
    count = inside.sum(dim=dims, keepdim=True).clamp_min(1)
    mean = torch.where(inside, x, 0.0).sum(dim=dims, keepdim=True) / count
    sd = torch.where(inside, (x - mean) ** 2, 0.0).sum(dim=dims, keepdim=True).div(count).sqrt()
    return torch.where(inside, (x - mean) / _divisor(sd, mean), x)


def _divisor(sd: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The sd, or 1 for a constant channel. A constant float32 cannot always represent exactly
    (0.1) leaves an sd of rounding error (~1e-8) that MONAI divides by, giving +-1 depending on
    the summation order; here such a channel maps to 0 in any batch."""
    return torch.where(sd <= 1e-6 * mean.abs(), torch.ones_like(sd), sd)


def _check_len(values, spatial_dims: int, key: str) -> None:
    if len(values) != spatial_dims:
        raise ConfigError(f"`{key}` needs {spatial_dims} values for {spatial_dims}D images. Got {list(values)} instead.")


_loader = LoadImage(image_only=True, ensure_channel_first=True, reader="NibabelReader", dtype=np.float32)


def check_file(path) -> None:
    """The path names a regular file (a pipe or ``/dev/zero`` would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; fix the path in the manifest") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a folder, pipe or device); point the manifest at a NIfTI file")


def check_header(path, spatial_dims: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> nib.Nifti1Image:
    """Everything a header can tell before a voxel is read: size, voxel sizes, affine.

    Raises:
        DataError: not a regular file, an unreadable header, an image whose voxels (shape x
            bytes per voxel, at least 4 as it is read as float32) exceed ``max_bytes``
            (``data.max_image_gb``), zero/negative/NaN voxel sizes, a NaN or singular affine.
    """
    check_file(path)
    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        itemsize = np.dtype(img.get_data_dtype()).itemsize
        zooms = _raw_pixdims(path, img)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any reader failure
        raise DataError(f"{path}: unreadable NIfTI header ({first_line(exc, 150)}); re-export the file") from None
    size = int(np.prod(shape, dtype=object)) * max(itemsize, 4)
    if size > max_bytes:
        raise DataError(
            f"{path}: the header declares {shape} voxels of {img.get_data_dtype()} ({size / 2**30:.1f} GiB in memory),"
            f" above `data.max_image_gb` = {max_bytes / 2**30:g}; raise it (--set data.max_image_gb=...) only if"
            " the image is real")
    spatial = zooms[:spatial_dims]
    if not all(np.isfinite(z) and z > 0 for z in spatial):
        raise DataError(f"{path}: voxel sizes (pixdim) {tuple(spatial)} must be positive numbers; fix the header")
    block = to_affine_nd(spatial_dims, affine)[:spatial_dims, :spatial_dims] if np.isfinite(affine).all() else None
    singular = block is None or np.linalg.svd(block, compute_uv=False).min() <= 1e-6 * max(np.abs(block).max(), 1e-30)
    if singular:
        raise DataError(f"{path}: the affine (voxel to world) is {'NaN/Inf' if block is None else 'singular'};"
                        " fix the sform/qform of the header")
    return img


def _raw_pixdims(path, img) -> list[float]:
    """Voxel sizes as stored: nibabel quietly reads a zero pixdim as 1 mm."""
    header_class = type(img.header)
    if "pixdim" not in getattr(header_class, "template_dtype", np.dtype([])).names:
        return [float(z) for z in img.header.get_zooms()]
    with nib.openers.ImageOpener(str(path)) as fh:
        raw = header_class.from_fileobj(fh, check=False)
    return [float(z) for z in raw["pixdim"][1: 1 + len(img.shape)]]


def read_channel(path, spatial_dims: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> MetaTensor:
    """Read one NIfTI image as a channel-first MetaTensor with ``spatial_dims`` dims."""
    name = str(path)
    if not name.endswith(NIFTI_SUFFIXES):
        raise DataError(f"{name}: not a NIfTI file (.nii or .nii.gz expected)")
    check_header(path, spatial_dims, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _loader(name)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error for this file
        raise DataError(f"{name}: cannot read image ({type(exc).__name__}: {first_line(exc, 200)})") from None
    while img.ndim - 1 > spatial_dims and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim - 1 != spatial_dims:
        raise DataError(f"{name}: image has shape {tuple(img.shape[1:])}, expected a {spatial_dims}D image"
                        + shape_hint(tuple(img.shape[1:]), spatial_dims))
    if any(s < 2 for s in img.shape[1:]):
        raise DataError(f"{name}: image shape {tuple(img.shape[1:])} is too small to audit")
    return img


def check_voxels(path, array: torch.Tensor) -> None:
    """NaN/Inf or constant images cannot be audited meaningfully."""
    if not torch.isfinite(array).all():
        bad = int((~torch.isfinite(array)).sum())
        raise DataError(f"{path}: {bad} voxel(s) are NaN or Inf; fix or mask the image")
    if float(array.max()) == float(array.min()):
        raise DataError(f"{path}: image is constant ({float(array.max())}); nothing to audit")


def load_subject(subject: Subject, transforms, spatial_dims: int, before_intensity: bool = False) -> LoadedImage:
    """Read every channel of a subject, stack them, preprocess.

    ``before_intensity``: also keep the image before the intensity step (a `Preprocess` only).

    Raises:
        DataError: naming the file and what is wrong.
    """
    channels = [read_channel(p, spatial_dims, subject.max_image_bytes) for p in subject.images]
    first = channels[0]
    for path, ch in zip(subject.images[1:], channels[1:]):
        if ch.shape[1:] != first.shape[1:] or not np.allclose(np.asarray(ch.affine), np.asarray(first.affine), atol=1e-3):
            raise DataError(f"{path}: channel grid differs from {subject.images[0]}; resample channels to one grid first")
    for path, ch in zip(subject.images, channels):
        check_voxels(path, ch)
    image = first if len(channels) == 1 else MetaTensor(torch.cat([c.as_tensor() for c in channels]), meta=first.meta)
    before = None
    try:
        if before_intensity and isinstance(transforms, Preprocess):
            out = transforms.spatial(image)
            if transforms.intensity is not None:
                before = _plain_float(out).clone()  # MONAI's NormalizeIntensity works in place
                out = transforms.intensity(out)
        else:
            out = transforms(image)
    except Exception as exc:  # noqa: BLE001 - MONAI names the failing transform in its message
        raise DataError(f"{subject.images[0]}: preprocessing failed: {first_line(exc, 300)}") from None
    affine = out.affine if isinstance(out, MetaTensor) else image.affine
    affine = to_affine_nd(spatial_dims, np.asarray(affine, dtype=np.float64))
    tensor = _plain_float(out)
    if before_intensity and isinstance(transforms, Preprocess) and transforms.intensity is None:
        before = tensor  # no intensity step: the same voxels
    return LoadedImage(tensor=tensor, affine=affine, before_intensity=before)


def _plain_float(image) -> torch.Tensor:
    return torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image, dtype=torch.float32).contiguous()


def native_grid(path, spatial_dims: int) -> tuple[np.ndarray, tuple[int, ...], nib.Nifti1Image]:
    """The stored grid of an image: ``(D+1)x(D+1)`` affine, spatial shape, nibabel image."""
    img = nib.load(str(path))
    shape = tuple(int(s) for s in img.shape[:spatial_dims])
    return to_affine_nd(spatial_dims, np.asarray(img.affine, dtype=np.float64)), shape, img


def read_mask(path, spatial_dims: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> np.ndarray:
    """A mask on its stored grid as a boolean array (non-zero = inside)."""
    check_header(path, spatial_dims, max_bytes)
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read mask ({type(exc).__name__}: {first_line(exc, 200)})") from None
    while data.ndim > spatial_dims and data.shape[-1] == 1:
        data = data[..., 0]
    return np.asarray(data) > 0


def infer_spatial_dims(data_cfg, model_cfg, first_image) -> int:
    """2 or 3: from the config, the MONAI network's args, or the first image."""
    if data_cfg.spatial_dims:
        return int(data_cfg.spatial_dims)
    if model_cfg.monai is not None and "spatial_dims" in model_cfg.monai.args:
        return int(model_cfg.monai.args["spatial_dims"])
    try:
        shape = [s for s in nib.load(str(first_image)).shape]
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{first_image}: cannot read image header ({first_line(exc, 200)})") from None
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) not in (2, 3):
        raise DataError(f"{first_image}: image has shape {tuple(shape)}; xaudit audits 2D or 3D images"
                        + (shape_hint(tuple(shape), 3) if len(shape) > 3 else ""))
    return len(shape)


def shape_hint(shape: tuple[int, ...], spatial_dims: int) -> str:
    """What to do with an image whose dimensions are not the audit's ``spatial_dims`` (a clause to append)."""
    if len(shape) > 3:
        volumes = int(np.prod(shape[3:]))
        return (f": it holds {volumes} 3D volumes (a time series or stacked channels). Write each volume"
                " to its own file and list them as input channels (`data.image_column: [first, second]`),"
                " or give one volume per manifest row")
    if len(shape) != spatial_dims:
        return f"; a {spatial_dims}D model needs {spatial_dims}D images"
    return ""
