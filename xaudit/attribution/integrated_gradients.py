"""Integrated gradients.

Sundararajan, Taly & Yan (2017), "Axiomatic Attribution for Deep Networks", ICML.

The attribution of voxel i is ``(x_i - b_i) * integral_0^1 d f(b + a (x - b)) / d x_i da``
for the target logit f and a baseline b. The integral is approximated with Captum's
quadrature rules (`captum.attr._utils.approximation_methods`), but the loop is our own:
Captum's ``internal_batch_size`` splits the steps, not the (subject, step) pairs, and
cannot go below one step for the whole batch, so it can exceed the memory budget and
cannot take a different baseline per subject in one call. Here every chunk of at most
``ctx.max_batch`` path points mixes subjects and steps freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from pydantic import Field, model_validator

from xaudit.config.methods import IntegratedGradientsParams
from xaudit.attribution._baselines import BaselineParams, make_baseline
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    chunks,
    expanded_chunks,
    select_targets,
)
from xaudit.attribution.saliency import input_gradients

def target_logits(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, max_batch: int) -> torch.Tensor:
    """The target logit of each sample, forward only, in chunks; shape ``(N,)`` float32."""
    out = torch.empty(inputs.shape[0], dtype=torch.float32, device=inputs.device)
    with torch.no_grad():
        for part in chunks(inputs.shape[0], max_batch):
            out[part] = select_targets(model(inputs[part]), targets[part]).float()
    return out


def integrate_gradients(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    rule: str,
    max_batch: int,
) -> torch.Tensor:
    """Integrated gradients of each sample against its own baseline.

    Args:
        model: classifier returning logits.
        inputs, baselines: ``(N, C, *spatial)``; one baseline per sample.
        targets: ``(N,)`` class per sample.
        steps, rule: quadrature of the path integral (Captum's rules).
        max_batch: most path points per forward+backward.

    Returns:
        float32 attributions of the input's shape.
    """
    step_sizes_fn, alphas_fn = approximation_parameters(rule)
    step_sizes = torch.tensor(step_sizes_fn(steps), dtype=torch.float32, device=inputs.device)
    alphas = torch.tensor(alphas_fn(steps), dtype=torch.float32, device=inputs.device)
    x = inputs.float()
    targets = targets.to(x.device)
    delta = x - baselines
    integral = torch.zeros_like(x)
    view = (-1,) + (1,) * (x.dim() - 1)
    for subject, step in expanded_chunks(x.shape[0], steps, max_batch):
        subject, step = subject.to(x.device), step.to(x.device)
        path = baselines[subject] + alphas[step].view(view) * delta[subject]
        grads = input_gradients(model, path.to(inputs.dtype), targets[subject], max_batch)
        integral.index_add_(0, subject, grads * step_sizes[step].view(view))
    return integral * delta


def completeness_error(attributions: torch.Tensor, f_inputs: torch.Tensor, f_baselines: torch.Tensor) -> torch.Tensor:
    """``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|`` per sample (the completeness axiom).

    A large value means too few steps, or a model that is not differentiable almost
    everywhere along the path. The denominator is floored to avoid dividing by zero
    when input and baseline score the same.
    """
    total = attributions.flatten(1).sum(1)
    gap = f_inputs - f_baselines
    return (total - gap).abs() / gap.abs().clamp_min(1e-12)


class IntegratedGradients(AttributionMethod):
    name = "integrated_gradients"
    summary = "path integral of gradients from a baseline to the input (completeness-checked)"
    Params = IntegratedGradientsParams
    reference = "Sundararajan et al. 2017, ICML, arXiv:1703.01365"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        # one forward+backward per step; the completeness check reuses the engine's f(x) and,
        # for a baseline shared by all samples (zeros, dataset mean), one forward per batch
        return self.params.steps + (1.0 / 3.0 if self.params.baseline == "blur" else 0.0)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        p = self.params
        baselines = make_baseline(p.baseline, inputs, ctx, p.blur_sigma, self.name)
        maps = integrate_gradients(model, inputs, baselines, targets, p.steps, p.rule, ctx.max_batch)
        if ctx.logits is not None and ctx.logits.shape[0] == inputs.shape[0]:
            f_x = select_targets(ctx.logits, targets).float().to(inputs.device)
        else:
            f_x = target_logits(model, inputs, targets, ctx.max_batch)
        if p.baseline in ("zeros", "mean"):  # the same baseline for every sample: score it once
            with torch.no_grad():
                f_b = select_targets(model(baselines[:1].to(inputs.dtype)).expand(inputs.shape[0], -1), targets).float()
        else:
            f_b = target_logits(model, baselines.to(inputs.dtype), targets, ctx.max_batch)
        return AttributionResult(maps, stats={"completeness_error": completeness_error(maps, f_x, f_b)})
