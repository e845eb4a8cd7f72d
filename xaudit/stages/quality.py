"""The explanation-quality stage: which maps are faithful for this model?

On a deterministic sample of audited subjects, every configured method is scored by
region perturbation (deletion/insertion curves against a random order; Samek et al. 2017)
and by the cascading model-parameter randomisation test (Adebayo et al. 2018).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from xaudit.attribution.engine import choose_targets, make_context
from xaudit.data.loading import load_subject
from xaudit.errors import XauditError
from xaudit.analysis.quality import deletion_insertion, randomisation_sanity

log = logging.getLogger("xaudit")


def sample_subjects(subjects, k: int):
    """``k`` subjects evenly spaced through the list (deterministic)."""
    if k <= 0 or not subjects:
        return []
    step = max(1, len(subjects) // k)
    return subjects[::step][:k]


@dataclass(frozen=True)
class QualityResult:
    """``audit.json``'s ``attribution.quality``: per method its scores (or why it was skipped)."""

    subjects: list[str] = field(default_factory=list)
    methods: dict[str, dict] = field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict:
        return {"skipped": self.skipped} if self.skipped else {"subjects": self.subjects, "methods": self.methods}


def quality_stage(setup, cohort, qcfg, max_batch: int, budget_s: float | None = None) -> QualityResult:
    """Deletion/insertion AUCs and randomisation correlations per method, on ``quality.subjects`` subjects.

    ``budget_s``: methods are scored in the configured order (the first always) while the
    stage has run less than this long; the others are skipped with the reason (None: no budget).
    """
    start = time.perf_counter()
    if not qcfg.subjects or setup is None:
        return QualityResult(skipped="quality.subjects is 0" if setup is not None else "model not loaded")
    chosen = sample_subjects(cohort.subjects, qcfg.subjects)
    images = []
    for s in chosen:
        try:
            images.append(load_subject(s, setup.transforms, setup.spatial_dims).tensor)
        except XauditError:
            continue
    if not images or len({tuple(i.shape) for i in images}) != 1:
        return QualityResult(skipped="sampled inputs could not be loaded or differ in shape")
    model = setup.model.module
    x = torch.stack(images).to(setup.device)
    with torch.no_grad():
        logits = model(x)
    labels = torch.tensor([s.label for s in chosen[: len(images)]])
    targets = choose_targets(setup.config.attribution.target, setup.config.model.classes, logits, labels)
    ctx = make_context(setup.layer, setup.config.model.layer, max_batch, setup.config.attribution.seed, None,
                       [s.subject_id for s in chosen[: len(images)]])
    methods, shared = {}, {}
    for run in setup.methods:
        elapsed = time.perf_counter() - start
        if budget_s is not None and elapsed > budget_s and methods:  # the first method always runs
            methods[run.name] = {"skipped": f"time budget: the quality stage had run {elapsed:.0f} s of its"
                                            f" {budget_s:.0f} s (quality.budget x the subject pass's time)"}
            log.info("quality check of %s skipped: over the stage's time budget (%.0f s)", run.name, budget_s)
            continue
        try:
            methods[run.name] = _score_method(model, x, targets, run, ctx, qcfg, max_batch, shared)
        except XauditError as exc:
            log.warning("quality check of %s skipped: %s", run.name, exc)
            methods[run.name] = {"skipped": str(exc)}
    return QualityResult([s.subject_id for s in chosen[: len(images)]], methods)


def _score_method(model, x, targets, run, ctx, qcfg, max_batch: int, shared: dict) -> dict:
    """One method's scores; ``shared`` carries the random-order curves from one method to the next
    (they do not depend on the map), so they are evaluated once per run."""
    maps = run.method.attribute(model, x, targets, ctx).maps
    curves = deletion_insertion(model, x, targets, maps, block=qcfg.block, steps=qcfg.steps, max_batch=max_batch,
                                seed=ctx.seed, subject_seeds=ctx.sample_seeds.tolist() if ctx.sample_seeds is not None else None,
                                random_reference=shared.get("curves"))
    shared.setdefault("curves", curves)
    result = {
        "deletion_auc": curves["deletion"]["mean_auc"], "insertion_auc": curves["insertion"]["mean_auc"],
        "random_deletion_auc": curves["random_deletion"]["mean_auc"],
        "random_insertion_auc": curves["random_insertion"]["mean_auc"],
        "deletion_gain": curves["deletion_gain"], "insertion_gain": curves["insertion_gain"],
        "x": curves["x"], "deletion_curve": _mean_curve(curves["deletion"]),
        "insertion_curve": _mean_curve(curves["insertion"]), "random_deletion_curve": _mean_curve(curves["random_deletion"]),
    }
    if qcfg.randomisation:
        sanity = randomisation_sanity(model, x, targets, run.method, ctx, seed=ctx.seed, max_steps=qcfg.randomisation_steps,
                                      reference_maps=maps, check_determinism=False)
        result["randomisation"] = [
            {"step": st["step"], "spearman_abs": st.get("spearman_abs"), "ssim": st.get("ssim")} for st in sanity["steps"]
        ]
        final = sanity["steps"][-1].get("spearman_abs")
        result["randomisation_final_spearman_abs"] = final
    return result


def _mean_curve(summary: dict) -> list[float] | None:
    curves = summary.get("curves")
    if not curves:
        return summary.get("mean_curve")
    import numpy as np

    return np.asarray(curves, dtype=float).mean(axis=0).tolist()
