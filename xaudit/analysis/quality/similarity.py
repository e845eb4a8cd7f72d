"""Similarity of two attribution maps of the same subject, as used by the sanity checks.

Adebayo et al. (2018), "Sanity checks for saliency maps", NeurIPS, compare maps by
Spearman rank correlation (with and without the sign) and by SSIM of the normalised
absolute maps. A value is None where it is undefined (a constant map).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.metrics import structural_similarity


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _ranks(a: np.ndarray) -> np.ndarray | None:
    """Average ranks of a flattened map, centred and scaled to unit norm; None for a constant map."""
    flat = a.ravel()
    if np.ptp(flat) == 0:
        return None
    ranks = rankdata(flat).astype(np.float64)  # ties get average ranks, as in scipy.stats.spearmanr
    ranks -= ranks.mean()
    norm = np.linalg.norm(ranks)
    return ranks / norm if norm > 0 else None


def _correlate(ra: np.ndarray | None, rb: np.ndarray | None) -> float | None:
    return None if ra is None or rb is None else _finite_or_none(float(np.clip(ra @ rb, -1.0, 1.0)))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two flattened maps (ties get average ranks)."""
    return _correlate(_ranks(a), _ranks(b))


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


class ReferenceMaps:
    """A batch of reference maps ``(N, C, *spatial)``, ranked once, compared with many others.

    The randomisation test compares the trained model's maps with those of every
    randomisation step; ranking the reference once halves the ranking work.
    """

    def __init__(self, reference: torch.Tensor):
        self.maps = reference.detach().float().cpu().numpy()
        self._abs = [_ranks(np.abs(r)) for r in self.maps]
        self._signed = [_ranks(r) for r in self.maps]

    def itself(self) -> dict[str, list[float | None]]:
        """The reference against itself: 1 wherever a similarity is defined, with no work."""
        return {"spearman_abs": [None if r is None else 1.0 for r in self._abs],
                "spearman": [None if r is None else 1.0 for r in self._signed],
                "ssim": [None if np.abs(r).sum(0).max() == 0 else 1.0 for r in self.maps]}

    def compare(self, other: torch.Tensor) -> dict[str, list[float | None]]:
        """Per-subject ``spearman_abs``, ``spearman`` (signed) and ``ssim`` of ``other`` against the reference."""
        oth = other.detach().float().cpu().numpy()
        out: dict[str, list[float | None]] = {"spearman_abs": [], "spearman": [], "ssim": []}
        for r, o, ra, rs in zip(self.maps, oth, self._abs, self._signed):
            out["spearman_abs"].append(_correlate(ra, _ranks(np.abs(o))))
            out["spearman"].append(_correlate(rs, _ranks(o)))
            out["ssim"].append(ssim_abs(r, o))
        return out


def compare_maps(reference: torch.Tensor, other: torch.Tensor) -> dict[str, list[float | None]]:
    """Per-subject ``spearman_abs``, ``spearman`` (signed) and ``ssim`` of two batches of maps ``(N, C, *spatial)``."""
    return ReferenceMaps(reference).compare(other)


def mean_defined(values: list[float | None]) -> float | None:
    """Mean of the defined values, None when there is none."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
