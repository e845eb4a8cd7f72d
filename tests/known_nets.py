"""Tiny models with a known decision rule, for the interventions' known-answer tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Rule(nn.Module):
    """``logit_1 = scale * (statistic(x) - threshold)``, ``logit_0 = -logit_1``; ``features`` is a
    1x1 convolution holding the identity so that layer methods have a layer."""

    def __init__(self, threshold: float, scale: float):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 1, 1))
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.features[0].bias.zero_()
        self.threshold, self.scale = float(threshold), float(scale)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x):
        z = self.scale * (self.statistic(self.features(x)) - self.threshold)
        return torch.stack([-z, z], dim=1)


class MeanIntensity(_Rule):
    """Decides on the mean intensity of the whole image: a global gain or contrast signature."""

    def statistic(self, x):
        return x.flatten(1).mean(1)


class Blob(_Rule):
    """Decides on the brightest 2x2x2 average: a lesion-like blob and nothing else."""

    def statistic(self, x):
        return F.avg_pool3d(x, 2, stride=1).flatten(1).amax(1)


class Corner(_Rule):
    """Decides on the mean of the 2x2x2 corner outside the head: a marker."""

    def statistic(self, x):
        return x[:, :, :2, :2, :2].flatten(1).mean(1)


def build(rule: str, threshold: float, scale: float = 50.0) -> nn.Module:
    """Factory for configs: ``model.factory: {function: known_nets:build, args: {rule: blob, threshold: 2}}``."""
    return {"mean": MeanIntensity, "blob": Blob, "corner": Corner}[rule](threshold, scale).eval()
