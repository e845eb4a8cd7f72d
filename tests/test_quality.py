"""Explanation-quality checks: deletion/insertion curves and the randomisation sanity check.

A model whose class-1 evidence is the intensity inside a known cube gives the ground
truth: the oracle map (that cube) must beat a random order in both games, and a map
pointing elsewhere must not. The randomisation test must report 1 before any layer is
touched and a much lower similarity once all are re-initialised.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from xaudit.attribution import AttributionContext, get_method
from xaudit.errors import ConfigError, DataError
from xaudit.analysis.quality import deletion_insertion, randomisation_sanity
from xaudit.analysis.quality.perturbation import block_labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RegionNet(nn.Module):
    """Logits (-s, s) with s = 0.5 * mean intensity in a cube - 1: class 1 lives in the cube."""

    def __init__(self, dims: int, size: int = 12):
        super().__init__()
        mask = torch.zeros((size,) * dims)
        mask[(slice(4, 8),) * dims] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x):
        s = 0.5 * (x[:, 0] * self.mask).flatten(1).sum(1) / self.mask.sum() * 8.0 - 1.0
        return torch.stack([-s, s], dim=1)


def region_case(dims=3, n=3):
    torch.manual_seed(0)
    net = RegionNet(dims).eval()
    inputs = torch.rand(n, 1, *([12] * dims)) + 0.5
    oracle = net.mask.expand_as(inputs[:, 0]).unsqueeze(1) * inputs
    return net, inputs, torch.ones(n, dtype=torch.long), oracle


@pytest.mark.parametrize("dims", [2, 3])
def test_oracle_map_beats_random_order(dims):
    net, inputs, targets, oracle = region_case(dims)
    result = deletion_insertion(net, inputs, targets, oracle, block=2, steps=12, baseline="zeros", max_batch=16, random_repeats=3)
    assert result["deletion"]["mean_auc"] < result["random_deletion"]["mean_auc"] - 0.1
    assert result["insertion"]["mean_auc"] > result["random_insertion"]["mean_auc"] + 0.1
    assert result["deletion_gain"] > 0.1 and result["insertion_gain"] > 0.1
    for kind in ("deletion", "insertion", "random_deletion", "random_insertion"):
        curves = np.asarray(result[kind]["curves"])
        assert curves.shape == (3, 13)
    # deletion starts from the intact input, insertion ends with it: same probability
    np.testing.assert_allclose(np.asarray(result["deletion"]["curves"])[:, 0], np.asarray(result["insertion"]["curves"])[:, -1], rtol=1e-6)
    json.dumps(result)


def test_a_map_pointing_elsewhere_does_not_beat_random():
    net, inputs, targets, oracle = region_case(3)
    wrong = 1.0 - oracle.sign()  # high everywhere except the true region
    result = deletion_insertion(net, inputs, targets, wrong, block=2, steps=12, random_repeats=3)
    assert result["deletion"]["mean_auc"] > result["random_deletion"]["mean_auc"]
    assert result["insertion"]["mean_auc"] < result["random_insertion"]["mean_auc"]


def test_auc_is_the_trapezoid_of_the_curve():
    net, inputs, targets, oracle = region_case(2)
    result = deletion_insertion(net, inputs, targets, oracle, block=3, steps=4)
    xs = np.asarray(result["x"])
    assert xs[0] == 0 and xs[-1] == 1
    for curve, auc in zip(result["deletion"]["curves"], result["deletion"]["auc"]):
        assert auc == pytest.approx(np.trapezoid(curve, xs) if hasattr(np, "trapezoid") else np.trapz(curve, xs))


def test_batched_equals_one_subject_at_a_time():
    net, inputs, targets, oracle = region_case(3, n=3)
    kwargs = dict(block=(2, 3, 4), steps=6, baseline="blur", seed=7, subject_seeds=[11, 12, 13])
    together = deletion_insertion(net, inputs, targets, oracle, max_batch=64, **kwargs)
    tiny_chunks = deletion_insertion(net, inputs, targets, oracle, max_batch=1, **kwargs)
    assert together == tiny_chunks
    for i in range(3):
        alone = deletion_insertion(
            net, inputs[i : i + 1], targets[i : i + 1], oracle[i : i + 1], max_batch=5,
            **{**kwargs, "subject_seeds": [kwargs["subject_seeds"][i]]},
        )
        for kind in ("deletion", "insertion", "random_deletion", "random_insertion"):
            np.testing.assert_allclose(alone[kind]["curves"][0], together[kind]["curves"][i], rtol=1e-6, atol=1e-7)


def test_random_reference_is_seeded():
    net, inputs, targets, oracle = region_case(2)
    a = deletion_insertion(net, inputs, targets, oracle, block=2, steps=6, seed=1)
    b = deletion_insertion(net, inputs, targets, oracle, block=2, steps=6, seed=1)
    c = deletion_insertion(net, inputs, targets, oracle, block=2, steps=6, seed=2)
    assert a == b
    assert a["random_deletion"]["curves"] != c["random_deletion"]["curves"]


def test_random_curves_reused_from_another_map_are_the_ones_it_would_compute():
    net, inputs, targets, oracle = region_case(3)
    kwargs = dict(block=2, steps=6, seed=4, subject_seeds=[5, 6, 7], random_repeats=2)
    first = deletion_insertion(net, inputs, targets, oracle, **kwargs)
    other_map = torch.rand_like(oracle)
    fresh = deletion_insertion(net, inputs, targets, other_map, **kwargs)
    calls = []
    handle = net.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    reused = deletion_insertion(net, inputs, targets, other_map, random_reference=first, **kwargs)
    handle.remove()
    assert reused == fresh
    assert sum(calls) == 2 * 3 * 7  # deletion and insertion of the map's own order only
    with pytest.raises(DataError, match="random_reference"):
        deletion_insertion(net, inputs, targets, other_map, random_reference=first, **{**kwargs, "steps": 5})


def test_blocks_cover_the_grid_including_partial_borders():
    labels, n = block_labels((5, 7, 4), (2, 3, 4))
    assert n == 3 * 3 * 1
    assert sorted(labels.unique().tolist()) == list(range(n))
    assert labels[0, 0, 0] == 0 and labels[4, 6, 3] == n - 1


def test_mean_baseline_uses_the_dataset_mean_when_given():
    net, inputs, targets, oracle = region_case(2)
    high = torch.full(inputs.shape[1:], 5.0)
    dark = deletion_insertion(net, inputs, targets, oracle, block=2, steps=4, baseline="zeros")
    bright = deletion_insertion(net, inputs, targets, oracle, block=2, steps=4, baseline="mean", baseline_mean=high)
    # replacing the region by a bright mean raises the class-1 probability instead of lowering it
    assert bright["deletion"]["curves"][0][-1] > dark["deletion"]["curves"][0][-1]


def test_invalid_arguments_name_what_is_wrong():
    net, inputs, targets, oracle = region_case(3)
    with pytest.raises(DataError, match="maps must have"):
        deletion_insertion(net, inputs, targets, oracle[:, :, :5])
    with pytest.raises(ConfigError, match="`block` must be"):
        deletion_insertion(net, inputs, targets, oracle, block=(2, 2))
    with pytest.raises(ConfigError, match="`baseline` must be one of"):
        deletion_insertion(net, inputs, targets, oracle, baseline="noise")
    with pytest.raises(ConfigError, match="`steps` must be"):
        deletion_insertion(net, inputs, targets, oracle, steps=0)
    with pytest.raises(DataError, match="targets must have"):
        deletion_insertion(net, inputs, targets[:2], oracle)


# ---------------------------------------------------------------- randomisation sanity check


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 2))

    def forward(self, x):
        return self.head(self.features(x))


def small_case():
    torch.manual_seed(0)
    return SmallCNN().eval(), torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])


def test_randomising_all_layers_decorrelates_gradient_saliency():
    net, inputs, targets = small_case()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = randomisation_sanity(net, inputs, targets, get_method("saliency")(), AttributionContext(max_batch=4), seed=3)
    assert result["layers"] == ["head.2", "features.2", "features.0"]
    steps = result["steps"]
    assert [s["randomised"] for s in steps] == [[], ["head.2"], ["features.2"], ["features.0"]]
    assert steps[0]["spearman_abs"] == pytest.approx(1.0) and steps[0]["spearman"] == pytest.approx(1.0)
    assert steps[0]["ssim"] == pytest.approx(1.0)
    assert steps[-1]["spearman_abs"] < 0.5
    assert abs(steps[-1]["spearman"]) < 0.5
    assert len(steps[-1]["per_subject"]["spearman_abs"]) == 4
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the user's model was modified"
    json.dumps(result)


def test_randomisation_reuses_given_maps_and_can_skip_the_determinism_pass():
    net, inputs, targets = small_case()
    method, ctx = get_method("smoothgrad")({"samples": 3}), AttributionContext(max_batch=4, seed=2)
    maps = method.attribute(net, inputs, targets, ctx).maps
    samples = {"full": 0, "lean": 0}

    def counted(key, **kwargs):
        def count(_module, args):
            samples[key] += args[0].shape[0]
        copy_hook = torch.nn.modules.module.register_module_forward_pre_hook(count)  # the copy's forwards count too
        try:
            return randomisation_sanity(net, inputs, targets, method, ctx, seed=3, **kwargs)
        finally:
            copy_hook.remove()

    full = counted("full")
    lean = counted("lean", reference_maps=maps, check_determinism=False)
    assert lean["steps"][0]["reference_only"] and lean["steps"][0]["spearman_abs"] == 1.0
    for a, b in zip(full["steps"][1:], lean["steps"][1:]):
        assert a["spearman_abs"] == pytest.approx(b["spearman_abs"]) and a["ssim"] == pytest.approx(b["ssim"])
    assert samples["full"] - samples["lean"] > 0
    assert (samples["full"] - samples["lean"]) % (2 * 4 * 3) == 0  # two attribution passes saved, per module


def test_randomisation_groups_and_named_containers():
    net, inputs, targets = small_case()
    method = get_method("lrp")({"composite": "epsilon_plus"})
    result = randomisation_sanity(net, inputs, targets, method, layers_order=["head", "features"], seed=1)
    assert [s["randomised"] for s in result["steps"]] == [[], ["head"], ["features"]]
    assert result["steps"][0]["spearman_abs"] == pytest.approx(1.0)
    assert result["steps"][-1]["spearman_abs"] < result["steps"][0]["spearman_abs"]
    grouped = randomisation_sanity(net, inputs, targets, get_method("saliency")(), max_steps=2)
    assert len(grouped["steps"]) == 3
    with pytest.raises(ConfigError, match="Did you mean 'features'"):
        randomisation_sanity(net, inputs, targets, get_method("saliency")(), layers_order=["featurs"])


def test_the_quality_stage_keeps_to_its_time_budget(tmp_path):
    from conftest import make_cohort, make_config
    from xaudit.config import load_config
    from xaudit.data.cohort import load_cohort
    from xaudit.core.outputs import RunDirectory
    from xaudit.stages.quality import quality_stage
    from xaudit.stages.validate import validate_setup
    from xaudit.workflows.audit import RunOptions, run_audit

    manifest = make_cohort(tmp_path / "cohort", n=4)
    methods = {"saliency": {}, "integrated_gradients": {"steps": 4}}
    config = load_config(make_config(tmp_path, manifest, methods=methods, quality={"subjects": 2, "budget": 1000.0}))
    run = run_audit(config, RunOptions(output=tmp_path / "run"))
    scored = run.audit["attribution"]["quality"]["methods"]
    assert all("deletion_auc" in scored[m] for m in methods)  # a budget of 1000 x the pass fits both
    setup = validate_setup(config)
    cohort = load_cohort(RunDirectory(run.run_dir), setup.subjects, config.model.classes, [])
    result = quality_stage(setup, cohort, config.quality, 4, budget_s=0.0)
    first, second = [run.name for run in setup.methods]
    assert "deletion_auc" in result.methods[first]  # the first method always runs
    assert result.methods[second]["skipped"].startswith("time budget")
    # the pass's costs put the cheaper method first, whatever the configured order
    costs = {first: 10.0, second: 1.0}
    result = quality_stage(setup, cohort, config.quality, 4, budget_s=0.0, costs=costs)
    assert "deletion_auc" in result.methods[second] and "skipped" in result.methods[first]
    assert list(result.methods) == [first, second]  # reported in the configured order
    assert {m for m, s in run.audit["run"]["timings_s"].items() if m.startswith("pass.")} == {f"pass.{m}" for m in methods}


def test_the_quality_prediction_scales_the_first_method_by_the_pass_costs():
    from xaudit.stages.quality import _predicted_seconds

    reference = ("saliency", {"maps": 2.0, "curves": 0.5})
    assert _predicted_seconds("integrated_gradients", None, {"saliency": 1, "integrated_gradients": 16}) == 0.0
    assert _predicted_seconds("integrated_gradients", reference, {"saliency": 1.0, "integrated_gradients": 16.0}) == 32.5
    assert _predicted_seconds("gradcam", reference, None) == 2.5  # no costs: as long as the first
