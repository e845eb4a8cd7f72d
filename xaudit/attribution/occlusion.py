"""Occlusion: the drop of the target logit when a window of the input is replaced by a baseline.

Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional Networks", ECCV.

Follows Captum's `Occlusion` convention (tested for equality): windows start at
``0, s, 2s, ...`` along each spatial axis, ``ceil((L - w) / s) + 1`` of them, the last one
cut at the border; a window covers all input channels; each voxel gets the mean drop
``f(x) - f(x with the window occluded)`` over the windows that cover it. Differences
from Captum: a window larger than the input is shrunk to the input, and the loop is our
own, so one forward pass mixes (subject, window) pairs of several subjects in chunks of
``ctx.max_batch`` (Captum's ``perturbations_per_eval`` works per subject and takes one
baseline for the batch). Forward passes only, under ``torch.no_grad``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from pydantic import Field, field_validator

from xaudit.config.methods import OcclusionParams
from xaudit.attribution._baselines import BaselineParams, make_baseline
from xaudit.attribution.base import AttributionContext, AttributionMethod, AttributionResult, expanded_chunks
from xaudit.attribution.integrated_gradients import target_logits
from xaudit.errors import ConfigError

#: input size assumed by `passes_per_sample` when none is given (the example config's grid)
DEFAULT_COST_SHAPE = (48, 48, 48)


def per_axis(value: int | list[int], ndim: int, key: str) -> list[int]:
    """An int repeated over the axes, or a list checked to have one entry per axis."""
    if isinstance(value, int):
        return [value] * ndim
    if len(value) != ndim:
        raise ConfigError(f"`attribution.methods.occlusion.{key}` must have one entry per spatial axis ({ndim}). Got {value} instead.")
    return list(value)


def window_slices(spatial: Sequence[int], window: int | list[int], stride: int | list[int] | None) -> list[tuple[slice, ...]]:
    """The occlusion windows over a grid, as tuples of slices (Captum's start positions)."""
    windows = [min(w, size) for w, size in zip(per_axis(window, len(spatial), "window"), spatial)]
    strides = per_axis(stride if stride is not None else windows, len(spatial), "stride")
    starts_per_axis = []
    for size, w, s in zip(spatial, windows, strides):
        if s > w and w < size:
            raise ConfigError(f"`attribution.methods.occlusion.stride` ({s}) must not exceed the window ({w}): voxels between windows would get no attribution.")
        count = math.ceil((size - w) / s) + 1
        starts_per_axis.append([k * s for k in range(count)])
    return [
        tuple(slice(start, min(start + w, size)) for start, w, size in zip(starts, windows, spatial))
        for starts in itertools.product(*starts_per_axis)
    ]


def occlusion_maps(model, inputs, targets, baselines, windows, max_batch: int) -> torch.Tensor:
    """Mean logit drop per voxel over the windows covering it, ``(N, C, *spatial)`` float32."""
    n = inputs.shape[0]
    full = target_logits(model, inputs, targets, max_batch)
    total = torch.zeros(inputs.shape, dtype=torch.float32, device=inputs.device)
    count = torch.zeros(inputs.shape[2:], dtype=torch.float32, device=inputs.device)
    for region in windows:
        count[region] += 1
    for subject, window in expanded_chunks(n, len(windows), max_batch):
        subject_dev = subject.to(inputs.device)
        occluded = inputs[subject_dev]  # advanced indexing copies
        for row, (i, k) in enumerate(zip(subject.tolist(), window.tolist())):
            region = (slice(None),) + windows[k]
            occluded[row][region] = baselines[i][region].to(inputs.dtype)
        drop = full[subject_dev] - target_logits(model, occluded, targets[subject_dev], max_batch)
        for row, (i, k) in enumerate(zip(subject.tolist(), window.tolist())):
            total[i][(slice(None),) + windows[k]] += drop[row]
    # every voxel is covered at least once: the last window of each axis reaches the border
    return total / count


class Occlusion(AttributionMethod):
    name = "occlusion"
    summary = "drop of the target logit when a sliding window is replaced by a baseline"
    Params = OcclusionParams
    reference = "Zeiler & Fergus 2014, ECCV, arXiv:1311.2901"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        """Forward passes count 1/3 of a forward+backward: ``(windows + 1) / 3``.

        The window count depends on the input size; without ``spatial_shape`` a 48^3
        grid is assumed.
        """
        shape = tuple(spatial_shape) if spatial_shape is not None else DEFAULT_COST_SHAPE
        return (len(window_slices(shape, self.params.window, self.params.stride)) + 1) / 3.0

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        p = self.params
        windows = window_slices(inputs.shape[2:], p.window, p.stride)
        baselines = make_baseline(p.baseline, inputs, ctx, p.blur_sigma, self.name)
        maps = occlusion_maps(model, inputs, targets.to(inputs.device), baselines, windows, ctx.max_batch)
        return AttributionResult(maps)
