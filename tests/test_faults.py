"""Fault injection: killed runs resume to the same result, locks, full disks, hostile input."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from typer.testing import CliRunner

from conftest import make_cohort, make_config
from xaudit.cli import app
from xaudit.errors import OutputError
from xaudit.core.outputs import atomic_path, write_json

runner = CliRunner()
TESTS = Path(__file__).parent


def xaudit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r); from xaudit.cli import app; app()" % str(TESTS), *args]


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=12)
    config = make_config(tmp_path, manifest, data__batch_size=1)
    reference = runner.invoke(app, ["run", str(config), "-q", "-o", str(tmp_path / "ref")])
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "killed"
    proc = subprocess.Popen(xaudit_cmd("run", str(config), "-q", "-o", str(out)), stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "subjects").glob("*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "subjects").glob("*.npz")))
    assert 0 < done_before < 12, "the kill must land mid-run"
    assert not (out / "audit.json").exists()
    resumed = subprocess.run(xaudit_cmd("run", str(config), "-q", "--resume", "-o", str(out)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in (out / "run.log").read_text()
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == [], leftovers  # the killed writer's temporary files were removed on resume
    ref = pd.read_csv(tmp_path / "ref" / "predictions.csv")
    got = pd.read_csv(out / "predictions.csv")
    pd.testing.assert_frame_equal(ref, got)
    for sid in ("sub-000", "sub-011"):
        a = nib.load(str(tmp_path / "ref" / "attributions" / "saliency" / f"{sid}.nii.gz")).get_fdata()
        b = nib.load(str(out / "attributions" / "saliency" / f"{sid}.nii.gz")).get_fdata()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_ctrl_c_stops_a_run_at_once_with_one_line_and_resume_finishes_it(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=12)
    config = make_config(tmp_path, manifest, data__batch_size=1)
    out = tmp_path / "run"
    proc = subprocess.Popen(xaudit_cmd("run", str(config), "-o", str(out)), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's job
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "subjects").glob("*.npz"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: to the whole group, workers included
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 30
    assert proc.returncode == 130, stderr
    assert "interrupted: the finished subjects are kept" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr, stderr
    assert not (out / "audit.json").exists()
    resumed = subprocess.run(xaudit_cmd("run", str(config), "-q", "--resume", "-o", str(out)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "report.html").exists() and "already done" in (out / "run.log").read_text()


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4))
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".lock")):
        result = runner.invoke(app, ["run", str(config), "-q", "-o", str(out)])
    assert result.exit_code == 2
    assert "in use by another xaudit run" in result.output


def test_shards_lock_separately(tmp_path):
    from xaudit.core.outputs import RunDirectory

    run = RunDirectory(tmp_path)
    a = run.lock("0-of-2")
    b = run.lock("1-of-2")
    with pytest.raises(OutputError):
        run.lock("0-of-2")
    a.release()
    b.release()


def test_disk_full_gives_a_clear_error_and_no_partial_file(tmp_path, monkeypatch):
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="no space left"):
        write_json(tmp_path / "audit.json", {"a": 1})
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_a_run_exits_2(tmp_path, monkeypatch):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4))
    import xaudit.core.outputs as outputs

    real = outputs.os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if str(dst).endswith(".npz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", flaky)
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 2
    assert "no space left" in result.output
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]


def test_permission_denied_is_an_output_error(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(OutputError, match="permission denied"):
        with atomic_path(tmp_path / "x.json"):
            pass


def test_atomic_path_removes_temp_file_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.nii.gz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_hostile_subject_ids_stay_inside_the_run(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    frame = pd.read_csv(manifest)
    frame.loc[0, "subject_id"] = "../../escape"
    frame.loc[1, "subject_id"] = "<script>alert(1)</script>"
    frame.to_csv(manifest, index=False)
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "escape.nii.gz").exists() and not (tmp_path.parent / "escape.nii.gz").exists()
    written = sorted(p.name for p in (tmp_path / "run" / "attributions" / "saliency").glob("*.nii.gz"))
    assert any("escape" in name for name in written) and all("/" not in name for name in written)
    run_files = {p.resolve() for p in (tmp_path / "run").rglob("*")}
    assert all(str(p).startswith(str((tmp_path / "run").resolve())) for p in run_files)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<script>alert" not in html and html.count("<script") == 1  # the group view's own script only
    pages = list((tmp_path / "run" / "subjects").glob("*.html"))  # subject pages stay inside the run too
    assert len(pages) == 4 and not any("<script" in p.read_text() for p in pages)


def test_a_run_makes_no_network_access(tmp_path, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("xaudit tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}, "gradcam": {}})
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 0, result.output


def test_written_files_get_the_umask_mode_not_a_private_one(tmp_path):
    """mkstemp makes 0600 files; on a shared cluster the group must be able to read the run."""
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    written = write_json(tmp_path / "audit.json", {"a": 1})
    assert stat.S_IMODE(Path(written).stat().st_mode) == 0o666 & ~mask


def test_empty_or_misplaced_masks_fail_their_subject_with_the_reason(tmp_path):
    """A mask with no voxel on the image's grid would turn every share into nonsense."""
    from xaudit.config import load_config
    from xaudit.workflows.audit import run_audit

    manifest = make_cohort(tmp_path / "c", n=6)
    frame = pd.read_csv(manifest)
    empty, far = (manifest.parent / frame.loc[i, "mask"] for i in (0, 1))
    image = nib.load(str(empty))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(empty))
    image = nib.load(str(far))
    shifted = image.affine.copy()
    shifted[:3, 3] += 500.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), str(far))
    result = run_audit(load_config(make_config(tmp_path, manifest, methods={"saliency": {}}), ["quality.subjects=0"]))
    errors = pd.read_csv(result.run_dir / "errors.csv").set_index("subject_id")
    assert "is empty" in errors.loc[frame.loc[0, "subject_id"], "reason"]
    assert "does not overlap the image" in errors.loc[frame.loc[1, "subject_id"], "reason"]
    assert result.audit["counts"]["audited"] == 4


def test_validate_lists_every_bad_subject_once(tmp_path):
    from typer.testing import CliRunner

    manifest = make_cohort(tmp_path / "c", n=6)
    frame = pd.read_csv(manifest)
    for i in (1, 4):
        (manifest.parent / frame.loc[i, "image"]).write_bytes(b"\x1f\x8b not really gzip")
    result = CliRunner().invoke(app, ["validate", str(make_config(tmp_path, manifest))])
    assert result.exit_code == 2
    assert "2 subjects have problems" in result.output
    for i in (1, 4):
        assert result.output.count(f"({frame.loc[i, 'subject_id']})") == 1


def test_only_dead_writers_temp_files_are_removed(tmp_path):
    import socket

    from xaudit.core.outputs import WRITER, remove_orphaned_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace(".", "_")
    (tmp_path / "maps").mkdir()
    orphan = tmp_path / "maps" / f".m.nii.gz.{host}-{dead.pid}.x1y2.tmp.nii.gz"
    live = tmp_path / f".audit.json.{WRITER}.a1b2.tmp.json"
    remote = tmp_path / f".audit.json.otherhost-{dead.pid}.c3d4.tmp.json"
    for path in (orphan, live, remote):
        path.write_bytes(b"half")
    assert remove_orphaned_temp_files(tmp_path) == 1
    assert not orphan.exists() and live.exists() and remote.exists()
