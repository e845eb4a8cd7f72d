"""Where in the image the features of the top rules respond.

A rule feature ``layer:chK`` is a pooled channel. Its spatial counterpart is the channel's
activation map before pooling: for a conv layer, the layer's own output; for the default
(the input of the final linear layer), the last spatial activation computed before that
layer with the same number of channels. For each top rule, the mean of that map over the
subjects the rule covers is upsampled to the model-input grid and written as NIfTI
(``maps/rules/<rule>__<feature>.nii.gz``, with the input grid's affine).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xaudit.data.loading import load_subject
from xaudit.data.native import write_volume
from xaudit.errors import XauditError
from xaudit.models import unwrapped

log = logging.getLogger("xaudit")
FEATURE = re.compile(r"^(?P<layer>.+?)(?P<input>\.input)?:ch(?P<channel>\d+)$")


def spatial_module(model: nn.Module, layer: str, is_input: bool, width: int, sample: torch.Tensor) -> nn.Module | None:
    """The module whose output holds the spatial maps of feature layer ``layer``."""
    modules = dict(model.named_modules())
    if not is_input:
        return modules.get(layer)
    order: list[tuple[nn.Module, torch.Tensor]] = []
    target = modules.get(layer)
    hooks = [m.register_forward_hook(lambda m, a, o: order.append((m, o))) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    candidate = None
    for module, out in order:
        if module is target:
            break
        if isinstance(out, torch.Tensor) and out.ndim > 2 and out.shape[1] == width:
            candidate = module
    return candidate


def write_rule_maps(setup, cohort, rules: list[dict], run_dir, top: int = 3) -> list[str]:
    """Mean activation map of each top rule's features over its covered subjects.

    Returns:
        Paths (relative to the run) of the volumes written.
    """
    model = unwrapped(setup.model.module)
    if setup.model.scripted or not rules:
        return []
    ids = {s.subject_id: s for s in cohort.subjects}
    affine = cohort.input_affines[0] if cohort.n else None
    written = []
    for rule in rules[:top]:
        covered = [ids[s] for s in rule.get("covered_subjects", []) if s in ids][:32]
        for feature in sorted({c["feature"] for c in rule.get("conditions", [])}):
            try:
                volume = _mean_feature_map(setup, model, feature, covered)
            except XauditError as exc:
                log.warning("rule map for %s skipped: %s", feature, exc)
                continue
            if volume is None:
                continue
            rel = f"maps/rules/{rule['id']}__{re.sub(r'[^A-Za-z0-9._-]+', '_', feature)}.nii.gz"
            write_volume(volume, affine, run_dir / rel)
            written.append(rel)
    return written


def _mean_feature_map(setup, model, feature: str, subjects) -> np.ndarray | None:
    match = FEATURE.match(feature)
    if match is None or not subjects:
        return None
    channel = int(match["channel"])
    first = load_subject(subjects[0], setup.transforms, setup.spatial_dims).tensor[None].to(setup.device)
    width = _feature_width(model, match["layer"], bool(match["input"]), first)
    module = spatial_module(model, match["layer"], bool(match["input"]), width, first)
    if module is None:
        return None
    captured: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda m, a, o: captured.append(o[:, channel].detach().float()))
    total = None
    try:
        for subject in subjects:
            x = load_subject(subject, setup.transforms, setup.spatial_dims).tensor[None].to(setup.device)
            captured.clear()
            with torch.no_grad():
                model(x)
            mode = "trilinear" if setup.spatial_dims == 3 else "bilinear"
            up = F.interpolate(captured[-1][:, None], size=tuple(x.shape[2:]), mode=mode, align_corners=False)[0, 0]
            total = up if total is None else total + up
    finally:
        hook.remove()
    return (total / len(subjects)).cpu().numpy()


def _feature_width(model, layer: str, is_input: bool, sample) -> int:
    captured = []
    module = dict(model.named_modules())[layer]
    if is_input:
        hook = module.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    else:
        hook = module.register_forward_hook(lambda m, a, o: captured.append(o))
    try:
        with torch.no_grad():
            model(sample)
    finally:
        hook.remove()
    return int(captured[0].shape[1])
