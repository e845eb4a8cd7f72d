"""Layer activations per subject, captured in the same forward pass as the prediction.

Features (for rules and probes) are the activations of the configured layers, pooled over
space for conv layers (global average, or max) and named ``layer:chN``. By default the
layer is the input of the final ``nn.Linear``: what the classifier head actually reads.

The concept layer (``model.layer``) is also captured with its gradient, pooled per channel,
which TCAV needs: ``d logit / d (uniform shift of channel c) = sum over space of the
gradient``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from xaudit.errors import ConfigError
from xaudit.models.loading import find_layer, last_linear_name


@dataclass
class FeatureSpec:
    """Which activations to capture: (module path, "input"|"output") pairs."""

    layers: list[tuple[str, str]]
    pooling: str = "avg"
    names: list[str] = field(default_factory=list)


def feature_spec(module: nn.Module, features_cfg) -> FeatureSpec:
    """Resolve the configured feature layers (default: the final linear layer's input)."""
    if features_cfg.layers:
        for name in features_cfg.layers:
            find_layer(module, name)
        return FeatureSpec([(n, "output") for n in features_cfg.layers], features_cfg.pooling)
    last = last_linear_name(module)
    if last is None:
        raise ConfigError("the model has no nn.Linear layer; name feature layers in `features.layers`")
    return FeatureSpec([(last, "input")], features_cfg.pooling)


def pool(activation: torch.Tensor, how: str) -> torch.Tensor:
    """``(N, C, *spatial)`` -> ``(N, C)``; already-flat activations pass through."""
    if activation.ndim <= 2:
        return activation.reshape(activation.shape[0], -1)
    flat = activation.flatten(2)
    return flat.amax(dim=2) if how == "max" else flat.mean(dim=2)


@contextmanager
def capture(module: nn.Module, spec: FeatureSpec, concept_layer: nn.Module | None = None):
    """Hooks that store pooled features (and the concept layer's raw output) per forward.

    Yields a dict filled on each forward: ``features`` (list of ``(N, C)`` tensors in
    spec order) and ``concept`` (the concept layer's output, graph attached).
    """
    store: dict = {"features": [None] * len(spec.layers), "concept": None}
    handles = []
    modules = dict(module.named_modules())
    for i, (name, where) in enumerate(spec.layers):
        if where == "input":
            def pre_hook(_m, args, i=i):
                store["features"][i] = pool(args[0].detach(), spec.pooling).float()

            handles.append(modules[name].register_forward_pre_hook(pre_hook))
        else:
            def hook(_m, _args, out, i=i):
                store["features"][i] = pool(out.detach(), spec.pooling).float()

            handles.append(modules[name].register_forward_hook(hook))
    if concept_layer is not None:
        def concept_hook(_m, _args, out):
            if not isinstance(out, torch.Tensor):
                return out
            store["concept_calls"] = store.get("concept_calls", 0) + 1
            store["concept"] = out
            # later in-place ops (ReLU(inplace=True)) must not overwrite what we keep
            return out.clone()

        handles.append(concept_layer.register_forward_hook(concept_hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def feature_names(spec: FeatureSpec, widths: list[int]) -> list[str]:
    """``layer:chN`` names for the captured widths."""
    names = []
    for (name, where), width in zip(spec.layers, widths):
        label = f"{name}.input" if where == "input" else name
        names.extend(f"{label}:ch{c}" for c in range(width))
    return names
