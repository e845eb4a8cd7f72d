"""Combining shard directories into one run, then running its dataset-level stages."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

from xaudit.core.ids import safe_file_id
from xaudit.core.outputs import RunDirectory, unescape_cell, write_csv, write_text
from xaudit.core.provenance import load_run_config, run_provenance
from xaudit.core.runlog import log_to_file
from xaudit.data import load_manifest
from xaudit.errors import OutputError, XauditError
from xaudit.stages.validate import validate_setup
from xaudit.workflows.audit import RunResult
from xaudit.workflows.finish import finish_run

log = logging.getLogger("xaudit")


def merge_runs(shard_dirs: list[Path], output: Path, allow_partial: bool = False):
    """Link (or copy) every shard's per-subject artifacts into ``output``, then finish the run.

    All shards must come from the same config (same config hash). Subjects finished in
    several shards keep one copy; ``errors.csv`` lists failures not finished elsewhere.
    Subjects in no shard given (a shard missing or unfinished) are an error unless
    ``allow_partial``: then the merged run reports them as ``counts.missing``.

    Returns:
        `RunResult` of the merged run.
    """
    shard_dirs = [Path(d) for d in shard_dirs]
    provenance = {d: run_provenance(d) for d in shard_dirs}  # read once, before the merge writes anything
    hashes = {d: p.get("config_hash") for d, p in provenance.items()}
    if len(set(hashes.values())) != 1:
        listed = ", ".join(f"{d}: {h}" for d, h in hashes.items())
        raise OutputError(f"shards come from different configs (config hashes {listed}); merge shards of one run only")
    out = RunDirectory(output)
    # `xaudit submit` puts the shards inside the merged run's folder (OUT/shards/i)
    out.claim(allow_foreign=any(out.root.resolve() in d.resolve().parents for d in shard_dirs))
    lock = out.lock()
    handler = log_to_file(out.root / "run.log")
    try:
        counts = {d: (p.get("shard") or [None, None])[1] for d, p in provenance.items()}
        if len({c for c in counts.values() if c}) > 1:  # a re-sharded run: subjects are matched by id, so it still merges
            log.warning("the shards were cut for different shard counts (%s); subjects are matched by id",
                        ", ".join(f"{d}: of {c}" for d, c in counts.items()))
        for d in shard_dirs:
            if Path(d).resolve() != out.root.resolve():
                _link_tree(Path(d) / "subjects", out.subjects_dir)
                _link_tree(Path(d) / "attributions", out.root / "attributions")
                for bids_subject in sorted(Path(d).glob("sub-*")):  # output_layout: bids
                    _link_tree(bids_subject, out.root / bids_subject.name)
        failed = _merge_errors(shard_dirs, out)
        first = shard_dirs[0]
        for name in ("config.resolved.yaml", "features.json", "dataset_description.json"):
            if (first / name).is_file() and (first / name).resolve() != (out.root / name).resolve():
                write_text(out.root / name, (first / name).read_text(encoding="utf-8"))
        config = load_run_config(out.root)
        subjects = load_manifest(config.data, config.model.classes, check_files=False, problems=[])
        if not allow_partial:
            _refuse_partial(shard_dirs, subjects, out, failed)
        setup = _model_setup(config)
        audit = finish_run(out, config, subjects, device=provenance[first].get("device", ""), setup=setup)
        shards = {tuple(p.get("shard") or ()) for p in provenance.values()}
        if len(shards) < len(shard_dirs):
            log.warning("the same shard was given more than once: %s", [str(d) for d in shard_dirs])
        if audit["counts"]["missing"]:
            log.warning(
                "%d of %d subjects are in no shard given (neither finished nor failed): merge every shard, or "
                "finish the missing ones with `xaudit run ... --shard i/N --resume`", audit["counts"]["missing"],
                audit["counts"]["subjects"])
        return RunResult(out.root, audit, failed=audit["counts"]["failed"])
    finally:
        log.removeHandler(handler)
        handler.close()
        lock.release()


def _model_setup(config):
    """The model and preprocessing for model-dependent dataset stages, if still loadable."""
    try:
        return validate_setup(config)
    except XauditError as exc:
        log.warning("model not loadable for merge (%s): rule feature maps skipped", exc)
        return None


def _link_tree(src: Path, dst: Path) -> None:
    if not src.is_dir():
        return
    for path in src.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue
        target = dst / path.relative_to(src)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.merge-tmp")
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, target)


def _merge_errors(shard_dirs: list[Path], out: RunDirectory) -> None:
    done = out.completed()
    rows, seen = [], set()
    for d in shard_dirs:
        for path in sorted(Path(d).glob("errors*.csv")):
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    sid = unescape_cell(row["subject_id"])
                    manifest_row = row.get("stage") == "manifest"  # never a subject: kept, once per line
                    key = (sid, row.get("manifest_line")) if manifest_row else sid
                    if key not in seen and (manifest_row or safe_file_id(sid) not in done):
                        seen.add(key)
                        rows.append([sid, row.get("manifest_line", ""), row.get("stage", ""), unescape_cell(row.get("reason", ""))])
    write_csv(out / "errors.csv", ["subject_id", "manifest_line", "stage", "reason"], rows)
    return {row[0] for row in rows}


def _refuse_partial(shard_dirs: list[Path], subjects, out: RunDirectory, failed: set[str]) -> None:
    """Every subject must be finished or failed in some shard given, before the dataset stages."""
    done = out.completed()
    missing = [s for s in subjects if s.safe_id not in done and s.subject_id not in failed]
    if not missing:
        return
    shards = [run_provenance(d).get("shard") for d in shard_dirs]
    counts = {s[1] for s in shards if s}
    absent = sorted(set(range(max(counts))) - {s[0] for s in shards if s}) if len(counts) == 1 else []
    which = f" (shards {absent} of {max(counts)} not given)" if absent else ""
    raise OutputError(
        f"{len(missing)} of {len(subjects)} subjects are in no shard given{which}, e.g. {missing[0].subject_id!r}: merge"
        " every shard, finish the missing ones with `xaudit run ... --shard i/N --resume`, or pass --allow-partial"
        " to merge only these")
