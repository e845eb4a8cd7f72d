"""LRP propagation rules for linear and convolutional layers.

Every rule redistributes the relevance ``R_k`` of a layer's outputs onto its inputs
``x_j``. The generic form (Montavon et al. 2019, "Layer-wise relevance propagation: an
overview") is ``R_j = sum_k x_j rho(w_jk) / (eps + sum_j' x_j' rho(w_j'k)) R_k``.

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

import functools
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
    """``numerator / denominator`` with 0 where the denominator is 0 (no relevance to share).

    Forward values only: never differentiate through it (the discarded branch holds inf/nan).
    """
    return torch.where(denominator == 0, 0.0, numerator / denominator)


class Ledger:
    """Per-sample relevance the rules give to biases and stabilisers, summed in the backward pass.

    Relevance is conserved up to what the rules themselves assign to biases (epsilon, gamma)
    and to the epsilon stabiliser, to units that only a bias drives (z+, alpha-beta), and
    to the border of a zero-padded input (input rules, `xaudit.attribution.lrp.propagate`).
    Counting it here separates that intended absorption from relevance lost or made up by
    anything else (operations without a rule, numerical breakdown): ``sum(R_input) +
    absorbed = logit`` must then hold to float precision.
    """

    def __init__(self):
        self.absorbed: torch.Tensor | None = None

    def add(self, per_unit: torch.Tensor) -> None:
        total = per_unit.flatten(1).sum(1) if per_unit.dim() > 1 else per_unit
        self.absorbed = total if self.absorbed is None else self.absorbed + total


class _Substitute(torch.autograd.Function):
    """Returns ``value``; its backward sends ``g * scale_c`` into each ``z_c``.

    ``value`` and the scales travel in a non-tensor holder: they are constants, and
    ``value`` is a fresh tensor that becomes the layer's output. The holder may carry a
    `Ledger` and ``absorbed()``, the per-unit coefficient ``A`` such that the rule gives
    ``g * A`` of each unit's relevance to its bias and stabiliser.
    """

    @staticmethod
    def forward(ctx, holder, *z_terms):
        value, scales, ledger, absorbed = holder
        ctx.scales, ctx.ledger, ctx.absorbed = scales, ledger, absorbed
        return value

    @staticmethod
    def backward(ctx, grad):
        if ctx.ledger is not None and ctx.absorbed is not None:
            ctx.ledger.add(grad.float() * ctx.absorbed().float())
        return (None, *[grad * scale for scale in ctx.scales])


def substitute_gradient(value: torch.Tensor, terms: list[tuple[torch.Tensor, torch.Tensor]],
                        ledger: Ledger | None = None, absorbed=None) -> torch.Tensor:
    """A tensor equal to ``value`` whose backward is ``sum_c J_c^T (g * scale_c)``.

    Args:
        value: the layer's output, a fresh tensor (no other reference may modify it).
        terms: ``(scale, z_c)`` pairs: ``z_c`` differentiable with respect to the layer
            input, ``scale`` a constant tensor broadcastable to it.
        ledger: where the absorbed relevance is summed, or None.
        absorbed: zero-argument callable giving the coefficient ``A`` (see `_Substitute`),
            or None when the rule absorbs nothing.

    With ``g = R / z`` arriving from above and ``scale_c = coef_c * z / z_c``, each term
    passes ``coef_c * R / z_c`` through the Jacobian of ``z_c``: the generic LRP rule
    with ``rho`` built into ``z_c`` (Montavon et al. 2019, sec. 10.2).
    """
    scales = [scale for scale, _ in terms]
    return _Substitute.apply((value, scales, ledger, absorbed), *[z_c for _, z_c in terms])


def _stabiliser_share(scale: torch.Tensor, z: torch.Tensor, bias: torch.Tensor | None, epsilon: float):
    """``A = scale * (b + eps * sign(z))`` for a rule with denominator ``z + eps sign(z)`` whose ``z`` holds ``b``.

    ``R_in = (z - b) * R / (z + eps sign z)``, so the unit keeps ``R * (b + eps sign z) / (z + eps sign z)``;
    with ``scale = z / (z + eps sign z)`` and ``R = z g`` that is ``g * A``.
    """
    if bias is None and epsilon == 0:
        return None
    sign = (z >= 0) if epsilon else None

    def share():
        total = torch.zeros((), dtype=scale.dtype, device=scale.device) if bias is None else bias
        if sign is not None:
            total = total + epsilon * (sign.to(scale.dtype) * 2 - 1)
        return scale * total

    return share


def _split_by_sign(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x+, x-)``; ``x-`` is None when no element is negative (saves two convolutions)."""
    if bool(x.amin() < 0):
        return x.clamp(min=0), x.clamp(max=0)
    return x, None


class MiddleRule:
    """A rule of the form ``R_in = x * g_in``: applied inside the forward pass."""

    name: str = ""

    def forward(self, module: nn.Module, x: torch.Tensor, ledger: Ledger | None = None) -> torch.Tensor:  # pragma: no cover
        """The layer's output, with the rule's backward; absorbed relevance goes to ``ledger``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(MiddleRule):
    """LRP-epsilon (Bach et al. 2015): ``rho = id``, denominator ``z + eps sign(z)``; eps = 0 is LRP-0."""

    epsilon: float
    name: str = "epsilon"

    def forward(self, module, x, ledger=None):
        z = layer_output(module, x, module.weight, module.bias)
        with torch.no_grad():
            value = z.detach().clone()
            scale = safe_divide(value, stabilize(value, self.epsilon))
            bias = None if module.bias is None else _bias_view(module, value)
        absorbed = _stabiliser_share(scale, value, bias, self.epsilon) if ledger is not None else None
        return substitute_gradient(value, [(scale, z)], ledger, absorbed)


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

    def forward(self, module, x, ledger=None):
        z_pos, z_neg = signed_parts(module, x)
        with torch.no_grad():
            value = z_pos + z_neg if module.bias is None else z_pos + z_neg + _bias_view(module, z_pos)
            terms = self._scaled_terms(value, z_pos.detach(), z_neg.detach())
            absorbed = None
            if ledger is not None and module.bias is not None:
                # a unit with no contribution of either sign is driven by its bias alone: all of its relevance stays there
                bias_only = (z_pos == 0) & (z_neg == 0)
                if bool(bias_only.any()):
                    absorbed = functools.partial(torch.where, bias_only, _bias_view(module, z_pos), 0.0)
        scaled = [(scale, z) for scale, z in zip(terms, (z_pos, z_neg)) if scale is not None]
        return substitute_gradient(value, scaled, ledger, absorbed)

    def _scaled_terms(self, value, z_pos, z_neg) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scale+, scale-)`` per unit; scale- is None when no unit needs the negative part."""
        no_pos = z_pos == 0
        scale_pos = safe_divide(value, z_pos)
        if self.beta == 0:
            neg_only = no_pos & (z_neg != 0)
            if not bool(neg_only.any()):
                return scale_pos, None
            return scale_pos, torch.where(neg_only, value / torch.where(neg_only, z_neg, 1.0), 0.0)
        scale_pos = scale_pos * torch.where(z_neg == 0, 1.0, self.alpha)
        return scale_pos, safe_divide(value, z_neg) * torch.where(no_pos, 1.0, -self.beta)


def _bias_view(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The bias shaped to broadcast over ``z`` (channels on dim 1 for convolutions, last dim for Linear)."""
    if isinstance(module, nn.Linear):
        return module.bias
    return module.bias.view(1, -1, *([1] * (z.dim() - 2)))


@dataclass(frozen=True)
class Gamma(MiddleRule):
    """LRP-gamma (Montavon et al. 2019), sign-aware: contributions of the unit's own sign weigh ``1 + gamma``.

    For ``z >= 0`` the denominator is ``z + gamma (z+ + b+)`` (the textbook ``rho(w) = w + gamma w+``
    on non-negative inputs), for ``z < 0`` it is ``z + gamma (z- + b-)``. Either way it has ``z``'s
    sign and ``|z_gamma| >= |z|``, so ``z / z_gamma`` lies in [0, 1]. The textbook rule assumes
    that only units with ``z > 0`` carry relevance (a ReLU follows); a unit with ``z < 0`` that
    carries relevance (DenseNet: a raw convolution output normalised by the next BatchNorm)
    gets a ``z_gamma`` that can cross zero, and relevance explodes (measured: a relevance sum
    5000 times the logit on a DenseNet121-depth net).
    """

    gamma: float
    epsilon: float = 1e-6
    name: str = "gamma"

    def forward(self, module, x, ledger=None):
        z_pos, z_neg = signed_parts(module, x)
        with torch.no_grad():
            bias = None if module.bias is None else _bias_view(module, z_pos)
            value = z_pos + z_neg if bias is None else z_pos + z_neg + bias
            positive = value >= 0
            z_gamma = value + self.gamma * torch.where(positive, z_pos, z_neg)
            bias_gamma = None
            if bias is not None:
                bias_gamma = bias + self.gamma * torch.where(positive, bias.clamp(min=0), bias.clamp(max=0))
                z_gamma = z_gamma + (bias_gamma - bias)
            scale = safe_divide(value, stabilize(z_gamma, self.epsilon))
            boost = 1.0 + self.gamma * positive.to(value.dtype)
            terms = [(scale * boost, z_pos), (scale * (2.0 + self.gamma - boost), z_neg)]  # 1 + gamma on the own sign
        absorbed = _stabiliser_share(scale, z_gamma, bias_gamma, self.epsilon) if ledger is not None else None
        return substitute_gradient(value, terms, ledger, absorbed)


class InputRule:
    """A rule for the layer that reads the model input, computed explicitly in the backward."""

    name: str = ""

    def relevance(self, module: nn.Module, x: torch.Tensor, z: torch.Tensor, r_out: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Relevance of ``x`` given the layer's output ``z`` (bias included) and its relevance ``r_out``."""
        raise NotImplementedError


_CONV_INPUT_GRAD = {nn.Conv1d: torch.nn.grad.conv1d_input, nn.Conv2d: torch.nn.grad.conv2d_input, nn.Conv3d: torch.nn.grad.conv3d_input}


def transpose(module: nn.Module, weight: torch.Tensor, signal: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """``J^T signal`` for the layer with ``weight``: what the layer's backward does, without a forward."""
    if isinstance(module, nn.Linear):
        return signal @ weight
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        grad_input = _CONV_INPUT_GRAD[type(module)]
        return grad_input(input_shape, weight, signal, module.stride, module.padding, module.dilation, module.groups)
    # string or non-zero padding: let autograd transpose it (the layer is linear, so any input will do)
    probe = torch.zeros(input_shape, dtype=signal.dtype, device=signal.device, requires_grad=True)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(layer_output(module, probe, weight, None), probe, signal)
    return out


def ones_output(module: nn.Module, x: torch.Tensor, kind: str, weight: torch.Tensor) -> torch.Tensor:
    """The layer's output for an all-ones input with ``weight`` (no bias), cached per input shape.

    Input-independent denominators (flat, w-square, the z^B bound terms) are computed once.
    """
    cache = module.__dict__.setdefault("_lrp_ones_cache", {})
    key = (kind, tuple(x.shape[1:]), x.dtype, x.device)
    if key not in cache:
        cache[key] = layer_output(module, torch.ones_like(x[:1]), weight, None)
    return cache[key]


@dataclass(frozen=True)
class Flat(InputRule):
    """Flat rule (Lapuschkin et al. 2019): ``rho(w) = 1``, x = 1 - relevance spread evenly over the receptive field."""

    name: str = "flat"

    def relevance(self, module, x, z, r_out):
        ones_w = torch.ones_like(module.weight)
        share = safe_divide(r_out, ones_output(module, x, "flat", ones_w))
        return transpose(module, ones_w, share, x.shape)


@dataclass(frozen=True)
class WSquare(InputRule):
    """w-square rule (Montavon et al. 2017): ``rho(w) = w^2``, x = 1 - independent of the input values."""

    name: str = "wsquare"

    def relevance(self, module, x, z, r_out):
        w_sq = module.weight.detach() ** 2
        share = safe_divide(r_out, ones_output(module, x, "wsquare", w_sq))
        return transpose(module, w_sq, share, x.shape)


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
        """Bounds per sample, shaped ``(N, 1, ...)``: the given values, else the sample's min/max."""
        dims = tuple(range(1, x.dim()))
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        low = x.amin(dim=dims, keepdim=True) if self.low is None else x.new_full(shape, self.low)
        high = x.amax(dim=dims, keepdim=True) if self.high is None else x.new_full(shape, self.high)
        return low, high

    def relevance(self, module, x, z, r_out):
        low, high = self.bounds(x)
        w = module.weight.detach()
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
        z_plain = z if module.bias is None else z - _bias_view(module, z)
        # the bounds are constant per sample, so their terms are bound * (ones through w+/w-)
        z_box = z_plain - low.view(-1, *([1] * (z.dim() - 1))) * ones_output(module, x, "box+", w_pos)
        z_box = z_box - high.view(-1, *([1] * (z.dim() - 1))) * ones_output(module, x, "box-", w_neg)
        share = safe_divide(r_out, z_box)
        t_pos, t_neg = transpose(module, w_pos, share, x.shape), transpose(module, w_neg, share, x.shape)
        return x * (t_pos + t_neg) - low * t_pos - high * t_neg


#: rule names accepted in ``layer_rules`` and composites
MIDDLE_RULES = ("epsilon", "zero", "zplus", "alpha_beta", "gamma")
INPUT_RULES = ("flat", "wsquare", "box")
