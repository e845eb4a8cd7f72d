"""`run_audit`: the stages in order, nothing else.

    validate ─► per-subject pass ─► dataset-level stages ─► audit.json
                (predictions, features,   (metrics, rules, bias, mean maps, report)
                 attribution volumes)

A sharded run (``--shard i/N``) stops after the per-subject pass; `xaudit merge` (or a
run without ``--shard`` with ``--resume``) runs the dataset-level stages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from xaudit import __version__
from xaudit.attribution.dataset_mean import dataset_mean_input, needs_dataset_mean
from xaudit.config import Config, apply_override, config_from_dict
from xaudit.data.loading import IMPORT_DIRS, add_import_dir
from xaudit.outputs import RunDirectory, remove_orphaned_temp_files, write_csv, write_json, write_text
from xaudit.subject_pass import PassSettings, run_subject_pass
from xaudit.subject_outputs import SubjectOutputs
from xaudit.validate import validate_setup

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


def run_audit(config: Config, options: RunOptions = RunOptions(), progress=None) -> RunResult:
    """Run an audit end to end (or one shard's per-subject pass).

    Args:
        config: the validated config.
        options: output override, device, shard, resume.
        progress: optional factory ``progress(total) -> advance(n)`` for a progress bar.

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
    lock = run_dir.lock(shard_label)
    handler = _log_to_file(run_dir.root / (f"run-{shard_label}.log" if shard_label else "run.log"))
    if options.resume:
        removed = remove_orphaned_temp_files(run_dir.root)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
    try:
        from xaudit.attribution.engine import estimate_max_batch

        max_batch = estimate_max_batch(
            setup.model.module, _sample_input(setup), setup.device, config.attribution.memory_fraction, config.attribution.max_batch
        )
        _check_same_subject_config(run_dir, config)
        todo_all = shard_subjects(setup.all_subjects, options.shard)
        done = run_dir.completed()
        rejected_ids = {p["subject_id"] for p in setup.rejected}
        todo = [s for s in todo_all if s.safe_id not in done and s.subject_id not in rejected_ids]
        tuning = None
        if todo and config.attribution.max_batch is None:
            t0 = time.perf_counter()
            max_batch, tuning = _tune_max_batch(setup, max_batch, config.attribution.amp)
            timings["batch_tuning"] = time.perf_counter() - t0
        _write_resolved_config(run_dir, config, setup, max_batch, options, tuning)
        log.info("%d subjects to audit (%d already done), max batch %d on %s", len(todo), len(todo_all) - len(todo), max_batch, setup.device)
        settings = PassSettings(
            spatial_dims=setup.spatial_dims, classes=config.model.classes, target=config.attribution.target,
            methods=setup.methods, feature_spec=setup.feature_spec, concept_layer=setup.layer,
            layer_name=config.model.layer, max_batch=max_batch, seed=config.attribution.seed,
            downsample=config.attribution.downsample, batch_size=config.data.batch_size,
            num_workers=config.data.num_workers, on_error=config.data.on_error,
            atlas=str(config.attribution.atlas) if config.attribution.atlas else None, amp=config.attribution.amp,
        )
        if needs_dataset_mean(setup.methods):
            settings.baseline_mean = dataset_mean_input(setup.subjects, setup.transforms, setup.spatial_dims)
            if settings.baseline_mean is not None:
                settings.baseline_mean = settings.baseline_mean.to(setup.device)
        advance = progress(len(todo)) if progress else (lambda n: None)
        t0 = time.perf_counter()
        result = run_subject_pass(todo, setup.transforms, setup.model.module, setup.device, SubjectOutputs(run_dir), settings, advance)
        timings["subject_pass"] = time.perf_counter() - t0
        rejected = [p for p in setup.rejected if p["subject_id"] in {s.subject_id for s in todo_all}]
        _write_errors(run_dir, rejected + result.failed, shard_label)
        if result.feature_widths is not None:
            from xaudit.features import feature_names

            write_json(run_dir / "features.json", {"names": feature_names(setup.feature_spec, result.feature_widths)})
        if options.shard is not None:
            summary = {"schema_version": "1.0", "shard": list(options.shard), "done": len(result.done), "failed": len(result.failed)}
            write_json(run_dir / f"shard-{shard_label}.json", summary)
            return RunResult(run_dir.root, summary, failed=len(result.failed), timings=timings)
        from xaudit.finish import finish_run

        audit = finish_run(run_dir, config, setup.all_subjects, timings=timings, started=started, device=str(setup.device), setup=setup)
        return RunResult(run_dir.root, audit, failed=audit["counts"]["failed"], timings=timings)
    finally:
        logging.getLogger("xaudit").removeHandler(handler)
        handler.close()
        lock.release()


def _tune_max_batch(setup, cap: int, amp: str) -> tuple[int, dict[int, float]]:
    """The fastest batch size within the memory cap (`tune_max_batch`), logged."""
    import torch

    from xaudit.attribution.engine import tune_max_batch
    from xaudit.subject_pass import autocast_dtype

    sample = torch.randn((1, *setup.input_shape), generator=torch.Generator().manual_seed(0)).to(setup.device)
    try:
        best, rates = tune_max_batch(setup.model.module, sample, cap, autocast_dtype(amp, setup.device))
    except (RuntimeError, ValueError, TypeError) as exc:  # the subjects' own passes will say what is wrong
        log.warning("batch size not tuned (%s: %s); using %d", type(exc).__name__, exc, cap)
        return cap, {}
    if rates:
        log.info("batch size %d (forward+backward samples/s by batch size: %s; memory allows %d)", best,
                 ", ".join(f"{b}: {r:.3g}" for b, r in rates.items()), cap)
    return best, rates


def _sample_input(setup):
    import torch

    return torch.zeros((1, *setup.input_shape), device=setup.device)


def _log_to_file(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("xaudit")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def _write_errors(run_dir: RunDirectory, failed: list[dict], shard_label: str) -> None:
    """``errors.csv`` (or one per shard): subjects that failed this time, with the reason."""
    name = f"errors-{shard_label}.csv" if shard_label else "errors.csv"
    rows = [[f["subject_id"], f["row"], f["stage"], f["reason"]] for f in failed]
    write_csv(run_dir / name, ["subject_id", "manifest_line", "stage", "reason"], rows)


#: config sections that decide what a subject's record holds; the others (rules, bias,
#: quality, report, interrogate) only shape the dataset-level stages and may change on --resume
PER_SUBJECT_SECTIONS = ("data", "model", "attribution", "features")


def _check_same_subject_config(run_dir: RunDirectory, config: Config) -> None:
    """Refuse to resume (or add a shard to) a run whose finished subjects were made otherwise.

    Raises:
        OutputError: naming the keys that differ, old and new values.
    """
    from xaudit.errors import OutputError

    path = run_dir / "config.resolved.yaml"
    finished = run_dir.completed()
    if not path.is_file() or not finished:
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    new = config.to_dict()
    diffs = [d for section in PER_SUBJECT_SECTIONS for d in _differences(old.get(section), new.get(section), section)]
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise OutputError(
            f"{run_dir.root} holds {len(finished)} subjects made with a different config ({shown}). "
            f"Resume with the run's own config ({path}), or write to a new output directory (-o)."
        )


def _differences(old, new, key: str) -> list[str]:
    """``key: old -> new`` for every leaf that differs; keys the old config lacks (written by
    an older xaudit) are not differences."""
    if old is None:
        return []
    if key == "attribution.methods" and isinstance(old, dict) and isinstance(new, dict) and set(old) != set(new):
        return [f"{key}: {sorted(old)} -> {sorted(new)}"]  # a user's mapping, not schema keys
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) if k in old for d in _differences(old[k], new.get(k), f"{key}.{k}")]
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


def _write_resolved_config(run_dir: RunDirectory, config: Config, setup, max_batch: int, options: RunOptions,
                           tuning: dict[int, float] | None = None) -> None:
    """``config.resolved.yaml``: the config as run (re-runnable) plus provenance."""
    import platform

    import monai
    import numpy
    import torch

    resolved = config.to_dict()
    resolved["device"] = str(setup.device)
    resolved["provenance"] = {
        "xaudit": __version__, "python": platform.python_version(), "torch": str(torch.__version__),
        "monai": monai.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
        "device": str(setup.device), "max_batch": max_batch,
        "batch_rates": {int(b): round(r, 4) for b, r in tuning.items()} if tuning else None,
        "spatial_dims": setup.spatial_dims,
        "seeds": {"run": config.seed, "attribution": config.attribution.seed, "rules": config.rules.seed, "bias": config.bias.seed},
        "shard": list(options.shard) if options.shard else None, "config_hash": config.digest(),
        "import_dirs": list(IMPORT_DIRS),
    }
    write_text(run_dir / "config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The config a run was made with (from its ``config.resolved.yaml``), with optional
    ``key.path=value`` overrides validated as part of it."""
    from xaudit.errors import OutputError

    path = Path(run_dir) / "config.resolved.yaml"
    if not path.is_file():
        raise OutputError(f"{run_dir} is not an xaudit run directory (no config.resolved.yaml)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for folder in (raw.pop("provenance", None) or {}).get("import_dirs") or []:
        add_import_dir(folder)  # the factory module next to the original config
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw, base_dir=path.parent)
