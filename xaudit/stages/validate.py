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
from xaudit.attribution.guards import preflight
from xaudit.core.bids import check_labels
from xaudit.data.cache import InputCache
from xaudit.data import build_transforms, infer_spatial_dims, load_manifest, load_subject
from xaudit.data.loading import NIFTI_SUFFIXES, check_file, check_header, check_voxels, shape_hint
from xaudit.data.manifest import Subject, rows_message
from xaudit.errors import DataError, XauditError, first_line
from xaudit.models.features import FeatureSpec, feature_spec
from xaudit.models.loading import LoadedModel, check_output, find_layer, load_model, resolve_device, unwrapped

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
    rejected: list[dict] = field(default_factory=list)
    all_subjects: list[Subject] = field(default_factory=list)
    #: manifest rows that are no subject (empty id or path, unknown label, repeated id)
    manifest_problems: list[dict] = field(default_factory=list)
    #: the pass's preprocessed inputs, for the dataset-level stages that run the model again
    inputs: InputCache = field(default_factory=InputCache)


def validate_setup(config, device_name: str | None = None, deep: bool = False) -> Setup:
    """Check everything a run needs, cheaply; load the model.

    With ``on_error: skip`` a run leaves out subjects whose files are missing or
    unreadable (listed in ``Setup.rejected``, then ``errors.csv``); ``deep`` and
    ``on_error: fail`` make the first such problem an error.

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
    rows: list[dict] = []
    subjects = load_manifest(config.data, config.model.classes, check_files=False, problems=rows)
    strict = deep or config.data.on_error == "fail"
    if config.output_layout == "bids":
        check_labels([s.subject_id for s in subjects])
    problems = [p for s in subjects if (p := file_problem(s))]
    readable = [s for s in subjects if not any(p["subject_id"] == s.subject_id for p in problems)]
    if not readable:
        _raise_or_keep(problems, subjects, True, rows)
    spatial_dims = infer_spatial_dims(config.data, config.model, readable[0].images[0])
    problems += [p for s in readable if (p := header_problem(s, spatial_dims))]
    flagged = {p["subject_id"] for p in problems}  # one problem per subject: a failed header is not read again
    if deep and (problems or rows):  # name missing files and bad headers before decoding every image
        unread = sum(s.subject_id not in flagged for s in readable)
        _raise_or_keep(problems, subjects, True, rows,
                       after=f"The voxels of the other {unread} subject(s) were not read yet (NaN/Inf, constant, "
                             "corrupt data): fix these, then run validate again to check them." if unread else "")
    if deep:
        problems += [p for s in readable if s.subject_id not in flagged and (p := voxel_problem(s, spatial_dims))]
    _raise_or_keep(problems, subjects, strict, rows)
    rejected_ids = {p["subject_id"] for p in problems}
    all_subjects, subjects = subjects, [s for s in subjects if s.subject_id not in rejected_ids]
    transforms = build_transforms(config.data.transforms, spatial_dims)
    first = _first_loadable(subjects, transforms, spatial_dims)
    model = load_model(config.model, device)
    model = check_output(model, first.tensor[None].to(device), config.model.classes)
    base = unwrapped(model.module)
    layer = None
    if config.model.layer is not None:
        if model.scripted:
            log.warning("model.layer is ignored for a TorchScript model (no hooks)")
        else:
            layer = find_layer(base, config.model.layer)
    if config.interrogate is not None and config.interrogate.layers and not model.scripted:
        for name in config.interrogate.layers:  # checked now, not after the whole run
            find_layer(base, name, key="interrogate.layers")
    spec = feature_spec(base, config.features) if not model.scripted else FeatureSpec([], config.features.pooling)
    methods = build_methods(config.attribution.methods, model.scripted, layer is not None)
    if not model.scripted:  # in-place ops, reused modules, missing layers: named now, not after the pass
        preflight(model.module, first.tensor[None].to(device), methods, layer, config.model.layer)
    return Setup(config, device, subjects, spatial_dims, transforms, model, layer, spec, methods, tuple(first.tensor.shape),
                 problems, all_subjects, rows)


def _raise_or_keep(problems: list[dict], subjects: list[Subject], strict: bool, rows: list[dict],
                   after: str = "") -> None:
    """Strict (validate, ``on_error: fail``): every problem, with the manifest's problem
    ``rows``, in one error (and ``after``, what was not checked yet). Otherwise the subjects
    concerned are left out and listed in ``errors.csv``, unless none is left."""
    everything = sorted([*rows, *problems], key=lambda p: p["row"])
    if not everything:
        return
    if strict or len({p["subject_id"] for p in problems}) == len(subjects):
        raise DataError(rows_message(everything) + (f"\n{after}" if after else ""))
    for p in everything:
        log.warning("skipping manifest line %s (%s): %s", p["row"], p["subject_id"], p["reason"])


def _problem(s: Subject, stage: str, reason: str) -> dict:
    return {"subject_id": s.subject_id, "row": s.row, "stage": stage, "reason": reason}


def _paths(s: Subject):
    return (*s.images, *([s.mask] if s.mask else []), *s.rois.values())


def file_problem(s: Subject) -> dict | None:
    """A missing file, one that is not a regular file, or not NIfTI by name."""
    for path in _paths(s):
        try:
            check_file(path)
        except DataError as exc:
            return _problem(s, "validate", str(exc))
        if not str(path).endswith(NIFTI_SUFFIXES):
            return _problem(s, "validate", f"{path}: not a NIfTI file (.nii or .nii.gz expected)")
    return None


def header_problem(s: Subject, spatial_dims: int) -> dict | None:
    """An unreadable header, an image too large to read, bad voxel sizes or affine, wrong
    dimensionality, or a shape too small to audit (`xaudit.data.loading.check_header`)."""
    for path in _paths(s):
        try:
            shape = list(check_header(path, spatial_dims, s.max_image_bytes).shape)
        except DataError as exc:
            return _problem(s, "validate", str(exc))
        while len(shape) > spatial_dims and shape[-1] == 1:
            shape.pop()
        if len(shape) != spatial_dims:
            return _problem(s, "validate", f"{path}: image has shape {tuple(shape)}, expected {spatial_dims}D"
                            + shape_hint(tuple(shape), spatial_dims))
        if any(n < 2 for n in shape):
            return _problem(s, "validate", f"{path}: image shape {tuple(shape)} is too small to audit")
    return None


def voxel_problem(s: Subject, spatial_dims: int) -> dict | None:
    """Corrupt data (truncated gzip), NaN/Inf or constant images: needs a full read."""
    for path in s.images:
        try:
            data = np.asanyarray(nib.load(str(path)).dataobj)
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
            return _problem(s, "validate", f"{path}: cannot read voxels ({first_line(exc, 150)})")
        try:
            check_voxels(path, torch.from_numpy(np.asarray(data, dtype=np.float32)))
        except DataError as exc:
            return _problem(s, "validate", str(exc))
    return None


def _first_loadable(subjects, transforms, spatial_dims):
    errors = []
    for s in subjects[:5]:
        try:
            return load_subject(s, transforms, spatial_dims)
        except XauditError as exc:
            errors.append(f"line {s.row}: {exc}")
    raise DataError("none of the first subjects could be loaded: " + "; ".join(errors))
