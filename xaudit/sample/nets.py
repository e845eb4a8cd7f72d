"""The demo classifiers: a small MONAI DenseNet, named so configs can rebuild it.

A DenseNet (Huang et al., "Densely connected convolutional networks", CVPR 2017) with
8 initial features, growth rate 8 and two dense blocks of two layers: about 10 k
parameters, standard modules (Conv, BatchNorm, ReLU, max/avg pooling, Linear), global
average pooling so a bright spot anywhere counts, and trains in seconds on a CPU.
The demo configs name it in the `model.monai` form with exactly `network_spec()`.
"""

from __future__ import annotations

from typing import Any

import torch

NETWORK = "DenseNet"
# The second (last) dense block: the latest conv features, 1/8 of the input grid.
GRADCAM_LAYER = "features.denseblock2"


def network_args(spatial_dims: int) -> dict[str, Any]:
    """Constructor arguments of the demo network for 2D or 3D images.

    Args:
        spatial_dims: 2 or 3.

    Returns:
        Keyword arguments for `monai.networks.nets.DenseNet` (JSON/YAML-safe values).
    """
    return {
        "spatial_dims": int(spatial_dims),
        "in_channels": 1,
        "out_channels": 2,
        "init_features": 8,
        "growth_rate": 8,
        "block_config": [2, 2],
        "bn_size": 2,
    }


def network_spec(spatial_dims: int, checkpoint: str) -> dict[str, Any]:
    """The config's `model.monai` section for the demo network.

    Args:
        spatial_dims: 2 or 3.
        checkpoint: checkpoint path as it should appear in the config.
    """
    return {"network": NETWORK, "args": network_args(spatial_dims), "checkpoint": checkpoint}


def build_network(spatial_dims: int) -> torch.nn.Module:
    """A freshly initialised demo network (seed torch before calling for determinism)."""
    from monai.networks import nets  # heavy import, only when a model is built

    return getattr(nets, NETWORK)(**network_args(spatial_dims))
