"""Gradient saliency and input x gradient.

Simonyan, Vedaldi & Zisserman (2014), "Deep Inside Convolutional Networks".
Shrikumar et al. (2016), "Not Just a Black Box" (input x gradient).
"""

from __future__ import annotations

import torch
from pydantic import Field

from xaudit.config.methods import SaliencyParams
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    MethodParams,
    SharedPass,
    chunks,
    select_targets,
)


def input_gradients(model, inputs, targets, max_batch: int) -> torch.Tensor:
    """d logit[target] / d input, computed in chunks of at most ``max_batch``."""
    grads = torch.empty_like(inputs, dtype=torch.float32)
    for part in chunks(inputs.shape[0], max_batch):
        x = inputs[part].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            score = select_targets(model(x), targets[part]).sum()
            (grad,) = torch.autograd.grad(score, x)
        grads[part] = grad.float()
    return grads


class Saliency(AttributionMethod):
    name = "saliency"
    summary = "gradient of the target logit with respect to the input"
    Params = SaliencyParams
    reference = "Simonyan et al. 2014, arXiv:1312.6034"
    uses_input_gradient = True

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        grads = input_gradients(model, inputs, targets, ctx.max_batch)
        return AttributionResult(grads.abs() if self.params.absolute else grads)

    def from_shared(self, shared: SharedPass) -> AttributionResult | None:
        if shared.input_grads is None:
            return None
        grads = shared.input_grads.float()
        return AttributionResult(grads.abs() if self.params.absolute else grads)


class InputXGradient(AttributionMethod):
    name = "input_x_gradient"
    summary = "input times the gradient of the target logit"
    reference = "Shrikumar et al. 2016, arXiv:1605.01713"
    uses_input_gradient = True

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        return AttributionResult(input_gradients(model, inputs, targets, ctx.max_batch) * inputs.float())

    def from_shared(self, shared: SharedPass) -> AttributionResult | None:
        if shared.input_grads is None:
            return None
        return AttributionResult(shared.input_grads.float() * shared.inputs.float())
