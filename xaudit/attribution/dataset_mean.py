"""The dataset's mean input, for methods whose baseline is ``mean``.

Computed over an evenly spaced sample of the whole manifest (not of a shard), so every
shard and every resumed run uses the same baseline.
"""

from __future__ import annotations

import logging

import torch

from xaudit.data.loading import load_subject
from xaudit.errors import XauditError

log = logging.getLogger("xaudit")


def needs_dataset_mean(methods) -> bool:
    """Whether any configured method uses the dataset mean as (one of) its baselines."""
    for run in methods:
        params = run.method.params
        if getattr(params, "baseline", None) == "mean" or "mean" in (getattr(params, "baselines", None) or []):
            return True
    return False


def dataset_mean_input(subjects, transforms, spatial_dims: int, limit: int = 64) -> torch.Tensor | None:
    """Mean preprocessed input ``(C, *spatial)`` over up to ``limit`` subjects.

    Returns None (with a warning) when the inputs do not share one shape, since then no
    voxel-wise mean exists.
    """
    step = max(1, len(subjects) // limit)
    total, count, shape = None, 0, None
    for subject in subjects[::step][:limit]:
        try:
            image = load_subject(subject, transforms, spatial_dims).tensor
        except XauditError:
            continue  # the per-subject pass will record it
        if shape is None:
            shape, total = image.shape, torch.zeros_like(image, dtype=torch.float64)
        if image.shape != shape:
            log.warning("inputs differ in shape (%s vs %s): no dataset mean baseline", tuple(shape), tuple(image.shape))
            return None
        total += image
        count += 1
    return None if count == 0 else (total / count).float()
