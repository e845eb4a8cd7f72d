"""Masked-input test: can the model still separate the classes with the anatomy blanked?

If a classifier separates healthy from diseased when the brain (foreground) is blanked
and only the background is left, it must be reading something other than pathology:
scanner noise, field of view, padding or markers. This is the region-occlusion idea of
Zeiler & Fergus (2014) applied to the whole foreground, as used to expose shortcut
learning in chest radiographs (DeGrave et al. 2021, Nat. Mach. Intell. 3:610). The lead
pipeline runs the model on both blanked variants; this module only scores them.
Blanked inputs are out of distribution, so a low AUC is weaker evidence than a high one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaudit.analysis.stats import Estimate, bootstrap, roc_auc, roc_auc_point
from xaudit.analysis.bias.findings import Finding
from xaudit.core.jsonable import to_jsonable
from xaudit.config.bias import BiasParams

VARIANTS = {"full": "the full image", "background_only": "the foreground blanked",
            "foreground_only": "the background blanked"}


@dataclass
class MaskedInputResult:
    """Per variant: AUC vs labels and vs the original predictions, agreement, accuracy."""

    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"variants": self.variants, "notes": self.notes,
                            "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings]})


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of classes ``y`` from ``probs`` (binary: column 1; else one-vs-rest macro)."""
    return roc_auc_point(y, probs)


def _auc_estimate(y: np.ndarray, probs: np.ndarray, params: BiasParams, seed: list[int]) -> Estimate:
    """Bootstrap AUC; undefined (NaN) unless two classes have ``min_group_size`` members."""
    _, counts = np.unique(y, return_counts=True)
    if np.sum(counts >= params.min_group_size) < 2:
        return Estimate(float("nan"), float("nan"), float("nan"))
    return bootstrap({"auc": lambda w: roc_auc(w, y, probs)}, y, params.bootstrap, params.confidence, seed)[0]["auc"]


def masked_input_summary(
    probs_full: np.ndarray, probs_fg_blanked: np.ndarray | None, probs_bg_blanked: np.ndarray | None,
    labels: np.ndarray, predicted: np.ndarray, params: BiasParams | None = None,
) -> MaskedInputResult:
    """Score the model's outputs on the full, foreground-blanked and background-blanked inputs.

    Args:
        probs_full: ``(n, K)`` probabilities on the full images.
        probs_fg_blanked: ``(n, K)`` with the foreground blanked (background only), or None.
        probs_bg_blanked: ``(n, K)`` with the background blanked (foreground only), or None.
        labels: ``(n,)`` class indices, -1 unknown (left out of label AUCs).
        predicted: ``(n,)`` the model's predictions on the full images.
        params: ``background_auc``, ``bootstrap``, ``confidence``, ``seed``.

    Returns:
        A `MaskedInputResult`; a critical finding when the background alone separates the
        classes (AUC >= ``background_auc`` with its interval above 0.5), a warning when it
        reproduces the model's own predictions that well.
    """
    params = params or BiasParams()
    result = MaskedInputResult()
    known = labels >= 0
    variants = {"full": probs_full, "background_only": probs_fg_blanked, "foreground_only": probs_bg_blanked}
    for i, (name, probs) in enumerate(variants.items()):
        if probs is None:
            result.notes.append(f"Masked input: no probabilities with {VARIANTS[name]}; variant skipped.")
            continue
        result.variants[name] = {
            "auc_vs_label": _auc_estimate(labels[known], probs[known], params, [params.seed, i, 0]),
            "auc_vs_prediction": _auc_estimate(predicted, probs, params, [params.seed, i, 1]),
            "agreement": float(np.mean(probs.argmax(axis=1) == predicted)),
            "accuracy": float(np.mean(probs[known].argmax(axis=1) == labels[known])) if known.any() else float("nan"),
        }
    _, counts = np.unique(labels[known], return_counts=True)
    if np.sum(counts >= params.min_group_size) < 2:
        result.notes.append(f"Masked input: fewer than two known classes with >= {params.min_group_size} "
                            "subjects; AUCs vs labels are undefined.")
    _, counts = np.unique(predicted, return_counts=True)
    if np.sum(counts >= params.min_group_size) < 2:
        result.notes.append(f"Masked input: fewer than two predicted classes with >= {params.min_group_size} "
                            "subjects; AUCs vs predictions are undefined.")
    if "background_only" in result.variants:
        result.signature_tests += int(np.isfinite(result.variants["background_only"]["auc_vs_label"].value))
        result.findings += _background_findings(result.variants, params)
    return result


def _background_findings(variants: dict[str, dict[str, Any]], params: BiasParams) -> list[Finding]:
    bg = variants["background_only"]
    vs_label, vs_pred = bg["auc_vs_label"], bg["auc_vs_prediction"]
    evidence = {name: v for name, v in variants.items()}
    threshold = {"background_auc": params.background_auc, "confidence": params.confidence}
    if vs_label.value >= params.background_auc and vs_label.low > 0.5:
        return [Finding(
            id="masked_input.background_separates", check="masked_input", severity="critical",
            title=(f"the background alone carries a class signal the model reads (AUC {vs_label.value:.2f} with "
                   "the foreground blanked)"),
            message=(f"On images whose foreground was blanked, the model's output separates the true classes "
                     f"with AUC {vs_label.value:.2f} [{vs_label.low:.2f}, {vs_label.high:.2f}] and agrees with "
                     f"its own full-image predictions for {bg['agreement']:.0%} of subjects. What was shown is a "
                     "class signal in the background: a site, scanner or acquisition signature when the sites differ "
                     "by class, but it may also come from the anatomy (a whole-image intensity normalisation moves "
                     "the background's level with a lesion). A background transplant between sites (interventions) "
                     "tells the two apart."),
            evidence=evidence, threshold=threshold, points_to="signature",
        )]
    if vs_pred.value >= params.background_auc and vs_pred.low > 0.5:
        return [Finding(
            id="masked_input.background_predicts_decision", check="masked_input", severity="warning",
            title=f"with the foreground blanked the model's decisions are still predictable (AUC {vs_pred.value:.2f})",
            message=(f"The output on foreground-blanked images predicts the model's own full-image decisions "
                     f"(AUC {vs_pred.value:.2f} [{vs_pred.low:.2f}, {vs_pred.high:.2f}]) although it does not "
                     f"separate the true classes (AUC {vs_label.value:.2f}): part of the decision rests on the background."),
            evidence=evidence, threshold=threshold, points_to="signature",
        )]
    fg = variants.get("foreground_only")
    full = variants.get("full")
    if fg and full and np.isfinite(fg["auc_vs_label"].value) and vs_label.high < params.background_auc \
            and fg["auc_vs_label"].value >= full["auc_vs_label"].value - 0.05:
        return [Finding(
            id="masked_input.foreground_suffices", check="masked_input", severity="info",
            title=(f"the foreground alone keeps the model's AUC ({fg['auc_vs_label'].value:.2f} vs "
                   f"{full['auc_vs_label'].value:.2f} on full images; {vs_label.value:.2f} on the background alone)"),
            message=("With the background blanked the model separates the classes as well as on full images, "
                     "and with the foreground blanked it does not: the decision rests on the foreground."),
            evidence=evidence, threshold=threshold, points_to="pathology",
        )]
    return []
