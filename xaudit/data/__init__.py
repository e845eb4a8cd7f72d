"""Manifest, image loading with MONAI, preprocessing and the way back to native space."""

from xaudit.data.loading import LoadedImage, build_transforms, infer_spatial_dims, load_subject, native_grid, read_mask
from xaudit.data.manifest import Subject, load_manifest, safe_file_id
from xaudit.data.native import resample_between_grids, write_volume, write_volume_like

__all__ = [
    "LoadedImage",
    "Subject",
    "build_transforms",
    "infer_spatial_dims",
    "load_manifest",
    "load_subject",
    "native_grid",
    "read_mask",
    "resample_between_grids",
    "safe_file_id",
    "write_volume",
    "write_volume_like",
]
