"""Deletion and insertion curves: region perturbation with coarse blocks.

Samek et al. (2017), "Evaluating the visualization of what a deep neural network has
learned", IEEE TNNLS (most-relevant-first region perturbation); Petsiuk et al. (2018),
"RISE" (deletion and insertion games).

The image grid is cut into blocks (2D or 3D). Blocks are ranked by their summed
attribution. Deletion replaces the most relevant blocks by a baseline first and
records the target probability after each step; a faithful map makes it fall fast
(low area under the curve). Insertion starts from the baseline and puts the most
relevant blocks back first; a faithful map makes it rise fast (high area). The same
curves for a random block order (seeded) are the reference a map must beat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from xaudit.attribution._baselines import gaussian_blur
from xaudit.attribution.base import chunks
from xaudit.errors import ConfigError, DataError

_BASELINES = ("zeros", "mean", "blur")


def block_labels(spatial: Sequence[int], block: Sequence[int], device=None) -> tuple[torch.Tensor, int]:
    """Block index of every voxel (blocks at the far borders may be smaller), and the block count."""
    counts = [math.ceil(s / b) for s, b in zip(spatial, block)]
    labels = torch.zeros(tuple(spatial), dtype=torch.long, device=device)
    for axis, (size, edge, count) in enumerate(zip(spatial, block, counts)):
        shape = [1] * len(spatial)
        shape[axis] = size
        labels = labels * count + (torch.arange(size, device=device) // edge).view(shape)
    return labels, int(np.prod(counts))


def removal_ranks(scores: torch.Tensor, generators: list[torch.Generator], random_order: bool) -> torch.Tensor:
    """Position of each block in the removal order, ``(N, B)``.

    Highest score first; ties (flat maps, empty background) in a seeded random order
    rather than by block index, which would sweep the volume from one corner.
    """
    n, b = scores.shape
    ranks = torch.empty((n, b), dtype=torch.long)
    for i in range(n):
        perm = torch.randperm(b, generator=generators[i])
        if random_order:
            order = perm
        else:
            order = perm[torch.argsort(-scores[i, perm].cpu(), stable=True)]
        ranks[i, order] = torch.arange(b)
    return ranks


def _generators(seed: int, subject_seeds: Sequence[int] | None, n: int) -> list[torch.Generator]:
    keys = list(subject_seeds) if subject_seeds is not None else list(range(n))
    if len(keys) != n:
        raise DataError(f"subject_seeds has {len(keys)} entries for {n} subjects; give one per subject.")
    out = []
    for key in keys:
        state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(key) & 0xFFFFFFFF]).generate_state(1)
        out.append(torch.Generator().manual_seed(int(state[0])))
    return out


def _baseline(kind: str, inputs: torch.Tensor, blur_sigma: float, baseline_mean: torch.Tensor | None) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros_like(inputs)
    if kind == "blur":
        return gaussian_blur(inputs, blur_sigma).to(inputs.dtype)
    if baseline_mean is not None:
        if tuple(baseline_mean.shape) != tuple(inputs.shape[1:]):
            raise DataError(f"baseline_mean must have the input's shape (C, *spatial) = {tuple(inputs.shape[1:])}. Got {tuple(baseline_mean.shape)} instead.")
        return baseline_mean.to(inputs).unsqueeze(0).expand_as(inputs)
    # no dataset mean given: each subject's own mean intensity per channel
    dims = tuple(range(2, inputs.dim()))
    return inputs.mean(dim=dims, keepdim=True).expand_as(inputs)


def _check(inputs, targets, maps, block, steps, baseline) -> tuple[int, ...]:
    spatial = tuple(inputs.shape[2:])
    if inputs.dim() not in (4, 5):
        raise DataError(f"inputs must be (N, C, H, W) or (N, C, D, H, W). Got shape {tuple(inputs.shape)} instead.")
    if maps.shape[0] != inputs.shape[0] or tuple(maps.shape[2:]) != spatial:
        raise DataError(f"maps must have the inputs' batch and spatial shape {(inputs.shape[0], '*', *spatial)}. Got {tuple(maps.shape)} instead.")
    if tuple(targets.shape) != (inputs.shape[0],):
        raise DataError(f"targets must have shape ({inputs.shape[0]},). Got {tuple(targets.shape)} instead.")
    blocks = (block,) * len(spatial) if isinstance(block, int) else tuple(block)
    if len(blocks) != len(spatial) or any(int(b) < 1 for b in blocks):
        raise ConfigError(f"`block` must be an int >= 1 or {len(spatial)} ints >= 1 (one per spatial axis). Got {block!r} instead.")
    if int(steps) < 1:
        raise ConfigError(f"`steps` must be an int in [1, inf). Got {steps!r} instead.")
    if baseline not in _BASELINES:
        raise ConfigError(f"`baseline` must be one of {list(_BASELINES)}. Got {baseline!r} instead.")
    return tuple(int(b) for b in blocks)


def _curves(model, inputs, base, targets, rank_maps, counts, insert: list[bool], max_batch) -> torch.Tensor:
    """Target probability for every (order, subject, step), evaluated in chunks; ``(K, N, steps+1)``."""
    k_orders, n = len(rank_maps), inputs.shape[0]
    n_steps = len(counts)
    probs = torch.empty(k_orders * n * n_steps, dtype=torch.float32)
    counts_t = torch.as_tensor(counts, device=inputs.device)
    with torch.no_grad():
        for part in chunks(k_orders * n * n_steps, max_batch):
            flat = torch.arange(part.start, part.stop)
            order, subject, step = flat // (n * n_steps), (flat // n_steps) % n, flat % n_steps
            ranks = torch.stack([rank_maps[o][s] for o, s in zip(order.tolist(), subject.tolist())])
            changed = (ranks < counts_t[step.to(inputs.device)].view(-1, *([1] * (ranks.dim() - 1)))).unsqueeze(1)
            inserting = torch.tensor([insert[o] for o in order.tolist()], device=inputs.device).view(-1, *([1] * (inputs.dim() - 1)))
            x, b = inputs[subject.to(inputs.device)], base[subject.to(inputs.device)]
            # deletion: changed blocks take the baseline; insertion: changed blocks take the input
            perturbed = torch.where(changed ^ inserting, b, x)
            p = torch.softmax(model(perturbed).float(), dim=1)
            probs[part] = p.gather(1, targets.to(p.device)[subject.to(p.device)].view(-1, 1)).squeeze(1).cpu()
    return probs.view(k_orders, n, n_steps)


def _summary(curves: np.ndarray, xs: np.ndarray) -> dict:
    auc = ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(xs)).sum(axis=1)
    return {"curves": curves.tolist(), "auc": auc.tolist(), "mean_auc": float(auc.mean())}


def deletion_insertion(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    block: int | Sequence[int] = 4,
    steps: int = 16,
    baseline: str = "zeros",
    max_batch: int = 16,
    *,
    seed: int = 0,
    random_repeats: int = 1,
    blur_sigma: float | None = None,
    baseline_mean: torch.Tensor | None = None,
    subject_seeds: Sequence[int] | None = None,
    random_reference: dict | None = None,
) -> dict:
    """Deletion (MoRF) and insertion curves of attribution maps, with a random-order reference.

    Args:
        model: classifier returning logits ``(N, K)``, in eval mode.
        inputs: ``(N, C, *spatial)``, 2D or 3D.
        targets: explained class per subject ``(N,)``.
        maps: attributions ``(N, C or 1, *spatial)``; summed over channels, then per block.
        block: block edge in voxels, one int or one per spatial axis.
        steps: the curves have ``steps + 1`` points; step t changes ``round(t B / steps)`` of B blocks.
        baseline: what replaces a deleted block: ``zeros``, ``mean`` (``baseline_mean``,
            else each subject's mean per channel) or ``blur`` (Gaussian, ``blur_sigma``
            voxels, default the largest block edge).
        max_batch: perturbed inputs per forward pass.
        seed: seeds the random orders and the tie-breaking.
        random_repeats: random orders per subject (their curves are averaged).
        baseline_mean: dataset mean input ``(C, *spatial)`` for ``mean``.
        subject_seeds: one integer per subject (e.g. from its id) so that a subject's
            random order does not depend on its position in the batch.
        random_reference: the result of an earlier call on the same inputs, targets,
            baseline, block, steps, seeds and ``random_repeats`` (another method's maps):
            its random-order curves are reused instead of evaluated again. They are the
            same: a subject's random order depends on its seed only, never on the map.

    Returns:
        JSON-able dict: ``x`` (fraction of blocks changed), and for ``deletion``,
        ``insertion``, ``random_deletion``, ``random_insertion`` the per-subject curves,
        AUCs (trapezoid over x in [0, 1]) and mean AUC; ``deletion_gain`` = mean random
        deletion AUC minus deletion AUC and ``insertion_gain`` = insertion minus random
        insertion AUC (positive: the maps beat random).
    """
    blocks = _check(inputs, targets, maps, block, steps, baseline)
    if int(random_repeats) < 1:
        raise ConfigError(f"`random_repeats` must be an int in [1, inf). Got {random_repeats!r} instead.")
    labels, n_blocks = block_labels(tuple(inputs.shape[2:]), blocks)
    generators = _generators(seed, subject_seeds, inputs.shape[0])
    rank_maps, insert = _rank_maps(maps, labels, n_blocks, generators, int(random_repeats), inputs.device)
    reuse = _reusable(random_reference, inputs.shape[0], n_blocks, int(steps), blocks, baseline)
    if reuse:
        rank_maps, insert = rank_maps[:2], insert[:2]  # the map's own order only
    counts = [round(t * n_blocks / int(steps)) for t in range(int(steps) + 1)]
    base = _baseline(baseline, inputs, float(blur_sigma or max(blocks)), baseline_mean)
    probs = _curves(model, inputs, base, targets, rank_maps, counts, insert, max_batch).numpy()
    xs = np.asarray(counts, dtype=np.float64) / n_blocks
    result = {
        "x": xs.tolist(),
        "block": list(blocks),
        "n_blocks": n_blocks,
        "steps": int(steps),
        "baseline": baseline,
        "deletion": _summary(probs[0], xs),
        "insertion": _summary(probs[1], xs),
        "random_deletion": random_reference["random_deletion"] if reuse else _summary(probs[2::2].mean(axis=0), xs),
        "random_insertion": random_reference["random_insertion"] if reuse else _summary(probs[3::2].mean(axis=0), xs),
    }
    result["deletion_gain"] = result["random_deletion"]["mean_auc"] - result["deletion"]["mean_auc"]
    result["insertion_gain"] = result["insertion"]["mean_auc"] - result["random_insertion"]["mean_auc"]
    return result


def _reusable(reference: dict | None, n: int, n_blocks: int, steps: int, blocks, baseline: str) -> bool:
    """Whether ``reference`` (an earlier result) was computed on the same game; a mismatch is a caller's error."""
    if reference is None:
        return False
    same = (reference["n_blocks"] == n_blocks and reference["steps"] == steps and tuple(reference["block"]) == tuple(blocks)
            and reference["baseline"] == baseline and len(reference["random_deletion"]["auc"]) == n)
    if not same:
        raise DataError("random_reference was computed on another game (subjects, blocks, steps or baseline differ);"
                        " pass the result of a call on the same inputs")
    return True


def _rank_maps(maps, labels, n_blocks, generators, repeats, device) -> tuple[list[torch.Tensor], list[bool]]:
    """Per order (attribution, then ``repeats`` random), the removal rank of every voxel, twice
    (deletion, insertion), and which of the entries are insertion games."""
    scores = torch.zeros(maps.shape[0], n_blocks)
    scores.index_add_(1, labels.flatten(), maps.detach().float().sum(1).flatten(1).cpu())
    orders = [removal_ranks(scores, generators, random_order=False)]
    orders += [removal_ranks(scores, generators, random_order=True) for _ in range(repeats)]
    rank_maps, insert = [], []
    for ranks in orders:
        rank_map = ranks.to(torch.int32)[:, labels].to(device)
        rank_maps += [rank_map, rank_map]  # deletion and insertion share the order
        insert += [False, True]
    return rank_maps, insert
