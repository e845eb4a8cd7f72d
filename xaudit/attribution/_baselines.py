"""Reference inputs ("baselines") shared by the path, perturbation and region methods.

A baseline stands for "the feature is absent". Its choice changes the maps a lot
(Sturmfels, Lundberg & Lee 2020, "Visualizing the Impact of Feature Attribution
Baselines", Distill), so xaudit offers three and records which one was used:

- ``zeros``: an all-zero input; after z-score normalisation this is the mean intensity.
- ``blur``: the input blurred by a Gaussian of ``blur_sigma`` voxels, which removes
  fine structure but keeps the overall intensity layout (Fong & Vedaldi 2017).
- ``mean``: the dataset's mean input ``ctx.baseline_mean`` provided by the engine.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from xaudit.config.methods import BaselineKind, BaselineParams
from xaudit.attribution.base import AttributionContext, MethodParams
from xaudit.errors import ConfigError, DataError

def gaussian_blur(inputs: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every channel of ``(N, C, *spatial)`` over its spatial axes with a Gaussian.

    Separable 1-d convolutions with edge-replicating padding, so the result stays on
    the input's device and borders are not darkened by zero padding.

    Args:
        inputs: 2D ``(N, C, H, W)`` or 3D ``(N, C, D, H, W)`` tensor.
        sigma: standard deviation in voxels (> 0).

    Returns:
        A float tensor of the input's shape.
    """
    x = inputs.float()
    n, c, *spatial = x.shape
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(spatial)]
    x = x.reshape(n * c, 1, *spatial)
    for axis in range(len(spatial)):
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * len(spatial)
        # F.pad lists the last axis first
        pad[2 * (len(spatial) - 1 - axis)] = radius
        pad[2 * (len(spatial) - 1 - axis) + 1] = radius
        x = conv(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    return x.reshape(n, c, *spatial)


def make_baseline(
    kind: str, inputs: torch.Tensor, ctx: AttributionContext, blur_sigma: float, method: str
) -> torch.Tensor:
    """The baseline of each sample, shape and device of ``inputs``, float32.

    Args:
        kind: ``zeros``, ``blur`` or ``mean``.
        inputs: the batch ``(N, C, *spatial)``.
        ctx: the attribution context (``baseline_mean`` for ``mean``).
        blur_sigma: Gaussian sigma in voxels for ``blur``.
        method: the method's registry name, used in error messages.

    Raises:
        ConfigError: ``mean`` was asked for but the engine has no dataset mean.
        DataError: the dataset mean does not have the input's shape.
    """
    if kind == "zeros":
        return torch.zeros_like(inputs, dtype=torch.float32)
    if kind == "blur":
        return gaussian_blur(inputs, blur_sigma)
    if kind == "mean":
        if ctx.baseline_mean is None:
            raise ConfigError(
                f"`attribution.methods.{method}.baseline` is 'mean' but no dataset mean input is available "
                "(ctx.baseline_mean is None). Use baseline 'zeros' or 'blur', or let the engine compute the mean."
            )
        mean = ctx.baseline_mean.to(device=inputs.device, dtype=torch.float32)
        if tuple(mean.shape) != tuple(inputs.shape[1:]):
            raise DataError(
                f"the dataset mean input for `{method}` must have the input's shape (C, *spatial) = "
                f"{tuple(inputs.shape[1:])}. Got {tuple(mean.shape)} instead."
            )
        return mean.unsqueeze(0).expand_as(inputs).clone()
    raise ConfigError(f"`attribution.methods.{method}.baseline` must be one of ['blur', 'mean', 'zeros']. Got {kind!r} instead.")
