"""LIME over image regions: a weighted linear surrogate of the model on region on/off masks.

Ribeiro, Singh & Guestrin (2016), "'Why Should I Trust You?': Explaining the Predictions
of Any Classifier", KDD.

As in the ``lime`` package's image explainer: the first sample keeps every region, the
others keep each region with probability 1/2; a removed region takes the baseline's
values; samples are weighted by ``sqrt(exp(-d^2 / kernel_width^2))`` with ``d`` the cosine
distance of the on/off vector to all-on; a ridge regression (alpha ``ridge_alpha``) fits
the target logit (or probability) on the on/off vectors. Each region's coefficient is
painted on its voxels; background (label 0) is never removed and gets 0.

Regions: SLIC supervoxels (Achanta et al. 2012) of the first channel, restricted to
``ctx.foreground`` when given, or the engine's atlas labels ``ctx.region_labels``.
Perturbed inputs of all subjects are evaluated together in chunks of ``ctx.max_batch``
(forward only); on/off vectors come from each subject's own seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.linear_model import Ridge
from skimage.segmentation import slic

from xaudit.config.methods import LimeParams
from xaudit.attribution._baselines import BaselineParams, make_baseline
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    expanded_chunks,
    sample_generators,
    select_targets,
)
from xaudit.errors import ConfigError, DataError


def slic_regions(inputs: torch.Tensor, n_segments: int, compactness: float, foreground: torch.Tensor | None) -> np.ndarray:
    """SLIC supervoxels of each sample's first channel, ``(N, *spatial)`` int, 0 = background."""
    labels = []
    for i, volume in enumerate(inputs[:, 0].detach().float().cpu().numpy()):
        span = float(volume.max() - volume.min())
        # rescale so that one compactness value suits any intensity normalisation
        image = (volume - volume.min()) / span if span > 0 else np.zeros_like(volume)
        mask = foreground[i].cpu().numpy().astype(bool) if foreground is not None else None
        labels.append(slic(image, n_segments=n_segments, compactness=compactness, channel_axis=None,
                           start_label=1, mask=mask, enforce_connectivity=True))
    return np.stack(labels).astype(np.int64)


def region_index(labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Per sample, its region labels (sorted, nonzero) and a voxel map to 0..M-1 (-1 = background)."""
    names, index = [], np.full(labels.shape, -1, dtype=np.int64)
    for i, sample in enumerate(labels):
        present = np.unique(sample[sample != 0])
        if present.size == 0:
            raise DataError(f"sample {i} of the batch has no region (all labels are 0): LIME has nothing to perturb.")
        names.append(present)
        index[i][sample != 0] = np.searchsorted(present, sample[sample != 0])
    return names, index


def lime_kernel_weights(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's sample weights: ``sqrt(exp(-d^2 / w^2))``, d = cosine distance of z to all-on."""
    norms = np.linalg.norm(z, axis=1) * np.sqrt(z.shape[1])
    # an all-off vector has no direction; sklearn's cosine_distances gives it distance 1 too
    cosine = np.divide(z.sum(1), norms, out=np.zeros(len(z)), where=norms > 0)
    return np.sqrt(np.exp(-((1.0 - cosine) ** 2) / kernel_width**2))


def perturbed_scores(model, inputs, targets, baselines, index, masks, max_batch: int, output: str) -> torch.Tensor:
    """Model output for every (subject, on/off vector) pair, ``(N, S)``; forward only."""
    n, samples = len(masks), masks[0].shape[0]
    scores = torch.empty(n, samples, dtype=torch.float32, device=inputs.device)
    for subject, draw in expanded_chunks(n, samples, max_batch):
        rows = []
        for i, s in zip(subject.tolist(), draw.tolist()):
            # index -1 (background) picks the appended 1: always kept
            keep = torch.cat([masks[i][s], masks[i].new_ones(1)])[index[i]]
            rows.append(torch.where(keep.bool().unsqueeze(0), inputs[i], baselines[i].to(inputs.dtype)))
        with torch.no_grad():
            logits = model(torch.stack(rows)).float()
        if output == "probability":
            logits = logits.softmax(1)
        scores[subject.to(inputs.device), draw.to(inputs.device)] = select_targets(logits, targets[subject.to(inputs.device)])
    return scores


class Lime(AttributionMethod):
    name = "lime"
    supports_amp = False  # float32 only: its own backward rules or a sklearn fit
    summary = "weighted ridge surrogate of the model on region on/off perturbations"
    Params = LimeParams
    stochastic = True
    reference = "Ribeiro et al. 2016, KDD, arXiv:1602.04938"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        # forward only (1/3 of a forward+backward) per perturbed input
        return self.params.samples / 3.0

    def region_labels(self, inputs: torch.Tensor, ctx: AttributionContext) -> np.ndarray:
        """Integer region map per sample from SLIC or the engine's atlas."""
        p = self.params
        if p.regions == "slic":
            return slic_regions(inputs, p.n_segments, p.compactness, ctx.foreground)
        if ctx.region_labels is None:
            raise ConfigError("`attribution.methods.lime.regions` is 'atlas' but no atlas labels are available (ctx.region_labels is None). Configure an atlas, or use regions 'slic'.")
        labels = ctx.region_labels.detach().cpu().numpy().astype(np.int64)
        if labels.shape != (inputs.shape[0], *inputs.shape[2:]):
            raise DataError(f"atlas labels for `lime` must have shape (N, *spatial) = {(inputs.shape[0], *inputs.shape[2:])}. Got {labels.shape} instead.")
        return labels

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        p = self.params
        names, index = region_index(self.region_labels(inputs, ctx))
        index_t = torch.as_tensor(index, device=inputs.device)
        generators = sample_generators(ctx, inputs.shape[0], inputs.device)
        masks = []
        for g, regions in zip(generators, names):
            z = torch.randint(0, 2, (p.samples, len(regions)), generator=g, device=inputs.device)
            z[0] = 1  # LIME's first sample is the unperturbed input
            masks.append(z)
        baselines = make_baseline(p.baseline, inputs, ctx, p.blur_sigma, self.name)
        scores = perturbed_scores(model, inputs, targets.to(inputs.device), baselines, index_t, masks, ctx.max_batch, p.output)
        maps = torch.zeros(inputs.shape, dtype=torch.float32, device=inputs.device)
        weights, r2 = [], torch.empty(inputs.shape[0], dtype=torch.float32)
        for i, regions in enumerate(names):
            z, y = masks[i].cpu().numpy().astype(np.float64), scores[i].cpu().numpy().astype(np.float64)
            kernel = lime_kernel_weights(z, p.kernel_width)
            surrogate = Ridge(alpha=p.ridge_alpha).fit(z, y, sample_weight=kernel)
            r2[i] = float(surrogate.score(z, y, sample_weight=kernel)) if np.ptp(y) > 0 else 1.0
            coef = torch.as_tensor(surrogate.coef_, dtype=torch.float32, device=inputs.device)
            # index -1 (background) picks the appended 0
            voxel = torch.cat([coef, coef.new_zeros(1)])[index_t[i]]
            maps[i] = voxel.unsqueeze(0).expand_as(maps[i])
            weights.append({int(label): float(w) for label, w in zip(regions, surrogate.coef_)})
        return AttributionResult(maps, stats={"surrogate_r2": r2.to(inputs.device)}, region_weights=weights)
