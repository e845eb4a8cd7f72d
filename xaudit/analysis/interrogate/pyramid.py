"""The image being optimised, as a sum of upsampled coarse grids (a Laplacian pyramid).

``z = sum_k upsample(z_k)`` with ``z_k`` on grids 1, 2, 4, ... times coarser. A gradient
step on a coarse grid moves a whole block of voxels at once, so the smooth layout a deep
layer keeps is found in tens of steps instead of thousands; plain voxels (one level) move
only where the gradient happens to point and stay noisy. This is the pyramid
parametrisation of Olah et al. (2017, "Feature visualization", Distill, Sec. "Preconditioning
and parameterization"); it changes the path of the optimiser, not the objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PyramidImage:
    """A batch ``(N, C, *S)`` parametrised by ``levels`` grids (factors 1, 2, 4, ...).

    Attributes:
        shape: the full batch shape.
        grids: leaf tensors with ``requires_grad``, finest first.
    """

    def __init__(self, shape: tuple[int, ...], levels: int, device: torch.device, dtype: torch.dtype = torch.float32):
        self.shape = tuple(shape)
        spatial = self.shape[2:]
        self.grids: list[torch.Tensor] = []
        for k in range(max(int(levels), 1)):
            factor = 2**k
            coarse = tuple(max(1, s // factor) for s in spatial)
            if k > 0 and coarse == tuple(self.grids[-1].shape[2:]):
                break  # the grid cannot get coarser
            self.grids.append(torch.zeros(self.shape[:2] + coarse, device=device, dtype=dtype, requires_grad=True))

    def compose(self) -> torch.Tensor:
        """The image ``z``: every grid upsampled (linear) to full size and summed."""
        spatial = self.shape[2:]
        mode = "trilinear" if len(spatial) == 3 else "bilinear"
        total = self.grids[0]
        for grid in self.grids[1:]:
            total = total + F.interpolate(grid, size=spatial, mode=mode, align_corners=False)
        return total

    def set_fine(self, index: int | slice, values: torch.Tensor) -> None:
        """Put ``values`` on the finest grid of sample(s) ``index`` and zero the coarse ones there."""
        with torch.no_grad():
            self.grids[0][index] = values
            for grid in self.grids[1:]:
                grid[index] = 0.0

    def set_smooth_noise(self, generator: torch.Generator, spread: torch.Tensor, level: int = 2) -> None:
        """Noise on one coarse grid (default 4x coarser): a start without any subject's
        structure and without the high frequencies that drive BatchNorm'd layers out of range."""
        grid = self.grids[min(level, len(self.grids) - 1)]
        noise = torch.randn(tuple(grid.shape), generator=generator).to(grid.device, grid.dtype)
        with torch.no_grad():
            grid.copy_(noise * spread)
