"""Interrogating the network: inversion, maximisation, retention, and the run-level API.

The planted-artefact nets are hand-built: a first layer with a bright-voxel detector, then a
gate that passes only the border shell (the net keeps a corner artefact and discards the
anatomy) or only the interior (it discards the artefact), then conv and pooling blocks
that carry the detector to the last block. Inverting the deepest block must bring the
corner back in the first case and not in the second, and the retention finding must fire
only in the first.
"""

from __future__ import annotations

import copy
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import OBLIQUE_AFFINE, make_cohort, make_config
from torch import nn

from xaudit.analysis.bias.looking import border_shell
from xaudit.errors import ConfigError
from xaudit.analysis.interrogate import InterrogateParams
from xaudit.stages.interrogate import interrogate_run
from xaudit.analysis.interrogate.inversion import invert
from xaudit.analysis.interrogate.layers import LayerReader, auto_layers, check_layers, resolve_channels, trace_layers
from xaudit.analysis.interrogate.maximisation import maximise
from xaudit.analysis.interrogate.optimise import TimeBudget, run_adam
from xaudit.analysis.interrogate.priors import laplacian_energy, total_variation
from xaudit.analysis.interrogate.retention import region_correlations, region_masks, retention_finding, retention_table
from xaudit.analysis.interrogate.subjects import choose_subjects
from tiny_nets import TinyCNN

FAST = {"steps": 60, "time_budget_s": 60.0}


class RegionGate(nn.Module):
    """Multiplies by 1 inside the kept region (border shell or interior), 0 elsewhere."""

    def __init__(self, keep: str, width: int = 3):
        super().__init__()
        self.keep = keep
        self.width = width

    def forward(self, x):
        shell = torch.from_numpy(border_shell(tuple(x.shape[2:]), self.width)).to(x.device)
        return x * (shell if self.keep == "border" else ~shell).to(x.dtype)


class PlantedNet(nn.Module):
    """features: detector conv, ReLU, gate, conv, ReLU, avg-pool, conv, ReLU; then a head."""

    def __init__(self, keep: str, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        c1, c2, c3 = nn.Conv3d(1, 4, 3, padding=1), nn.Conv3d(4, 8, 3, padding=1), nn.Conv3d(8, 8, 3, padding=1)
        with torch.no_grad():
            for conv in (c1, c2, c3):
                conv.weight.copy_(0.1 * torch.randn(conv.weight.shape, generator=g))
                conv.bias.zero_()
            # channel 0: fires on bright voxels (z > 2.5), carried unchanged to the last block
            c1.weight[0].zero_()
            c1.weight[0, 0, 1, 1, 1] = 1.0
            c1.bias[0] = -2.5
            for conv in (c2, c3):
                conv.weight[0].zero_()
                conv.weight[0, 0, 1, 1, 1] = 1.0
        self.features = nn.Sequential(c1, nn.ReLU(), RegionGate(keep), c2, nn.ReLU(), nn.AvgPool3d(2), c3, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def planted_net(keep: str = "border", spatial_dims: int = 3) -> nn.Module:
    """Factory for the run configs (``model.factory: test_interrogate:planted_net``)."""
    return PlantedNet(keep).eval()


def _frozen(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _volumes(n=4, shape=(12, 14, 10), seed=0):
    """make_cohort's images, z-scored as the runs do: lesion on odd i, corner on site B (i//2 odd)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    centre = np.array(shape).reshape(-1, 1, 1, 1) / 2
    body = (((grid - centre) / (np.array(shape).reshape(-1, 1, 1, 1) / 2.6)) ** 2).sum(0) < 1
    xs = []
    for i in range(n):
        img = body * (1.0 + 0.1 * rng.standard_normal(shape)) + 0.05 * rng.standard_normal(shape)
        if i % 2:
            img[tuple(slice(s // 2 - 1, s // 2 + 1) for s in shape)] += 2.0
        if (i // 2) % 2:
            img[tuple(slice(0, 2) for _ in shape)] += 3.0
        xs.append((img - img.mean()) / img.std())
    return torch.tensor(np.stack(xs)[:, None], dtype=torch.float32), body


# ---------------------------------------------------------------- priors and the loop

@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["isotropic", "anisotropic"])
def test_total_variation_is_zero_on_constants_and_grows_with_noise(dims, kind):
    shape = (2, 1) + (8,) * dims
    flat = torch.full(shape, 3.0)
    smooth = torch.linspace(0, 1, 8).view((1, 1) + (8,) + (1,) * (dims - 1)).expand(shape)
    noisy = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    tv_flat, tv_smooth, tv_noisy = (total_variation(x, kind, 1.0) for x in (flat, smooth, noisy))
    assert tv_flat.shape == (2,)
    assert float(tv_flat.max()) < 1e-2
    assert float(tv_smooth.min()) < float(tv_noisy.min())


def test_laplacian_energy_penalises_high_frequencies():
    idx = torch.arange(8.0)
    checker = ((idx.view(-1, 1, 1) + idx.view(1, -1, 1) + idx.view(1, 1, -1)) % 2)[None, None]
    smooth = torch.sin(idx / 8 * np.pi).view(-1, 1, 1).expand(8, 8, 8)[None, None]
    assert float(laplacian_energy(checker)) > 50 * float(laplacian_energy(smooth))
    assert float(laplacian_energy(torch.ones(1, 1, 6, 6))) == 0.0


def test_run_adam_stops_at_the_deadline():
    z = torch.zeros(2, 1, 8, 8, 8, requires_grad=True)

    def slow_objective(_step):
        time.sleep(0.01)
        return (z - 1).pow(2).flatten(1).sum(1)

    run_adam([z], slow_objective, steps=1, lr=0.1, deadline=0.0)  # first use imports optimiser internals
    t0 = time.perf_counter()
    run = run_adam([z], slow_objective, steps=100000, lr=0.1, deadline=time.perf_counter() + 0.3)
    assert run.stopped_early and 1 <= run.steps < 100000
    assert time.perf_counter() - t0 < 0.3 + 0.5


def test_time_budget_shares_time_over_jobs():
    budget = TimeBudget(10.0, jobs=4)
    first = budget.next_deadline() - time.perf_counter()
    assert 2.0 < first <= 2.5


# ---------------------------------------------------------------- layers and channels

def test_auto_layers_spread_over_a_densenet():
    from monai.networks.nets import DenseNet

    net = _frozen(DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=4,
                           block_config=(2, 2), bn_size=2))
    trace = trace_layers(net, torch.zeros(1, 1, 16, 16, 16))
    assert auto_layers(net, trace, 3, 4) == ["features.conv0", "features.denseblock1", "features.transition1", "features.denseblock2"]
    assert auto_layers(net, trace, 3, 2) == ["features.conv0", "features.denseblock2"]


def test_layer_and_channel_names_are_checked():
    net = _frozen(TinyCNN(3))
    trace = trace_layers(net, torch.zeros(1, 1, 8, 8, 8))
    assert auto_layers(net, trace, 3, 4) == ["features.0", "features.3"]
    assert check_layers(["features.3", "features.0"], trace, 3) == ["features.0", "features.3"]
    with pytest.raises(ConfigError, match="Did you mean 'features.3'"):
        check_layers(["features.33"], trace, 3)
    targets = resolve_channels(["head.input:ch3", "features.0:ch1"], net, trace, 3)
    # the final linear's input maps to the last 8-channel map before global pooling
    assert [(t.layer, t.channel) for t in targets] == [("features", 3), ("features.0", 1)]
    with pytest.raises(ConfigError, match="has 8"):
        resolve_channels(["head.input:ch8"], net, trace, 3)
    with pytest.raises(ConfigError, match="layer:chN"):
        resolve_channels(["features.3-ch1"], net, trace, 3)


# ---------------------------------------------------------------- inversion and maximisation

@pytest.mark.parametrize("dims", [2, 3])
def test_inversion_lowers_the_representation_loss(dims):
    torch.manual_seed(0)
    net = _frozen(TinyCNN(dims))
    x0 = torch.randn((3, 1) + (12,) * dims)
    params = InterrogateParams(**FAST)
    inv = invert(net, "features.3", x0, params, time.perf_counter() + 60, torch.Generator().manual_seed(0))
    assert inv.images.shape == x0.shape and torch.isfinite(inv.images).all()
    assert inv.run.steps == params.steps and not inv.run.stopped_early
    assert float(inv.representation_loss_final.max()) < 0.2 * float(inv.representation_loss_initial.min())


def test_restricted_inversion_holds_the_outside():
    x0, body = _volumes(2)
    fg = torch.from_numpy(np.stack([body, body]))
    params = InterrogateParams(steps=10, restrict_to_foreground=True)
    inv = invert(_frozen(TinyCNN(3)), "features.3", x0, params, time.perf_counter() + 60, torch.Generator(), fg)
    outside = inv.images[0, 0][~fg[0]]
    assert torch.allclose(outside, outside[0].expand_as(outside))
    assert torch.isclose(outside[0], x0[0, 0][~fg[0]].median())


def test_maximisation_raises_the_channel_above_real_data():
    torch.manual_seed(0)
    net = _frozen(TinyCNN(3))
    x0, _body = _volumes(2)
    channels = [0, 1, 5, 6]
    result = maximise(net, "features.3", channels, x0, InterrogateParams(**FAST), time.perf_counter() + 60, torch.Generator().manual_seed(0))
    assert result.images.shape == (4, 1, 12, 14, 10) and torch.isfinite(result.images).all()
    with torch.no_grad():
        best_real = LayerReader(net, "features.3")(x0).flatten(2).mean(2)[:, channels].amax(0)
    # every channel responds more to its preimage than to the start and to any real input
    assert float((result.activation_final - torch.maximum(result.activation_initial, best_real)).min()) > 0
    assert float((result.activation_final - best_real).mean()) > 0.1
    # the box constraint keeps the image within the real inputs' intensity range
    assert float(result.images.max()) <= float(x0.max()) + 1e-4 and float(result.images.min()) >= float(x0.min()) - 1e-4


@pytest.mark.parametrize("keep, fires", [("border", True), ("interior", False)])
def test_planted_corner_survives_inversion_only_in_the_net_that_keeps_it(keep, fires):
    x0, body = _volumes(4)
    net = _frozen(PlantedNet(keep))
    params = InterrogateParams(steps=100)
    rows = []
    layers = ["features.0", "features.6"]
    for depth, layer in enumerate(layers):
        inv = invert(net, layer, x0, params, time.perf_counter() + 60, torch.Generator().manual_seed(0))
        for i in range(4):
            regions = region_masks(body, {}, border_width=2)
            for region, v in region_correlations(x0[i].numpy(), inv.images[i].numpy(), regions).items():
                rows.append({"subject_id": f"s{i}", "layer": layer, "depth": depth, "region": region, **v})
    subsets = {"all": ["s0", "s1", "s2", "s3"], "site=A": ["s0", "s1"], "site=B": ["s2", "s3"]}
    table = retention_table(rows, layers, subsets)
    border_b = next(r["pearson"] for r in table if r["subset"] == "site=B" and r["layer"] == "features.6" and r["region"] == "border")
    finding = retention_finding(table, layers, params)
    if fires:
        assert border_b > 0.6  # the corner comes back at the deepest layer
        assert finding is not None and finding.check == "retention" and finding.points_to == "signature"
        assert finding.evidence["site_region"] in ("border", "background")
    else:
        assert border_b < 0.4
        assert finding is None


def test_retention_finding_thresholds_and_severity():
    params = InterrogateParams(retention_high=0.5, retention_gap=0.25)

    def table(border, roi):
        rows = []
        for layer, (b, r) in zip(["l0", "l1"], [(0.9, 0.9), (border, roi)]):
            rows += [{"subset": "all", "layer": layer, "depth": 0, "region": "border", "n": 3, "pearson": b},
                     {"subset": "all", "layer": layer, "depth": 0, "region": "roi_lesion", "n": 3, "pearson": r},
                     {"subset": "all", "layer": layer, "depth": 0, "region": "foreground", "n": 3, "pearson": 0.0}]
        return rows

    assert retention_finding(table(0.8, 0.6), ["l0", "l1"], params) is None  # gap 0.2 < 0.25
    assert retention_finding(table(0.45, 0.0), ["l0", "l1"], params) is None  # border not kept
    warning = retention_finding(table(0.8, 0.5), ["l0", "l1"], params)
    assert warning.severity == "warning" and warning.evidence["path_region"] == "roi_lesion"
    assert retention_finding(table(0.9, 0.2), ["l0", "l1"], params).severity == "critical"
    assert set(warning.to_dict()) >= {"id", "check", "severity", "title", "message", "evidence", "threshold"}


def test_subjects_are_chosen_per_class_and_group_cell():
    from xaudit.data.manifest import Subject

    subjects = [Subject(f"s{i}", f"s{i}", i + 2, (), i % 2, {"site": "AB"[i // 4]}) for i in range(8)]
    frame = pd.DataFrame({
        "subject_id": [s.subject_id for s in subjects], "site": [s.groups["site"] for s in subjects],
        "label": [["healthy", "lesion"][s.label] for s in subjects],
        "prob_healthy": [f"{p:.2f}" for p in (0.9, 0.2, 0.95, 0.3, 0.6, 0.1, 0.7, 0.4)],
        "prob_lesion": [f"{1 - p:.2f}" for p in (0.9, 0.2, 0.95, 0.3, 0.6, 0.1, 0.7, 0.4)],
        "prediction": ["healthy"] * 8,
    })
    chosen = choose_subjects(frame, subjects, ["healthy", "lesion"], "site", per_cell=1, max_subjects=16)
    assert [s.subject_id for s, _ in chosen] == ["s2", "s6", "s1", "s5"]  # most confident per cell
    assert chosen[0][1] == {"class": "healthy", "group": "site=A"}
    trimmed = choose_subjects(frame, subjects, ["healthy", "lesion"], "site", per_cell=2, max_subjects=4)
    assert len({(c["class"], c["group"]) for _, c in trimmed}) == 4


def test_params_are_strict_and_frozen():
    with pytest.raises(Exception, match="extra"):
        InterrogateParams(stepz=3)
    with pytest.raises(Exception):
        InterrogateParams(steps=0)
    params = InterrogateParams()
    with pytest.raises(Exception):
        params.steps = 5


# ---------------------------------------------------------------- on a finished run

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs on the same oblique, reoriented cohort: the border and interior nets."""
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    out = {}
    for keep in ("border", "interior"):
        root = tmp_path_factory.mktemp(f"interrogate_{keep}")
        manifest = make_cohort(root / "cohort")
        config = make_config(
            root, manifest, methods={"saliency": {}},
            model={"factory": {"function": "test_interrogate:planted_net", "args": {"keep": keep}},
                   "classes": ["healthy", "lesion"], "layer": "features.3"},
            data__transforms={"orientation": "RAS", "intensity": "zscore"},
        )
        out[keep] = run_audit(load_config(config)).run_dir
    return out


def test_run_level_outputs_land_in_native_space(runs):
    run = runs["border"]
    params = InterrogateParams(layers=["features.0", "features.6"], channels=["head.input:ch0"], **FAST)
    result = interrogate_run(run, params, "cpu")
    assert [layer["name"] for layer in result["layers"]] == ["features.0", "features.6"]
    assert len(result["subjects"]) == 4 and {s["group"] for s in result["subjects"]} == {"site=A", "site=B"}
    for layer, record in result["inversion"].items():
        assert record["representation_loss_final_mean"] < 0.5 * record["representation_loss_initial_mean"], layer
    for subject in result["subjects"]:
        sid = subject["subject_id"]
        path = run / result["inversion"]["features.0"]["volumes"][sid]
        source = nib.load(str(run.parent / "cohort" / "images" / f"{sid}.nii.gz"))
        written = nib.load(str(path))
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, OBLIQUE_AFFINE, atol=1e-5)
        # the first layer keeps nearly everything: back on the stored grid it is the (z-scored) source
        data, original = written.get_fdata(), source.get_fdata()
        assert np.corrcoef(data.ravel(), original.ravel())[0, 1] > 0.95
    # activation maximisation: on the model-input grid, with its affine
    (entry,) = result["maximisation"]
    assert entry["layer"] == "features" and entry["activation_final"] > 2 * entry["activation_real_mean"] > 0
    # the detector channel is flat on noise, so it restarts from a subject with the corner (site B)
    site_b = {s["subject_id"] for s in result["subjects"] if s["group"] == "site=B"}
    assert entry["started_from"] in site_b
    volume = nib.load(str(run / entry["volume"]))
    record = np.load(run / "subjects" / f"{result['subjects'][0]['subject_id']}.npz")
    assert volume.shape == tuple(record["input_shape"])
    np.testing.assert_allclose(volume.affine, record["input_affine"], atol=1e-5)
    for rel in [result["artifacts"]["retention"], result["artifacts"]["retention_plot"], entry["figure"], *result["artifacts"]["figures"]]:
        assert (run / rel).is_file(), rel


@pytest.mark.parametrize("keep, fires", [("border", True), ("interior", False)])
def test_run_level_retention_finding(runs, keep, fires):
    params = InterrogateParams(steps=100, channels=[])
    result = interrogate_run(runs[keep], params, "cpu")
    assert [layer["name"] for layer in result["layers"]] == ["features.0", "features.3", "features.6"]
    ids = [f["id"] for f in result["findings"]]
    assert bool(ids) == fires, result["retention"]["table"]
    if fires:
        assert result["findings"][0]["check"] == "retention"
    saved = yaml.safe_load((runs[keep] / "interrogate" / "retention.json").read_text())
    assert saved["table"] == result["retention"]["table"] and saved["findings"] == result["findings"]


def test_run_level_time_budget_is_respected(runs):
    params = InterrogateParams(steps=10**6, time_budget_s=2.0, channels=["features.3:ch0"])
    t0 = time.perf_counter()
    result = interrogate_run(runs["interior"], params, "cpu")
    assert result["time"]["stopped_early"]
    assert all(r["stopped_early"] and r["steps"] < 10**6 for r in result["inversion"].values())
    assert result["time"]["optimisation_s"] < 2.0 + 3.0  # one step per job and the writes may overrun
    assert time.perf_counter() - t0 < 30
    assert any("time budget" in note for note in result["notes"])


def test_run_level_2d(tmp_path):
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    manifest = make_cohort(tmp_path / "cohort", shape=(16, 18), spatial_dims=2, affine=np.diag([1.5, 0.8, 1.0, 1.0]))
    config = make_config(tmp_path, manifest, spatial_dims=2, methods={"saliency": {}},
                         data__transforms={"spatial_size": [20, 16], "intensity": "zscore"})
    run = run_audit(load_config(config)).run_dir
    result = interrogate_run(run, InterrogateParams(steps=20, channels=["head.input:ch1"]), "cpu")
    assert [layer["name"] for layer in result["layers"]] == ["features.0", "features.3"]
    for record in result["inversion"].values():
        assert record["representation_loss_final_mean"] < record["representation_loss_initial_mean"]
        for sid, rel in record["volumes"].items():
            source = nib.load(str(tmp_path / "cohort" / "images" / f"{sid}.nii.gz"))
            written = nib.load(str(run / rel))
            assert written.shape == source.shape  # back from the padded/cropped 20x16 input grid
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert (run / result["maximisation"][0]["volume"]).is_file()


def test_torchscript_runs_are_refused(runs, tmp_path):
    resolved = yaml.safe_load((runs["border"] / "config.resolved.yaml").read_text())
    scripted = copy.deepcopy(resolved)
    scripted["model"] = {"torchscript": str(tmp_path / "model.pt"), "classes": ["healthy", "lesion"]}
    (tmp_path / "config.resolved.yaml").write_text(yaml.safe_dump(scripted))
    with pytest.raises(ConfigError, match="TorchScript"):
        interrogate_run(tmp_path, InterrogateParams(), "cpu")


def test_unknown_layer_is_a_config_error(runs):
    with pytest.raises(ConfigError, match="features.6"):
        interrogate_run(runs["border"], InterrogateParams(layers=["features.66"], steps=1), "cpu")


# ---------------------------------------------------------------- wired into run, CLI, audit and report

def _copy_run(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


def _retention_findings(audit):
    return [f for f in audit["findings"] if f["check"] == "retention"]


def test_run_with_an_interrogate_section_reports_it(tmp_path):
    import json

    from pathlib import Path

    import jsonschema

    import xaudit
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    manifest = make_cohort(tmp_path / "cohort")
    config = make_config(
        tmp_path, manifest, methods={"saliency": {}},
        model={"factory": {"function": "test_interrogate:planted_net", "args": {"keep": "border"}},
               "classes": ["healthy", "lesion"], "layer": "features.3"},
        interrogate={**FAST, "auto_layers": 3},
    )
    run = run_audit(load_config(config)).run_dir
    audit = json.loads((run / "audit.json").read_text())
    schema = json.loads((Path(xaudit.__file__).parent / "schemas" / "audit.schema.json").read_text())
    jsonschema.validate(audit, schema)
    interrogation = audit["interrogation"]
    assert len(interrogation["layers"]) == 3
    assert "interrogation" in audit["run"]["timings_s"]
    # the border net keeps the planted corner: the finding reaches the run's findings
    assert [f["severity"] for f in _retention_findings(audit)] in (["warning"], ["critical"])
    for key in ("interrogation", "interrogation_retention", "interrogation_plot"):
        assert (run / audit["artifacts"][key]).exists()
    html = (run / "report.html").read_text()
    assert "What each depth retains" in html and "interrogation" in (run / "report.md").read_text()
    assert html.count("<img") >= 2 + len(interrogation["subjects"])  # plot + one inversion figure per subject


def test_cli_interrogate_folds_into_a_finished_run(runs, tmp_path):
    import json

    from typer.testing import CliRunner

    from xaudit.cli import app

    run = _copy_run(runs["border"], tmp_path)
    before = json.loads((run / "audit.json").read_text())
    assert "interrogation" not in before and not _retention_findings(before)
    args = ["interrogate", str(run), "--set", "steps=40", "--set", "interrogate.time_budget_s=60", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["findings"] and summary["layers"]
    audit = json.loads((run / "audit.json").read_text())
    assert audit["interrogation"]["params"]["steps"] == 40
    assert len(_retention_findings(audit)) == 1
    assert "What each depth retains" in (run / "report.html").read_text()
    # again, with a gate on findings: the retention finding is replaced, not duplicated
    again = CliRunner().invoke(app, [*args, "-q", "--fail-on-findings", "warning"])
    assert again.exit_code == 1, again.output
    assert len(_retention_findings(json.loads((run / "audit.json").read_text()))) == 1


def test_cli_interrogate_rejects_bad_keys_and_unfinished_runs(runs, tmp_path):
    from typer.testing import CliRunner

    from xaudit.cli import app

    run = _copy_run(runs["interior"], tmp_path)
    bad = CliRunner().invoke(app, ["interrogate", str(run), "--set", "stpes=3"])
    assert bad.exit_code == 2 and "interrogate.stpes" in bad.output and "steps" in bad.output
    (run / "audit.json").unlink()
    unfinished = CliRunner().invoke(app, ["interrogate", str(run), "--set", "steps=1"])
    assert unfinished.exit_code != 0 and "audit.json" in unfinished.output


def test_config_refuses_interrogate_with_a_torchscript_model(tmp_path):
    from xaudit.config import load_config

    manifest = make_cohort(tmp_path / "cohort", n=4)
    config = make_config(tmp_path, manifest, methods={"saliency": {}},
                         model={"torchscript": str(tmp_path / "model.pt"), "classes": ["healthy", "lesion"]},
                         interrogate={})
    with pytest.raises(ConfigError, match="interrogate.*TorchScript"):
        load_config(config)


def test_wrong_interrogate_layer_is_refused_before_the_run(tmp_path):
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    manifest = make_cohort(tmp_path / "cohort", n=4)
    config = make_config(tmp_path, manifest, methods={"saliency": {}}, interrogate={"layers": ["features.33"]})
    with pytest.raises(ConfigError, match=r"interrogate\.layers.*features\.33"):
        run_audit(load_config(config))
    assert not (tmp_path / "run" / "subjects").exists() or not any((tmp_path / "run" / "subjects").iterdir())


def test_a_failing_interrogation_does_not_cost_the_audit(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    import jsonschema

    import xaudit
    import xaudit.workflows.finish
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    def broken(*_args, **_kwargs):
        raise RuntimeError("out of memory in the optimiser")

    monkeypatch.setattr(xaudit.workflows.finish, "interrogation_stage", broken)
    manifest = make_cohort(tmp_path / "cohort", n=4)
    config = make_config(tmp_path, manifest, methods={"saliency": {}}, interrogate=FAST)
    run = run_audit(load_config(config)).run_dir
    audit = json.loads((run / "audit.json").read_text())
    jsonschema.validate(audit, json.loads((Path(xaudit.__file__).parent / "schemas" / "audit.schema.json").read_text()))
    assert audit["interrogation"] == {"failed": "RuntimeError: out of memory in the optimiser"}
    assert "Interrogation failed: RuntimeError" in (run / "report.md").read_text()


def test_merge_into_audit_replaces_retention_findings_and_keeps_the_bias_order():
    from xaudit.workflows.interrogate import merge_into_audit

    def finding(id_, check, severity, points_to):
        return {"id": id_, "check": check, "severity": severity, "points_to": points_to, "title": id_}

    audit = {"findings": [finding("a", "probes", "info", "signature"), finding("b", "design", "warning", "design"),
                          finding("c", "looking", "warning", "signature"),
                          finding("retention.old", "retention", "critical", "signature")],
             "artifacts": {"report": "report.html", "interrogation": "old.json"}}
    merged = merge_into_audit(audit, {"findings": [finding("retention.new", "retention", "warning", "signature")],
                                      "artifacts": {"interrogation": "interrogate/interrogation.json"}})
    assert [f["id"] for f in merged["findings"]] == ["c", "retention.new", "b", "a"]
    assert merged["artifacts"] == {"report": "report.html", "interrogation": "interrogate/interrogation.json"}
