"""Representation inversion: the input that a layer cannot tell apart from the subject's.

Mahendran & Vedaldi (2015, "Understanding deep image representations by inverting them",
CVPR) find, for a representation ``phi_L(x0)``,

    x* = argmin_x  ||phi_L(x) - phi_L(x0)||^2 / ||phi_L(x0)||^2
                   + lambda_alpha R_alpha(x) + lambda_TV R_TV(x)

What survives in ``x*`` is what layer L keeps of the subject; what it discarded comes back
as the prior's smooth guess. Here the image is optimised as ``x = mu + B z`` (``mu`` the
subject's mean, ``B`` its largest deviation from it), so the priors act on ``z`` in
``[-1, 1]`` whatever the intensity scale, and ``z`` is a sum of coarse-to-fine grids
(`xaudit.analysis.interrogate.pyramid`) so that a few hundred steps suffice on a CPU. The whole volume is optimised by default, so a
background or border artefact can survive too; `xaudit.analysis.interrogate.retention` then asks
region by region what did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaudit.analysis.interrogate.layers import LayerReader
from xaudit.analysis.interrogate.optimise import OptimisationRun, run_adam
from xaudit.config.interrogate import InterrogateParams
from xaudit.analysis.interrogate.priors import alpha_norm, total_variation
from xaudit.analysis.interrogate.pyramid import PyramidImage

EPS = 1e-8


@dataclass
class Inversion:
    """The inversions of one batch at one layer.

    Attributes:
        images: ``(N, C, *S)`` the optimised inputs ``x*`` (on the batch's device).
        starts: ``(N, C, *S)`` the inputs the optimisation started from.
        representation_loss_initial: ``(N,)`` normalised feature distance at the start.
        representation_loss_final: ``(N,)`` the same at the end.
        run: steps, early stop, time, loss history.
    """

    images: torch.Tensor
    starts: torch.Tensor
    representation_loss_initial: torch.Tensor
    representation_loss_final: torch.Tensor
    run: OptimisationRun


def image_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean ``mu`` and range ``B = max |x - mu|``, shaped to broadcast over ``x``."""
    view = (-1,) + (1,) * (x.ndim - 1)
    mu = x.flatten(1).mean(1).view(view)
    scale = (x - mu).abs().flatten(1).amax(1).clamp_min(EPS).view(view)
    return mu, scale


def starting_image(x0: torch.Tensor, params: InterrogateParams, generator: torch.Generator) -> PyramidImage:
    """The parametrised image at step 0.

    ``noise``: smooth noise (on a 4x coarser grid) with ``noise_scale`` times the subject's
    own spread, drawn on the CPU from ``generator`` so a seed gives the same start on any
    device. ``mean``: the voxel-wise mean of the batch (shared anatomy, and any artefact
    shared by many subjects, is then in the start: compare with ``start_pearson``).
    """
    mu, scale = image_scale(x0)
    image = PyramidImage(tuple(x0.shape), params.pyramid_levels, x0.device, x0.dtype)
    if params.start == "mean":
        image.set_fine(slice(None), (x0.mean(0, keepdim=True) - mu) / scale)
    else:
        spread = ((x0 - mu) / scale).flatten(1).std(1).view((-1,) + (1,) * (x0.ndim - 1))
        image.set_smooth_noise(generator, params.noise_scale * spread)
    return image


def representation_distance(phi: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||phi - target||^2 / ||target||^2`` per sample."""
    num = (phi - target).pow(2).flatten(1).sum(1)
    return num / target.pow(2).flatten(1).sum(1).clamp_min(EPS)


def invert(
    model: torch.nn.Module,
    layer: str,
    x0: torch.Tensor,
    params: InterrogateParams,
    deadline: float,
    generator: torch.Generator,
    foreground: torch.Tensor | None = None,
) -> Inversion:
    """Invert layer ``layer``'s representation of every image of the batch ``x0``.

    Args:
        model: the classifier in eval mode (parameters need no gradient).
        layer: module path whose output is matched.
        x0: ``(N, C, *S)`` preprocessed inputs, on the model's device.
        params: weights of the priors, steps, learning rate, start.
        deadline: ``time.perf_counter()`` value after which optimisation stops.
        generator: CPU generator for the starting noise.
        foreground: ``(N, *S)`` bool; with ``params.restrict_to_foreground`` the voxels
            outside it are held at the subject's background value (its median there).

    Returns:
        `Inversion` with ``x*``, its start and the representation loss before and after.
    """
    reader = LayerReader(model, layer)
    with torch.no_grad():
        target = reader(x0).detach()
    mu, scale = image_scale(x0)
    outside, held = _held_region(x0, foreground, params.restrict_to_foreground)
    image = starting_image(x0, params, generator)

    def compose() -> torch.Tensor:
        x = mu + scale * image.compose()
        return x if outside is None else torch.where(outside, held, x)

    def objective(_step: int) -> torch.Tensor:
        x = compose()
        loss = representation_distance(reader(x), target)
        z = (x - mu) / scale
        if params.tv_weight > 0:
            loss = loss + params.tv_weight * total_variation(z, params.tv, params.tv_beta)
        if params.norm_weight > 0:
            loss = loss + params.norm_weight * alpha_norm(z, params.alpha)
        return loss

    with torch.no_grad():
        starts = compose()
        initial = representation_distance(reader(starts), target)
    with torch.enable_grad():
        run = run_adam(image.grids, objective, params.steps, params.lr, deadline)
    with torch.no_grad():
        images = compose()
        final = representation_distance(reader(images), target)
    return Inversion(images=images, starts=starts, representation_loss_initial=initial,
                     representation_loss_final=final, run=run)


def _held_region(x0: torch.Tensor, foreground: torch.Tensor | None, restrict: bool):
    """The mask of held voxels ``(N, 1, *S)`` and their value, or ``(None, None)``."""
    if not restrict or foreground is None:
        return None, None
    outside = ~foreground.bool().unsqueeze(1)
    held = torch.stack([
        x0[i][outside[i].expand_as(x0[i])].median() if bool(outside[i].any()) else x0[i].amin()
        for i in range(x0.shape[0])
    ]).view((-1,) + (1,) * (x0.ndim - 1))
    return outside, held
