"""LRP propagation rules for linear and convolutional layers.

Every rule redistributes the relevance ``R_k`` of a layer's outputs onto its inputs
``x_j``. The generic form (Montavon et al. 2019, "Layer-wise relevance propagation: an
overview", eq. 3) is ``R_j = sum_k x_j rho(w_jk) / (eps + sum_j' x_j' rho(w_j'k)) R_k``.

Relevance travels backwards as ``g = R / x`` (relevance divided by activation), so
that ``R = x * g`` at every tensor ("gradient x input"). Element-wise ReLU, max pooling,
average pooling, reshapes, sums and concatenations then propagate relevance correctly
with their ordinary gradient: ReLU and max pooling gate it, average pooling and the
residual sum ``a + b`` split it in proportion to the contributions (LRP-0), and a
concatenation routes it. Only the linear layers need a modified backward, which the
"gradient trick" of Montavon et al. (2019, sec. 10.2) gives without parsing the
network's ``forward``: the layer returns ``z`` numerically but lets the gradient flow
through ``rho``-modified outputs ``z_rho`` scaled by the constant ``z / z_rho``.

Middle rules (`MiddleRule`) are of that ``x * g`` form. Input rules (`InputRule`:
flat, w-square, z^B) give relevance to inputs in a way that is not proportional to
``x`` (a zero voxel can be relevant), so they compute the relevance explicitly in the
backward pass and hand it to a sink (see `xaudit.attribution.lrp.propagate`).

Biases: the epsilon/zero and gamma rules keep the bias in the denominator, so the bias
absorbs its share of relevance (Montavon et al. 2019). z+ and alpha-beta leave the
bias out (Montavon et al. 2017, "Explaining nonlinear classification decisions with
deep Taylor decomposition"; Bach et al. 2015), so they conserve relevance exactly
whenever the denominator is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: the module types whose forward is replaced by a rule (exact types, see `is_rule_layer`)
RULE_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_rule_layer(module: nn.Module) -> bool:
    """True for Linear/Conv1-3d modules whose ``forward`` is the stock one.

    Subclasses that override ``forward`` (weight standardisation, LoRA ...) compute
    something else than ``W x + b``; replacing their forward would change the model.
    """
    for base in RULE_LAYER_TYPES:
        if isinstance(module, base):
            return type(module).forward is base.forward
    return False


def layer_output(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's own operation (stride, padding, groups ...) with other parameters."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with sign(0) = +1, the epsilon rule's denominator."""
    if epsilon == 0:
        return z
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0 (no relevance to share)."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, torch.ones_like(denominator), denominator))


def substitute_gradient(z: torch.Tensor, terms: list[tuple[float | torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """A tensor equal to ``z`` whose backward is ``sum_c coef_c * J_c^T (g * z / z_c)``.

    Args:
        z: the layer's true output (its value is returned exactly).
        terms: ``(coef, z_c)`` pairs, ``z_c`` differentiable with respect to the input;
            ``coef`` a number or a (constant) tensor broadcastable to ``z``.

    With ``g = R / z`` arriving from above, each term passes ``R / z_c`` through the
    Jacobian of ``z_c``, which is the generic LRP rule with ``rho`` built into ``z_c``.
    """
    y = None
    for coef, z_c in terms:
        term = z_c * safe_divide(z.detach(), z_c.detach())
        if not (isinstance(coef, float) and coef == 1.0):
            term = term * coef
        y = term if y is None else y + term
    # exact forward value whatever the denominators (zero denominators, rounding)
    return y + (z.detach() - y).detach()


def _split_by_sign(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x+, x-)``; ``x-`` is None when no element is negative (saves two convolutions)."""
    if bool(x.amin() < 0):
        return x.clamp(min=0), x.clamp(max=0)
    return x, None


class MiddleRule:
    """A rule of the form ``R_in = x * g_in``: applied inside the forward pass."""

    name: str = ""

    def forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(MiddleRule):
    """LRP-epsilon (Bach et al. 2015): ``rho = id``, denominator ``z + eps sign(z)``; eps = 0 is LRP-0."""

    epsilon: float
    name: str = "epsilon"

    def forward(self, module, x):
        z = layer_output(module, x, module.weight, module.bias)
        return substitute_gradient(z, [(1.0, stabilize(z, self.epsilon))])


def signed_parts(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z+, z-)``: the sums of the positive and of the negative contributions ``x_j w_jk``, bias excluded.

    Each is exactly zero where a unit has no contribution of that sign (sums of
    same-signed terms), which `AlphaBeta` relies on.
    """
    w_pos, w_neg = module.weight.clamp(min=0), module.weight.clamp(max=0)
    x_pos, x_neg = _split_by_sign(x)
    z_pos = layer_output(module, x_pos, w_pos, None)
    z_neg = layer_output(module, x_pos, w_neg, None)
    if x_neg is not None:
        z_pos = z_pos + layer_output(module, x_neg, w_neg, None)
        z_neg = z_neg + layer_output(module, x_neg, w_pos, None)
    return z_pos, z_neg


@dataclass(frozen=True)
class AlphaBeta(MiddleRule):
    """LRP-alpha-beta (Bach et al. 2015), bias excluded; alpha=1, beta=0 is z+ (Montavon et al. 2017).

    Positive contributions ``(x w)+`` share ``alpha * R``, negative ones ``(x w)-`` share
    ``-beta * R``; with ``alpha - beta = 1`` the layer conserves relevance.

    A unit with contributions of one sign only shares all of its relevance over them
    (z+ or z-). The textbook rule drops ``-beta R`` (or, for z+, all of ``R``) there;
    such units carry relevance where it reaches pre-activation outputs, as through the
    residual sum of a ResNet block, and dropping it broke conservation by several percent.
    """

    alpha: float = 1.0
    beta: float = 0.0
    name: str = "alpha_beta"

    def forward(self, module, x):
        z_pos, z_neg = signed_parts(module, x)
        with torch.no_grad():
            z = z_pos + z_neg if module.bias is None else z_pos + z_neg + _bias_view(module, z_pos)
            has_pos, has_neg = z_pos != 0, z_neg != 0
            both = has_pos & has_neg
            coef_pos = torch.where(both, self.alpha, has_pos.to(z.dtype))
            coef_neg = torch.where(both, -self.beta, (has_neg & ~has_pos).to(z.dtype))
        terms = [(coef_pos, z_pos)]
        if self.beta != 0 or bool((has_neg & ~has_pos).any()):
            terms.append((coef_neg, z_neg))
        return substitute_gradient(z, terms)


def _bias_view(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The bias shaped to broadcast over ``z`` (channels on dim 1 for convolutions, last dim for Linear)."""
    if isinstance(module, nn.Linear):
        return module.bias
    return module.bias.view(1, -1, *([1] * (z.dim() - 2)))


@dataclass(frozen=True)
class Gamma(MiddleRule):
    """LRP-gamma (Montavon et al. 2019): ``rho(w) = w + gamma w+`` (bias likewise), favouring positive evidence."""

    gamma: float
    name: str = "gamma"

    def forward(self, module, x):
        with torch.no_grad():
            z = layer_output(module, x, module.weight, module.bias)
        weight = module.weight + self.gamma * module.weight.clamp(min=0)
        bias = None if module.bias is None else module.bias + self.gamma * module.bias.clamp(min=0)
        return substitute_gradient(z, [(1.0, layer_output(module, x, weight, bias))])


class InputRule:
    """A rule for the layer that reads the model input, computed explicitly in the backward."""

    name: str = ""

    def relevance(self, module: nn.Module, x: torch.Tensor, r_out: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def _share(module, inputs: tuple[torch.Tensor, ...], z_of, r_out) -> tuple[torch.Tensor, ...]:
    """Gradients of ``z_of(*inputs)`` with respect to ``inputs`` for the signal ``r_out / z``."""
    leaves = tuple(t.detach().requires_grad_(True) for t in inputs)
    with torch.enable_grad():
        z = z_of(*leaves)
        return torch.autograd.grad(z, leaves, safe_divide(r_out, z.detach()))


@dataclass(frozen=True)
class Flat(InputRule):
    """Flat rule (Lapuschkin et al. 2019): ``rho(w) = 1``, x = 1 - relevance spread evenly over the receptive field."""

    name: str = "flat"

    def relevance(self, module, x, r_out):
        ones_w = torch.ones_like(module.weight)
        (share,) = _share(module, (torch.ones_like(x),), lambda u: layer_output(module, u, ones_w, None), r_out)
        return share


@dataclass(frozen=True)
class WSquare(InputRule):
    """w-square rule (Montavon et al. 2017): ``rho(w) = w^2``, x = 1 - independent of the input values."""

    name: str = "wsquare"

    def relevance(self, module, x, r_out):
        w_sq = module.weight.detach() ** 2
        (share,) = _share(module, (torch.ones_like(x),), lambda u: layer_output(module, u, w_sq, None), r_out)
        return share


@dataclass(frozen=True)
class Box(InputRule):
    """z^B rule (Montavon et al. 2017) for inputs bounded by ``low <= x <= high``.

    ``R_j = sum_k (x_j w_jk - l_j w+_jk - h_j w-_jk) / sum_j (...) R_k``.
    ``low``/``high`` None mean each sample's own minimum/maximum.
    """

    low: float | None = None
    high: float | None = None
    name: str = "box"

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element bounds, the sample's min/max where not given."""
        dims = tuple(range(1, x.dim()))
        low = x.amin(dim=dims, keepdim=True) if self.low is None else torch.full_like(x[:1], self.low)
        high = x.amax(dim=dims, keepdim=True) if self.high is None else torch.full_like(x[:1], self.high)
        return low.expand_as(x), high.expand_as(x)

    def relevance(self, module, x, r_out):
        low, high = self.bounds(x)
        w = module.weight.detach()
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)

        def z_box(x_, l_, h_):
            return layer_output(module, x_, w, None) - layer_output(module, l_, w_pos, None) - layer_output(module, h_, w_neg, None)

        c_x, c_low, c_high = _share(module, (x, low, high), z_box, r_out)
        return x * c_x + low * c_low + high * c_high


#: rule names accepted in ``layer_rules`` and composites
MIDDLE_RULES = ("epsilon", "zero", "zplus", "alpha_beta", "gamma")
INPUT_RULES = ("flat", "wsquare", "box")
