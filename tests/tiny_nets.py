"""Tiny classifiers for tests: a plain conv net for 2D/3D and a factory entry point."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool-Conv-ReLU-global pool-Linear; ``features.3`` is the last conv."""

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, classes: int = 2, width: int = 4):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        bn = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        pool = nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d
        gap = nn.AdaptiveAvgPool3d if spatial_dims == 3 else nn.AdaptiveAvgPool2d
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1), bn(width), nn.ReLU(), conv(width, width * 2, 3, padding=1),
            nn.ReLU(), pool(2),
        )
        self.pool = gap(1)
        self.head = nn.Linear(width * 2, classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def build(spatial_dims: int = 3, in_channels: int = 1, classes: int = 2, seed: int = 0) -> nn.Module:
    """Factory used by test configs (``model.factory: tiny_nets:build``)."""
    torch.manual_seed(seed)
    net = TinyCNN(spatial_dims, in_channels, classes)
    net.eval()
    return net


def brightness_net(spatial_dims: int = 3) -> nn.Module:
    """A net whose class-1 logit is the mean intensity: predictions follow brightness."""

    class Bright(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv3d(1, 2, 1) if spatial_dims == 3 else nn.Conv2d(1, 2, 1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(2, 2)
            with torch.no_grad():
                self.features[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, *([1] * spatial_dims)))
                self.features[0].bias.zero_()
                self.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
                self.head.bias.zero_()

        def forward(self, x):
            return self.head(self.pool(self.features(x)).flatten(1))

    return Bright().eval()


class TinyViT(nn.Module):
    """A one-block vision transformer (conv patch embedding, ``nn.TransformerEncoderLayer``, mean-token head).

    MONAI's ViT needs ``einops``, which the test environment does not have; this has the
    same parts that matter to attribution methods: no convolution after the patch
    embedding, attention, LayerNorm, GELU.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, classes: int = 2, patch: int = 4, hidden: int = 32):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.patch_embedding = conv(in_channels, hidden, patch, stride=patch)
        self.blocks = nn.TransformerEncoderLayer(hidden, nhead=2, dim_feedforward=hidden, dropout=0.0, activation="gelu",
                                                 batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(tokens)).mean(1))


class InPlaceAfterReLU(nn.Module):
    """``features.1``'s output (a ReLU's, which its backward needs) is scaled in place: autograd fails."""

    def __init__(self, spatial_dims: int = 3):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        gap = nn.AdaptiveAvgPool3d if spatial_dims == 3 else nn.AdaptiveAvgPool2d
        self.features = nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 4, 3, padding=1))
        self.pool = gap(1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.features[1](self.features[0](x))
        h.mul_(2.0)
        return self.head(self.pool(self.features[2](h)).flatten(1))


def build_inplace(spatial_dims: int = 3) -> nn.Module:
    """Factory for `InPlaceAfterReLU` (``model.factory: tiny_nets:build_inplace``)."""
    torch.manual_seed(0)
    return InPlaceAfterReLU(spatial_dims).eval()


class StridedStem(nn.Module):
    """A MONAI-DenseNet-like stem (7^k, stride 2, one input channel) before TinyCNN's layers."""

    def __init__(self, spatial_dims: int = 3, classes: int = 2):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.stem = conv(1, 4, 7, stride=2, padding=3, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.net = TinyCNN(spatial_dims, in_channels=4, classes=classes)

    def forward(self, x):
        return self.net(self.act(self.stem(x)))


def build_strided(spatial_dims: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return StridedStem(spatial_dims).eval()
