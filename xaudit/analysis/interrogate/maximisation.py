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
mean the same at every layer. The image is a coarse-to-fine pyramid
(`xaudit.analysis.interrogate.pyramid`) kept inside the real inputs' intensity range (a box
constraint, as in Mahendran & Vedaldi 2016). A channel named by a top rule (``head.input:ch12``) that
draws a bright border or corner is a feature of the acquisition, not of the anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaudit.analysis.interrogate.inversion import image_scale
from xaudit.analysis.interrogate.layers import LayerReader
from xaudit.analysis.interrogate.optimise import OptimisationRun, run_adam
from xaudit.config.interrogate import InterrogateParams
from xaudit.analysis.interrogate.priors import alpha_norm, jitter_shifts, laplacian_energy, roll, total_variation
from xaudit.analysis.interrogate.pyramid import PyramidImage


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
    # a box constraint: the image stays within the real inputs' intensity range
    lo, hi = float((reference.min() - mu) / scale), float((reference.max() - mu) / scale)
    image = _start(reference, len(channels), params, generator, mu, scale)
    objective = _objective(reader, image, index, a_ref, mu, scale, (lo, hi), params, generator)
    starts = _revive_dead_channels(reader, image, real, index, reference, mu, scale, (lo, hi))
    with torch.no_grad():
        initial = channel_means(reader(mu + scale * image.compose().clamp(lo, hi)), index)
    with torch.enable_grad():
        run = run_adam(image.grids, objective, params.steps, params.maximisation_lr, deadline)
    with torch.no_grad():
        images = mu + scale * image.compose().clamp(lo, hi)
        final = channel_means(reader(images), index)
    return Maximisation(images=images, activation_initial=initial, activation_final=final,
                        activation_real=activation_real, run=run, starts=starts)


def _objective(reader, image: PyramidImage, index, a_ref, mu, scale, box, params: InterrogateParams, generator):
    """Per-channel loss: minus the jittered channel mean (relative to ``a_ref``) plus the priors."""
    dims = len(image.shape) - 2

    def objective(_step: int) -> torch.Tensor:
        z = image.compose()
        shifted = roll(z.clamp(*box), jitter_shifts(generator, dims, params.jitter))
        loss = -channel_means(reader(mu + scale * shifted), index) / a_ref
        if params.tv_weight > 0:
            loss = loss + params.tv_weight * total_variation(z, params.tv, params.tv_beta)
        if params.norm_weight > 0:
            loss = loss + params.norm_weight * alpha_norm(z, params.alpha)
        if params.frequency_weight > 0:
            loss = loss + params.frequency_weight * laplacian_energy(z)
        return loss

    return objective


def _revive_dead_channels(reader, image: PyramidImage, real, index, reference, mu, scale, box) -> list[int | None]:
    """Restart channels with no gradient at the start from the real input that drives them most.

    A channel behind a ReLU that is zero all over the starting image has zero gradient
    there, so Adam could never move it; the real subject with the highest mean activation
    of that channel is a start inside its active region (the "top activating example").

    Returns:
        Per channel, the index of the reference input it now starts from, or None.
    """
    with torch.enable_grad():
        z = image.compose()
        (grad,) = torch.autograd.grad(channel_means(reader(mu + scale * z.clamp(*box)), index).sum(), image.grids[0])
    per_subject = real.flatten(2).mean(2)[:, index]  # (N, K)
    starts: list[int | None] = []
    for k in range(grad.shape[0]):
        best = int(per_subject[:, k].argmax())
        if float(grad[k].abs().max()) == 0.0 and float(per_subject[best, k]) > 0:
            image.set_fine(k, (reference[best] - mu) / scale)
            starts.append(best)
        else:
            starts.append(None)
    return starts


def _start(reference, count: int, params: InterrogateParams, generator, mu, scale) -> PyramidImage:
    """Smooth noise (``noise_scale`` of the data's spread), or the reference mean image."""
    image = PyramidImage((count, *reference.shape[1:]), params.pyramid_levels, reference.device, reference.dtype)
    if params.start == "mean":
        image.set_fine(slice(None), ((reference.mean(0, keepdim=True) - mu) / scale).expand(count, *reference.shape[1:]))
    else:
        spread = ((reference - mu) / scale).std()
        image.set_smooth_noise(generator, params.noise_scale * spread)
    return image
