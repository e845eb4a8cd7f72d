"""`xaudit compare`: differences between runs, their uncertainty, regressions, refusals."""

from __future__ import annotations

import io
import json
import shutil
from importlib.resources import files
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn

from conftest import make_cohort, make_config
from xaudit.analysis.compare import CompareParams, IncompatibleRunsError, parse_thresholds
from xaudit.workflows.compare import compare_runs, regressions
from xaudit.analysis.compare.attribution_diff import holm, share_test
from xaudit.analysis.compare.metrics_diff import metric_samples
from xaudit.analysis.stats import counts_from_draws
from xaudit.workflows.compare_command import compare_command_impl
from xaudit.analysis.compare.findings_diff import compare_findings, new_critical
from xaudit.core.ids import safe_file_id
from xaudit.analysis.compare.metrics_diff import point_metrics
from xaudit.analysis.compare.rules_diff import compare_rules, rule_signature
from xaudit.config import load_config
from xaudit.errors import XauditUsageError
from xaudit.analysis.metrics import classification_metrics
from xaudit.workflows.audit import RunOptions, run_audit

FAST = CompareParams(bootstrap=200, permutations=199)


def threshold_net(spatial_dims: int = 3, level: float = 1.5) -> nn.Module:
    """Predicts ``lesion`` when some voxel exceeds ``level + 1`` (raw intensities).

    On `make_cohort` images (body ~1, lesion blob +2, site-B corner +3) level 1.5 calls
    every subject but site-A healthy ones lesion (accuracy 0.75); level 3.5 calls every
    subject healthy (accuracy 0.5). Its predictions vary, so rules are extracted.
    """
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    pool = nn.AdaptiveMaxPool3d if spatial_dims == 3 else nn.AdaptiveMaxPool2d

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv(1, 1, 1), nn.ReLU(), conv(1, 2, 1), nn.Identity())
            self.pool = pool(1)
            self.head = nn.Linear(2, 2)
            with torch.no_grad():
                self.features[0].weight.fill_(1.0)
                self.features[0].bias.fill_(-level)
                self.features[2].weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, *([1] * spatial_dims)))
                self.features[2].bias.copy_(torch.tensor([0.5, -0.5]))
                self.head.weight.copy_(torch.eye(2))
                self.head.bias.zero_()

        def forward(self, x):
            return self.head(self.pool(self.features(x)).flatten(1))

    return Net().eval()


def _run(root: Path, manifest: Path, name: str, level: float = 1.5, methods=None, classes=("healthy", "lesion"),
         model=None, intensity: str = "none") -> Path:
    root = root / name
    root.mkdir()
    model = model or {"factory": {"function": "test_compare:threshold_net", "args": {"level": level}}}
    cfg = make_config(root, manifest, methods=methods or {"saliency": {}, "gradcam": {}},
                      model={**model, "classes": list(classes), "layer": "features.3"},
                      data__transforms={"intensity": intensity})
    return run_audit(load_config(cfg), RunOptions(output=root / "run")).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small real runs on one cohort: good model, worse model, other methods, other classes."""
    root = tmp_path_factory.mktemp("compare")
    manifest = make_cohort(root / "cohort", n=12)
    three = {"factory": {"function": "tiny_nets:build", "args": {"classes": 3}}}
    return {
        "good": _run(root, manifest, "good", level=1.5),
        "worse": _run(root, manifest, "worse", level=3.5),
        "saliency_only": _run(root, manifest, "saliency_only", methods={"saliency": {}}),
        "three_classes": _run(root, manifest, "three_classes", model=three, classes=("healthy", "lesion", "other")),
        "zscore": _run(root, manifest, "zscore", intensity="zscore"),
    }


def _schema() -> dict:
    return json.loads(files("xaudit").joinpath("schemas/compare.schema.json").read_text())


# ---------------------------------------------------------------- end to end on real runs


@pytest.mark.slow
def test_result_validates_and_files_are_written(runs, tmp_path):
    result = compare_runs([runs["good"], runs["worse"]], tmp_path / "cmp", FAST)
    jsonschema.validate(result, _schema())
    on_disk = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    jsonschema.validate(on_disk, _schema())
    assert on_disk["comparisons"] == result["comparisons"]
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("# xaudit comparison")
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "</table>" in page and "Content-Security-Policy" in page and "<script" not in page
    maps = [m for m in result["comparisons"][0]["attribution"]["maps"] if "path" in m]
    assert {m["method"] for m in maps} == {"saliency", "gradcam"}
    diff = nib.load(str(tmp_path / "cmp" / maps[0]["path"])).get_fdata()
    ref = nib.load(str(runs["good"] / "maps" / maps[0]["method"] / f"mean_{maps[0]['class']}.nii.gz")).get_fdata()
    other = nib.load(str(runs["worse"] / "maps" / maps[0]["method"] / f"mean_{maps[0]['class']}.nii.gz")).get_fdata()
    np.testing.assert_allclose(diff, other - ref, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_accuracy_difference_matches_predictions_csv(runs, tmp_path):
    result = compare_runs([runs["good"], runs["worse"]], tmp_path / "cmp", FAST)
    good = pd.read_csv(runs["good"] / "predictions.csv")
    worse = pd.read_csv(runs["worse"] / "predictions.csv")
    expected = worse["correct"].mean() - good["correct"].mean()
    assert expected == pytest.approx(-0.25)  # the planted drop (0.75 -> 0.5)
    overall = result["comparisons"][0]["metrics"]["overall"]
    assert overall["accuracy"]["difference"] == pytest.approx(expected)
    assert overall["accuracy"]["ci_low"] <= expected <= overall["accuracy"]["ci_high"]
    site_b = good[good["site"] == "B"]["correct"].mean(), worse[worse["site"] == "B"]["correct"].mean()
    by_group = result["comparisons"][0]["metrics"]["by_group"]["site"]["B"]["accuracy"]
    assert by_group["difference"] == pytest.approx(site_b[1] - site_b[0])
    assert result["comparisons"][0]["metrics"]["pairing"] == "paired"
    counts = result["comparisons"][0]["predictions"]["predicted_counts"]
    assert counts["other"] == {"healthy": 12, "lesion": 0}
    assert result["comparisons"][0]["predictions"]["changes"]["n_changed"] == 9


@pytest.mark.slow
def test_a_run_compared_with_itself_shows_no_difference(runs, tmp_path):
    result = compare_runs([runs["good"], runs["good"]], tmp_path / "self", FAST)
    comp = result["comparisons"][0]
    for entry in [comp["metrics"]["overall"], *comp["metrics"]["by_group"]["site"].values()]:
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            assert entry[metric]["difference"] == 0.0
            assert entry[metric]["ci_low"] == entry[metric]["ci_high"] == 0.0
    assert comp["findings"]["appearing"] == [] and comp["findings"]["disappearing"] == []
    assert all(f["change"] == "same" for f in comp["findings"]["persisting"])
    assert comp["rules"]["n_reference"] > 0  # rules exist, so "none changed" is a real statement
    assert comp["rules"]["appearing"] == [] and comp["rules"]["disappearing"] == []
    assert comp["rules"]["feature_jaccard"] == 1.0
    assert comp["roles"]["n_changed"] == 0
    for shares in comp["attribution"]["shares"].values():
        for entry in shares.values():
            assert entry["difference"] == 0.0 and entry["p_value"] == 1.0
    for m in comp["attribution"]["maps"]:
        assert m["mean_abs_difference"] == 0.0
    assert comp["predictions"]["changes"]["n_changed"] == 0
    assert result["regressions"] == []


@pytest.mark.slow
def test_regressions_and_exit_codes(runs, tmp_path):
    out = io.StringIO()
    code = compare_command_impl([runs["good"], runs["worse"]], tmp_path / "a", fail_on_regression="accuracy:0.05",
                                quiet=True, stdout=out, console=_NullConsole())
    assert code == 1
    assert out.getvalue().strip() == str((tmp_path / "a").resolve())
    result = json.loads((tmp_path / "a" / "compare.json").read_text())
    metric = [r for r in result["regressions"] if r["kind"] == "metric"]
    assert [r["metric"] for r in metric] == ["accuracy"] and metric[0]["drop"] == pytest.approx(0.25)
    assert regressions(result, {"accuracy": 0.3}) == [r for r in result["regressions"] if r["kind"] == "finding"]
    # improvements are not regressions: the same pair the other way round
    code = compare_command_impl([runs["worse"], runs["good"]], tmp_path / "b", fail_on_regression="accuracy:0.05,roc_auc:0.05",
                                quiet=True, stdout=io.StringIO(), console=_NullConsole())
    back = json.loads((tmp_path / "b" / "compare.json").read_text())
    assert [r for r in back["regressions"] if r["kind"] != "finding"] == []
    assert code == (1 if back["regressions"] else 0)
    # without --fail-on-regression the exit code stays 0 whatever changed
    assert compare_command_impl([runs["good"], runs["worse"]], tmp_path / "c", quiet=True, stdout=io.StringIO(),
                                console=_NullConsole()) == 0


@pytest.mark.slow
def test_json_on_stdout(runs, tmp_path):
    out = io.StringIO()
    assert compare_command_impl([runs["good"], runs["good"]], tmp_path / "j", as_json=True, stdout=out,
                                console=_NullConsole()) == 0
    jsonschema.validate(json.loads(out.getvalue()), _schema())


def test_the_cli_pairing_option_resamples_each_run_on_its_own(runs, tmp_path):
    from typer.testing import CliRunner

    from xaudit.cli import app

    done = CliRunner().invoke(app, ["compare", str(runs["good"]), str(runs["good"]), "-o", str(tmp_path / "p"),
                                    "--pairing", "independent", "--json", "-q"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["params"]["pairing"] == "independent"
    assert result["comparisons"][0]["metrics"]["pairing"] == "independent"
    bad = CliRunner().invoke(app, ["compare", str(runs["good"]), str(runs["good"]), "-o", str(tmp_path / "q"),
                                   "--pairing", "paired"])
    assert bad.exit_code == 2 and "--pairing must be 'auto' or 'independent'" in bad.output, bad.output


@pytest.mark.slow
def test_reports_escape_text_from_the_runs(runs, tmp_path):
    from xaudit.report.compare import render_html, render_markdown

    result = compare_runs([runs["good"], runs["good"]], tmp_path / "e", FAST)
    assert [r["name"] for r in result["runs"]] == ["run", "run-2"]  # the same directory twice
    result["comparisons"][0]["findings"]["appearing"] = [
        {"id": "x", "check": "c", "severity": "critical", "title": "<script>alert(1)</script> a|b"}]
    page = render_html(result)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    row = next(line for line in render_markdown(result).splitlines() if "alert(1)" in line)
    assert "a\\|b" in row and row.count(" | ") == 3  # the pipe stays inside its cell


@pytest.mark.slow
def test_different_classes_are_refused_with_what_differs(runs, tmp_path):
    with pytest.raises(IncompatibleRunsError, match=r"classes differ.*only in three_classes-run: \['other'\]") as info:
        compare_runs([runs["good"], runs["three_classes"]], tmp_path / "x", FAST)
    assert "--allow-partial" in str(info.value)
    assert info.value.exit_code == 2
    assert not (tmp_path / "x").exists()  # nothing written on refusal
    partial = compare_runs([runs["good"], runs["three_classes"]], tmp_path / "p", FAST.model_copy(update={"allow_partial": True}))
    jsonschema.validate(partial, _schema())
    assert partial["comparisons"][0]["metrics"] is None
    assert [d["part"] for d in partial["scope"]["left_out"]] == ["metrics and prediction shift"]
    unevaluated = regressions(partial, {"accuracy": 0.05})
    assert [r["kind"] for r in unevaluated if r["kind"] != "finding"] == ["unevaluated"]  # a gate never passes silently


@pytest.mark.slow
def test_different_methods_partial_lists_left_out_methods(runs, tmp_path):
    with pytest.raises(IncompatibleRunsError, match=r"only in good-run: \['gradcam'\]"):
        compare_runs([runs["good"], runs["saliency_only"]], tmp_path / "x", FAST)
    partial = compare_runs([runs["good"], runs["saliency_only"]], tmp_path / "p", FAST.model_copy(update={"allow_partial": True}))
    assert partial["scope"]["methods"] == ["saliency"]
    assert partial["scope"]["left_out"] == [{"part": "attribution method gradcam", "runs": ["good-run"], "reason": "only in good-run"}]
    assert list(partial["comparisons"][0]["attribution"]["shares"]) == ["saliency"]
    assert partial["comparisons"][0]["metrics"]["overall"]["accuracy"]["difference"] == 0.0
    assert "Left out: attribution method gradcam" in (tmp_path / "p" / "compare.md").read_text()


@pytest.mark.slow
def test_different_preprocessing_is_refused_and_partial_skips_maps(runs, tmp_path):
    with pytest.raises(IncompatibleRunsError, match=r"preprocessing \(data.transforms\) differs: intensity: 'none' \(good-run\) vs 'zscore'"):
        compare_runs([runs["good"], runs["zscore"]], tmp_path / "x", FAST)
    partial = compare_runs([runs["good"], runs["zscore"]], tmp_path / "p", FAST.model_copy(update={"allow_partial": True}))
    assert partial["comparisons"][0]["attribution"]["maps"] is None
    assert partial["comparisons"][0]["metrics"] is not None
    assert not (tmp_path / "p" / "maps").exists()


@pytest.mark.slow
def test_three_runs_and_default_output(runs):
    result = compare_runs([runs["good"], runs["worse"], runs["good"]], None, FAST)
    assert [c["other"] for c in result["comparisons"]] == [r["name"] for r in result["runs"][1:]]
    assert len({r["name"] for r in result["runs"]}) == 3
    out = Path(result["output"])
    assert out.parent == runs["good"].resolve().parent and out.name.startswith("compare-")
    assert (out / "compare.json").is_file()
    shutil.rmtree(out)


def test_not_a_run_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(XauditUsageError, match="not a finished xaudit run"):
        compare_runs([tmp_path / "empty", tmp_path / "empty"], tmp_path / "o", FAST)
    with pytest.raises(XauditUsageError, match="at least two"):
        compare_runs([tmp_path / "empty"], tmp_path / "o", FAST)


# ---------------------------------------------------------------- units


def test_point_metrics_equal_audit_metrics():
    rng = np.random.default_rng(1)
    for k in (2, 3):
        labels = rng.integers(0, k, 60)
        probs = rng.dirichlet(np.ones(k), 60)
        probs[:5] = probs[5]  # ties in the scores
        labels[:3] = -1  # unlabelled subjects are left out
        ours, theirs = point_metrics(labels, probs), classification_metrics(labels, probs)
        for m in ("n", "accuracy", "balanced_accuracy", "roc_auc"):
            assert ours[m] == pytest.approx(theirs[m]), (k, m)


def test_bootstrap_rows_equal_metrics_of_the_resampled_subjects():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 40)
    probs = rng.dirichlet([1, 1], 40).round(1)  # many ties
    draws = rng.integers(0, 40, (5, 40))
    samples = metric_samples(counts_from_draws(40, draws), labels, probs)
    for b in range(5):
        y, p = labels[draws[b]], probs[draws[b]]
        assert samples["accuracy"][b] == pytest.approx((p.argmax(1) == y).mean())
        assert samples["balanced_accuracy"][b] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
        assert samples["roc_auc"][b] == pytest.approx(roc_auc_score(y, p[:, 1]))


def _run_data(prefix: str, n: int, sites: list[str], accuracy: float, seed: int):
    from xaudit.analysis.compare.load import RunData

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    correct = rng.random(n) < accuracy
    p1 = np.where(labels == 1, 0.7, 0.3)
    p1 = np.where(correct, p1, 1 - p1) + rng.normal(0, 0.05, n)
    ids = np.array([f"{prefix}{i}" for i in range(n)], dtype=object)
    groups = {"site": np.array([sites[i % len(sites)] for i in range(n)], dtype=object)}
    return RunData(Path(prefix), prefix, {}, {}, ["healthy", "lesion"], {}, ids, labels, np.c_[1 - p1, p1], groups)


def test_independent_cohorts_site_a_vs_site_b():
    from xaudit.analysis.compare.metrics_diff import compare_metrics

    ref = _run_data("a", 200, ["A"], 0.9, 0)
    other = _run_data("b", 150, ["B"], 0.6, 1)
    out = compare_metrics(ref, other, ["healthy", "lesion"], CompareParams(bootstrap=500), "k")
    assert out["pairing"] == "independent"
    acc = out["overall"]["accuracy"]
    expected = (other.probs.argmax(1) == other.labels).mean() - (ref.probs.argmax(1) == ref.labels).mean()
    assert acc["difference"] == pytest.approx(expected)
    assert acc["ci_low"] < expected < acc["ci_high"] < 0 and acc["significant"]
    # binomial standard error of the difference ~ sqrt(.9*.1/200 + .6*.4/150) = 0.046
    assert 0.12 < acc["ci_high"] - acc["ci_low"] < 0.24
    assert out["by_group"] == {} and out["unmatched"] == {"site": {"reference_only": ["A"], "other_only": ["B"]}}
    again = compare_metrics(ref, other, ["healthy", "lesion"], CompareParams(bootstrap=500), "k")
    assert again == out  # seeded


def test_paired_resampling_is_used_only_for_the_same_subjects():
    from xaudit.analysis.compare.metrics_diff import compare_metrics

    ref = _run_data("a", 100, ["A", "B"], 0.8, 0)
    paired = compare_metrics(ref, ref, ["healthy", "lesion"], CompareParams(bootstrap=300), "k")
    independent = compare_metrics(ref, ref, ["healthy", "lesion"], CompareParams(bootstrap=300, pairing="independent"), "k")
    assert paired["pairing"] == "paired" and independent["pairing"] == "independent"
    assert paired["overall"]["accuracy"]["ci_low"] == paired["overall"]["accuracy"]["ci_high"] == 0.0
    assert independent["overall"]["accuracy"]["ci_low"] < -0.05 and independent["overall"]["accuracy"]["ci_high"] > 0.05
    assert set(paired["by_group"]["site"]) == {"A", "B"}


def test_parse_thresholds():
    assert parse_thresholds("accuracy:0.05, roc_auc:0.1") == {"accuracy": 0.05, "roc_auc": 0.1}
    assert parse_thresholds("findings") == {}
    with pytest.raises(XauditUsageError, match="Valid metrics are .*Did you mean 'accuracy'"):
        parse_thresholds("acuracy:0.05")
    for bad in ("accuracy", "accuracy:x", "", "accuracy:-1"):
        with pytest.raises(XauditUsageError):
            parse_thresholds(bad)


def test_findings_status_and_new_critical():
    ref = [{"id": "a", "severity": "warning", "title": "A"}, {"id": "b", "severity": "critical", "title": "B"}]
    other = [{"id": "a", "severity": "critical", "title": "A2"}, {"id": "c", "severity": "critical", "title": "C"},
             {"id": "d", "severity": "info", "title": "D"}]
    diff = compare_findings(ref, other)
    assert [f["id"] for f in diff["appearing"]] == ["c", "d"]
    assert [f["id"] for f in diff["disappearing"]] == ["b"]
    assert diff["persisting"][0]["change"] == "escalated"
    assert [(f["id"], f["was"]) for f in new_critical(diff)] == [("c", None), ("a", "warning")]
    assert new_critical(compare_findings(other, other)) == []


class _Rules:
    def __init__(self, name, rules, fidelity=0.9):
        self.name, self.rules, self.rules_fidelity, self.rules_note = name, rules, fidelity, ""


def _rule(rank, cls, *conds):
    conditions = [{"feature": f, "op": op, "threshold": t, "index": 0} for f, op, t in conds]
    return {"rank": rank, "predicted_class": cls, "conditions": conditions, "text": f"R{rank}", "importance": 1.0, "support": 0.5}


def test_rules_match_by_signature_not_threshold():
    ref = _Rules("a", [_rule(1, "lesion", ("f1", ">", 0.3)), _rule(2, "healthy", ("f2", "<=", 1.0), ("f3", ">", 0.0))])
    other = _Rules("b", [_rule(1, "lesion", ("f1", ">", 0.7)), _rule(2, "lesion", ("f4", ">", 2.0))], fidelity=0.8)
    diff = compare_rules(ref, other, top_n=10)
    assert [r["signature"] for r in diff["persisting"]] == ["lesion <- f1 >"]
    assert [r["signature"] for r in diff["appearing"]] == ["lesion <- f4 >"]
    assert [r["signature"] for r in diff["disappearing"]] == [rule_signature(ref.rules[1])]
    assert diff["feature_jaccard"] == pytest.approx(1 / 4)  # {f1} of {f1, f2, f3, f4}
    assert diff["fidelity"]["difference"] == pytest.approx(-0.1)
    assert compare_rules(ref, other, top_n=1)["disappearing"] == []  # rank 2 is outside the top 1
    assert "skipped" in compare_rules(_Rules("c", None), other, 10)


def test_share_permutation_test_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(3)
    ids_a, ids_b = np.array([f"a{i}" for i in range(40)]), np.array([f"b{i}" for i in range(40)])
    a = rng.normal(0.3, 0.05, 40)
    shifted = share_test(ids_a, a, ids_b, rng.normal(0.4, 0.05, 40), FAST, "k")
    same = share_test(ids_a, a, ids_b, rng.normal(0.3, 0.05, 40), FAST, "k")
    assert shifted["p_value"] < 0.01 and same["p_value"] > 0.01
    assert shifted["test"] == "two-sample permutation"
    paired = share_test(ids_a, a, ids_a[::-1], (a + 0.01)[::-1], FAST, "k")  # same subjects, other order
    assert paired["test"].startswith("sign-flip") and paired["p_value"] < 0.01
    assert paired["difference"] == pytest.approx(0.01)


def test_holm_adjustment():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06], nan_ok=True)


class _NullConsole:
    def print(self, *args, **kwargs):
        pass


@pytest.mark.slow
def test_a_2d_run_against_a_3d_run_is_refused_naming_the_dimensions(runs, tmp_path):
    import yaml

    flat = tmp_path / "flat-run"
    shutil.copytree(runs["good"], flat)
    resolved = yaml.safe_load((flat / "config.resolved.yaml").read_text())
    resolved["provenance"]["spatial_dims"] = 2
    (flat / "config.resolved.yaml").write_text(yaml.safe_dump(resolved))
    with pytest.raises(IncompatibleRunsError, match=r"input dimensionality differs: \S+ is 3D, flat-run is 2D"):
        compare_runs([runs["good"], flat], tmp_path / "x", FAST)


def test_two_cohorts_numbered_alike_are_not_paired_by_their_shared_ids(tmp_path):
    from xaudit.analysis.compare.compat import resolve_scope
    from xaudit.workflows.compare import _compare_pair

    ref = _run_data("sub-", 100, ["A"], 0.9, 0)
    other = _run_data("sub-", 100, ["B"], 0.6, 1)  # the same ids sub-0..sub-99, another site's subjects
    other.name = "b"
    scope = resolve_scope([ref, other], allow_partial=False)
    assert scope.unpaired == ["b"]
    assert any("100 of 100 subject ids" in n and "site differs" in n and "independent" in n for n in scope.notes)
    comp = _compare_pair(ref, other, scope, CompareParams(bootstrap=200), tmp_path, 1)
    assert comp["metrics"]["pairing"] == "independent"
    assert comp["predictions"]["changes"] is None  # no per-subject changes between different subjects

    same = _run_data("sub-", 100, ["A"], 0.9, 0)
    same.name = "c"
    scope = resolve_scope([ref, same], allow_partial=False)
    assert scope.unpaired == [] and not scope.notes
    comp = _compare_pair(ref, same, scope, CompareParams(bootstrap=200), tmp_path, 1)
    assert comp["metrics"]["pairing"] == "paired" and comp["predictions"]["changes"]["n_common"] == 100


def test_a_shared_id_with_another_label_unpairs_and_different_manifests_are_named():
    from xaudit.analysis.compare.compat import resolve_scope

    ref = _run_data("sub-", 40, ["A"], 0.9, 0)
    other = _run_data("sub-", 40, ["A"], 0.9, 0)
    other.name = "b"
    other.labels = other.labels.copy()
    other.labels[7] = 1 - other.labels[7]
    scope = resolve_scope([ref, other], allow_partial=False)
    assert scope.unpaired == ["b"] and any("1 of 40" in n and "sub-7: the label differs" in n for n in scope.notes)

    again = _run_data("sub-", 40, ["A"], 0.9, 0)
    again.name = "c"
    ref.config, again.config = {"data": {"manifest": "/x/site1.csv"}}, {"data": {"manifest": "/x/site2.csv"}}
    scope = resolve_scope([ref, again], allow_partial=False)
    assert scope.unpaired == [] and any("different manifests" in n and "--pairing independent" in n for n in scope.notes)


def test_an_output_that_is_a_file_is_named_as_such(runs, tmp_path):
    from typer.testing import CliRunner

    from xaudit.cli import app

    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for output in (taken, taken / "sub"):
        done = CliRunner().invoke(app, ["compare", str(runs["good"]), str(runs["good"]), "-o", str(output)])
        assert done.exit_code == 2 and "is a file, not a folder" in done.output, done.output
        assert "cannot write" not in done.output
    assert taken.read_text() == "mine"
    into_run = CliRunner().invoke(app, ["compare", str(runs["good"]), str(runs["good"]), "-o", str(runs["good"])])
    assert into_run.exit_code == 2 and "is an xaudit run" in into_run.output, into_run.output
    assert not (runs["good"] / "compare.json").exists()  # nothing written into the run


def test_the_summary_on_the_terminal_says_the_pairing_and_the_scope_notes():
    from xaudit.report.compare import print_summary

    class Console:
        def __init__(self):
            self.lines = []

        def print(self, *args, **kwargs):
            self.lines.append(" ".join(str(a) for a in args))

    comp = {"reference": "a", "other": "b", "metrics": {"pairing": "independent", "overall": {}},
            "findings": {"counts": {"appearing": 0, "disappearing": 0, "escalated": 0}}}
    result = {"comparisons": [comp], "regressions": [],
              "scope": {"notes": ["16 of 16 subject ids in both a and b have a different label or group value"]}}
    console = Console()
    print_summary(result, console)
    text = "\n".join(console.lines)
    assert "independent resamples" in text and "note: 16 of 16 subject ids" in text
