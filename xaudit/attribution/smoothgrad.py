"""SmoothGrad and VarGrad: mean and variance of a gradient map over noisy copies of the input.

Smilkov et al. (2017), "SmoothGrad: removing noise by adding noise", arXiv:1706.03825.
Adebayo et al. (2018), "Local Explanation Methods for Deep Neural Networks Lack
Sensitivity to Parameter Values", ICLR workshop (VarGrad).

Own loop instead of Captum's NoiseTunnel, for two reasons: NoiseTunnel draws its noise
from the global RNG, so a subject's map depends on its position in the batch and on
everything else that used the RNG; and it expands the whole batch at once. Here each
subject has its own seeded generator on the input's device (`sample_generators`) and the
``N * samples`` noisy copies are evaluated in chunks of ``ctx.max_batch`` that mix subjects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from xaudit.config.methods import SmoothGradParams
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    MethodParams,
    expanded_chunks,
    sample_generators,
)
from xaudit.attribution.saliency import input_gradients


def noisy_copies(inputs, subject, generators, stdev) -> torch.Tensor:
    """One noisy copy per entry of ``subject``, drawn from that subject's own generator.

    Draws happen in the order the entries come, which `expanded_chunks` makes the
    same (sample-major) whatever the chunk size, so a subject's noise depends only
    on its generator.
    """
    x = inputs[subject].float()
    for row, i in enumerate(subject.tolist()):
        noise = torch.randn(x.shape[1:], generator=generators[i], device=x.device, dtype=torch.float32)
        x[row] += noise * stdev[i]
    return x


def noisy_map_moments(model, inputs, targets, ctx: AttributionContext, params: SmoothGradParams,
                      variance: bool = True):
    """Mean and variance over the noisy copies of the base map, each ``(N, C, *spatial)`` float32.

    The variance is the population variance ``E[m^2] - E[m]^2`` (as Captum's VarGrad),
    accumulated in float64 so that the subtraction does not cancel to noise; with
    ``variance=False`` it is not accumulated and None is returned in its place.
    """
    n = inputs.shape[0]
    device = inputs.device
    targets = targets.to(device)
    generators = sample_generators(ctx, n, device)
    # Smilkov et al. scale sigma by the input's range: the same noise_level means the same visual noise
    flat = inputs.float().flatten(1)
    stdev = params.noise_level * (flat.max(1).values - flat.min(1).values)
    total = torch.zeros(inputs.shape, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total) if variance else None
    for subject, _ in expanded_chunks(n, params.samples, ctx.max_batch):
        subject = subject.to(device)
        x = noisy_copies(inputs, subject, generators, stdev)
        maps = input_gradients(model, x.to(inputs.dtype), targets[subject], ctx.max_batch)
        if params.base == "input_x_gradient":
            maps = maps * x
        maps = maps.double()
        total.index_add_(0, subject, maps)
        if total_sq is not None:
            total_sq.index_add_(0, subject, maps * maps)
    mean = total / params.samples
    if total_sq is None:
        return mean.float(), None
    return mean.float(), (total_sq / params.samples - mean * mean).clamp_min(0.0).float()


class SmoothGrad(AttributionMethod):
    name = "smoothgrad"
    summary = "gradient map averaged over noisy copies of the input"
    Params = SmoothGradParams
    stochastic = True
    reference = "Smilkov et al. 2017, arXiv:1706.03825"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        return float(self.params.samples)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        mean, _ = noisy_map_moments(model, inputs, targets, ctx, self.params, variance=False)
        return AttributionResult(mean)


class VarGrad(AttributionMethod):
    name = "vargrad"
    summary = "variance of the gradient map over noisy copies of the input"
    Params = SmoothGradParams
    stochastic = True
    reference = "Adebayo et al. 2018, arXiv:1810.03307"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        return float(self.params.samples)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        _, variance = noisy_map_moments(model, inputs, targets, ctx, self.params)
        return AttributionResult(variance)
