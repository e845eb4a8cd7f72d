"""Grad-CAM, Grad-CAM++ and guided Grad-CAM: class maps from a layer's activations.

Selvaraju et al. (2017), "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV.
Chattopadhay et al. (2018), "Grad-CAM++: Generalized Gradient-based Visual Explanations
for Deep Convolutional Networks", WACV.

Own implementation (checked against Captum's LayerGradCam and GuidedGradCam in the
tests), because MONAI's GradCAM takes one class index per batch, and because a forward
hook must guard the captured activation against in-place ops that follow the layer
(MONAI nets use ``ReLU(inplace=True)``). Each sample's own target is used: the model is
in eval mode, so the gradient of the summed target logits with respect to one sample's
activations is that sample's own gradient.

The layer map is upsampled to the input's spatial size (bilinear/trilinear,
``align_corners=False``) and repeated over the input channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from xaudit.models.hooks import forward_hooks
from xaudit.config.methods import GradCAMParams
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    MethodParams,
    SharedPass,
    chunks,
    select_targets,
)
from xaudit.attribution.guided import check_relu_modules, relu_rule_gradients
from xaudit.errors import ConfigError, ModelError


def require_layer(ctx: AttributionContext, method: str) -> torch.nn.Module:
    """The configured layer, or a `ConfigError` saying how to set one."""
    if ctx.layer is None:
        raise ConfigError(
            f"`{method}` needs a layer: set `model.layer` to the name of a convolutional module "
            "(e.g. `features.denseblock4` for a MONAI DenseNet). `xaudit validate` lists the valid names."
        )
    return ctx.layer


def layer_activations_and_gradients(model, layer, inputs, targets, ctx: AttributionContext):
    """Activations of ``layer`` and the gradient of each sample's target logit with respect to them.

    Returns:
        ``(activations, gradients)`` for this chunk, each ``(n, K, *layer_spatial)``.

    Raises:
        ModelError: the layer is not called exactly once, or its output is not a feature
            map with the input's number of dimensions.
    """
    captured: list[torch.Tensor] = []

    def keep(_name, _module, _args, output):
        captured.append(output)
        # later in-place ops (ReLU(inplace=True)) would overwrite the tensor we keep
        return output.clone() if isinstance(output, torch.Tensor) else output

    with forward_hooks([("layer", layer)], keep), torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        score = select_targets(model(x), targets).sum()
        _check_layer_output(captured, inputs, ctx.layer_name)
        (grads,) = torch.autograd.grad(score, captured[0])
    return captured[0].detach().float(), grads.detach().float()


def _check_layer_output(captured: list, inputs: torch.Tensor, layer_name: str | None) -> None:
    name = layer_name or "model.layer"
    if len(captured) != 1:
        raise ModelError(f"layer {name!r} ran {len(captured)} times in one forward pass; a layer method needs a module used exactly once.")
    out = captured[0]
    if not isinstance(out, torch.Tensor) or out.dim() != inputs.dim():
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"layer {name!r} must output a feature map (N, K, *spatial) with {inputs.dim() - 2} spatial dims "
            f"for Grad-CAM. Got {shape} instead; choose a convolutional block before global pooling."
        )


def layer_preflight(model, example: torch.Tensor, ctx: AttributionContext, method: str) -> None:
    """``model.layer`` runs once per forward and outputs a feature map (one forward+backward on ``example``)."""
    layer = require_layer(ctx, method)
    layer_activations_and_gradients(model, layer, example, torch.zeros(example.shape[0], dtype=torch.long), ctx)


def gradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights: spatial mean of the gradient, ``(n, K, 1, ...)``."""
    return grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)


def gradcam_pp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights, eq. 19 of the paper with the exponential's factor dropped.

    ``alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)``, weight ``= sum_ij alpha_ij relu(g_ij)``.
    The paper scores ``exp(logit)``; its derivative only scales each sample's weights
    by ``exp(logit)``, which overflows for confident predictions and makes maps of
    different subjects incomparable, so it is left out (as pytorch-grad-cam does).
    """
    spatial = tuple(range(2, grads.dim()))
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + acts.sum(dim=spatial, keepdim=True) * g3
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    return (alpha * F.relu(grads)).sum(dim=spatial, keepdim=True)


def class_activation_maps(model, inputs, targets, ctx: AttributionContext, weights_fn, relu: bool, method: str) -> torch.Tensor:
    """Weighted sum of layer channels, upsampled to the input grid and repeated over channels."""
    layer = require_layer(ctx, method)
    targets = targets.to(inputs.device)
    maps = torch.empty(inputs.shape, dtype=torch.float32, device=inputs.device)
    for part in chunks(inputs.shape[0], ctx.max_batch):
        acts, grads = layer_activations_and_gradients(model, layer, inputs[part], targets[part], ctx)
        maps[part] = cam_from_activations(acts, grads, weights_fn, relu, tuple(inputs[part].shape))
    return maps


def cam_from_activations(acts, grads, weights_fn, relu: bool, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Weighted channel sum of a layer's activations, upsampled to ``input_shape``."""
    spatial = tuple(input_shape[2:])
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    cam = (weights_fn(acts.float(), grads.float()) * acts.float()).sum(1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    cam = F.interpolate(cam, size=spatial, mode=mode, align_corners=False)
    return cam.expand(-1, input_shape[1], *spatial).contiguous()


class GradCAM(AttributionMethod):
    name = "gradcam"
    summary = "layer activations weighted by their mean gradient, upsampled to the input"
    Params = GradCAMParams
    needs_layer = True
    needs_hooks = True
    reference = "Selvaraju et al. 2017, ICCV, arXiv:1610.02391"

    def from_shared(self, shared: SharedPass) -> AttributionResult | None:
        if shared.layer_acts is None or shared.layer_acts.dim() != shared.inputs.dim():
            return None
        return AttributionResult(
            cam_from_activations(shared.layer_acts, shared.layer_grads, gradcam_weights, self.params.relu, tuple(shared.inputs.shape))
        )

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        layer_preflight(model, example, ctx, self.name)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        return AttributionResult(
            class_activation_maps(model, inputs, targets, ctx, gradcam_weights, self.params.relu, self.name)
        )


class GradCAMPlusPlus(AttributionMethod):
    name = "gradcam_plus_plus"
    summary = "Grad-CAM with pixel-wise weighted positive gradients (better for several objects)"
    Params = GradCAMParams
    needs_layer = True
    needs_hooks = True
    reference = "Chattopadhay et al. 2018, WACV, arXiv:1710.11063"

    def from_shared(self, shared: SharedPass) -> AttributionResult | None:
        if shared.layer_acts is None or shared.layer_acts.dim() != shared.inputs.dim():
            return None
        return AttributionResult(
            cam_from_activations(shared.layer_acts, shared.layer_grads, gradcam_pp_weights, self.params.relu, tuple(shared.inputs.shape))
        )

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        layer_preflight(model, example, ctx, self.name)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        return AttributionResult(
            class_activation_maps(model, inputs, targets, ctx, gradcam_pp_weights, self.params.relu, self.name)
        )


class GuidedGradCAM(AttributionMethod):
    name = "guided_gradcam"
    supports_amp = False  # its own backward rules: float32 only
    summary = "guided backpropagation times the upsampled Grad-CAM map"
    Params = GradCAMParams
    needs_layer = True
    needs_hooks = True
    reference = "Selvaraju et al. 2017, ICCV, arXiv:1610.02391"

    def passes_per_sample(self, spatial_shape=None) -> float:
        # one backward for Grad-CAM, one with the guided ReLU rule
        return 2.0

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        layer_preflight(model, example, ctx, self.name)
        check_relu_modules(model, self.name)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        cam = class_activation_maps(model, inputs, targets, ctx, gradcam_weights, self.params.relu, self.name)
        check_relu_modules(model, self.name)
        guided = relu_rule_gradients(model, inputs, targets, ctx.max_batch, deconv=False)
        return AttributionResult(guided * cam)
