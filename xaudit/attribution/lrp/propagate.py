"""Relevance propagation through a prepared copy of an eager PyTorch model.

`prepare_model` deep-copies the model (the user's model is never touched), folds
BatchNorms into the layers they follow and makes the others explicit linear layers
(`canonize`), and replaces the ``forward`` of each Linear/ConvNd instance
by its LRP rule and of each normalisation or non-homogeneous activation by a
pass-through. No backward hooks are used, so modules called several times (MONAI
ResNet's ``self.act``), in-place activations, residual sums and concatenations all work:
relevance travels as an ordinary gradient (see `rules`).

`relevance` then runs one forward and one backward per chunk of samples: the backward
starts from ``one_hot(target)``, so the relevance at the output is the target logit,
and the relevance at the input is ``x * grad`` plus what the input-layer rules put
in the sink.
"""

from __future__ import annotations

import copy
import functools
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from xaudit.attribution.base import select_targets
from xaudit.attribution.lrp.canonize import batchnorms_as_layers, fold_batchnorms
from xaudit.attribution.lrp.composite import LayerRules
from xaudit.attribution.lrp.rules import InputRule, Ledger, is_rule_layer, safe_divide, substitute_gradient
from xaudit.errors import ConfigError

#: shape-preserving modules whose gradient is not ``f(x)/x``: they pass relevance through as is
_PASS_THROUGH = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softsign,
)

#: the same for activation modules of other libraries, by class name (MONAI's swish and mish)
_PASS_THROUGH_NAMES = frozenset({"Swish", "MemoryEfficientSwish", "Mish", "GELU"})

#: squeeze-and-excitation modules (by class name) -> the attribute that starts their gate branch
_GATE_BRANCHES = {"ChannelSELayer": "fc", "ResidualSELayer": "fc", "MBConvBlock": "_se_reduce"}

#: modules LRP has no rule for: attention multiplies two activations (queries and keys)
_ATTENTION_NAMES = ("SABlock", "CrossAttentionBlock", "MultiheadAttention", "Attention", "WindowAttention")


def attention_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, class)`` of the attention blocks of ``model`` (LRP refuses them)."""
    found = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, nn.MultiheadAttention) or kind in _ATTENTION_NAMES or kind.endswith("Attention"):
            found.append((name, kind))
    return found


def _detach_gate_input(_module, args):
    """Forward pre-hook: the gate branch reads a constant, so it gets no relevance."""
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


def _gate_branches(model: nn.Module) -> list[nn.Module]:
    """The first module of each squeeze-and-excitation gate branch.

    The gate ``x * sigmoid(f(pool(x)))`` multiplies two functions of ``x``; its gradient
    would hand the product's relevance to both factors, doubling it. LRP for gated units
    (Arras et al. 2017, "Explaining recurrent neural network predictions in sentiment
    analysis"; Ali et al. 2022) gives it all to the signal ``x`` and none to the gate:
    the gate is a constant of the backward pass.
    """
    branches = []
    for module in model.modules():
        attr = _GATE_BRANCHES.get(type(module).__name__)
        branch = getattr(module, attr, None) if attr else None
        if isinstance(branch, nn.Module):
            branches.append(branch)
    return branches


@dataclass
class PassState:
    """What the patched forwards share during one chunk's pass."""

    model_input: torch.Tensor | None = None
    sink: list[torch.Tensor] = field(default_factory=list)
    input_layers: set[str] = field(default_factory=set)
    ledger: Ledger | None = None
    #: the model input zero-padded by a padding module (EfficientNet's "same" padding), with its crop
    padded_inputs: list[tuple[torch.Tensor, object]] = field(default_factory=list)


def _padding_forward(module: nn.Module, x: torch.Tensor, *, state: PassState) -> torch.Tensor:
    """A zero-padding module: the padded model input still counts as the input for the input rules."""
    out = module._lrp_original_forward(x)
    if x is state.model_input:
        state.padded_inputs.append((out, functools.partial(_crop, module, tuple(x.shape))))
    return out


def _crop(module: nn.Module, shape: tuple[int, ...], relevance: torch.Tensor) -> torch.Tensor:
    """The padding's transpose: the padded tensor's relevance on the input grid (the border's dropped)."""
    probe = torch.zeros(shape, dtype=relevance.dtype, device=relevance.device, requires_grad=True)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(module._lrp_original_forward(probe), probe, relevance)
    return out


def _is_zero_padding(module: nn.Module) -> bool:
    base = nn.modules.padding._ConstantPadNd
    return isinstance(module, base) and type(module).forward is base.forward and float(module.value) == 0.0


def _reads_input(x: torch.Tensor, state: PassState) -> tuple[bool, object]:
    """Whether ``x`` is the model input (or it zero-padded), and the crop back to the input grid (or None)."""
    if x is state.model_input:
        return True, None
    for padded, crop in state.padded_inputs:
        if x is padded:
            return True, crop
    return False, None


class _InputLayer(torch.autograd.Function):
    """The input layer with an `InputRule`: forward as the layer, backward into the sink.

    The input's gradient is None: the rule's relevance is not of the form ``x * g``
    (a zero voxel can be relevant), so it goes to ``state.sink`` instead.
    """

    @staticmethod
    def forward(ctx, x, module, rule, state, crop):
        z = module._lrp_original_forward(x)
        # a copy: an in-place activation after this layer would overwrite the output
        ctx.save_for_backward(x, z.clone())
        ctx.module, ctx.rule, ctx.state, ctx.crop = module, rule, state, crop
        return z

    @staticmethod
    def backward(ctx, grad_out):
        x, z = ctx.saved_tensors
        with torch.no_grad():
            relevance = ctx.rule.relevance(ctx.module, x, z, z * grad_out)
        if ctx.crop is not None:  # the input was zero-padded: what the rule gives the border is absorbed there
            cropped = ctx.crop(relevance)
            if ctx.state.ledger is not None:
                ctx.state.ledger.add(relevance.flatten(1).sum(1) - cropped.flatten(1).sum(1))
            relevance = cropped
        ctx.state.sink.append(relevance)
        return None, None, None, None, None


def _rule_forward(module: nn.Module, x: torch.Tensor, *, name: str, rules: LayerRules, state: PassState) -> torch.Tensor:
    is_input, crop = _reads_input(x, state)
    if is_input:
        state.input_layers.add(name)
        if isinstance(rules.at_input, InputRule):
            return _InputLayer.apply(x, module, rules.at_input, state, crop)
        return rules.at_input.forward(module, x, state.ledger)
    if isinstance(rules.elsewhere, InputRule):
        raise ConfigError(
            f"`attribution.methods.lrp.layer_rules.{name}` is {rules.elsewhere.name!r}, a rule for the layer that "
            f"reads the model input, but {name!r} reads an intermediate tensor. Use one of epsilon, zero, zplus, "
            "alpha_beta, gamma for it."
        )
    return rules.elsewhere.forward(module, x, state.ledger)


def _pass_forward(module: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Output ``f(x)``; the gradient ``g f(x) / x`` hands each element its output's relevance."""
    with torch.no_grad():
        # an in-place module would overwrite x, which the backward still needs
        out = module._lrp_original_forward(x.clone() if getattr(module, "inplace", False) else x, *args, **kwargs)
    if not isinstance(out, torch.Tensor) or out is x or out.shape != x.shape or not x.requires_grad:
        return out
    return substitute_gradient(out, [(safe_divide(out, x.detach()), x)])


@dataclass
class PreparedModel:
    """A patched private copy of the model, ready for `relevance`."""

    model: nn.Module
    state: PassState
    folded: list[str]
    rule_layers: list[str]
    batchnorm_layers: list[str] = field(default_factory=list)


def _patch(module: nn.Module, forward) -> None:
    module._lrp_original_forward = module.forward
    module.forward = forward


def prepare_model(
    model: nn.Module, example: torch.Tensor, rules_for, canonize: bool = True
) -> PreparedModel:
    """Copy, canonize and patch ``model`` for LRP.

    Args:
        model: the user's eager model in eval mode (not modified).
        example: one input ``(1, C, *spatial)`` for the canonization probe.
        rules_for: callable ``{name: module} -> {name: LayerRules}`` (see `composite.assign_rules`).
        canonize: fold BatchNorms into the layers they follow; the others (all of them
            when False) become explicit linear layers with the convolution rule.

    Returns:
        The `PreparedModel`.
    """
    work = copy.deepcopy(model)
    for param in work.parameters():
        param.requires_grad_(False)
    folded = []
    if canonize:
        work, folded = fold_batchnorms(work, example)
    as_layers = batchnorms_as_layers(work, example)
    state = PassState()
    layers = {name: m for name, m in work.named_modules() if is_rule_layer(m)}
    rules = rules_for(layers)
    for name, module in layers.items():
        _patch(module, functools.partial(_rule_forward, module, name=name, rules=rules[name], state=state))
    for module in work.modules():
        if isinstance(module, _PASS_THROUGH) or type(module).__name__ in _PASS_THROUGH_NAMES:
            _patch(module, functools.partial(_pass_forward, module))
    for module in work.modules():
        if _is_zero_padding(module):
            _patch(module, functools.partial(_padding_forward, module, state=state))
    for branch in _gate_branches(work):
        branch.register_forward_pre_hook(_detach_gate_input)
    unpatched = sorted({type(m).__name__ for m in work.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not is_rule_layer(m)})
    if unpatched:
        warnings.warn(f"LRP: {unpatched} override forward(); they keep their ordinary gradient (LRP-0 at best).", stacklevel=2)
    return PreparedModel(work, state, folded, list(layers), as_layers)


def _record_layer_inputs(prepared: PreparedModel, names: list[str], store: dict[str, list[torch.Tensor]]) -> list:
    """Forward pre-hooks storing the relevance ``x * grad`` at the input of each named module."""
    handles = []
    for name in names:
        module = prepared.model.get_submodule(name)

        def hook(_mod, args, name=name):
            x = args[0]
            if isinstance(x, torch.Tensor) and x.requires_grad:
                x.register_hook(lambda g, x=x, name=name: store[name].append((x.detach() * g).flatten(1).sum(1)))

        handles.append(module.register_forward_pre_hook(hook))
    return handles


def relevance(
    prepared: PreparedModel, inputs: torch.Tensor, targets: torch.Tensor, record: list[str] | None = None,
    ledger: Ledger | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Relevance of every input element for one chunk of samples.

    Args:
        prepared: from `prepare_model`.
        inputs: ``(n, C, *spatial)``.
        targets: ``(n,)`` class indices.
        record: module names whose input relevance sums are wanted (for conservation checks).
        ledger: a fresh `Ledger` to receive the relevance the rules give to biases and
            stabilisers, per sample; None to skip that bookkeeping.

    Returns:
        ``(maps, target_logits, layer_sums)``: maps of the input's shape (float32), the
        explained logits ``(n,)``, and per recorded module its input relevance sum ``(n,)``.
    """
    state = prepared.state
    x = inputs.detach().clone().requires_grad_(True)
    state.model_input, state.sink, state.ledger, state.padded_inputs = x, [], ledger, []
    store: dict[str, list[torch.Tensor]] = {name: [] for name in record or []}
    handles = _record_layer_inputs(prepared, list(store), store)
    try:
        with torch.enable_grad():
            logits = select_targets(prepared.model(x), targets)
            (grad,) = torch.autograd.grad(logits.sum(), x, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        state.model_input, state.ledger, state.padded_inputs = None, None, []
    maps = torch.zeros_like(x, dtype=torch.float32) if grad is None else (x.detach() * grad).float()
    for part in state.sink:
        maps = maps + part.float()
    state.sink = []
    layer_sums = {name: torch.stack(vals).sum(0) if vals else torch.zeros_like(logits.detach()) for name, vals in store.items()}
    return maps.float(), logits.detach().float(), layer_sums
