"""Similarity of two attribution maps of the same subject, as used by the sanity checks.

Adebayo et al. (2018), "Sanity checks for saliency maps", NeurIPS, compare maps by
Spearman rank correlation (with and without the sign) and by SSIM of the normalised
absolute maps. A value is None where it is undefined (a constant map).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two flattened maps (ties get average ranks)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return _finite_or_none(spearmanr(a.ravel(), b.ravel()).statistic)


def ssim_abs(a: np.ndarray, b: np.ndarray) -> float | None:
    """SSIM of the channel-summed absolute maps, each scaled to [0, 1] by its maximum.

    Args:
        a, b: maps ``(C, *spatial)``.
    """
    a, b = np.abs(a).sum(0), np.abs(b).sum(0)
    if a.max() == 0 or b.max() == 0:
        return None
    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return None
    return _finite_or_none(structural_similarity(a / a.max(), b / b.max(), data_range=1.0, win_size=win))


def compare_maps(reference: torch.Tensor, other: torch.Tensor) -> dict[str, list[float | None]]:
    """Per-subject ``spearman_abs``, ``spearman`` (signed) and ``ssim`` of two batches of maps ``(N, C, *spatial)``."""
    ref = reference.detach().float().cpu().numpy()
    oth = other.detach().float().cpu().numpy()
    out: dict[str, list[float | None]] = {"spearman_abs": [], "spearman": [], "ssim": []}
    for r, o in zip(ref, oth):
        out["spearman_abs"].append(spearman(np.abs(r), np.abs(o)))
        out["spearman"].append(spearman(r, o))
        out["ssim"].append(ssim_abs(r, o))
    return out


def mean_defined(values: list[float | None]) -> float | None:
    """Mean of the defined values, None when there is none."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
