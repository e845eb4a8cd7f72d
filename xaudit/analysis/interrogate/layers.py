"""Which layers to interrogate, in what depth order, and how to read one of them cheaply.

A trace (one forward with hooks on every module) gives each module's output shape and the
order in which outputs appear, i.e. depth. Without a user choice, the blocks are the
conv-holding children of the container with the most of them (``features`` of a MONAI
DenseNet: conv0, denseblock1, transition1, denseblock2), spread evenly, the last one kept:
"at various depths" as in Mahendran & Vedaldi (2015).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xaudit.models.hooks import forward_hooks
from xaudit.errors import ConfigError, choices_message
from xaudit.models.loading import last_linear_name

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CHANNEL_NAME = re.compile(r"^(?P<layer>.+):ch(?P<channel>\d+)$")


@dataclass(frozen=True)
class LayerTrace:
    """Module outputs of one forward pass.

    Attributes:
        order: module paths in the order their outputs appeared (depth order).
        shapes: module path -> output shape without the batch axis (tensor outputs only).
    """

    order: list[str]
    shapes: dict[str, tuple[int, ...]]

    def depth(self, name: str) -> int:
        return self.order.index(name)

    def is_spatial(self, name: str, spatial_dims: int) -> bool:
        return name in self.shapes and len(self.shapes[name]) == spatial_dims + 1


@dataclass(frozen=True)
class ChannelTarget:
    """One channel to maximise: the name asked for and the module output that holds it."""

    name: str
    layer: str
    channel: int


class _StopForward(Exception):
    """Raised by a hook once the deepest wanted layer has run: the rest is not needed."""


def trace_layers(model: nn.Module, sample: torch.Tensor) -> LayerTrace:
    """Run ``sample`` through ``model`` and record every module's output shape and order."""
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name, _m, _args, out):
        if isinstance(out, torch.Tensor):
            shapes[name] = tuple(out.shape[1:])
            order.append(name)

    with forward_hooks([(n, m) for n, m in model.named_modules() if n], hook), torch.no_grad():
        model(sample)
    # a module called twice keeps its first position
    return LayerTrace(order=list(dict.fromkeys(order)), shapes=shapes)


def _holds_conv(module: nn.Module) -> bool:
    return any(isinstance(m, CONV_TYPES) for m in module.modules())


def auto_layers(model: nn.Module, trace: LayerTrace, spatial_dims: int, count: int) -> list[str]:
    """Up to ``count`` conv blocks at increasing depth, the deepest always included.

    Raises:
        ConfigError: the network has no convolution with a spatial output.
    """
    modules = dict(model.named_modules())
    best: list[str] = []
    for parent_name, parent in modules.items():
        prefix = f"{parent_name}." if parent_name else ""
        blocks = [
            f"{prefix}{child}" for child, m in parent.named_children()
            if _holds_conv(m) and trace.is_spatial(f"{prefix}{child}", spatial_dims)
        ]
        if len(blocks) > len(best):  # ties keep the shallower container (seen first)
            best = blocks
    if not best:
        raise ConfigError("`interrogate.layers`: the model has no convolution block with a spatial output; name the layers")
    best.sort(key=trace.depth)
    if len(best) <= count:
        return best
    picks = np.unique(np.round(np.linspace(0, len(best) - 1, count)).astype(int))
    return [best[i] for i in picks]


def check_layers(names: list[str], trace: LayerTrace, spatial_dims: int, key: str = "interrogate.layers") -> list[str]:
    """Validate user-named layers (spatial tensor outputs) and sort them by depth.

    Raises:
        ConfigError: naming the bad layer and listing the valid ones.
    """
    valid = [n for n in trace.order if trace.is_spatial(n, spatial_dims)]
    for name in names:
        if name not in valid:
            raise ConfigError(f"`{key}`: " + choices_message("layer with a spatial output", name, valid))
    return sorted(dict.fromkeys(names), key=trace.depth)


def resolve_channels(names: list[str], model: nn.Module, trace: LayerTrace, spatial_dims: int) -> list[ChannelTarget]:
    """Map ``layer:chN`` names to module outputs.

    ``<module>:chN`` names a conv-like module's output channel; ``<linear>.input:chN`` (the
    default feature names of rules) names an input of the final linear layer and maps to
    the last spatial output before it with as many channels (the map that the global
    pooling turns into that feature).

    Raises:
        ConfigError: a malformed name, an unknown layer, a channel out of range, or a
            linear input that is not a pooled conv map.
    """
    targets = []
    for name in names:
        match = CHANNEL_NAME.match(str(name).strip())
        if match is None:
            raise ConfigError(f"`interrogate.channels` entries look like 'layer:chN'. Got {name!r} instead.")
        layer, channel = match["layer"], int(match["channel"])
        if layer.endswith(".input") and layer not in trace.shapes:
            layer = _pooled_source(layer[: -len(".input")], model, trace, spatial_dims, name)
        layer = check_layers([layer], trace, spatial_dims, key="interrogate.channels")[0]
        width = trace.shapes[layer][0]
        if channel >= width:
            raise ConfigError(f"`interrogate.channels`: {name!r} asks for channel {channel}, but {layer!r} has {width} (0..{width - 1})")
        targets.append(ChannelTarget(name=str(name), layer=layer, channel=channel))
    return targets


def _pooled_source(linear: str, model: nn.Module, trace: LayerTrace, spatial_dims: int, name: str) -> str:
    modules = dict(model.named_modules())
    if linear not in modules or not isinstance(modules[linear], nn.Linear):
        last = last_linear_name(model)
        raise ConfigError(f"`interrogate.channels`: {name!r}: {linear!r} is not a linear layer of the model (the final one is {last!r})")
    width = modules[linear].in_features
    before = trace.order[: trace.depth(linear)] if linear in trace.order else trace.order
    fitting = [n for n in before if trace.is_spatial(n, spatial_dims) and trace.shapes[n][0] == width]
    # the map before global pooling, not the pooled 1x1(x1) output: it shows where the channel fires
    maps = [n for n in fitting if int(np.prod(trace.shapes[n][1:])) > 1]
    if maps or fitting:
        return (maps or fitting)[-1]
    raise ConfigError(
        f"`interrogate.channels`: {name!r}: no conv map with {width} channels feeds {linear!r} through pooling;"
        " name a conv layer's channel instead (e.g. 'features.3:ch0')"
    )


class LayerReader:
    """Forward passes that stop at the deepest wanted layer and return its output.

    Stopping early (an exception from the hook) skips the network's remaining blocks,
    which for shallow layers is most of the cost of each optimisation step.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.model = model
        self.module = dict(model.named_modules())[layer]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}

        def hook(_name, _m, _args, out):
            store["out"] = out
            raise _StopForward

        try:
            with forward_hooks([("layer", self.module)], hook):
                self.model(x)
        except _StopForward:
            pass
        if "out" not in store:
            raise ConfigError("the interrogated layer did not run in the model's forward pass")
        return store["out"]
