"""Image priors for inversion and maximisation, for 2D and 3D batches ``(N, C, *S)``.

Each returns one value per sample (``(N,)``), averaged over voxels so that weights do not
depend on the volume's size, and is computed on intensities normalised by the subject's
range ``B`` as in Mahendran & Vedaldi (2015, Sec. 3: ``R / (H W B^beta)``), so the same
weights fit z-scored, min-max scaled or raw inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alpha_norm(z: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mean ``|z|^alpha`` per sample: with a large alpha, a soft bound on the range of z."""
    return z.abs().pow(alpha).flatten(1).mean(1)


def total_variation(z: torch.Tensor, kind: str = "isotropic", beta: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Total variation ``V^beta`` per sample (Rudin, Osher & Fatemi 1992; Mahendran & Vedaldi 2015).

    Args:
        z: ``(N, C, *S)`` with two or three spatial axes.
        kind: "isotropic" (``(sum_d dz_d^2)^(beta/2)``, rotation invariant) or
            "anisotropic" (``sum_d |dz_d|^beta``).
        beta: 1 is the classic, edge-preserving TV; 2 a smoothness prior.
        eps: keeps the gradient finite where the image is flat (beta < 2).

    Returns:
        ``(N,)`` mean over voxels (and channels).
    """
    dims = z.ndim - 2
    diffs = [torch.diff(z, dim=2 + d) for d in range(dims)]
    if kind == "anisotropic":
        terms = [(d.pow(2) + eps).pow(beta / 2).flatten(1).mean(1) for d in diffs]
        return torch.stack(terms).sum(0)
    # align the forward differences on the common (S - 1) corner so they can be summed per voxel
    common = tuple(slice(0, s - 1) for s in z.shape[2:])
    squared = sum(d[(slice(None), slice(None), *common)].pow(2) for d in diffs)
    return (squared + eps).pow(beta / 2).flatten(1).mean(1)


def laplacian_energy(z: torch.Tensor) -> torch.Tensor:
    """Mean squared discrete Laplacian per sample: the energy at the highest frequencies.

    The Laplacian's transfer function grows as ``|k|^2``, so its energy is the spectrum
    weighted by ``|k|^4``: a frequency penalty that leaves smooth structure alone and
    stops the checkerboard patterns maximisation otherwise grows (Olah et al. 2017).
    """
    dims = z.ndim - 2
    padded = F.pad(z, (1, 1) * dims, mode="replicate")
    centre = tuple(slice(1, -1) for _ in range(dims))
    lap = torch.zeros_like(z)
    for d in range(dims):
        lo = list(centre)
        hi = list(centre)
        lo[d] = slice(0, -2)
        hi[d] = slice(2, None)
        lap = lap + padded[(slice(None), slice(None), *lo)] + padded[(slice(None), slice(None), *hi)] - 2 * z
    return lap.pow(2).flatten(1).mean(1)


def jitter_shifts(generator: torch.Generator, dims: int, amount: int) -> tuple[int, ...]:
    """Random integer shifts in ``[-amount, amount]`` per spatial axis (CPU generator: reproducible)."""
    if amount <= 0:
        return (0,) * dims
    return tuple(int(v) for v in torch.randint(-amount, amount + 1, (dims,), generator=generator))


def roll(z: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """Shift the spatial axes circularly (the jitter of Mordvintsev et al. 2015)."""
    if not any(shifts):
        return z
    return torch.roll(z, shifts=shifts, dims=tuple(range(2, z.ndim)))
