"""Launching the shards of a run as a SLURM job array (through submitit), then merging.

``xaudit submit config.yaml --shards N -o OUT`` submits N jobs, job ``i`` running
``xaudit run config.yaml --shard i/N -o OUT/shards/i``; with ``--wait`` it waits for all of
them and runs ``xaudit merge`` into ``OUT``. ``--cluster local`` runs the same jobs as local
processes (submitit's local executor), which is how the tests exercise it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from xaudit.errors import ConfigError, XauditError

log = logging.getLogger("xaudit")


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


def run_shard(config_path: str, overrides: list[str], index: int, count: int, output: str, device: str | None) -> dict:
    """One shard job: the per-subject pass of subjects ``k`` with ``k mod count == index``."""
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    config = load_config(config_path, overrides)
    result = run_audit(config, RunOptions(output=Path(output), device=device, shard=(index, count), resume=True))
    return result.audit


def submit_shards(config_path: Path, overrides: list[str], shards: int, output: Path, options: ClusterOptions,
                  device: str | None = None, wait: bool = True):
    """Submit one job per shard; with ``wait``, wait and merge.

    Returns:
        The merged `RunResult` when waiting, else the list of job ids.

    Raises:
        ConfigError: submitit is not installed, or the cluster is unknown.
        XauditError: a shard job failed (its error is re-raised with the shard named).
    """
    try:
        import submitit
    except ImportError:
        raise ConfigError("`xaudit submit` needs submitit: pip install 'xaudit[slurm]' (or submitit)") from None
    if options.cluster not in ("slurm", "local"):
        raise ConfigError(f"--cluster must be slurm or local. Got {options.cluster!r} instead.")
    if shards < 1:
        raise ConfigError(f"--shards must be >= 1. Got {shards} instead.")
    from xaudit.config import load_config

    load_config(config_path, overrides)  # reject a bad config before anything is queued
    output = Path(output)
    executor = submitit.AutoExecutor(folder=str(output / "submitit"), cluster=options.cluster)
    params = {"timeout_min": options.timeout_min, "cpus_per_task": options.cpus_per_task}
    if options.cluster == "slurm":
        params.update({"slurm_partition": options.partition, "gpus_per_node": options.gpus_per_node,
                       "mem_gb": options.mem_gb, "slurm_array_parallelism": options.max_parallel or shards})
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(name="xaudit", **params)
    shard_dirs = [output / "shards" / str(i) for i in range(shards)]
    jobs = executor.map_array(
        run_shard, [str(config_path)] * shards, [list(overrides)] * shards, list(range(shards)),
        [shards] * shards, [str(d) for d in shard_dirs], [device] * shards,
    )
    log.info("submitted %d shard jobs: %s", len(jobs), ", ".join(j.job_id for j in jobs))
    if not wait:
        return [j.job_id for j in jobs]
    for i, job in enumerate(jobs):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - submitit wraps the remote failure
            raise XauditError(f"shard {i}/{shards} (job {job.job_id}) failed: {str(exc).strip().splitlines()[-1][:300]}") from None
    from xaudit.workflows.merge import merge_runs

    return merge_runs(shard_dirs, output)
