"""`xaudit submit --cluster slurm` against a real SLURM cluster: whatever `sbatch` reaches.

CI starts a one-node cluster first (`bash tests/slurm/cluster.sh install && ... start`, see
.ci/run). Where none is reachable these tests skip, with the reason, except on CI (CI=true),
where they fail. On another cluster: XAUDIT_SLURM_PARTITION picks the partition (default: the
cluster's default one); the job folders must be on a file system the nodes see (pytest's
--basetemp on a shared path).

    sudo bash tests/slurm/cluster.sh install && sudo bash tests/slurm/cluster.sh start
    .venv/bin/python -m pytest -q -m slurm
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import make_cohort, make_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TESTS = Path(__file__).parent
CLUSTER_SH = TESTS / "slurm" / "cluster.sh"
#: the longest a test waits for a submission (the jobs take seconds each on the one-node cluster)
WAIT_S = 240
METHODS = {"saliency": {}}


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo not found"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
    if not any(line.split()[-1] == "up" for line in proc.stdout.splitlines() if line.split()):
        return "no partition is up"
    return None


def _our_conf_or_none() -> bool:
    conf = Path(os.environ.get("SLURM_CONF_DIR", "/etc/slurm")) / "slurm.conf"
    return not conf.exists() or "written by xaudit tests/slurm/cluster.sh" in conf.read_text(errors="replace")


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The partition the tests submit to; starts the one-node cluster if root and SLURM is installed."""
    problem = _cluster_problem()
    if problem and os.geteuid() == 0 and shutil.which("slurmctld") and _our_conf_or_none():
        subprocess.run(["bash", str(CLUSTER_SH), "start"], capture_output=True, timeout=120)
        problem = _cluster_problem()
    if problem:
        message = (f"no SLURM cluster reachable ({problem}); start the one-node one with "
                   f"`sudo bash {CLUSTER_SH.relative_to(TESTS.parent)} install && sudo bash "
                   f"{CLUSTER_SH.relative_to(TESTS.parent)} start`")
        if os.environ.get("CI") == "true":
            pytest.fail("CI: " + message)
        pytest.skip(message)
    if os.environ.get("XAUDIT_SLURM_PARTITION"):
        return os.environ["XAUDIT_SLURM_PARTITION"]
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30).stdout.split()
    return next((p.rstrip("*") for p in out if p.endswith("*")), out[0].rstrip("*"))


@pytest.fixture
def env(monkeypatch):
    """The environment the CLI (and so its jobs: sbatch exports it) runs in."""
    path = os.pathsep.join([str(TESTS), str(TESTS / "slurm"), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    return dict(os.environ)


@pytest.fixture
def submissions():
    """Output directories of the submissions a test makes; their jobs are cancelled afterwards."""
    outputs: list[Path] = []
    yield outputs
    for out in outputs:
        for job in _jobs(out).values():
            subprocess.run(["scancel", job["job_id"]], capture_output=True, timeout=30)


def _jobs(out: Path) -> dict:
    path = Path(out) / "submit.json"
    return json.loads(path.read_text())["jobs"] if path.is_file() else {}


def xaudit(*args, env, timeout=WAIT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "xaudit", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"xaudit {' '.join(map(str, args))} ran past {timeout} s:\n{exc.stderr}")


def submit_args(config: Path, out: Path, partition: str, *extra) -> list:
    return ["submit", config, "--shards", 2, "-o", out, "--partition", partition, "--cpus-per-task", 1,
            "--mem-gb", 1, "--timeout-min", 10, "--device", "cpu", "-q", *extra]


def scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job_id.split("_")[0], "-o", "%i %T"],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split() for line in out.splitlines() if line.strip()).get(job_id, "GONE")


def wait_for(predicate, what: str, timeout: float = WAIT_S, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def read_predictions(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "predictions.csv").sort_values("subject_id").reset_index(drop=True)


def assert_same_result(merged: Path, single: Path) -> None:
    pd.testing.assert_frame_equal(read_predictions(single), read_predictions(merged))
    a, b = (json.loads((Path(d) / "audit.json").read_text())["counts"] for d in (single, merged))
    assert a == b
    for path in sorted((Path(single) / "attributions").rglob("*.nii.gz")):
        other = Path(merged) / path.relative_to(single)
        ref = nib.load(str(path)).get_fdata()  # batch sizes differ (tuned per run): float32 rounding only
        np.testing.assert_allclose(nib.load(str(other)).get_fdata(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four subjects, their config, and a single (unsharded) run of it to compare with."""
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    sys.path.insert(0, str(TESTS))
    root = tmp_path_factory.mktemp("slurm_cohort")
    manifest = make_cohort(root / "c", n=4)
    config = make_config(root, manifest, methods=METHODS)
    single = run_audit(load_config(config), RunOptions(output=root / "single", device="cpu")).run_dir
    return config, single


def test_submit_waits_and_merges_into_a_single_runs_result(slurm_cluster, cohort, tmp_path, env, submissions):
    config, single = cohort
    out = tmp_path / "out"
    submissions.append(out)
    proc = xaudit(*submit_args(config, out, slurm_cluster), env=env)
    assert proc.returncode == 0, proc.stderr
    assert_same_result(out, single)
    jobs = _jobs(out)
    assert sorted(jobs) == ["0", "1"]
    array_ids = {j["job_id"].split("_")[0] for j in jobs.values()}
    assert len(array_ids) == 1, "the shards are one job array"
    script = (out / "submitit" / f"{array_ids.pop()}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%2" in script
    for i, job in jobs.items():
        assert job["job_id"].endswith(f"_{i}")
        log = Path(job["stderr"]).read_text()  # the shard's own logging goes to the job's stderr
        assert f"subjects to audit" in log and Path(job["stdout"]).is_file()
        assert (out / "shards" / i / f"shard-{i}-of-2.json").is_file()


def test_no_wait_then_resume_finishes_with_the_array_throttled(slurm_cluster, cohort, tmp_path, env, submissions):
    config, single = cohort
    out = tmp_path / "out"
    submissions.append(out)
    proc = xaudit(*submit_args(config, out, slurm_cluster, "--no-wait", "--max-parallel", 1), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split()
    assert printed == [_jobs(out)[str(i)]["job_id"] for i in range(2)]
    assert "ArrayTaskThrottle=1" in scontrol_job(printed[0].split("_")[0])
    proc = xaudit(*submit_args(config, out, slurm_cluster, "--resume"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert [j["job_id"] for j in _jobs(out).values()] == printed, "--resume waited for the queued jobs, resubmitted none"
    assert_same_result(out, single)
    spans = []  # throttled to one at a time: the shards' runs do not overlap
    for i in range(2):
        stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)", (out / "shards" / str(i) / f"run-{i}-of-2.log").read_text(), re.M)
        spans.append((stamps[0], stamps[-1]))
    spans.sort()
    assert spans[0][1] <= spans[1][0], spans


def test_no_wait_then_merge_finishes(slurm_cluster, cohort, tmp_path, env, submissions):
    config, single = cohort
    out = tmp_path / "out"
    submissions.append(out)
    proc = xaudit(*submit_args(config, out, slurm_cluster, "--no-wait"), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: all((out / "shards" / str(i) / f"shard-{i}-of-2.json").is_file() for i in range(2)), "both shards")
    proc = xaudit("merge", out / "shards" / "0", out / "shards" / "1", "-o", out, "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    assert_same_result(out, single)


def _cluster_has_gpus() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30).stdout
    return "gpu" in out


def test_resources_reach_sbatch_as_given(slurm_cluster, cohort, tmp_path, env, submissions):
    config, _ = cohort
    out = tmp_path / "out"
    submissions.append(out)
    gpus = 1 if _cluster_has_gpus() else 0  # the one-node cluster has a (fake) gpu:1 GRES
    args = ["submit", config, "--shards", 2, "-o", out, "--partition", slurm_cluster, "--cpus-per-task", 2,
            "--mem-gb", 1, "--timeout-min", 7, "--gpus-per-node", gpus, "--device", "cpu", "-q", "--no-wait",
            "--python", f"env XAUDIT_VIA=wrapper {sys.executable}"]
    proc = xaudit(*args, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    job_id = _jobs(out)["0"]["job_id"]
    shown = scontrol_job(job_id)
    subprocess.run(["scancel", job_id.split("_")[0]], capture_output=True, timeout=30)
    assert f"Partition={slurm_cluster} " in shown
    assert "TimeLimit=00:07:00" in shown
    assert re.search(r"MinCPUsNode=2\b|CPUs/Task=2\b", shown), shown
    assert re.search(r"MinMemoryNode=1G\b|mem=1G\b", shown), shown
    script = (out / "submitit" / f"{job_id.split('_')[0]}_submission.sh").read_text()
    for line in ("--cpus-per-task=2", "--mem=1GB", "--time=7", f"--partition={slurm_cluster}"):
        assert f"#SBATCH {line}\n" in script
    assert f"env XAUDIT_VIA=wrapper {sys.executable} -u -m submitit.core._submit" in script  # --python
    if gpus:
        assert "#SBATCH --gpus-per-node=1\n" in script
        assert re.search(r"gres[/:]gpu[:=]1\b", shown), shown
    else:  # no GPU on this cluster: the line submitit would write
        import submitit

        from xaudit.workflows.submit import ClusterOptions, executor_parameters

        executor = submitit.AutoExecutor(folder=str(tmp_path / "text"), cluster="slurm")
        executor.update_parameters(**executor_parameters(ClusterOptions(gpus_per_node=1), 2))
        assert "#SBATCH --gpus-per-node=1\n" in executor._executor._make_submission_file_text("true", "0")


def test_a_failing_shard_is_named_and_resume_resubmits_only_it(slurm_cluster, tmp_path, env, submissions):
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    manifest = make_cohort(tmp_path / "c", n=4)
    config = make_config(tmp_path, manifest, methods=METHODS, data__on_error="fail")
    single = run_audit(load_config(config), RunOptions(output=tmp_path / "single", device="cpu")).run_dir
    mask = manifest.parent / pd.read_csv(manifest).loc[1, "mask"]  # sub-001: shard 1 of 2
    good = mask.read_bytes()
    image = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(mask))
    out = tmp_path / "out"
    submissions.append(out)
    proc = xaudit(*submit_args(config, out, slurm_cluster), env=env)
    assert proc.returncode != 0
    first = _jobs(out)
    bad = first["1"]
    assert f"shard 1/2 (job {bad['job_id']}) failed" in proc.stderr
    assert "sub-001" in proc.stderr and "is empty" in proc.stderr
    assert bad["stderr"] in proc.stderr.replace("\n", "")  # rich may wrap long lines
    assert "sub-001" in Path(bad["stderr"]).read_text()
    assert "--resume" in proc.stderr
    assert (out / "shards" / "0" / "shard-0-of-2.json").is_file()
    mask.write_bytes(good)
    proc = xaudit(*submit_args(config, out, slurm_cluster, "--resume"), env=env)
    assert proc.returncode == 0, proc.stderr
    again = _jobs(out)
    assert again["0"] == first["0"], "the finished shard was not submitted again"
    assert again["1"]["job_id"] != bad["job_id"]
    assert_same_result(out, single)


def _slow_config(tmp_path: Path, n: int = 4, delay_s: float = 0.7) -> Path:
    manifest = make_cohort(tmp_path / "c", n=n)
    model = {"factory": {"function": "slow_nets:build", "args": {"delay_s": delay_s}},
             "classes": ["healthy", "lesion"], "layer": "features.3"}
    return make_config(tmp_path, manifest, methods=METHODS, model=model, data__batch_size=1,
                       attribution__max_batch=1, quality__subjects=0)


def _records(out: Path, shard: int) -> list[Path]:
    folder = out / "shards" / str(shard) / "subjects"
    return sorted(folder.glob("[!.]*.npz")) if folder.is_dir() else []


def test_a_cancelled_shard_is_named_and_resume_finishes(slurm_cluster, tmp_path, env, submissions):
    config = _slow_config(tmp_path)
    out = tmp_path / "out"
    submissions.append(out)
    cmd = [sys.executable, "-m", "xaudit", *map(str, submit_args(config, out, slurm_cluster))]
    waiting = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        job_id = wait_for(lambda: _jobs(out).get("1", {}).get("job_id"), "the submission")
        wait_for(lambda: squeue_state(job_id) == "RUNNING", f"job {job_id} to run")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        _, stderr = waiting.communicate(timeout=WAIT_S)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode != 0
    flat = stderr.replace("\n", "")
    assert f"shard 1/2 (job {job_id}) failed" in stderr
    assert "without a result" in stderr and _jobs(out)["1"]["stderr"] in flat
    proc = xaudit(*submit_args(config, out, slurm_cluster, "--resume"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "audit.json").read_text())["counts"]["audited"] == 4


def test_a_requeued_shard_resumes_without_redoing_its_finished_subjects(slurm_cluster, tmp_path, env, submissions):
    config = _slow_config(tmp_path, n=6, delay_s=1.5)  # three subjects per shard, seconds each
    out = tmp_path / "out"
    submissions.append(out)
    cmd = [sys.executable, "-m", "xaudit", *map(str, submit_args(config, out, slurm_cluster))]
    waiting = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        job_id = wait_for(lambda: _jobs(out).get("0", {}).get("job_id"), "the submission")
        first = wait_for(lambda: _records(out, 0), "shard 0's first subject", every=0.2)
        assert len(first) < 3, "the shard finished before it could be requeued; make slow_nets slower"
        before = {p.name: p.stat().st_mtime_ns for p in first}
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30, capture_output=True)
        # SLURM holds a requeued job back (BeginTime, about 2 minutes); let it start at once
        wait_for(lambda: "Restarts=1" in (shown := scontrol_job(job_id)) and "JobState=PENDING" in shown,
                 "the requeued job to be pending", 120, 0.5)
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], capture_output=True, timeout=30)
        _, stderr = waiting.communicate(timeout=WAIT_S)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, stderr
    assert "Restarts=1" in scontrol_job(job_id)
    after = {p.name: p.stat().st_mtime_ns for p in _records(out, 0)}
    assert len(after) == 3
    assert all(after[name] == mtime for name, mtime in before.items()), "a finished subject was redone"
    log = (out / "shards" / "0" / "run-0-of-2.log").read_text()
    starts = re.findall(r"(\d+) subjects to audit \((\d+) already done\)", log)
    assert len(starts) == 2 and int(starts[1][1]) >= len(before), starts
    assert int(starts[1][0]) >= 1, f"the requeue did not interrupt the shard (it finished first): {starts}"
    assert json.loads((out / "audit.json").read_text())["counts"]["audited"] == 6
