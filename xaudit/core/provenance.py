"""A run's provenance: ``config.resolved.yaml`` (the config as run, versions, seeds, device,
batch size), reading it back (`load_run_config`, `run_provenance`), and the check that a
resumed run or an added shard was made with the same per-subject config."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from xaudit._version import __version__
from xaudit.config import Config, apply_override, config_from_dict, load_yaml
from xaudit.config.user_code import IMPORT_DIRS, add_import_dir
from xaudit.core.outputs import RunDirectory, write_text
from xaudit.errors import OutputError


#: config sections that decide what a subject's record holds; the others (rules, bias,
#: quality, report, interrogate) only shape the dataset-level stages and may change on --resume
PER_SUBJECT_SECTIONS = ("data", "model", "attribution", "features")


def check_same_subject_config(run_dir: RunDirectory, config: Config) -> None:
    """Refuse to resume (or add a shard to) a run whose finished subjects were made otherwise.

    Raises:
        OutputError: naming the keys that differ, old and new values.
    """
    path = run_dir / "config.resolved.yaml"
    finished = run_dir.completed()
    if not path.is_file() or not finished:
        return
    old = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
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


def check_shard_target(run_dir: RunDirectory, shard: tuple[int, int]) -> None:
    """A shard may join a shard directory, never a full run's (finished, or live).

    Raises:
        OutputError: the directory holds, or is being written by, a run without ``--shard``.
    """
    label = f"--shard {shard[0]}/{shard[1]}"
    path = run_dir / "config.resolved.yaml"
    if path.is_file() and (run_dir.completed() or (run_dir / "audit.json").is_file()):
        provenance = (load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}).get("provenance") or {}
        if not provenance.get("shard"):
            raise OutputError(f"{run_dir.root} holds a full run (made without --shard); {label} would rewrite it:"
                              " write each shard to its own directory (-o shards/i)")
    try:
        run_dir.lock().release()  # a full run holds `.lock` while it writes
    except OutputError:
        raise OutputError(f"{run_dir.root} is being written by a full run (it holds .lock); {label} would rewrite it:"
                          " write each shard to its own directory (-o shards/i)") from None


@dataclass(frozen=True)
class RunFacts:
    """What a run decided that the config does not say: device, batch size and its evidence, shard."""

    device: str
    spatial_dims: int
    max_batch: int
    batch_rates: dict[int, float] | None = None
    shard: tuple[int, int] | None = None
    strided_gradients: dict[str, dict] | None = None  # `xaudit.models.strided_conv.choose_layers`


def package_versions() -> dict[str, str]:
    """Versions of xaudit and the packages that shape its numbers (read without importing them)."""
    out = {"xaudit": __version__, "python": platform.python_version()}
    for name in ("torch", "monai", "numpy", "captum", "scikit-learn", "nibabel"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_resolved_config(run_dir: RunDirectory, config: Config, facts: RunFacts) -> None:
    """``config.resolved.yaml``: the config as run (re-runnable) plus provenance."""
    resolved = config.to_dict()
    resolved["device"] = facts.device
    resolved["provenance"] = {
        **package_versions(), "platform": platform.platform(),
        "device": facts.device, "max_batch": facts.max_batch,
        "batch_rates": {int(b): round(r, 4) for b, r in facts.batch_rates.items()} if facts.batch_rates else None,
        "strided_gradients": facts.strided_gradients or None,
        "spatial_dims": facts.spatial_dims,
        "seeds": {"run": config.seed, "attribution": config.attribution.seed, "rules": config.rules.seed, "bias": config.bias.seed},
        "shard": list(facts.shard) if facts.shard else None, "config_hash": config.digest(),
        "import_dirs": list(IMPORT_DIRS),
    }
    write_text(run_dir / "config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The config a run was made with (from its ``config.resolved.yaml``), with optional
    ``key.path=value`` overrides validated as part of it."""
    path = Path(run_dir) / "config.resolved.yaml"
    if not path.is_file():
        raise OutputError(f"{run_dir} is not an xaudit run directory (no config.resolved.yaml)")
    raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
    for folder in (raw.pop("provenance", None) or {}).get("import_dirs") or []:
        add_import_dir(folder)  # the factory module next to the original config
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw, base_dir=path.parent)


def run_provenance(run_dir: Path | str) -> dict:
    """The ``provenance`` block of a run's ``config.resolved.yaml`` (device, max_batch, shard...).

    Raises:
        OutputError: ``run_dir`` has no ``config.resolved.yaml``.
    """
    path = Path(run_dir) / "config.resolved.yaml"
    if not path.is_file():
        raise OutputError(f"{run_dir} is not an xaudit run directory (no config.resolved.yaml)")
    return (load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}).get("provenance") or {}
