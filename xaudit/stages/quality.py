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


def quality_stage(setup, cohort, qcfg, max_batch: int, budget_s: float | None = None,
                  costs: dict[str, float] | None = None) -> QualityResult:
    """Deletion/insertion AUCs and randomisation correlations per method, on ``quality.subjects`` subjects.

    ``budget_s``: the stage's time budget (None: none). The first method always runs; each
    further one runs only if it is predicted to end within the budget, else it is skipped with
    the reason. ``costs`` (seconds per method in the subject pass, `xaudit.stages.subject_pass`)
    order the methods cheapest first and scale the prediction from the first method's
    measured time; without them, the configured order, each predicted to take as long as the first.
    """
    start = time.perf_counter()
    if not qcfg.subjects or setup is None:
        return QualityResult(skipped="quality.subjects is 0" if setup is not None else "model not loaded")
    chosen = sample_subjects(cohort.subjects, qcfg.subjects)
    images = []
    for s in chosen:
        try:
            images.append(setup.inputs.load(s, setup.transforms, setup.spatial_dims).tensor)
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
    runs = list(setup.methods)
    costs = costs if costs and all(costs.get(r.name, 0) > 0 for r in runs) else None
    if costs:
        runs.sort(key=lambda r: costs[r.name])
    scored, shared, reference = {}, {}, None
    for run in runs:
        elapsed = time.perf_counter() - start
        predicted = _predicted_seconds(run.name, reference, costs)
        if budget_s is not None and scored and elapsed + predicted > budget_s:  # the first method always runs
            scored[run.name] = {"skipped": f"time budget: scoring it would take about {predicted:.0f} s more, after "
                                           f"{elapsed:.0f} s, of the stage's {budget_s:.0f} s (quality.budget x the "
                                           "subject pass's time; raise quality.budget to score it)"}
            log.info("quality check of %s skipped: about %.0f s more would overrun the stage's time budget (%.0f s)",
                     run.name, predicted, budget_s)
            continue
        try:
            scored[run.name], timing = _score_method(model, x, targets, run, ctx, qcfg, max_batch, shared,
                                                     randomise=qcfg.randomisation and not setup.model.scripted)
            reference = reference or (run.name, timing)
        except XauditError as exc:
            log.warning("quality check of %s skipped: %s", run.name, exc)
            scored[run.name] = {"skipped": str(exc)}
    methods = {r.name: scored[r.name] for r in setup.methods if r.name in scored}  # the configured order
    return QualityResult([s.subject_id for s in chosen[: len(images)]], methods)


def _predicted_seconds(name: str, reference, costs: dict[str, float] | None) -> float:
    """How long scoring ``name`` will take: the first scored method's map time scaled by the two
    methods' costs in the pass, plus its perturbation curves (which do not depend on the method).
    Without costs, as long as the first; before any method ran, 0."""
    if reference is None:
        return 0.0
    ref_name, timing = reference
    return timing["maps"] * (costs[name] / costs[ref_name] if costs else 1.0) + timing["curves"]


def _score_method(model, x, targets, run, ctx, qcfg, max_batch: int, shared: dict,
                  randomise: bool) -> tuple[dict, dict]:
    """One method's scores, and its seconds spent on maps (its own and the randomisation's) and on
    curves; ``shared`` carries the random-order curves from one method to the next (they do not
    depend on the map), so they are evaluated once per run. ``randomise``: run the randomisation
    test too (not on a TorchScript model: it finds the layers' order with forward hooks)."""
    t0 = time.perf_counter()
    maps = run.method.attribute(model, x, targets, ctx).maps
    t_maps = time.perf_counter() - t0
    curves = deletion_insertion(model, x, targets, maps, block=qcfg.block, steps=qcfg.steps, max_batch=max_batch,
                                seed=ctx.seed, subject_seeds=ctx.sample_seeds.tolist() if ctx.sample_seeds is not None else None,
                                random_reference=shared.get("curves"))
    shared.setdefault("curves", curves)
    t_curves = time.perf_counter() - t0 - t_maps
    result = {
        "deletion_auc": curves["deletion"]["mean_auc"], "insertion_auc": curves["insertion"]["mean_auc"],
        "random_deletion_auc": curves["random_deletion"]["mean_auc"],
        "random_insertion_auc": curves["random_insertion"]["mean_auc"],
        "deletion_gain": curves["deletion_gain"], "insertion_gain": curves["insertion_gain"],
        "x": curves["x"], "deletion_curve": _mean_curve(curves["deletion"]),
        "insertion_curve": _mean_curve(curves["insertion"]), "random_deletion_curve": _mean_curve(curves["random_deletion"]),
    }
    if qcfg.randomisation and not randomise:
        result["randomisation_skipped"] = "a TorchScript model has no forward hooks to order its layers by"
    if randomise:
        sanity = randomisation_sanity(model, x, targets, run.method, ctx, seed=ctx.seed, max_steps=qcfg.randomisation_steps,
                                      reference_maps=maps, check_determinism=False)
        result["randomisation"] = [
            {"step": st["step"], "spearman_abs": st.get("spearman_abs"), "ssim": st.get("ssim")} for st in sanity["steps"]
        ]
        final = sanity["steps"][-1].get("spearman_abs")
        result["randomisation_final_spearman_abs"] = final
    return result, {"maps": time.perf_counter() - t0 - t_curves, "curves": t_curves}


def _mean_curve(summary: dict) -> list[float] | None:
    curves = summary.get("curves")
    if not curves:
        return summary.get("mean_curve")
    import numpy as np

    return np.asarray(curves, dtype=float).mean(axis=0).tolist()
