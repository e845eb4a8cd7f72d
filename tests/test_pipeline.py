"""Pipeline behaviour: shards and merge, 2D cohorts, isolated subject failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import make_cohort, make_config
from xaudit.config import load_config
from xaudit.errors import OutputError
from xaudit.workflows.merge import merge_runs
from xaudit.workflows.audit import RunOptions, run_audit, shard_subjects

pytestmark = pytest.mark.slow


def read_predictions(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "predictions.csv").sort_values("subject_id").reset_index(drop=True)


def test_shards_merged_equal_a_single_run(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=9)
    config = load_config(make_config(tmp_path, manifest))
    single = run_audit(config, RunOptions(output=tmp_path / "single"))
    shard_dirs = []
    for i in range(3):
        out = tmp_path / f"shard{i}"
        result = run_audit(config, RunOptions(output=out, shard=(i, 3)))
        assert result.audit["done"] == 3
        assert not (out / "audit.json").exists()  # dataset-level stages wait for merge
        shard_dirs.append(out)
    merged = merge_runs(shard_dirs, tmp_path / "merged")
    pd.testing.assert_frame_equal(read_predictions(single.run_dir), read_predictions(merged.run_dir))
    for sid in ("sub-000", "sub-004", "sub-008"):
        a = nib.load(str(single.run_dir / "attributions" / "integrated_gradients" / f"{sid}.nii.gz")).get_fdata()
        b = nib.load(str(merged.run_dir / "attributions" / "integrated_gradients" / f"{sid}.nii.gz")).get_fdata()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert merged.audit["metrics"] == single.audit["metrics"]
    assert merged.audit["counts"] == single.audit["counts"]
    assert "report written" in (merged.run_dir / "run.log").read_text()  # the merge's own log, as a run's


def test_merge_of_shards_cut_differently_warns_and_matches_by_id(tmp_path, caplog):
    manifest = make_cohort(tmp_path / "c", n=6, sites=("A",))
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}))
    halves = [run_audit(config, RunOptions(output=tmp_path / "half0", shard=(0, 2))).run_dir]
    thirds = [run_audit(config, RunOptions(output=tmp_path / f"third{i}", shard=(i, 3))).run_dir for i in range(3)]
    with caplog.at_level("WARNING", logger="xaudit"):
        merged = merge_runs([halves[0], *thirds], tmp_path / "merged")  # 0/2: 0, 2, 4; the thirds all six again
    assert "different shard counts" in caplog.text
    assert merged.audit["counts"]["audited"] == 6


def test_shard_partition_is_deterministic_and_complete():
    items = list(range(10))
    parts = [shard_subjects(items, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == items
    assert parts == [shard_subjects(items, (i, 3)) for i in range(3)]


def test_merge_refuses_shards_of_different_configs(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    a = run_audit(load_config(make_config(tmp_path, manifest)), RunOptions(output=tmp_path / "a", shard=(0, 2)))
    other = make_config(tmp_path, manifest, methods={"saliency": {}})
    b = run_audit(load_config(other), RunOptions(output=tmp_path / "b", shard=(1, 2)))
    from xaudit.errors import OutputError

    with pytest.raises(OutputError, match="different configs") as err:
        merge_runs([a.run_dir, b.run_dir], tmp_path / "m")
    assert "PosixPath" not in str(err.value) and f"{a.run_dir}: " in str(err.value)


def test_2d_cohort_end_to_end(tmp_path):
    aff = np.array([[1.2, 0, 0, -10], [0, 0.9, 0, 4], [0, 0, 3, 0], [0, 0, 0, 1]])
    manifest = make_cohort(tmp_path / "c", n=6, shape=(20, 18), affine=aff, spatial_dims=2)
    config = load_config(make_config(tmp_path, manifest, spatial_dims=2))
    result = run_audit(config)
    src = nib.load(str(tmp_path / "c" / "images" / "sub-001.nii.gz"))
    out = nib.load(str(result.run_dir / "attributions" / "gradcam" / "sub-001.nii.gz"))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine)
    assert result.audit["counts"]["audited"] == 6


def test_a_corrupt_image_is_skipped_and_recorded(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=6)
    bad = tmp_path / "c" / "images" / "sub-003.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated gzip
    result = run_audit(load_config(make_config(tmp_path, manifest)))
    errors = pd.read_csv(result.run_dir / "errors.csv")
    assert list(errors["subject_id"]) == ["sub-003"]
    assert result.audit["counts"] == {"subjects": 6, "audited": 5, "failed": 1, "missing": 0}
    audit = json.loads((result.run_dir / "audit.json").read_text())
    assert audit["counts"]["failed"] == 1


def test_a_4d_image_is_refused_with_what_to_do_instead(tmp_path):
    """A 4D image (two volumes) is not a 2D/3D one with a wrong setting: the error says to split
    it into channels, not to set `data.spatial_dims` (which only led to the next error)."""
    from xaudit.errors import DataError

    manifest = make_cohort(tmp_path / "c", n=4)
    first = tmp_path / "c" / "images" / "sub-000.nii.gz"
    src = nib.load(str(first))
    volume = src.get_fdata().astype(np.float32)
    nib.save(nib.Nifti1Image(np.stack([volume, volume], axis=-1), src.affine), str(first))
    with pytest.raises(DataError) as err:
        run_audit(load_config(make_config(tmp_path, manifest)))
    message = str(err.value)
    assert str(first) in message and "2 3D volumes" in message and "data.image_column: [" in message
    assert "spatial_dims" not in message
    failed = run_audit(load_config(make_config(tmp_path, manifest, data__spatial_dims=3)))  # the subject fails alone
    reason = pd.read_csv(failed.run_dir / "errors.csv").set_index("subject_id").loc["sub-000"].to_dict()
    assert any("2 3D volumes" in str(v) and "data.image_column: [" in str(v) for v in reason.values()), reason


def test_on_error_fail_stops_with_the_subject_named(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    bad = tmp_path / "c" / "images" / "sub-002.nii.gz"
    src = nib.load(str(bad))
    data = src.get_fdata().astype(np.float32)
    data[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(data, src.affine), str(bad))
    from xaudit.errors import SubjectError

    config = load_config(make_config(tmp_path, manifest, data__on_error="fail"))
    with pytest.raises(SubjectError, match="sub-002.*NaN or Inf"):
        run_audit(config)


def test_multichannel_input(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    frame = pd.read_csv(manifest)
    frame["flair"] = frame["image"]
    frame.to_csv(manifest, index=False)
    cfg = make_config(tmp_path, manifest)
    raw = cfg.read_text().replace("tiny_nets:build", "tiny_nets:build")
    import yaml

    data = yaml.safe_load(raw)
    data["data"]["image_column"] = ["image", "flair"]
    data["model"]["factory"]["args"]["in_channels"] = 2
    cfg.write_text(yaml.safe_dump(data))
    result = run_audit(load_config(cfg))
    assert result.audit["counts"]["audited"] == 4


def test_mean_baseline_uses_the_dataset_mean(tmp_path, monkeypatch):
    import torch

    import xaudit.stages.subject_pass as subject_pass
    from xaudit.data.loading import load_subject
    from xaudit.stages.validate import validate_setup

    seen = []

    def spy(subjects, transforms, spatial_dims):
        mean = subject_pass.dataset_mean_input.__wrapped__(subjects, transforms, spatial_dims)
        seen.append(mean)
        return mean

    spy.__wrapped__ = subject_pass.dataset_mean_input
    monkeypatch.setattr(subject_pass, "dataset_mean_input", spy)
    manifest = make_cohort(tmp_path / "c", n=4)
    runs = {}
    for baseline in ("mean", "zeros"):
        methods = {"integrated_gradients": {"steps": 8, "baseline": baseline}}
        (tmp_path / baseline).mkdir()
        config = load_config(make_config(tmp_path / baseline, manifest, methods=methods))
        runs[baseline] = run_audit(config, RunOptions(output=tmp_path / baseline / "run"))
    assert len(seen) == 1  # only the mean baseline asks for it
    setup = validate_setup(config)
    inputs = torch.stack([load_subject(s, setup.transforms, setup.spatial_dims).tensor for s in setup.subjects])
    torch.testing.assert_close(seen[0], inputs.mean(0))  # the mean of the preprocessed inputs
    assert seen[0].abs().sum() > 0  # so it is not the zeros baseline
    checks = runs["mean"].audit["attribution"]["methods"]["integrated_gradients"]["self_checks"]
    assert checks["completeness_error"]["n"] == 4
    sid = setup.subjects[0].safe_id
    maps = {b: nib.load(r.run_dir / "attributions" / "integrated_gradients" / f"{sid}.nii.gz").get_fdata()
            for b, r in runs.items()}
    assert not np.allclose(maps["mean"], maps["zeros"])  # the baseline changed the maps


def test_submit_with_the_local_executor_equals_a_single_run(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from xaudit.workflows.submit import ClusterOptions, submit_shards

    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", tests_dir + os.pathsep + os.environ.get("PYTHONPATH", ""))
    manifest = make_cohort(tmp_path / "c", n=6)
    config_path = make_config(tmp_path, manifest, methods={"saliency": {}})
    single = run_audit(load_config(config_path), RunOptions(output=tmp_path / "single"))
    merged = submit_shards(config_path, [], 2, tmp_path / "submitted", ClusterOptions(cluster="local", timeout_min=10))
    pd.testing.assert_frame_equal(read_predictions(single.run_dir), read_predictions(merged.run_dir))
    assert (tmp_path / "submitted" / "shards" / "1" / "shard-1-of-2.json").is_file()


def test_the_queue_is_asked_about_a_tenth_of_the_wait_so_far():
    from xaudit.workflows.submit import poll_delay

    assert poll_delay(0.0, 30.0) == 1.0  # a short job is seen done within a second
    assert poll_delay(60.0, 30.0) == 6.0  # then at most 10 % after it ended
    assert poll_delay(4 * 3600.0, 30.0) == 30.0  # a long wait asks once every poll_s


def test_submitting_imports_neither_torch_nor_the_stages(tmp_path):
    """The shards are queued before the merge's modules load (about 6 s), and --no-wait never loads them."""
    import subprocess
    import sys

    pytest.importorskip("submitit")
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=2), methods={"saliency": {}})
    code = f"""
import sys, types, submitit
import xaudit.cli
from xaudit.workflows import submit

class Executor:  # stands in for sbatch: what submitit's executor returns, nothing queued
    def __init__(self, **kwargs): pass
    def update_parameters(self, **kwargs): pass
    def map_array(self, fn, *args):
        return [types.SimpleNamespace(job_id=f"7_{{k}}", paths=types.SimpleNamespace(stdout="o", stderr="e"))
                for k in range(len(args[0]))]

submitit.AutoExecutor = Executor
print(submit.submit_shards({str(config)!r}, [], 2, {str(tmp_path / "out")!r}, submit.ClusterOptions(), wait=False))
print(sorted(m for m in ("torch", "monai", "xaudit.workflows.audit") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['7_0', '7_1']", "[]"]


def test_one_squeue_call_per_job_array_gives_every_tasks_state(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from xaudit.workflows import submit

    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\nexit 1\n")  # accounting off: states come from squeue
    (fake / "squeue").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nprintf '41_0|RUNNING\\n41_1|COMPLETED\\n'\n")
    for tool in ("sacct", "squeue"):
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submit, "_ACCOUNTING", {})
    jobs = [submitit.SlurmJob(folder=tmp_path / "jobs", job_id=f"41_{k}") for k in range(3)]
    states = submit._job_states(jobs)
    assert states == {"41_0": "RUNNING", "41_1": "COMPLETED", "41_2": "GONE"}
    assert calls.read_text().splitlines() == ["-h -r -t all -j 41 -o %i|%T"]
    (fake / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Socket timed out' >&2\nexit 1\n")
    assert submit._job_states(jobs[:1]) == {"41_0": "UNKNOWN"}  # squeue failed: still queued, not gone


def test_lime_over_an_atlas_writes_region_tables(tmp_path):
    from conftest import OBLIQUE_AFFINE, write_nifti

    manifest = make_cohort(tmp_path / "c", n=4)
    atlas = np.zeros((12, 14, 10), np.float32)
    atlas[:6], atlas[6:] = 1, 2
    write_nifti(tmp_path / "atlas.nii.gz", atlas, OBLIQUE_AFFINE)
    cfg = make_config(tmp_path, manifest, methods={"lime": {"regions": "atlas", "samples": 16}},
                      attribution__atlas=str(tmp_path / "atlas.nii.gz"))
    result = run_audit(load_config(cfg))
    table = pd.read_csv(result.run_dir / "attributions" / "lime" / "sub-000_regions.csv")
    assert set(table["region"]) <= {0, 1, 2} and {1, 2} <= set(table["region"])


def test_mixed_precision_run_matches_the_float32_run(tmp_path):
    """`attribution.amp: fp16` (autocast; on CUDA with `auto`): same predictions, maps that
    correlate >= 0.99 with the float32 run's, written as float32."""
    manifest = make_cohort(tmp_path / "c", n=6)
    runs = {}
    for amp in ("off", "fp16"):
        config = load_config(make_config(tmp_path, manifest), [f"attribution.amp={amp}", "quality.subjects=0"])
        runs[amp] = run_audit(config, RunOptions(output=tmp_path / amp, device="cpu")).run_dir
    pd.testing.assert_series_equal(read_predictions(runs["off"])["prediction"], read_predictions(runs["fp16"])["prediction"])
    for method in ("saliency", "integrated_gradients", "gradcam"):
        for sid in ("sub-000", "sub-003"):
            ref, mixed = (nib.load(str(runs[a] / "attributions" / method / f"{sid}.nii.gz")) for a in ("off", "fp16"))
            assert mixed.get_data_dtype() == np.float32
            a, b = ref.get_fdata().ravel(), mixed.get_fdata().ravel()
            assert np.corrcoef(a, b)[0, 1] >= 0.99, (method, sid)


def test_single_logit_models_run_with_layer_methods_and_torchscript(tmp_path):
    """A sigmoid model keeps its own layer names (Grad-CAM layer, features) and a
    TorchScript sigmoid model runs input-gradient methods: both finish every subject."""
    import torch

    import tiny_nets

    manifest = make_cohort(tmp_path / "c", n=4)
    (tmp_path / "eager").mkdir()
    (tmp_path / "ts").mkdir()
    eager = make_config(tmp_path / "eager", manifest, model={
        "factory": {"function": "tiny_nets:build", "args": {"classes": 1}},
        "classes": ["healthy", "lesion"], "layer": "features.3"})
    result = run_audit(load_config(eager, ["quality.subjects=0"]), RunOptions(device="cpu"))
    assert result.failed == 0 and result.audit["counts"]["audited"] == 4
    assert (result.run_dir / "attributions" / "gradcam" / "sub-000.nii.gz").is_file()
    assert json.loads((result.run_dir / "features.json").read_text())["names"][0].startswith("head.input:")

    scripted = torch.jit.script(tiny_nets.build(classes=1))
    scripted.save(str(tmp_path / "model.pt"))
    ts = make_config(tmp_path / "ts", manifest, methods={"saliency": {}, "integrated_gradients": {"steps": 4}},
                     model={"torchscript": str(tmp_path / "model.pt"), "classes": ["healthy", "lesion"]})
    result = run_audit(load_config(ts), RunOptions(device="cpu"))  # the default stages (a new user's trial: quality crashed)
    assert result.failed == 0 and result.audit["counts"]["audited"] == 4
    saliency = result.audit["attribution"]["quality"]["methods"]["saliency"]
    assert saliency["deletion_auc"] is not None and "no forward hooks" in saliency["randomisation_skipped"]


def test_resume_refuses_a_config_that_changes_the_subject_results(tmp_path):
    from xaudit.errors import OutputError

    manifest = make_cohort(tmp_path / "c", n=4)
    path = make_config(tmp_path, manifest, methods={"saliency": {}})
    run_audit(load_config(path, ["quality.subjects=0"]), RunOptions(device="cpu"))
    changed = load_config(path, ["quality.subjects=0", "attribution.target=lesion",
                                 "attribution.methods.gradcam={}"])
    with pytest.raises(OutputError, match=r"attribution.methods: \[.*attribution.target: 'predicted' -> 'lesion'"):
        run_audit(changed, RunOptions(device="cpu", resume=True))
    # dataset-level settings may change on resume: the stages rerun with them
    again = run_audit(load_config(path, ["quality.subjects=0", "bias.bootstrap=60"]), RunOptions(device="cpu", resume=True))
    assert again.audit["bias"]["params"]["bootstrap"] == 60


def test_a_factory_module_next_to_the_config_is_found(tmp_path):
    """`model.factory: mynet:build` with mynet.py beside the config, not on sys.path."""
    import shutil
    import sys

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "tiny_nets.py", folder / "beside_config_net.py")
    manifest = make_cohort(tmp_path / "c", n=4)
    path = make_config(folder, manifest, methods={"saliency": {}},
                       model={"factory": "beside_config_net:build", "classes": ["healthy", "lesion"]})
    assert "beside_config_net" not in sys.modules and str(folder) not in sys.path
    result = run_audit(load_config(path, ["quality.subjects=0"]), RunOptions(device="cpu"))
    assert result.failed == 0
    provenance = __import__("yaml").safe_load((result.run_dir / "config.resolved.yaml").read_text())["provenance"]
    assert str(folder) in provenance["import_dirs"]


def test_multichannel_interrogation_files_cannot_collide_with_subject_ids(tmp_path):
    """Channel 1 of subject `sub-000` must not land where subject `sub-000_c1` does."""
    import yaml

    manifest = make_cohort(tmp_path / "c", n=4)
    frame = pd.read_csv(manifest)
    frame["flair"] = frame["image"]
    frame.loc[1, "subject_id"] = "sub-000_c1"
    frame.to_csv(manifest, index=False)
    cfg = make_config(tmp_path, manifest, methods={"saliency": {}},
                      interrogate={"steps": 3, "layers": ["features.3"], "channels": [], "per_cell": 4})
    data = yaml.safe_load(cfg.read_text())
    data["data"]["image_column"] = ["image", "flair"]
    data["model"]["factory"]["args"]["in_channels"] = 2
    cfg.write_text(yaml.safe_dump(data))
    run = run_audit(load_config(cfg, ["quality.subjects=0"]), RunOptions(device="cpu")).run_dir
    written = sorted(p.relative_to(run / "interrogate" / "inversions") for p in (run / "interrogate" / "inversions").rglob("*.nii.gz"))
    subjects = json.loads((run / "audit.json").read_text())["interrogation"]["subjects"]
    assert len(written) == 2 * len(subjects)  # two channels per interrogated subject, none overwritten


def test_merging_part_of_the_shards_is_refused_unless_partial_is_allowed(tmp_path):
    import logging

    manifest = make_cohort(tmp_path / "c", n=4)
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}), ["quality.subjects=0"])
    run_audit(config, RunOptions(output=tmp_path / "s0", shard=(0, 2), device="cpu"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # the CLI tests turn off propagation of the xaudit logger
    logging.getLogger("xaudit").addHandler(handler)
    try:
        with pytest.raises(OutputError, match=r"2 of 4 subjects are in no shard given \(shards \[1\] of 2 not given\)"):
            merge_runs([tmp_path / "s0"], tmp_path / "merged")
        merged = merge_runs([tmp_path / "s0"], tmp_path / "merged", allow_partial=True)
    finally:
        logging.getLogger("xaudit").removeHandler(handler)
    assert merged.audit["counts"]["missing"] == 2
    assert any("2 of 4 subjects are in no shard given" in r.getMessage() for r in records)
