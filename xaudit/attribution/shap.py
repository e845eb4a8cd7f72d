"""GradientSHAP: expected gradients over a distribution of baselines.

Lundberg & Lee (2017), "A Unified Approach to Interpreting Model Predictions", NeurIPS
(the GradientExplainer of the ``shap`` package; also Erion et al. 2021, "expected
gradients").

For each subject, ``samples`` draws of a baseline ``b`` (uniformly from the subject's
baseline set), a point ``a ~ U(0, 1)`` on the path and optional Gaussian input noise
``e``; the map is the mean of ``(x + e - b) * grad f(a (x + e) + (1 - a) b)``. This is
Captum's `GradientShap` arithmetic (the tests check equality on the same draws), but the
loop is our own: Captum takes one baseline set for the whole batch (so no per-subject
blur baseline), draws from the global NumPy/torch RNGs (so a subject's map depends on
its batch) and evaluates the whole expanded batch at once.

Baseline set per subject (``baselines``; default: zeros, the blurred input, and the
dataset mean when the engine provides one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from xaudit.config.methods import GradientShapParams
from xaudit.attribution._baselines import make_baseline
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    MethodParams,
    expanded_chunks,
    sample_generators,
)
from xaudit.attribution.saliency import input_gradients


def baseline_set(inputs: torch.Tensor, ctx: AttributionContext, params: GradientShapParams, method: str) -> torch.Tensor:
    """The baselines of each subject, stacked ``(N, B, C, *spatial)`` float32."""
    kinds = params.baselines
    if kinds is None:
        kinds = ["zeros", "blur"] + (["mean"] if ctx.baseline_mean is not None else [])
    return torch.stack([make_baseline(kind, inputs, ctx, params.blur_sigma, method) for kind in dict.fromkeys(kinds)], 1)


def expected_gradients(
    model, inputs, targets, baselines, choice, alphas, stdevs: float, generators, max_batch: int
) -> torch.Tensor:
    """GradientSHAP maps from given draws.

    Args:
        inputs: ``(N, C, *spatial)``; targets ``(N,)``.
        baselines: ``(N, B, C, *spatial)`` baseline set per subject.
        choice: ``(N, S)`` index into each subject's baseline set per draw.
        alphas: ``(N, S)`` path position per draw, in [0, 1].
        stdevs: input-noise std; the noise of subject i comes from ``generators[i]``,
            drawn in (subject, draw) order so chunking does not change it.
        max_batch: most draws per forward+backward.

    Returns:
        float32 maps of the input's shape (mean over the S draws).
    """
    n, samples = choice.shape
    x = inputs.float()
    total = torch.zeros_like(x)
    view = (-1,) + (1,) * (x.dim() - 1)
    for subject, draw in expanded_chunks(n, samples, max_batch):
        subject, draw = subject.to(x.device), draw.to(x.device)
        noisy = x[subject]
        if stdevs > 0:
            for row, i in enumerate(subject.tolist()):
                noisy[row] += stdevs * torch.randn(x.shape[1:], generator=generators[i], device=x.device)
        base = baselines[subject, choice[subject, draw]]
        a = alphas[subject, draw].view(view)
        # Captum's form a*x + (1-a)*b (not b + a*(x-b)), so the tests can compare bit for bit
        point = a * noisy + (1.0 - a) * base
        grads = input_gradients(model, point.to(inputs.dtype), targets[subject], max_batch)
        total.index_add_(0, subject, grads * (noisy - base))
    return total / samples


class GradientShap(AttributionMethod):
    name = "gradient_shap"
    summary = "expected gradients over random baselines and path points (SHAP values approximation)"
    Params = GradientShapParams
    stochastic = True
    reference = "Lundberg & Lee 2017, NeurIPS, arXiv:1705.07874"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        return float(self.params.samples)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        p = self.params
        baselines = baseline_set(inputs, ctx, p, self.name)
        generators = sample_generators(ctx, inputs.shape[0], inputs.device)
        # the small draws first, the noise after, each from the subject's own generator
        choice = torch.stack([
            torch.randint(baselines.shape[1], (p.samples,), generator=g, device=inputs.device) for g in generators
        ])
        alphas = torch.stack([torch.rand(p.samples, generator=g, device=inputs.device) for g in generators])
        maps = expected_gradients(
            model, inputs, targets.to(inputs.device), baselines, choice, alphas, p.stdevs, generators, ctx.max_batch
        )
        return AttributionResult(maps)
