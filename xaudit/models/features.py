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

from xaudit.models.hooks import forward_hooks
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
    modules = dict(module.named_modules())
    position = {name: i for i, (name, _) in enumerate(spec.layers)}
    inputs = [(n, modules[n]) for n, where in spec.layers if where == "input"]
    outputs = [(n, modules[n]) for n, where in spec.layers if where != "input"]

    def keep_input(name, _m, args, _out):
        store["features"][position[name]] = pool(args[0].detach(), spec.pooling).float()

    def keep_output(name, _m, _args, out):
        store["features"][position[name]] = pool(out.detach(), spec.pooling).float()

    def keep_concept(_name, _m, _args, out):
        if not isinstance(out, torch.Tensor):
            return out
        store["concept_calls"] = store.get("concept_calls", 0) + 1
        store["concept"] = out
        # later in-place ops (ReLU(inplace=True)) must not overwrite what we keep
        return out.clone()

    concept = [("concept", concept_layer)] if concept_layer is not None else []
    with forward_hooks(inputs, keep_input, pre=True), forward_hooks(outputs, keep_output), \
            forward_hooks(concept, keep_concept):
        yield store


def feature_names(spec: FeatureSpec, widths: list[int]) -> list[str]:
    """``layer:chN`` names for the captured widths."""
    names = []
    for (name, where), width in zip(spec.layers, widths):
        label = f"{name}.input" if where == "input" else name
        names.extend(f"{label}:ch{c}" for c in range(width))
    return names
