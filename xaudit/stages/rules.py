"""The rules stage: rules that mimic the network, and where their features respond.

Surrogate forest rules on the layer features (`xaudit.analysis.rules`) go to ``rules.json``
and ``rules.md``. A rule feature ``layer:chK`` is a pooled channel. Its spatial counterpart is the channel's
activation map before pooling: for a conv layer, the layer's own output; for the default
(the input of the final linear layer), the last spatial activation computed before that
layer with the same number of channels. For each top rule, the mean of that map over the
subjects the rule covers is upsampled to the model-input grid and written as NIfTI
(``maps/rules/<rule>__<feature>.nii.gz``, with the input grid's affine).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xaudit.analysis.rules import RulesResult, extract_rules
from xaudit.data.cohort import Cohort
from xaudit.core.outputs import write_json, write_text
from xaudit.data.native import write_volume
from xaudit.errors import XauditError
from xaudit.models.hooks import forward_hooks, leaf_modules
from xaudit.models.loading import unwrapped
from xaudit.report.rules_md import rules_markdown

log = logging.getLogger("xaudit")
FEATURE = re.compile(r"^(?P<layer>.+?)(?P<input>\.input)?:ch(?P<channel>\d+)$")


def spatial_module(model: nn.Module, layer: str, is_input: bool, width: int, sample: torch.Tensor) -> nn.Module | None:
    """The module whose output holds the spatial maps of feature layer ``layer``."""
    modules = dict(model.named_modules())
    if not is_input:
        return modules.get(layer)
    order: list[tuple[nn.Module, torch.Tensor]] = []
    target = modules.get(layer)
    with forward_hooks(leaf_modules(model), lambda _n, m, _a, o: order.append((m, o))), torch.no_grad():
        model(sample)
    candidate = None
    for module, out in order:
        if module is target:
            break
        if isinstance(out, torch.Tensor) and out.ndim > 2 and out.shape[1] == width:
            candidate = module
    return candidate


def write_rule_maps(setup, cohort, rules: list[dict], run_dir, top: int = 3) -> list[str]:
    """Mean activation map of each top rule's features over its covered subjects (at most 32).

    Returns:
        Paths (relative to the run) of the volumes written.
    """
    model = unwrapped(setup.model.module)
    if setup.model.scripted or not rules:
        return []
    ids = {s.subject_id: s for s in cohort.subjects}
    affine = cohort.input_affines[0] if cohort.n else None
    wanted = {rule["id"]: (sorted({c["feature"] for c in rule.get("conditions", [])}),
                           [ids[s] for s in rule.get("covered_subjects", []) if s in ids][:32]) for rule in rules[:top]}
    written = []
    for rule_id, volumes in _mean_feature_maps(setup, model, wanted).items():
        for feature, volume in volumes.items():
            rel = f"maps/rules/{rule_id}__{re.sub(r'[^A-Za-z0-9._-]+', '_', feature)}.nii.gz"
            write_volume(volume, affine, run_dir / rel)
            written.append(rel)
    return written


RULE_MAP_BATCH = 8  # subjects per forward pass


def _mean_feature_maps(setup, model, wanted: dict[str, tuple[list[str], list]]) -> dict[str, dict[str, np.ndarray]]:
    """Per rule (id -> its features and covered subjects), each feature's channel map averaged
    over the rule's subjects that load.

    Every subject is loaded once for all the rules that cover it, and every feature's map
    comes from the same forward pass, in batches of `RULE_MAP_BATCH` (loading each rule's
    subjects anew cost 3 s of the demo's rules stage: the top rules cover the same subjects).
    """
    parsed = {f: FEATURE.match(f) for features, _ in wanted.values() for f in features}
    order = list({s.subject_id: s for _, subjects in wanted.values() for s in subjects}.values())
    if not order or not any(parsed.values()):
        return {}
    first = setup.inputs.load(order[0], setup.transforms, setup.spatial_dims).tensor[None].to(setup.device)
    where: dict[str, tuple[nn.Module, int]] = {}
    for feature, match in parsed.items():
        if match is None:
            continue
        width = _feature_width(model, match["layer"], bool(match["input"]), first)
        module = spatial_module(model, match["layer"], bool(match["input"]), width, first)
        if module is not None:
            where[feature] = (module, int(match["channel"]))
    covers = {rule_id: {s.subject_id for s in subjects} for rule_id, (_, subjects) in wanted.items()}
    totals: dict[tuple[str, str], torch.Tensor] = {}
    counts = dict.fromkeys(wanted, 0)
    captured: dict[int, torch.Tensor] = {}
    hooks = [(str(key), module) for key, module in {id(m): m for m, _ in where.values()}.items()]
    mode = "trilinear" if setup.spatial_dims == 3 else "bilinear"
    with forward_hooks(hooks, lambda name, _m, _a, o: captured.__setitem__(int(name), o.detach().float())):
        for start in range(0, len(order), RULE_MAP_BATCH):
            loaded = []
            for subject in order[start:start + RULE_MAP_BATCH]:
                try:
                    loaded.append((subject.subject_id, setup.inputs.load(subject, setup.transforms, setup.spatial_dims).tensor))
                except XauditError as exc:
                    log.warning("rule maps: %s left out (%s)", subject.subject_id, exc)
            for shape in {tuple(t.shape) for _, t in loaded}:  # one batch per input shape
                batch = [(sid, t) for sid, t in loaded if tuple(t.shape) == shape]
                with torch.no_grad():
                    model(torch.stack([t for _, t in batch]).to(setup.device))
                ups = {feature: F.interpolate(captured[id(module)][:, channel:channel + 1], size=shape[1:], mode=mode,
                                              align_corners=False)[:, 0] for feature, (module, channel) in where.items()}
                for rule_id, (features, _) in wanted.items():
                    mine = [k for k, (sid, _) in enumerate(batch) if sid in covers[rule_id]]
                    counts[rule_id] += len(mine)
                    for feature in (f for f in features if f in ups and mine):
                        part = ups[feature][mine].sum(0)
                        totals[rule_id, feature] = part if (rule_id, feature) not in totals else totals[rule_id, feature] + part
    return {rule_id: {f: (totals[rule_id, f] / counts[rule_id]).cpu().numpy() for f in features if (rule_id, f) in totals}
            for rule_id, (features, _) in wanted.items() if any((rule_id, f) in totals for f in features)}


def _feature_width(model, layer: str, is_input: bool, sample) -> int:
    captured = []
    module = dict(model.named_modules())[layer]
    keep = (lambda _n, _m, args, _o: captured.append(args[0])) if is_input else (lambda _n, _m, _a, o: captured.append(o))
    with forward_hooks([(layer, module)], keep, pre=is_input), torch.no_grad():
        model(sample)
    return int(captured[0].shape[1])


@dataclass(frozen=True)
class RulesStageResult:
    """``audit.json``'s ``rules``: the top rules with the surrogate's fidelity, the features'
    importances, the feature maps written; or why there are none (``skipped``)."""

    summary: dict
    feature_importances: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        return {**self.summary, "feature_importances": self.feature_importances}


def rules_stage(cohort: Cohort, rules_cfg, run_dir, setup=None) -> RulesStageResult:
    """Surrogate forest rules on the layer features (``rules.json``, ``rules.md``), and where
    the top rules' features respond (with the model at hand: ``setup``)."""
    if cohort.features.shape[1] == 0:
        return RulesStageResult({}, skipped="no layer features (TorchScript model, or no linear layer)")
    result = extract_rules(
        cohort.features, cohort.feature_names, cohort.predicted, cohort.labels, cohort.classes,
        {k: v.astype(str) for k, v in cohort.groups.items()}, cohort.subject_ids, rules_cfg,
    )
    write_rules(result, Path(run_dir.root))
    summary = result.to_dict()
    rules = summary.get("rules", [])
    summary["rules"] = rules[: rules_cfg.top_n]
    if setup is not None:
        summary["feature_maps"] = write_rule_maps(setup, cohort, summary["rules"], run_dir)
    return RulesStageResult(summary, feature_importances(rules),
                            artifacts={"rules_json": "rules.json", "rules_md": "rules.md"})


def write_rules(result: RulesResult, out_dir: Path) -> tuple[Path, Path]:
    """Write ``rules.json`` and ``rules.md`` into ``out_dir``, each atomically."""
    return write_json(out_dir / "rules.json", result.to_dict()), write_text(out_dir / "rules.md", rules_markdown(result))


def feature_importances(rules: list[dict]) -> dict[str, float]:
    """Each rule's importance shared equally among the features its conditions use."""
    totals: dict[str, float] = {}
    for rule in rules:
        features = {c["feature"] for c in rule.get("conditions", [])}
        for f in features:
            totals[f] = totals.get(f, 0.0) + float(rule.get("importance") or 0.0) / len(features)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))
