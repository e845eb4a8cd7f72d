"""Validation before heavy work: config, manifest, images, model, layers, methods.

`validate_setup` is the first stage of every run and all of ``xaudit validate``: it
returns everything later stages need, or raises a one-line error naming the file, row
or key and what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch

from xaudit.attribution.engine import MethodRun, build_methods
from xaudit.data import build_transforms, infer_spatial_dims, load_manifest, load_subject
from xaudit.data.loading import NIFTI_SUFFIXES, check_voxels
from xaudit.data.manifest import Subject
from xaudit.errors import DataError, XauditError
from xaudit.features import FeatureSpec, feature_spec
from xaudit.models import LoadedModel, check_output, find_layer, load_model, resolve_device

log = logging.getLogger("xaudit")


@dataclass
class Setup:
    """A validated run: subjects, preprocessing, model and methods, ready to stream."""

    config: object
    device: torch.device
    subjects: list[Subject]
    spatial_dims: int
    transforms: object
    model: LoadedModel
    layer: torch.nn.Module | None
    feature_spec: FeatureSpec
    methods: list[MethodRun]
    input_shape: tuple[int, ...]
    warnings: list[str] = field(default_factory=list)


def validate_setup(config, device_name: str | None = None, deep: bool = False) -> Setup:
    """Check everything a run needs, cheaply; load the model.

    Args:
        config: the loaded `Config`.
        device_name: overrides ``config.device`` (``--device``).
        deep: also read every image fully (NaN/Inf, constant, corrupt gzip), as
            ``xaudit validate`` does; a run checks voxels per subject instead and records
            failures in ``errors.csv``.

    Raises:
        XauditUsageError subclasses with a one-line, actionable message.
    """
    device = resolve_device(device_name or config.device)
    subjects = load_manifest(config.data, config.model.classes)
    spatial_dims = infer_spatial_dims(config.data, config.model, subjects[0].images[0])
    check_headers(subjects, spatial_dims)
    transforms = build_transforms(config.data.transforms, spatial_dims)
    if deep:
        check_all_voxels(subjects, spatial_dims)
    first = _first_loadable(subjects, transforms, spatial_dims)
    model = load_model(config.model, device)
    model = check_output(model, first.tensor[None].to(device), config.model.classes)
    base = getattr(model.module, "inner", model.module)
    layer = None
    if config.model.layer is not None:
        if model.scripted:
            log.warning("model.layer is ignored for a TorchScript model (no hooks)")
        else:
            layer = find_layer(base, config.model.layer)
    spec = feature_spec(base, config.features) if not model.scripted else FeatureSpec([], config.features.pooling)
    methods = build_methods(config.attribution.methods, model.scripted, layer is not None)
    return Setup(config, device, subjects, spatial_dims, transforms, model, layer, spec, methods, tuple(first.tensor.shape))


def check_headers(subjects: list[Subject], spatial_dims: int) -> None:
    """Every image (and mask) is NIfTI, has a readable header and the right dimensionality."""
    for s in subjects:
        for path in (*s.images, *([s.mask] if s.mask else []), *s.rois.values()):
            where = f"manifest line {s.row} ({s.subject_id}): {path}"
            if not str(path).endswith(NIFTI_SUFFIXES):
                raise DataError(f"{where}: not a NIfTI file (.nii or .nii.gz expected)")
            try:
                shape = list(nib.load(str(path)).shape)
            except Exception as exc:  # noqa: BLE001 - any reader failure
                raise DataError(f"{where}: unreadable NIfTI header ({str(exc).splitlines()[0][:150]}); re-export the file") from None
            while len(shape) > spatial_dims and shape[-1] == 1:
                shape.pop()
            if len(shape) != spatial_dims:
                raise DataError(
                    f"{where}: image has shape {tuple(shape)}, expected {spatial_dims}D"
                    " (a 4D series needs one volume per row; a 2D model needs 2D images)"
                )
            if any(n < 2 for n in shape) or int(np.prod(shape)) > 2**31:
                raise DataError(f"{where}: image shape {tuple(shape)} is empty or absurd")


def check_all_voxels(subjects: list[Subject], spatial_dims: int) -> None:
    """Read every image: corrupt gzip, NaN/Inf and constant images fail here."""
    for s in subjects:
        for path in s.images:
            try:
                data = np.asanyarray(nib.load(str(path)).dataobj)
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
                raise DataError(f"manifest line {s.row} ({s.subject_id}): {path}: cannot read voxels ({str(exc).splitlines()[0][:150]})") from None
            try:
                check_voxels(path, torch.from_numpy(np.asarray(data, dtype=np.float32)))
            except DataError as exc:
                raise DataError(f"manifest line {s.row} ({s.subject_id}): {exc}") from None


def _first_loadable(subjects, transforms, spatial_dims):
    errors = []
    for s in subjects[:5]:
        try:
            return load_subject(s, transforms, spatial_dims)
        except XauditError as exc:
            errors.append(f"line {s.row}: {exc}")
    raise DataError("none of the first subjects could be loaded: " + "; ".join(errors))
