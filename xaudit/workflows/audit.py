"""`run_audit`: the stages in order, nothing else.

    validate ─► per-subject pass ─► dataset-level stages (`finish_run`) ─► audit.json
                (predictions, features,   (metrics, attribution, rules, bias, quality,
                 attribution volumes)      interrogation, report)

A sharded run (``--shard i/N``) stops after the per-subject pass; `xaudit merge` (or a
run without ``--shard`` with ``--resume``) runs the dataset-level stages.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from xaudit._version import __version__
from xaudit.config import Config
from xaudit.core import versions
from xaudit.core.bids import write_dataset_description
from xaudit.core.progress import ProgressFactory, log_progress
from xaudit.core.outputs import RunDirectory, remove_orphaned_temp_files, write_csv, write_json
from xaudit.core.provenance import RunFacts, check_same_subject_config, check_shard_target, write_resolved_config
from xaudit.core.runlog import log_to_file
from xaudit.models.features import feature_names
from xaudit.models.strided_conv import faster_input_gradients
from xaudit.stages.subject_outputs import SubjectOutputs
from xaudit.stages.subject_pass import choose_max_batch, choose_strided_gradients, memory_cap, subject_pass_stage
from xaudit.stages.validate import validate_setup
from xaudit.workflows.finish import finish_run

log = logging.getLogger("xaudit")


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices that are not part of the config."""

    output: Path | None = None
    device: str | None = None
    shard: tuple[int, int] | None = None
    resume: bool = False


@dataclass
class RunResult:
    """A finished run (or shard): its directory, its ``audit.json`` content, failures, timings."""

    run_dir: Path
    audit: dict
    failed: int = 0
    timings: dict = field(default_factory=dict)


def shard_subjects(subjects, shard: tuple[int, int] | None):
    """Deterministic partition: subject k of the manifest goes to shard ``k mod N``."""
    if shard is None:
        return subjects
    index, count = shard
    return [s for k, s in enumerate(subjects) if k % count == index]


def run_audit(config: Config, options: RunOptions = RunOptions(), progress: ProgressFactory = log_progress) -> RunResult:
    """Run an audit end to end (or one shard's per-subject pass).

    Args:
        config: the validated config (`xaudit.load_config`).
        options: output override, device, shard, resume.
        progress: ``progress(label, total)`` -> a `xaudit.core.progress.Step`: log lines at least
            every 30 s (the default), or rich bars on a terminal (`bar_progress`).

    Returns:
        `RunResult` with the run directory and the ``audit.json`` content.
    """
    timings: dict[str, float] = {}
    started = time.time()
    t0 = time.perf_counter()
    setup = validate_setup(config, options.device)
    timings["validate"] = time.perf_counter() - t0
    run_dir = RunDirectory(options.output or config.output)
    shard_label = f"{options.shard[0]}-of-{options.shard[1]}" if options.shard else ""
    run_dir.prepare(resume=options.resume or options.shard is not None)
    if options.shard is not None:
        check_shard_target(run_dir, options.shard)
    lock = run_dir.lock(shard_label)
    handler = log_to_file(run_dir.root / (f"run-{shard_label}.log" if shard_label else "run.log"))
    if options.resume:
        removed = remove_orphaned_temp_files(run_dir.root)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
    gradients = ExitStack()  # the faster strided-convolution gradients, for the pass and the dataset stages
    try:
        check_same_subject_config(run_dir, config)
        todo_all = shard_subjects(setup.all_subjects, options.shard)
        done = run_dir.completed()
        rejected_ids = {p["subject_id"] for p in setup.rejected}
        todo = [s for s in todo_all if s.safe_id not in done and s.subject_id not in rejected_ids]
        t0 = time.perf_counter()
        cap = memory_cap(setup)  # one probe forward for both choices
        strided = choose_strided_gradients(setup, cap)
        gradients.enter_context(faster_input_gradients(setup.model.module, strided))
        max_batch, rates = choose_max_batch(setup, tune=bool(todo), cap=cap)
        if rates is not None:
            timings["batch_tuning"] = time.perf_counter() - t0  # the strided convolutions' timing included
        facts = RunFacts(device=str(setup.device), spatial_dims=setup.spatial_dims, max_batch=max_batch,
                         batch_rates=rates, shard=options.shard, strided_gradients=strided)
        write_resolved_config(run_dir, config, facts)
        log.info("%d subjects to audit (%d already done), max batch %d on %s", len(todo), len(todo_all) - len(todo), max_batch, setup.device)
        t0 = time.perf_counter()
        outputs = SubjectOutputs(run_dir, layout=config.output_layout, method_params=dict(config.attribution.methods),
                                 classes=tuple(config.model.classes))
        if config.output_layout == "bids":
            write_dataset_description(run_dir.root, __version__)
        result = subject_pass_stage(setup, todo, outputs, max_batch, progress)
        timings["subject_pass"] = time.perf_counter() - t0
        timings.update({f"pass.{name}": seconds for name, seconds in result.method_seconds.items()})
        rejected = setup.manifest_problems + [p for p in setup.rejected if p["subject_id"] in {s.subject_id for s in todo_all}]
        _write_errors(run_dir, rejected + result.failed, shard_label)
        if result.feature_widths is not None:
            write_json(run_dir / "features.json", {"names": feature_names(setup.feature_spec, result.feature_widths)})
        if options.shard is not None:
            summary = {"schema_version": versions.SHARD, "shard": list(options.shard), "done": len(result.done), "failed": len(result.failed)}
            write_json(run_dir / f"shard-{shard_label}.json", summary)
            return RunResult(run_dir.root, summary, failed=len(result.failed), timings=timings)
        audit = finish_run(run_dir, config, setup.all_subjects, timings=timings, started=started, device=str(setup.device),
                           setup=setup, progress=progress)
        return RunResult(run_dir.root, audit, failed=audit["counts"]["failed"], timings=timings)
    finally:
        gradients.close()
        logging.getLogger("xaudit").removeHandler(handler)
        handler.close()
        lock.release()


def _write_errors(run_dir: RunDirectory, failed: list[dict], shard_label: str) -> None:
    """``errors.csv`` (or one per shard): subjects that failed this time, with the reason."""
    name = f"errors-{shard_label}.csv" if shard_label else "errors.csv"
    rows = [[f["subject_id"], f["row"], f["stage"], f["reason"]] for f in failed]
    write_csv(run_dir / name, ["subject_id", "manifest_line", "stage", "reason"], rows)


