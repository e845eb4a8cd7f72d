"""Findings that read true: small-n intervals, unknown training counts, fully confounded
per-site metrics, near-chance models, class signals in the background, and the verdict
with and without interventions."""

from __future__ import annotations

import numpy as np

from xaudit.analysis.bias import BiasParams, Finding, group_metrics, verdict
from xaudit.analysis.bias.corroboration import corroborate_with_interventions

CLASSES = ["healthy", "lesion"]
FAST = BiasParams(bootstrap=200)


def test_a_cell_of_six_cannot_raise_a_finding_by_itself():
    """83% [..] at B (n=6) vs 100% at A (n=6) fired with percentile bootstraps ([1, 1] for 6/6)."""
    labels = np.array([1] * 12 + [0] * 12)
    site = np.array(["A"] * 6 + ["B"] * 6 + ["A"] * 6 + ["B"] * 6)
    predicted = labels.copy()
    predicted[6] = 0  # one lesion subject at B missed
    result = group_metrics(labels, predicted, None, CLASSES, {"site": site}, FAST)
    cell = next(c for c in result.cells if c.class_name == "lesion" and c.value == "A")
    assert cell.accuracy.value == 1.0 and 0.60 < cell.accuracy.low < 0.62 and cell.accuracy.high == 1.0
    disparity = next(d for d in result.disparities if d.class_name == "lesion")
    assert disparity.difference.low < 0
    assert not [f for f in result.findings if f.id.startswith("group_metrics.cell")]


def test_a_real_cell_difference_still_fires():
    labels = np.array([1] * 40 + [0] * 40)
    site = np.tile(np.repeat(["A", "B"], 20), 2)
    predicted = labels.copy()
    predicted[20:32] = 0  # 12 of 20 lesion subjects at B missed
    result = group_metrics(labels, predicted, None, CLASSES, {"site": site}, FAST)
    [cell] = [f for f in result.findings if f.id == "group_metrics.cell.site.lesion"]
    assert cell.points_to == "signature" and "Newcombe" in cell.message


def test_training_counts_are_unknown_when_the_training_split_was_not_audited():
    labels = np.array([1] * 40 + [0] * 40)
    site = np.tile(np.repeat(["A", "B"], 20), 2)
    predicted = labels.copy()
    predicted[20:32] = 0
    result = group_metrics(labels, predicted, None, CLASSES, {"site": site}, FAST, splits=np.full(80, "test"))
    assert all(c.n_train is None for c in result.cells)  # was 0 in every cell
    [cell] = [f for f in result.findings if f.id == "group_metrics.cell.site.lesion"]
    assert "training subjects unknown" in cell.message and "0 in training" not in cell.message


def test_per_site_metrics_of_a_fully_confounded_column_raise_no_finding():
    labels = np.array([0] * 15 + [1] * 15)
    site = np.where(labels == 0, "A", "B")
    predicted = labels.copy()
    predicted[15:19] = 0  # recall 73% at B, 100% at A: a class difference, not a site one
    result = group_metrics(labels, predicted, np.c_[1 - predicted, predicted].astype(float), CLASSES,
                           {"site": site}, FAST)
    assert any(d.class_name is None for d in result.disparities)  # still tabled
    assert not [f for f in result.findings if f.id.startswith("group_metrics.disparity")]
    assert any("holds a single class" in n for n in result.notes)


def _design() -> Finding:
    return Finding(id="design.confounded.site", check="design", severity="critical",
                   title="site is fully confounded with the label", message="", points_to="design", column="site")


def _summary(moved: bool, flips: int = 0) -> dict:
    return {"ran": ["background_transplant", "intensity_harmonisation"], "not_run": {"noise_matching": "equal noise"},
            "signature_tests": 4, "moved": moved, "flips": flips, "trials": 24, "max_flip_rate_high": 0.3,
            "by_intervention": {"background_transplant": {"trials": 12, "flips": 0, "moved": False},
                                "intensity_harmonisation": {"trials": 12, "flips": flips, "moved": moved}}}


def test_a_confounded_design_whose_decisions_hold_is_consistent_with_pathology():
    out = verdict([_design()], {}, interventions=_summary(moved=False))
    assert out["verdict"] == "consistent_with_pathology"
    sentence = out["sentence"]
    assert sentence.startswith("Consistent with pathology") and "accuracy cannot be trusted" in sentence
    assert "intensity harmonisation: 0 of 12" in sentence and "not run: noise matching (equal noise)" in sentence


def test_a_confounded_design_says_when_the_interventions_could_not_run():
    out = verdict([_design()], {}, interventions={"skipped": "the model is not loaded"})
    assert out["verdict"] == "inconclusive"
    assert "interventions, which can test a confounded design, did not run (the model is not loaded)" in out["sentence"]
    assert verdict([_design()], {})["verdict"] == "inconclusive"  # no interventions: the old rule


def test_a_near_chance_model_is_said_to_be_near_chance_first():
    half = {"value": 0.5, "low": 0.35, "high": 0.65}
    gm = {"n_evaluated": 40, "overall": {"balanced_accuracy": half, "sensitivity": half, "specificity": half}}
    out = verdict([_design()], {"group_metrics": gm}, interventions=_summary(moved=False))
    assert out["verdict"] == "near_chance" and out["sentence"].startswith("The model is near chance")
    signature = Finding(id="interventions.noise_matching.site", check="interventions", severity="critical",
                        title="noise matching moves the decisions", message="", points_to="signature", column="site")
    found = verdict([_design(), signature], {"group_metrics": gm})
    assert found["verdict"] == "signature" and found["sentence"].startswith("The model is near chance")
    assert "points to a site/scanner signature" in found["sentence"]
    good = {**gm, "overall": {**gm["overall"], "balanced_accuracy": {"value": 0.9, "low": 0.8, "high": 0.95}}}
    assert verdict([_design()], {"group_metrics": good}, interventions=_summary(moved=False))["verdict"] != "near_chance"


def test_a_background_class_signal_that_a_transplant_does_not_follow_is_not_a_site_signal():
    masked = Finding(id="masked_input.background_separates", check="masked_input", severity="critical",
                     title="the background alone carries a class signal", message="m.", points_to="signature")
    [out] = corroborate_with_interventions([masked], _summary(moved=False))
    assert out.severity == "info" and out.points_to == "neutral" and "class signal" in out.message
    assert corroborate_with_interventions([masked], None) == [masked]  # untested: unchanged
    moved = _summary(moved=False)
    moved["by_intervention"]["background_transplant"]["moved"] = True
    assert corroborate_with_interventions([masked], moved) == [masked]


def test_folding_interventions_demotes_an_uncorroborated_background_signal_and_what_it_kept():
    """Sites that do not differ, a background class signal (from normalisation): the masked-input
    finding kept the probes' severity; a transplant between sites that moves nothing releases both."""
    from xaudit.analysis.interventions import Trial, summarise_trials
    from xaudit.config.interventions import InterventionsParams
    from xaudit.stages.bias import BiasStageResult
    from xaudit.stages.interventions import fold_into_bias

    masked = Finding(id="masked_input.background_separates", check="masked_input", severity="critical",
                     title="the background alone carries a class signal", message="m.", points_to="signature")
    probe = Finding(id="probe.within_class.site.lesion", check="probes", severity="critical", column="site",
                    title="lesion subjects of different site values are told apart", message="p.", points_to="signature")
    checks = {"checks": {"group_metrics": {"disparities": [{"column": "site", "class_name": "lesion"}], "overall": {}},
                         "masked_input": {"signature_tests": 1}}}
    bias = BiasStageResult(checks, [masked.to_dict(), probe.to_dict()], None)
    keep = np.array([0.9, 0.1])
    trials = [Trial("site", "background_transplant", src, ref, "healthy", "same class", f"{src}{i}", keep, keep)
              for src, ref in (("A", "B"), ("B", "A")) for i in range(6)]
    params = InterventionsParams()
    result = summarise_trials(trials, params, {"site": {"A": {"healthy"}, "B": {"healthy"}}},
                              ["background_transplant"], {})
    folded = fold_into_bias(bias, result, BiasParams())
    severities = {f["id"]: f["severity"] for f in folded.findings}
    assert severities == {"masked_input.background_separates": "info", "probe.within_class.site.lesion": "info"}
    assert folded.verdict["verdict"] != "signature"
    assert folded.checks["max_severity"] == "info" and folded.checks["fails"] is False
    unfolded = fold_into_bias(bias, type(result)(skipped="no model"), BiasParams())
    assert {f["severity"] for f in unfolded.findings} == {"critical"}  # untested: nothing changes
    assert unfolded.verdict["verdict"] == "signature"
