"""Tests of the sample cohort generator (`xaudit.sample`), mostly on its quick variant."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from xaudit.errors import ConfigError
from xaudit.sample import generate_sample_data
from xaudit.sample.anatomy import grid_affine
from xaudit.sample.design import (FULL_DESIGN, MAJORITY_SITE, MANIFEST_COLUMNS, QUICK_DESIGN,
                                  subject_table)
from xaudit.sample.generate import FULL_COHORTS, QUICK_COHORTS
from xaudit.sample.nets import GRADCAM_LAYER, build_network, network_spec
from xaudit.sample.shortcut import cell_accuracy, shortcut_verdict

REPO = Path(__file__).resolve().parents[1]
COHORTS = {spec.name: spec for spec in QUICK_COHORTS}


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    """One quick generation shared by the module: (out_dir, summary, progress lines)."""
    out = tmp_path_factory.mktemp("sample")
    lines: list[str] = []
    summary = generate_sample_data(out, seed=0, quick=True, progress=lines.append)
    return out, summary, lines


def _manifest(out: Path, cohort: str) -> pd.DataFrame:
    return pd.read_csv(out / cohort / "manifest.csv")


@pytest.mark.parametrize("cohort", ["cohort3d", "cohort2d"])
def test_manifest_columns_and_relative_paths(quick_data, cohort):
    out, _, _ = quick_data
    table = _manifest(out, cohort)
    assert list(table.columns) == MANIFEST_COLUMNS
    assert set(table["label"]) == {"healthy", "lesion"}
    assert table["subject_id"].is_unique
    for column in ("image", "mask", "lesion_mask"):
        for path in table[column]:
            assert not Path(path).is_absolute()
            assert (out / cohort / path).is_file(), path


@pytest.mark.parametrize("cohort", ["cohort3d", "cohort2d"])
def test_images_have_grid_affine_and_float32(quick_data, cohort):
    out, _, _ = quick_data
    spec = COHORTS[cohort]
    for path in _manifest(out, cohort)["image"][:5]:
        image = nib.load(out / cohort / path)
        assert image.shape == spec.shape
        assert image.get_data_dtype() == np.float32
        np.testing.assert_allclose(image.affine, grid_affine(spec.shape, spec.voxel_mm))
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert np.isfinite(image.get_fdata()).all()


@pytest.mark.parametrize("cohort", ["cohort3d", "cohort2d"])
def test_masks_binary_and_lesions_only_in_lesion_subjects(quick_data, cohort):
    out, _, _ = quick_data
    for row in _manifest(out, cohort).itertuples():
        brain = np.asarray(nib.load(out / cohort / row.mask).dataobj)
        lesion = np.asarray(nib.load(out / cohort / row.lesion_mask).dataobj)
        assert set(np.unique(brain)) <= {0, 1} and brain.sum() > 0
        assert set(np.unique(lesion)) <= {0, 1}
        assert (lesion.sum() > 0) == (row.label == "lesion"), row.subject_id
        assert (lesion & brain).sum() >= 0.9 * lesion.sum()


def test_splits_confounded_control_and_balanced_test(quick_data):
    out, _, _ = quick_data
    table = _manifest(out, "cohort3d")
    cells = table.groupby(["split", "label", "site"]).size()
    assert cells["test"].nunique() == 1 and len(cells["test"]) == 4
    assert cells["train_control"].nunique() == 1 and len(cells["train_control"]) == 4
    train = table[table["split"] == "train"]
    for label, site in MAJORITY_SITE.items():
        of_class = train[train["label"] == label]
        assert (of_class["site"] == site).mean() == pytest.approx(QUICK_DESIGN.confound)
    # the 2D cohort shares the subject table
    pd.testing.assert_frame_equal(
        table.drop(columns=["image", "mask", "lesion_mask"]),
        _manifest(out, "cohort2d").drop(columns=["image", "mask", "lesion_mask"]))


def test_full_design_counts():
    table = subject_table(FULL_DESIGN, seed=0)
    assert table.groupby("split").size().to_dict() == {"test": 80, "train": 120,
                                                       "train_control": 240}
    train = table[table["split"] == "train"]
    assert pd.crosstab(train["label"], train["site"]).to_dict() == {
        "site_A": {"healthy": 54, "lesion": 6}, "site_B": {"healthy": 6, "lesion": 54}}
    assert set(table["sex"]) == {"F", "M"}
    assert table["scanner"].nunique() == table["site"].nunique()


@pytest.mark.parametrize("cohort", ["cohort3d", "cohort2d"])
def test_checkpoints_load_weights_only_into_configured_network(quick_data, cohort):
    out, _, _ = quick_data
    spatial_dims = len(COHORTS[cohort].shape)
    for kind in ("confounded", "control"):
        state = torch.load(out / cohort / f"model_{kind}.pth", weights_only=True)
        network = build_network(spatial_dims)
        network.load_state_dict(state, strict=True)
        assert GRADCAM_LAYER in dict(network.named_modules())
        with torch.no_grad():
            logits = network.eval()(torch.zeros(2, 1, *COHORTS[cohort].shape))
        assert logits.shape == (2, 2)


def test_summary_and_shortcut_check_file(quick_data):
    out, summary, lines = quick_data
    assert lines and summary["quick"] is True
    for cohort in ("cohort3d", "cohort2d"):
        check = json.loads((out / cohort / "shortcut_check.json").read_text())
        assert check["verdict"] == summary[cohort]["shortcut"]
        for kind in ("confounded", "control"):
            cells = check["models"][kind]["cells"]
            assert set(cells) == {"healthy/site_A", "healthy/site_B", "lesion/site_A",
                                  "lesion/site_B"}
            assert sum(c["n"] for c in cells.values()) == 4 * QUICK_DESIGN.test_per_cell


def test_rerun_skips_complete_parts(quick_data):
    out, _, _ = quick_data
    image = out / "cohort3d" / _manifest(out, "cohort3d")["image"][0]
    before = image.stat().st_mtime_ns
    summary = generate_sample_data(out, seed=0, quick=True)
    for cohort in ("cohort3d", "cohort2d"):
        assert summary[cohort]["generated"] is False and summary[cohort]["trained"] is False
    assert image.stat().st_mtime_ns == before


def test_same_seed_same_data_other_seed_other_data(quick_data, tmp_path):
    out, _, _ = quick_data
    again = generate_sample_data(tmp_path / "again", seed=0, quick=True)
    assert again["cohort3d"]["generated"] is True
    for cohort in ("cohort3d", "cohort2d"):
        first = (out / cohort / "manifest.csv").read_bytes()
        assert first == (tmp_path / "again" / cohort / "manifest.csv").read_bytes()
        for path in _manifest(out, cohort)["image"][:4]:
            a = nib.load(out / cohort / path).get_fdata()
            b = nib.load(tmp_path / "again" / cohort / path).get_fdata()
            np.testing.assert_array_equal(a, b)
        for kind in ("confounded", "control"):
            a = torch.load(out / cohort / f"model_{kind}.pth", weights_only=True)
            b = torch.load(tmp_path / "again" / cohort / f"model_{kind}.pth", weights_only=True)
            assert all(torch.equal(a[key], b[key]) for key in a)
    other = subject_table(QUICK_DESIGN, seed=1)
    assert not other.equals(subject_table(QUICK_DESIGN, seed=0))


@pytest.mark.parametrize("bad", [0, 6, -4, 4.0, True])
def test_invalid_n_test_raises_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="n_test"):
        generate_sample_data(tmp_path, n_test=bad, quick=True)
    assert not any(tmp_path.iterdir())


def test_invalid_seed_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="seed"):
        generate_sample_data(tmp_path, seed=-1, quick=True)


def _cells(predict_lesion) -> dict:
    """cell_accuracy of a rule `predict_lesion(label, site) -> bool` on a balanced split."""
    rows = pd.DataFrame([(label, site) for label in ("healthy", "lesion")
                         for site in ("site_A", "site_B") for _ in range(5)],
                        columns=["label", "site"])
    predictions = np.array([int(predict_lesion(r.label, r.site)) for r in rows.itertuples()])
    return cell_accuracy(rows, predictions)


def test_shortcut_verdict_separates_site_reader_from_lesion_reader():
    site_reader = _cells(lambda label, site: site == "site_B")
    lesion_reader = _cells(lambda label, site: label == "lesion")
    assert site_reader["healthy/site_B"]["accuracy"] == 0.0
    assert site_reader["healthy/site_A"]["diagonal"] is True
    assert shortcut_verdict(site_reader, lesion_reader)["holds"] is True
    assert shortcut_verdict(lesion_reader, lesion_reader)["holds"] is False
    assert shortcut_verdict(site_reader, site_reader)["holds"] is False


@pytest.mark.parametrize("name, cohort, checkpoint", [
    ("demo.yaml", "cohort3d", "model_confounded.pth"),
    ("demo_control.yaml", "cohort3d", "model_control.pth"),
    ("demo2d.yaml", "cohort2d", "model_confounded.pth"),
])
def test_demo_configs_match_the_generated_data(name, cohort, checkpoint):
    config_path = REPO / "configs" / name
    config = yaml.safe_load(config_path.read_text())
    spec = next(s for s in FULL_COHORTS if s.name == cohort)
    data, model = config["data"], config["model"]
    assert (config_path.parent / data["manifest"]).resolve() == \
        (REPO / "sample_data" / cohort / "manifest.csv").resolve()
    assert data["split"] == "test" and data["roi_columns"] == ["lesion_mask"]
    assert {k: v for k, v in data["transforms"].items()} == spec.transforms
    expected = network_spec(len(spec.shape), checkpoint="")
    assert model["monai"]["network"] == expected["network"]
    assert model["monai"]["args"] == expected["args"]
    assert (config_path.parent / model["monai"]["checkpoint"]).resolve() == \
        (REPO / "sample_data" / cohort / checkpoint).resolve()
    assert model["classes"] == ["healthy", "lesion"] and model["layer"] == GRADCAM_LAYER


@pytest.mark.slow
def test_full_size_generation_shows_the_shortcut(full_sample_data):
    """The demo's premise, at full size: the confounded model fails off the diagonal."""
    _, summary = full_sample_data
    for cohort in ("cohort3d", "cohort2d"):
        verdict = summary[cohort]["shortcut"]
        assert verdict["holds"], (cohort, verdict)


@pytest.mark.slow
def test_the_demo_needs_no_training_and_reproduces_the_shipped_check(full_sample_data):
    """By default only the test split is synthesised and the shipped models installed; their
    per-cell accuracy on it equals the record made when they were trained (same subjects)."""
    import json

    import pandas as pd

    from xaudit.sample.shipped import digest, shipped_path

    folder, summary = full_sample_data
    for cohort in ("cohort3d", "cohort2d"):
        assert summary[cohort]["models_source"] == "shipped" and summary[cohort]["trained"] is False
        assert set(pd.read_csv(folder / cohort / "manifest.csv")["split"]) == {"test"}
        for kind in ("confounded", "control"):
            assert digest(folder / cohort / f"model_{kind}.pth") == digest(shipped_path(cohort, kind))
        check = json.loads((folder / cohort / "shortcut_check.json").read_text())
        assert check["source"] == "shipped" and check["matches_shipped"] is True


def test_without_shipped_models_the_default_trains(tmp_path, monkeypatch):
    """Another seed (or design) than the shipped models' trains its own: nothing is shipped for it."""
    import xaudit.sample.generate as generate

    calls = []
    monkeypatch.setattr(generate, "install_shipped", lambda *a, **k: calls.append(a))
    summary = generate_sample_data(tmp_path / "q", seed=0, quick=True)
    assert calls == [] and all(summary[c]["models_source"] == "trained" for c in ("cohort3d", "cohort2d"))


@pytest.mark.slow
@pytest.mark.parametrize("config_name, cohort", [("demo.yaml", "cohort3d"), ("demo2d.yaml", "cohort2d")])
def test_every_method_runs_from_the_demo_config_on_the_sample_cohort(quick_data, tmp_path, config_name, cohort):
    """Each registered method, named in the demo config, writes finite native-space volumes."""
    from xaudit.attribution import REGISTRY
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    out, _, _ = quick_data
    small = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 4}, "vargrad": {"samples": 4},
             "gradient_shap": {"samples": 4}, "occlusion": {"window": 8}, "lime": {"samples": 12, "n_segments": 8}}
    methods = {name: small.get(name, {}) for name in REGISTRY}
    spec = next(s for s in QUICK_COHORTS if s.name == cohort)
    overrides = [f"data.manifest={out / cohort / 'manifest.csv'}",
                 f"model.monai.checkpoint={out / cohort / 'model_confounded.pth'}",
                 f"data.transforms={json.dumps(spec.transforms)}", f"attribution.methods={json.dumps(methods)}",
                 f"output={tmp_path / 'run'}", "interrogate=null", "quality.subjects=0"]
    result = run_audit(load_config(REPO / "configs" / config_name, overrides), RunOptions(device="cpu"))
    assert result.failed == 0
    rows = _manifest(out, cohort).query("split == 'test'")
    for method in REGISTRY:
        for row in rows.itertuples():
            written = nib.load(str(tmp_path / "run" / "attributions" / method / f"{row.subject_id}.nii.gz"))
            source = nib.load(str(out / cohort / row.image))
            assert written.shape == source.shape, method
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
            assert np.isfinite(np.asarray(written.dataobj)).all(), method


def test_subjects_written_by_workers_equal_those_written_alone(tmp_path, monkeypatch):
    import xaudit.sample.generate as generate

    spec, pools = COHORTS["cohort3d"], []
    real_pool = generate.worker_pool
    monkeypatch.setattr(generate, "worker_pool", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    monkeypatch.setattr(generate, "cpu_count", lambda: 1)
    generate.write_cohort(tmp_path / "alone", spec, QUICK_DESIGN, 0, lambda _m: None)
    assert pools == []
    monkeypatch.setattr(generate, "cpu_count", lambda: 3)
    generate.write_cohort(tmp_path / "workers", spec, QUICK_DESIGN, 0, lambda _m: None)
    assert [a[0] for a in pools] == [3]  # written by three forked workers
    alone = _manifest(tmp_path, "alone")
    assert alone.equals(_manifest(tmp_path, "workers")) and len(alone) >= 8
    for column in ("image", "mask", "lesion_mask"):
        for path in alone[column]:
            a = np.asanyarray(nib.load(tmp_path / "alone" / path).dataobj)
            b = np.asanyarray(nib.load(tmp_path / "workers" / path).dataobj)
            np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "workers").rglob(".*"))  # no temporary file left behind


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] in ("blas", "openmp")]


def test_the_synthesis_workers_run_blas_on_one_thread_each():
    """One worker per core: a multithreaded BLAS in each would oversubscribe the cores."""
    from xaudit.core.workers import worker_pool
    from xaudit.sample.generate import _start_worker

    pool = worker_pool(1, initializer=_start_worker, initargs=(None,))
    if pool is None:
        pytest.skip("no worker processes here")
    try:
        threads = pool.submit(_blas_threads).result(timeout=120)
    finally:
        pool.shutdown()
    assert threads and set(threads) == {1}
