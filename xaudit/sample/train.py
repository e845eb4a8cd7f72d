"""Training and prediction of the demo classifiers on the sample cohort.

Images are read from the manifest with the same MONAI transforms the demo configs
declare (`transforms` section), so the audit feeds the model exactly what it was trained
on. Training is plain mini-batch Adam (Kingma and Ba, ICLR 2015) with cross-entropy,
deterministic given the seed: seeded initialisation and a seeded batch order.
"""

from __future__ import annotations

from collections.abc import Callable

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xaudit.errors import DataError
from xaudit.sample.design import CLASSES
from xaudit.sample.nets import build_network


@dataclass(frozen=True)
class TrainParams:
    """Optimiser settings of a demo model.

    Attributes:
        epochs: passes over the training split.
        batch_size: subjects per step.
        lr: Adam learning rate.
        weight_decay: L2 penalty (Adam's, not decoupled).
        flip: augment by mirroring a random half of each batch left-right (the first,
            R-L axis), which doubles the lesion positions a model sees.
    """

    epochs: int = 16
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-3
    flip: bool = True


def preprocessing(transforms: dict[str, Any]):
    """The MONAI pipeline matching a config's `data.transforms` section.

    Args:
        transforms: keys `orientation`, `spacing`, `spatial_size`, `intensity` ("zscore"
            = `NormalizeIntensity()` with its defaults: mean and std over the whole image,
            background included; or "none"). Empty = the stored grid as is.

    Returns:
        A `monai.transforms.Compose` from a file path to a (C, *spatial) tensor.
    """
    from monai import transforms as mt

    steps = [mt.LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)]
    if transforms.get("orientation"):
        steps.append(mt.Orientation(axcodes=transforms["orientation"], labels=None))  # as the audit loads (xaudit.data.loading)
    if transforms.get("spacing"):
        steps.append(mt.Spacing(pixdim=transforms["spacing"], mode="bilinear"))
    if transforms.get("spatial_size"):
        steps.append(mt.ResizeWithPadOrCrop(spatial_size=transforms["spatial_size"]))
    if transforms.get("intensity", "none") == "zscore":
        steps.append(mt.NormalizeIntensity())
    steps.append(mt.EnsureType(data_type="tensor", track_meta=False))
    return mt.Compose(steps)


def load_split(manifest: Path, split: str, transforms: dict[str, Any]
               ) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """All images of one split, preprocessed and stacked.

    Args:
        manifest: the cohort's manifest.csv (image paths relative to it).
        split: value of the `split` column.
        transforms: a config's `data.transforms` section.

    Returns:
        (inputs (N, 1, *spatial) float32, labels (N,) int64 class indices, the split's rows).
    """
    table = pd.read_csv(manifest)
    rows = table[table["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{manifest}: no rows with split == {split!r}; "
                        f"found splits {sorted(table['split'].unique())}.")
    pipeline = preprocessing(transforms)
    inputs = torch.stack([pipeline(str(manifest.parent / path)) for path in rows["image"]])
    labels = torch.as_tensor([CLASSES.index(name) for name in rows["label"]])
    return inputs.float(), labels, rows


def train_classifier(inputs: torch.Tensor, labels: torch.Tensor, params: TrainParams,
                     seed: int, device: torch.device,
                     on_epoch: Callable[[int, int, float], None] | None = None) -> tuple[torch.nn.Module, float]:
    """Train a fresh demo network.

    Args:
        inputs: (N, 1, *spatial) preprocessed images.
        labels: (N,) class indices.
        params: optimiser settings.
        seed: seeds the initialisation and the batch order.
        device: where to train.
        on_epoch: called after each epoch with (epoch, epochs, mean training loss).

    Returns:
        (the model in eval mode on `device`, training wall time in seconds).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_network(inputs.ndim - 2).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr,
                                 weight_decay=params.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(params.epochs):
        losses = []
        for batch in torch.randperm(len(inputs), generator=order).split(params.batch_size):
            if len(batch) < 2:  # BatchNorm cannot train on a single sample
                continue
            optimiser.zero_grad(set_to_none=True)
            batch_inputs = inputs[batch]
            if params.flip:
                mirrored = torch.rand(len(batch), generator=order) < 0.5
                batch_inputs = torch.where(mirrored.view(-1, *[1] * (inputs.ndim - 1)),
                                           batch_inputs.flip(2), batch_inputs)
            loss = loss_fn(model(batch_inputs.to(device)), labels[batch].to(device))
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        if on_epoch is not None:
            on_epoch(epoch + 1, params.epochs, sum(losses) / max(len(losses), 1))
    recalibrate_batchnorm(model, inputs, params.batch_size, device)
    return model, time.perf_counter() - start


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int,
                          device: torch.device) -> None:
    """Replace BatchNorm running statistics by exact averages under the final weights.

    The running averages lag behind weights that change fast (few, large Adam steps);
    a model that is right in train mode is then wrong in eval mode, where the audit runs
    it. Recomputing them over the training set is "precise BN" (Wu and Johnson,
    "Rethinking 'batch' in BatchNorm", arXiv:2105.07576, 2021). Leaves the model in eval
    mode.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None = cumulative average over all batches seen
    model.train()
    for chunk in inputs.split(batch_size):
        model(chunk.to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: torch.Tensor, device: torch.device,
            batch_size: int = 32) -> np.ndarray:
    """Predicted class indices (N,) of a model in eval mode."""
    predictions = [model(chunk.to(device)).argmax(dim=1).cpu()
                   for chunk in inputs.split(batch_size)]
    return torch.cat(predictions).numpy()
