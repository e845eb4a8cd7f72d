"""A tiny classifier that takes its time (for the SLURM fault tests: a job still running when
it is cancelled or requeued). Same weights as ``tiny_nets.build`` for the same seed."""

from __future__ import annotations

import time

import torch

from tiny_nets import TinyCNN


class SlowCNN(TinyCNN):
    def __init__(self, delay_s: float, **kwargs):
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def forward(self, x):
        time.sleep(self.delay_s)
        return super().forward(x)


def build(delay_s: float = 1.0, spatial_dims: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SlowCNN(delay_s, spatial_dims=spatial_dims).eval()
