"""Model-parameter randomisation test, cascading from the logits down.

Adebayo et al. (2018), "Sanity checks for saliency maps", NeurIPS. If a method's maps
explain what the network learned, they must change when the learned weights are
destroyed. Layers are re-initialised one more at a time from the top (the logits)
down, on a private copy, and each step's maps are compared with the original ones.
A faithful method shows the similarity falling towards 0; a method that stays
similar (an edge detector in disguise) fails the check.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Sequence

import torch
from torch import nn

from xaudit.attribution.base import AttributionContext, AttributionMethod
from xaudit.errors import ConfigError, choices_message
from xaudit.analysis.quality.similarity import ReferenceMaps, mean_defined


def parametrised_layers_top_down(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Modules with their own parameters, in reverse order of their (last) call in a forward pass."""
    last_call: dict[str, int] = {}
    clock = itertools.count()
    handles = []
    for name, module in model.named_modules():
        if name and any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_hook(lambda *_, name=name: last_call.__setitem__(name, next(clock))))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(last_call, key=last_call.get, reverse=True)


def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-draw a module's parameters (its own ``reset_parameters``, else N(0, std of the weights)), seeded."""
    devices = sorted({p.device.index for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        targets = [module] + [m for m in module.modules() if m is not module]
        for sub in targets:
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
            else:
                with torch.no_grad():
                    for param in sub.parameters(recurse=False):
                        param.normal_(0.0, float(param.std()) if param.numel() > 1 else 0.02)


def _groups(order: list[str], max_steps: int | None) -> list[list[str]]:
    """One layer per step, or ``max_steps`` consecutive groups of them."""
    if max_steps is None or len(order) <= max_steps:
        return [[name] for name in order]
    bounds = [round(i * len(order) / max_steps) for i in range(max_steps + 1)]
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _context_for(model: nn.Module, original: nn.Module, ctx: AttributionContext) -> AttributionContext:
    """The context with ``layer`` pointing at the same-named module of ``model`` (a copy)."""
    if ctx.layer is None:
        return ctx
    name = ctx.layer_name
    if name is None:
        name = next((n for n, m in original.named_modules() if m is ctx.layer), None)
    if name is None:
        raise ConfigError("ctx.layer is not a module of the model and ctx.layer_name is not set")
    return dataclasses.replace(ctx, layer=model.get_submodule(name), layer_name=name)


def _step_record(step: int, randomised: list[str], similarity: dict) -> dict:
    record = {"step": step, "randomised": randomised}
    record.update({key: mean_defined(values) for key, values in similarity.items()})
    record["per_subject"] = similarity
    return record


def randomisation_sanity(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    method: AttributionMethod,
    ctx: AttributionContext | None = None,
    layers_order: Sequence[str] | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    reference_maps: torch.Tensor | None = None,
    check_determinism: bool = True,
) -> dict:
    """Cascading model-parameter randomisation test of one attribution method.

    Args:
        model: the trained classifier (not modified; a deep copy is randomised).
        inputs: ``(N, C, *spatial)``; targets: ``(N,)`` explained classes (kept fixed).
        method: an instance from the registry, ``get_method(name)(params)``.
        ctx: the attribution context (layer, max_batch, seed); its layer is looked up
            by name in the copy.
        layers_order: module paths to randomise, top first; a container stands for all
            its parameters. Default: every module with parameters, in reverse call order.
        seed: seeds the re-initialisation.
        max_steps: merge the layers into at most this many consecutive groups (a
            DenseNet121 has ~240 parametrised modules; each step costs one attribution pass).
        reference_maps: the method's maps of ``inputs`` on the trained model, if already
            computed (saves one attribution pass).
        check_determinism: compute step 0 (one more pass); when False, step 0 is the
            reference itself and marked ``"reference_only": True``.

    Returns:
        JSON-able dict: ``method``, ``layers`` (the order used), and ``steps``: step 0
        (the copy before randomisation, a determinism check: 1.0 for a deterministic
        method) then one entry per randomised layer or group, each with the mean over
        subjects of ``spearman_abs``, ``spearman`` and ``ssim`` and the per-subject values.
    """
    ctx = ctx or AttributionContext()
    original = reference_maps if reference_maps is not None else method.attribute(model, inputs, targets, ctx).maps
    reference = ReferenceMaps(original)
    work = copy.deepcopy(model)
    if layers_order is None:
        order = parametrised_layers_top_down(work, inputs[:1])
    else:
        names = dict(work.named_modules())
        for name in layers_order:
            if name not in names:
                raise ConfigError(choices_message("layer in `layers_order`", name, [n for n in names if n]))
        order = list(layers_order)
    if check_determinism:
        steps = [_step_record(0, [], reference.compare(method.attribute(work, inputs, targets, _context_for(work, model, ctx)).maps))]
    else:
        steps = [{**_step_record(0, [], reference.itself()), "reference_only": True}]
    for index, group in enumerate(_groups(order, max_steps), start=1):
        for name in group:
            reinitialise(work.get_submodule(name), seed + index)
        maps = method.attribute(work, inputs, targets, _context_for(work, model, ctx)).maps
        steps.append(_step_record(index, group, reference.compare(maps)))
    return {"method": method.name, "seed": seed, "layers": order, "steps": steps}
