"""Guided backpropagation and deconvnet: gradients with modified ReLU backward rules.

Springenberg et al. (2015), "Striving for Simplicity: The All Convolutional Net", ICLR
workshop (guided backpropagation: pass only positive gradients through positive inputs).
Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional Networks", ECCV
(deconvnet: pass only positive gradients, whatever the input).

Captum's implementations are used, called per chunk of ``ctx.max_batch`` subjects with
each subject's own target. They work by backward hooks on ``torch.nn.ReLU`` modules,
which sets the limits of both methods:

- ReLUs applied functionally (``F.relu``, ``torch.relu``, ``x.clamp(min=0)``) inside a
  ``forward`` are not seen and keep their ordinary gradient.
- Other activation modules (PReLU, LeakyReLU, ELU, GELU, SiLU, ...) keep their
  ordinary gradient; a warning lists them. MONAI's ``Classifier``/``Regressor`` use
  PReLU by default and have no ``nn.ReLU`` at all: that is refused with a `ModelError`,
  since the result would silently be the plain gradient.
- ``nn.ReLU(inplace=True)`` (MONAI's DenseNet, ResNet) is handled correctly by Captum
  0.9; ``tests/test_attribution_methods.py`` checks it against a reference rule.
"""

from __future__ import annotations

import logging
import warnings

import torch
from captum.attr import Deconvolution as CaptumDeconvolution
from captum.attr import GuidedBackprop as CaptumGuidedBackprop

from xaudit.attribution.base import AttributionContext, AttributionMethod, AttributionResult, chunks
from xaudit.errors import ModelError

log = logging.getLogger(__name__)

#: activation modules whose backward the ReLU hooks leave unchanged
_OTHER_ACTIVATIONS = (
    torch.nn.PReLU, torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.SELU, torch.nn.CELU, torch.nn.GELU,
    torch.nn.SiLU, torch.nn.Mish, torch.nn.Softplus, torch.nn.ReLU6, torch.nn.Hardswish,
)


def check_relu_modules(model: torch.nn.Module, method: str) -> None:
    """Refuse a model without ``nn.ReLU`` modules; warn about activations that stay unmodified.

    Raises:
        ModelError: the model has no ``torch.nn.ReLU`` module (a TorchScript model, or
            one using other activations or functional ReLUs only).
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(f"`{method}` needs module hooks; a TorchScript model has none. Load the eager model instead.")
    relus = [name for name, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
    others = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _OTHER_ACTIVATIONS)})
    if not relus:
        found = f" It has {others}." if others else ""
        raise ModelError(
            f"`{method}` modifies the backward pass of torch.nn.ReLU modules, but the model has none.{found} "
            "The result would be the plain gradient: use `saliency` instead."
        )
    if others:
        log.warning("%s: activations %s keep their ordinary gradient; only the %d nn.ReLU modules are modified",
                    method, others, len(relus))


def relu_rule_gradients(model, inputs, targets, max_batch: int, deconv: bool) -> torch.Tensor:
    """Captum's guided backprop (``deconv=False``) or deconvnet maps, in chunks of subjects."""
    method = (CaptumDeconvolution if deconv else CaptumGuidedBackprop)(model)
    targets = targets.to(inputs.device)
    maps = torch.empty(inputs.shape, dtype=torch.float32, device=inputs.device)
    for part in chunks(inputs.shape[0], max_batch):
        x = inputs[part].detach().clone().requires_grad_(True)
        with warnings.catch_warnings(), torch.enable_grad():
            # Captum warns on every call that it sets (and removes) hooks
            warnings.simplefilter("ignore", UserWarning)
            maps[part] = method.attribute(x, target=targets[part]).detach().float()
    return maps


class GuidedBackprop(AttributionMethod):
    name = "guided_backprop"
    supports_amp = False  # its own backward rules: float32 only
    summary = "gradient with ReLUs passing only positive gradients through positive inputs"
    needs_hooks = True
    reference = "Springenberg et al. 2015, arXiv:1412.6806"

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        check_relu_modules(model, self.name)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        check_relu_modules(model, self.name)
        return AttributionResult(relu_rule_gradients(model, inputs, targets, ctx.max_batch, deconv=False))


class Deconvnet(AttributionMethod):
    name = "deconvnet"
    supports_amp = False  # its own backward rules: float32 only
    summary = "gradient with ReLUs passing only positive gradients (deconvolution)"
    needs_hooks = True
    reference = "Zeiler & Fergus 2014, ECCV, arXiv:1311.2901"

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        check_relu_modules(model, self.name)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        check_relu_modules(model, self.name)
        return AttributionResult(relu_rule_gradients(model, inputs, targets, ctx.max_batch, deconv=True))
