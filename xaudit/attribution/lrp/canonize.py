"""Canonization: BatchNorm folded into the layer it follows, or made an explicit linear layer.

LRP rules are defined for linear layers followed by element-wise activations. A
BatchNorm in eval mode is an affine map per channel; right after a convolution it can
be merged into it (``W' = W gamma / sigma``, ``b' = (b - mu) gamma / sigma + beta``)
without changing the function, so the merged layer gets one well-defined rule
(the "canonizers" of Zennit, Anders et al. 2021; Guillemot et al. 2020, "Breaking
batch normalization for better explainability of deep neural networks through
layer-wise relevance propagation").

A BatchNorm that does not follow a linear layer (DenseNet's pre-activation ``norm1``
after a concatenation, a transition's ``norm`` before its ReLU and convolution) cannot be
folded forwards either: a ReLU stands between it and the next convolution. It becomes an
explicit linear layer (`batchnorms_as_layers`: an equal depthwise 1x1 convolution, or a
diagonal Linear on ``(N, C)`` inputs) that gets the composite's rule for convolutions, as
Hui & Binder (2019, "BatchNorm decomposition for deep neural network interpretation")
treat it. Passing relevance through it unchanged instead breaks the proportionality of
relevance to activation that the epsilon rule's denominator relies on: a near-zero
concatenated feature then carries the relevance of its non-zero normalised output, the
convolution below divides it by that near-zero value, and on MONAI's DenseNet121 (3D,
random running statistics) the input relevance reached 1e10-1e30 times the logit.

"Directly follows" is read from one probe forward pass, not from the model's source:
the BatchNorm's input must be the very tensor a Linear/ConvNd produced, both modules
must run once, and no other module may read that tensor. The merged model is then
checked against the original on the probe input; if the logits differ (a functional
use of the tensor that hooks cannot see), folding is undone.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from xaudit.attribution.lrp.rules import is_rule_layer

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _is_foldable_batchnorm(module: nn.Module) -> bool:
    """Stock BatchNorm in eval mode with running statistics (an affine map)."""
    stock = any(type(module).forward is bn.forward for bn in _BATCHNORMS) and isinstance(module, _BATCHNORMS)
    return stock and not module.training and module.running_mean is not None and module.running_var is not None


def _record_calls(model: nn.Module, example: torch.Tensor) -> tuple[list, torch.Tensor]:
    """Run ``example`` once; list ``(name, module, input tensor, output tensor)`` per call."""
    calls, handles = [], []
    for name, module in model.named_modules():
        if is_rule_layer(module) or isinstance(module, _BATCHNORMS) or len(list(module.children())) == 0:
            handles.append(
                module.register_forward_hook(
                    lambda mod, args, out, name=name: calls.append((name, mod, args[0] if args else None, out))
                )
            )
    try:
        with torch.no_grad():
            logits = model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls, logits


def find_foldable_pairs(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """``(layer name, batchnorm name)`` pairs where the BatchNorm directly follows the layer.

    Args:
        model: eager model in eval mode.
        example: one input ``(1, C, *spatial)``.

    Returns:
        The pairs, and the logits of ``example`` (for the check after folding).
    """
    calls, logits = _record_calls(model, example)
    times_called: dict[int, int] = {}
    readers: dict[int, int] = {}
    for _name, module, inp, _out in calls:
        times_called[id(module)] = times_called.get(id(module), 0) + 1
        if isinstance(inp, torch.Tensor):
            readers[id(inp)] = readers.get(id(inp), 0) + 1
    producers = {id(out): (name, module) for name, module, _inp, out in calls if is_rule_layer(module)}
    pairs = []
    for name, module, inp, _out in calls:
        if not (_is_foldable_batchnorm(module) and isinstance(inp, torch.Tensor) and id(inp) in producers):
            continue
        layer_name, layer = producers[id(inp)]
        if times_called[id(layer)] == 1 and times_called[id(module)] == 1 and readers[id(inp)] == 1:
            pairs.append((layer_name, name))
    return pairs, logits


def _affine_of(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` per channel of an eval-mode BatchNorm: ``y = scale * x + shift``."""
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    shift = -bn.running_mean.float() * scale
    if bn.affine:
        scale, shift = scale * bn.weight.float(), shift * bn.weight.float() + bn.bias.float()
    return scale, shift


def _merge(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` into ``layer``'s weight and bias, in place."""
    with torch.no_grad():
        scale, shift = _affine_of(bn)
        weight = layer.weight.float() * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
        bias = shift if layer.bias is None else layer.bias.float() * scale + shift
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(bias.to(layer.weight.dtype), requires_grad=False)
        else:
            layer.bias.copy_(bias.to(layer.bias.dtype))


def _replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_batchnorms(model: nn.Module, example: torch.Tensor, rtol: float = 1e-4) -> tuple[nn.Module, list[str]]:
    """Fold every BatchNorm that directly follows a Linear/ConvNd layer.

    Args:
        model: a private copy (it is modified); eval mode.
        example: one input ``(1, C, *spatial)`` for the probe pass.
        rtol: tolerated change of the logits, relative to their largest magnitude.

    Returns:
        The folded model (or an unfolded copy if folding changed the output) and the
        names of the folded BatchNorms.
    """
    pairs, before = find_foldable_pairs(model, example)
    if not pairs:
        return model, []
    backup = copy.deepcopy(model)
    for layer_name, bn_name in pairs:
        _merge(model.get_submodule(layer_name), model.get_submodule(bn_name))
        _replace_module(model, bn_name, nn.Identity())
    with torch.no_grad():
        after = model(example)
    scale = before.abs().max().clamp(min=1e-6)
    if not torch.allclose(after, before, rtol=0, atol=float(rtol * scale)):
        warnings.warn(
            "LRP canonization: folding BatchNorm into the preceding layers changed the model's output "
            f"(max change {float((after - before).abs().max()):.3g}); keeping the BatchNorms unfolded, "
            "as explicit linear layers with the composite's convolution rule.",
            stacklevel=2,
        )
        return backup, []
    return model, [bn for _layer, bn in pairs]


def _as_layer(bn: nn.Module, input_dims: int) -> nn.Module:
    """The linear layer equal to eval-mode ``bn`` on inputs with ``input_dims`` dimensions."""
    scale, shift = _affine_of(bn)
    channels, dtype, device = scale.numel(), bn.running_mean.dtype, bn.running_mean.device
    if input_dims == 2:
        layer = nn.Linear(channels, channels, bias=True, device=device, dtype=dtype)
        weight = torch.diag(scale)
    else:
        conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[input_dims]
        layer = conv(channels, channels, 1, groups=channels, bias=True, device=device, dtype=dtype)
        weight = scale.view(channels, 1, *([1] * (input_dims - 2)))
    with torch.no_grad():
        layer.weight.copy_(weight.to(dtype))
        layer.bias.copy_(shift.to(dtype))
    layer.requires_grad_(False)
    return layer


def batchnorms_as_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Replace every remaining eval-mode BatchNorm by an equal linear layer, in place.

    Args:
        model: a private copy (it is modified); eval mode.
        example: one input ``(1, C, *spatial)``; the probe pass tells each BatchNorm's input rank.

    Returns:
        The names of the replaced BatchNorms (each then gets the composite's convolution rule).
    """
    calls, _ = _record_calls(model, example)
    ranks: dict[str, set[int]] = {}
    for name, module, inp, _out in calls:
        if _is_foldable_batchnorm(module) and isinstance(inp, torch.Tensor):
            ranks.setdefault(name, set()).add(inp.dim())
    replaced = []
    for name, dims in ranks.items():
        if len(dims) == 1 and next(iter(dims)) in (2, 3, 4, 5):
            _replace_module(model, name, _as_layer(model.get_submodule(name), next(iter(dims))))
            replaced.append(name)
    return replaced
