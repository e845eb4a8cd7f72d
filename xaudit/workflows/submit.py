"""Launching the shards of a run as a SLURM job array (through submitit), then merging.

``xaudit submit config.yaml --shards N -o OUT`` submits one job array of N tasks, task ``i``
running ``xaudit run config.yaml --shard i/N -o OUT/shards/i --resume``; with ``--wait`` (the
default) it waits for all of them and merges them into ``OUT`` (as ``xaudit merge``).
``--cluster local`` runs the same jobs as local processes (submitit's local executor).

Files in ``OUT``:

- ``submit.json``: the submission (config, shard count, resources) and, per shard, its job id
  and the paths of its stdout/stderr. ``xaudit submit ... --resume`` reads it: shards whose
  ``shards/i/shard-i-of-N.json`` exists are done, shards whose job is still queued or running
  are waited for, the others (failed, cancelled, killed) are submitted again, as one array.
- ``submitit/``: submitit's job folder: ``<jobid>_submission.sh`` (the sbatch script),
  ``<jobid>_<task>_log.out`` / ``.err`` (each shard's stdout and stderr), pickles.
- ``shards/i/``: shard ``i``'s run directory (``subjects/<id>.npz`` per finished subject,
  ``run-i-of-N.log``, ``errors-i-of-N.csv``, ``shard-i-of-N.json`` once the shard finished).

A shard job resumes from its finished subjects whenever it starts again: after a requeue
(``scontrol requeue``, pre-emption: submitit requeues on SIGUSR2), after its time limit
(the job is checkpointable: submitit resubmits it), or after ``--resume``.

Job states come from ``sacct`` (through submitit) where SLURM accounting is on, else from
``squeue -t all`` (which lists finished jobs for ``MinJobAge``, 300 s by default): on a
cluster without accounting a cancelled or killed shard is still reported, not waited for
forever.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from xaudit.config import load_config
from xaudit.core.outputs import write_json
from xaudit.errors import ConfigError, OutputError, XauditError

log = logging.getLogger("xaudit")

SUBMISSION = "submit.json"
IMPORT_WAIT_S = 120.0  # the longest a finished wait waits for the background import of the merge

#: SLURM job states after which a job will not run again (without a requeue by hand)
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "REVOKED", "SPECIAL_EXIT"}


@dataclass(frozen=True)
class ClusterOptions:
    """Resources per shard job (SLURM names)."""

    cluster: str = "slurm"
    partition: str | None = None
    timeout_min: int = 240
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    mem_gb: int = 16
    max_parallel: int | None = None
    #: the command that runs python in a job, e.g. ``apptainer exec --nv xaudit.sif python``
    #: (default: this python); needs submitit inside the image
    python: str | None = None


def executor_parameters(options: ClusterOptions, shards: int) -> dict:
    """submitit parameters for one job array of ``shards`` tasks."""
    params = {"timeout_min": options.timeout_min, "cpus_per_task": options.cpus_per_task}
    if options.cluster == "slurm":
        params.update({"slurm_partition": options.partition, "gpus_per_node": options.gpus_per_node or None,
                       "mem_gb": options.mem_gb, "slurm_array_parallelism": options.max_parallel or shards})
    return {k: v for k, v in params.items() if v is not None}


class ShardJob:
    """One shard job: the per-subject pass of subjects ``k`` with ``k mod count == index``.

    It always resumes (finished subjects are skipped), so running it again is safe. Having a
    ``checkpoint`` method makes submitit requeue it when it reaches its time limit or is
    pre-empted (SIGUSR2), rather than give up.
    """

    def __call__(self, config_path: str, overrides: list[str], index: int, count: int, output: str,
                 device: str | None) -> dict:
        from xaudit.workflows.audit import RunOptions, run_audit

        # a process of its own, its modules imported: the start-up's objects out of the cycle
        # collector, as the console script does (`xaudit.cli.main`; 2 s of interpreter shutdown)
        gc.freeze()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        config = load_config(config_path, overrides)
        result = run_audit(config, RunOptions(output=Path(output), device=device, shard=(index, count), resume=True))
        return result.audit

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


run_shard = ShardJob()


def shard_done(output: Path, index: int, count: int) -> bool:
    """Whether shard ``index`` of ``count`` finished its per-subject pass."""
    return (Path(output) / "shards" / str(index) / f"shard-{index}-of-{count}.json").is_file()


def shard_log(index: int, count: int, output: Path) -> Path:
    """The shard's own log (xaudit's, also written when the job's stderr is elsewhere)."""
    return Path(output) / "shards" / str(index) / f"run-{index}-of-{count}.log"


def submit_shards(config_path: Path, overrides: list[str], shards: int, output: Path, options: ClusterOptions,
                  device: str | None = None, wait: bool = True, resume: bool = False, poll_s: float = 30.0):
    """Submit the shards as one job array; with ``wait``, wait and merge.

    With ``resume``, continue the submission recorded in ``OUT/submit.json``: wait for its
    shards still queued or running and submit again only those neither done nor running.

    Returns:
        The merged `RunResult` when waiting, else the list of job ids (of the shards not done).

    Raises:
        ConfigError: submitit is not installed, the cluster is unknown, or a bad config.
        OutputError: ``OUT`` holds another submission (without ``resume``), or a different one.
        XauditError: a shard job failed (each failed shard named with its job id and logs).
    """
    try:
        import submitit
    except ImportError:
        raise ConfigError("`xaudit submit` needs submitit: pip install 'xaudit[slurm]' (or submitit)") from None
    if options.cluster not in ("slurm", "local"):
        raise ConfigError(f"--cluster must be slurm or local. Got {options.cluster!r} instead.")
    if shards < 1:
        raise ConfigError(f"--shards must be >= 1. Got {shards} instead.")
    if options.max_parallel is not None and options.max_parallel < 1:
        raise ConfigError(f"--max-parallel must be >= 1. Got {options.max_parallel} instead.")
    load_config(config_path, overrides)  # reject a bad config before anything is queued
    output = Path(output)
    folder = output / "submitit"
    record = _read_submission(output)
    if record and not resume:
        raise OutputError(f"{output} already holds a submission ({output / SUBMISSION}); pass --resume to finish it"
                          " (only shards not done are submitted again), or choose another output (-o)")
    if record and record["shards"] != shards:
        raise OutputError(f"{output} holds a submission of {record['shards']} shards, not {shards}; resume it with"
                          f" --shards {record['shards']}, or choose another output (-o)")
    record = record or {"schema_version": "1.0", "config": str(Path(config_path).resolve()),
                        "overrides": list(overrides), "shards": shards, "jobs": {}}
    record["cluster"] = asdict(options)
    shard_dirs = [output / "shards" / str(i) for i in range(shards)]
    jobs: dict[int, object] = {}
    earlier = {i: submitit.SlurmJob(folder=folder, job_id=record["jobs"][str(i)]["job_id"]) for i in range(shards)
               if options.cluster == "slurm" and str(i) in record["jobs"] and not shard_done(output, i, shards)}
    states = _job_states(list(earlier.values()))  # one squeue per array, as while waiting
    for i, job in earlier.items():
        state = states[job.job_id]
        if state not in FINAL_STATES and state != "GONE" and not job.paths.result_pickle.exists():
            log.info("shard %d/%d: job %s is still %s; waiting for it", i, shards, job.job_id, state.lower())
            jobs[i] = job
    todo = [i for i in range(shards) if not shard_done(output, i, shards) and i not in jobs]
    if resume and record["jobs"]:
        log.info("%d of %d shards done, %d still queued or running, %d to submit", shards - len(todo) - len(jobs),
                 shards, len(jobs), len(todo))
    if todo:
        extra = {"slurm_python": options.python} if options.python and options.cluster == "slurm" else {}
        executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster, **extra)
        executor.update_parameters(name="xaudit", **executor_parameters(options, len(todo)))
        submitted = executor.map_array(
            run_shard, [str(config_path)] * len(todo), [list(overrides)] * len(todo), todo, [shards] * len(todo),
            [str(shard_dirs[i]) for i in todo], [device] * len(todo),
        )
        for i, job in zip(todo, submitted):
            jobs[i] = job
            record["jobs"][str(i)] = {"job_id": job.job_id, "stdout": str(job.paths.stdout),
                                      "stderr": str(job.paths.stderr), "output": str(shard_dirs[i])}
        log.info("submitted %d shard job(s): %s; logs in %s", len(submitted),
                 ", ".join(j.job_id for j in submitted), folder)
    _write_submission(output, record)
    if not wait:
        return [jobs[i].job_id for i in sorted(jobs)]
    importing = threading.Thread(target=_import_merge, name="xaudit-import", daemon=True)
    importing.start()  # the merge's modules (torch, MONAI, the stages) load while the shards run
    try:
        failures = _wait(jobs, shards, poll_s, output)
    finally:  # not out (a failed shard, Ctrl-C) with torch half imported: shutdown could block on it
        importing.join(timeout=IMPORT_WAIT_S)
    if failures:
        raise XauditError(
            f"{len(failures)} of {shards} shard(s) failed:\n  " + "\n  ".join(failures)
            + f"\nFix the cause, then submit only the shards not done: xaudit submit {config_path} --shards {shards}"
              f" -o {output} --resume"
        )
    from xaudit.workflows.merge import merge_runs  # waits for the import above if it is still running

    return merge_runs(shard_dirs, output)


def _import_merge() -> None:
    """Import what the merge needs, in the background of `_wait`.

    Nothing before the jobs are queued needs torch or the stages (about 6 s of imports on 2
    CPU cores): the shards enter the queue that much sooner, and ``--no-wait`` never pays them.
    A failure here is raised again by the merge's own import, where it is reported.
    """
    try:
        import xaudit.workflows.merge  # noqa: F401
    except Exception:  # noqa: BLE001 - the merge's own import raises it again
        pass


def _wait(jobs: dict, shards: int, poll_s: float, output: Path) -> list[str]:
    """Wait until every job ended; one line per failed shard (job id, why, where its logs are)."""
    failures: list[str] = []
    pending = dict(jobs)
    ended_once: set[int] = set()
    started = time.monotonic()
    while pending:
        # asked first, the result looked for after: a job that ends in between is taken by its result
        states = _job_states([job for job in pending.values() if not job.paths.result_pickle.exists()])
        for i, job in sorted(pending.items()):
            reason = None
            if job.paths.result_pickle.exists():
                try:
                    job.result()
                except Exception as exc:  # noqa: BLE001 - submitit wraps the remote failure
                    reason = _last_line(exc)
                del pending[i]
            else:
                state = states.get(job.job_id, "UNKNOWN")
                if state in FINAL_STATES or state == "GONE":
                    if i not in ended_once:  # seen ended once: look again for a result written meanwhile
                        ended_once.add(i)
                        continue
                    what = "left the queue" if state == "GONE" else f"ended {state}"
                    reason = (f"the job {what} without a result (cancelled, killed, out of memory or time, or its"
                              " node failed)")
                    del pending[i]
            if reason is not None:
                line = (f"shard {i}/{shards} (job {job.job_id}) failed: {reason}; stdout {job.paths.stdout},"
                        f" stderr {job.paths.stderr}, shard log {shard_log(i, shards, output)}")
                log.error(line)
                failures.append(line)
        if pending:
            time.sleep(poll_delay(time.monotonic() - started, poll_s))
    return failures


def poll_delay(waited_s: float, poll_s: float) -> float:
    """Seconds until the queue is asked again, after ``waited_s`` of waiting: a tenth of the
    wait so far, between 1 s and ``poll_s``.

    A shard is then seen done at most 10 % (or 1 s) after it ended, while a long wait asks
    the scheduler once every ``poll_s``; doubling delays overshot a 20 s job by 7 s.
    """
    return min(poll_s, max(1.0, waited_s / 10))


def _job_states(jobs: list) -> dict[str, str]:
    """``{job id: state}``: sacct's (through submitit) where accounting is on, else squeue's,
    asked once per job array; ``GONE`` if neither knows a job; ``LOCAL`` for the local
    executor (not asked)."""
    import submitit

    states: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for job in jobs:
        if not isinstance(job, submitit.SlurmJob):
            states[job.job_id] = "LOCAL" if not job.done() else "COMPLETED"
            continue
        if _accounting_on():
            state = job.watcher.get_state(job.job_id, mode="standard").split(" ")[0].upper()
            if state != "UNKNOWN":
                states[job.job_id] = state
                continue
        arrays.setdefault(job.job_id.split("_")[0], []).append(job.job_id)
    for array_id, job_ids in arrays.items():
        listed = _squeue_states(array_id)
        states.update({j: "UNKNOWN" if listed is None else listed.get(j, "GONE") for j in job_ids})
    return states


_ACCOUNTING: dict[str, bool] = {}


def _accounting_on() -> bool:
    """Whether ``sacct`` answers (SLURM accounting is on); asked once per process."""
    if "on" not in _ACCOUNTING:
        try:
            proc = subprocess.run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True, text=True,
                                  timeout=60)
            _ACCOUNTING["on"] = proc.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _ACCOUNTING["on"] = False
        if not _ACCOUNTING["on"]:
            log.info("sacct does not answer (SLURM accounting is off?): job states come from squeue")
    return _ACCOUNTING["on"]


def _squeue_states(array_id: str) -> dict[str, str] | None:
    """``{job id or array task A_i: state}`` of one job array from ``squeue -t all`` (one call
    for all its tasks: a 100-shard poll is one command, not 100); ``{}`` once SLURM no longer
    knows the array, None when squeue fails (the caller takes its jobs as still queued)."""
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", array_id, "-o", "%i|%T"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("squeue failed (%s); the jobs of %s taken as still queued", exc, array_id)
        return None
    if proc.returncode != 0:
        if "invalid job id" in proc.stderr.lower():
            return {}
        log.warning("squeue failed (%s); the jobs of %s taken as still queued", proc.stderr.strip()[:200], array_id)
        return None
    pairs = (line.strip().partition("|") for line in proc.stdout.splitlines())
    return {jid: state.upper() for jid, _, state in pairs if jid}


def _last_line(exc: BaseException) -> str:
    """The remote error's own line: submitit's message is a traceback between dashed rules,
    then the paths of the logs."""
    text = str(exc).strip()
    parts = re.split(r"^-{5,}\s*$", text, flags=re.M)
    body = parts[1] if len(parts) >= 3 else text
    lines = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("-")]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _read_submission(output: Path) -> dict | None:
    path = Path(output) / SUBMISSION
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path} is not readable ({exc}); choose another output (-o)") from None


def _write_submission(output: Path, record: dict) -> None:
    Path(output).mkdir(parents=True, exist_ok=True)
    write_json(Path(output) / SUBMISSION, record)
