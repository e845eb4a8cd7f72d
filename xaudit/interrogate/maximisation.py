"""Activation maximisation: the input a channel responds to most, under image priors.

Erhan et al. (2009, "Visualizing higher-layer features of a deep network", Univ. Montreal
TR 1341) maximise a unit's activation over the input; unregularised, the result is
high-frequency noise. As in Mahendran & Vedaldi (2016, "Visualizing deep convolutional
neural networks using natural pre-images", IJCV 120:233) and Olah et al. (2017, "Feature
visualization", Distill), each step shifts the image by a random jitter, and the objective
adds total variation, an alpha-norm bound and a frequency penalty (the Laplacian's energy):

    x* = argmax_x  mean_space a_c(jitter(x)) / a_ref
                   - lambda_TV R_TV(x) - lambda_alpha R_alpha(x) - lambda_f ||Lap x||^2

``a_ref`` is the layer's mean absolute activation on the real subjects, so the weights
mean the same at every layer. A channel named by a top rule (``head.input:ch12``) that
draws a bright border or corner is a feature of the acquisition, not of the anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaudit.interrogate.inversion import image_scale
from xaudit.interrogate.layers import LayerReader
from xaudit.interrogate.optimise import OptimisationRun, run_adam
from xaudit.interrogate.params import InterrogateParams
from xaudit.interrogate.priors import alpha_norm, jitter_shifts, laplacian_energy, roll, total_variation


@dataclass
class Maximisation:
    """The maximising inputs of several channels of one layer.

    Attributes:
        images: ``(K, C, *S)``, one per channel, on the reference grid.
        activation_initial: ``(K,)`` mean activation of each channel at the start.
        activation_final: ``(K,)`` the same for the result (no jitter).
        activation_real: ``(K,)`` the channel's mean activation over the real subjects.
        run: steps, early stop, time, loss history.
        starts: per channel, the reference input it started from (a channel flat on the
            starting noise), or None.
    """

    images: torch.Tensor
    activation_initial: torch.Tensor
    activation_final: torch.Tensor
    activation_real: torch.Tensor
    run: OptimisationRun
    starts: list[int | None]


def channel_means(activation: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Spatial mean of channel ``channels[k]`` of sample ``k``: ``(K, Ch, *S) -> (K,)``."""
    picked = activation[torch.arange(activation.shape[0], device=activation.device), channels]
    return picked.flatten(1).mean(1)


def maximise(
    model: torch.nn.Module,
    layer: str,
    channels: list[int],
    reference: torch.Tensor,
    params: InterrogateParams,
    deadline: float,
    generator: torch.Generator,
) -> Maximisation:
    """Find, for each channel of ``layer``, an input that maximises its mean activation.

    Args:
        model: the classifier in eval mode.
        layer: module path.
        channels: channel indices of the layer's output, one image each.
        reference: ``(N, C, *S)`` real inputs: the grid, intensity scale and reference
            activation come from them.
        params: steps, learning rate, prior weights, jitter.
        deadline: ``time.perf_counter()`` value after which optimisation stops.
        generator: CPU generator for the starting noise and the jitter.

    Returns:
        `Maximisation` with one image per channel.
    """
    reader = LayerReader(model, layer)
    device = reference.device
    index = torch.as_tensor(channels, device=device, dtype=torch.long)
    with torch.no_grad():
        real = reader(reference)
        a_ref = real.abs().mean().clamp_min(1e-6)
        activation_real = real.mean(dim=tuple(i for i in range(real.ndim) if i != 1))[index]
    mu, scale = image_scale(reference)
    mu, scale = mu.mean(), scale.mean()
    lo, hi = float((reference.min() - mu) / scale), float((reference.max() - mu) / scale)
    shape = (len(channels), *reference.shape[1:])
    dims = reference.ndim - 2

    def objective(z: torch.Tensor, _step: int) -> torch.Tensor:
        shifted = roll(z, jitter_shifts(generator, dims, params.jitter))
        score = channel_means(reader(mu + scale * shifted), index) / a_ref
        loss = -score
        if params.tv_weight > 0:
            loss = loss + params.tv_weight * total_variation(z, params.tv, params.tv_beta)
        if params.norm_weight > 0:
            loss = loss + params.norm_weight * alpha_norm(z, params.alpha)
        if params.frequency_weight > 0:
            loss = loss + params.frequency_weight * laplacian_energy(z)
        return loss

    z = _start(reference, shape, params.start, generator, mu, scale)
    z.clamp_(lo, hi)
    starts = _revive_dead_channels(reader, z, real, index, reference, mu, scale)
    with torch.no_grad():
        initial = channel_means(reader(mu + scale * z), index)
    z.requires_grad_(True)
    with torch.enable_grad():
        # a box constraint: the image stays within the real inputs' intensity range
        run = run_adam(z, objective, params.steps, params.lr, deadline, project=lambda t: t.clamp_(lo, hi))
    with torch.no_grad():
        images = mu + scale * z.detach()
        final = channel_means(reader(images), index)
    return Maximisation(images=images, activation_initial=initial, activation_final=final,
                        activation_real=activation_real, run=run, starts=starts)


def _revive_dead_channels(reader, z, real, index, reference, mu, scale) -> list[int | None]:
    """Restart channels with no gradient at the start from the real input that drives them most.

    A channel behind a ReLU that is zero all over the starting image has zero gradient
    there, so Adam could never move it; the real subject with the highest mean activation
    of that channel is a start inside its active region (the "top activating example").

    Returns:
        Per channel, the index of the reference input it now starts from, or None.
    """
    with torch.enable_grad():
        probe = z.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(channel_means(reader(mu + scale * probe), index).sum(), probe)
    per_subject = real.flatten(2).mean(2)[:, index]  # (N, K)
    starts: list[int | None] = []
    with torch.no_grad():
        for k in range(z.shape[0]):
            best = int(per_subject[:, k].argmax())
            if float(grad[k].abs().max()) == 0.0 and float(per_subject[best, k]) > 0:
                z[k] = (reference[best] - mu) / scale
                starts.append(best)
            else:
                starts.append(None)
    return starts


def _start(reference, shape, start: str, generator, mu, scale) -> torch.Tensor:
    """Small noise (a tenth of the data's spread) or the reference mean image."""
    if start == "mean":
        mean = ((reference.mean(0, keepdim=True) - mu) / scale).expand(shape)
        return mean.detach().clone()
    spread = float(((reference - mu) / scale).std())
    noise = torch.randn(shape, generator=generator).to(reference.device, reference.dtype)
    return (0.1 * spread * noise).detach().clone()
