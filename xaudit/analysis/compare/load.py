"""Read a finished run directory into the arrays and summaries a comparison needs.

A comparison depends only on the run directory (``audit.json``, ``config.resolved.yaml``,
``predictions.csv``, ``rules.json``, ``subjects/*.npz``, ``maps/``), never on the
manifest or the images, so runs can be compared after they were moved or archived.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xaudit.analysis.rules.result import RulesResult
from xaudit.config import load_yaml
from xaudit.core import versions
from xaudit.core.ids import safe_file_id
from xaudit.errors import DataError, OutputError
from xaudit.core.outputs import RunDirectory, unescape_cell

_SCALAR_HEADER = re.compile(r"'descr':\s*'([^']+)'.*'shape':\s*\(\)")
SKIPPED_SHARE_PREFIX = "vol_"  # mask volume fractions: properties of the cohort, not of the model


@dataclass
class RunData:
    """One finished run, ready to compare.

    Attributes:
        path: the run directory; ``name``: its label in tables and file names.
        audit: ``audit.json``; ``config``: ``config.resolved.yaml`` as plain data.
        classes: ``model.classes``; ``methods``: attribution method -> parameters.
        subject_ids, labels (class index, -1 unknown), probs ``(n, K)``: from predictions.csv.
        groups: group column -> values ``(n,)`` (strings).
        rules: ranked rule dicts from rules.json, or None with ``rules_note`` saying why;
            ``rules_fidelity``: the surrogate's cross-validated agreement with the network.
    """

    path: Path
    name: str
    audit: dict
    config: dict
    classes: list[str]
    methods: dict[str, dict]
    subject_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    groups: dict[str, np.ndarray]
    rules: list[dict] | None = None
    rules_fidelity: float | None = None
    rules_note: str = ""
    _shares: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.subject_ids.size)

    @property
    def transforms(self) -> dict:
        return dict((self.config.get("data") or {}).get("transforms") or {})

    @property
    def findings(self) -> list[dict]:
        return list(self.audit.get("findings") or [])

    def shares(self) -> dict[str, dict[str, np.ndarray]]:
        """method -> share name -> per-subject values ``(n,)`` (NaN where no record), read once."""
        if self._shares is None:
            self._shares = _read_shares(self.path, self.subject_ids)
        return self._shares

    def mean_map_path(self, method: str, class_name: str) -> Path:
        return self.path / "maps" / method / f"mean_{safe_file_id(class_name)}.nii.gz"


def load_run(path: Path | str, name: str) -> RunData:
    """Read a finished run.

    Raises:
        OutputError: not a directory, or not a finished run (no audit.json).
        DataError: a file of the run is malformed, with the file named.
    """
    path = Path(path)
    if not path.is_dir():
        raise OutputError(f"{path} is not a directory; give the output directory of a finished `xaudit run`")
    if not (path / "audit.json").is_file():
        raise OutputError(
            f"{path} is not a finished xaudit run (no audit.json); finish it with `xaudit run --resume`"
            " or, for shards, `xaudit merge`"
        )
    audit = _read_json(path / "audit.json")
    version = audit.get("schema_version")
    if not versions.compatible(version, versions.AUDIT):
        raise DataError(f"{path / 'audit.json'}: schema_version 1.x expected, got {version!r}; use the xaudit that wrote it")
    config = _read_config(path)
    classes = [str(c) for c in (config.get("model") or {}).get("classes") or []]
    if not classes:
        raise DataError(f"{path / 'config.resolved.yaml'}: model.classes is missing")
    group_columns = [str(c) for c in (config.get("data") or {}).get("group_columns") or []]
    ids, labels, probs, groups = _read_predictions(path / "predictions.csv", classes, group_columns)
    methods = {str(m): dict(p or {}) for m, p in ((config.get("attribution") or {}).get("methods") or {}).items()}
    run = RunData(path, name, audit, config, classes, methods, ids, labels, probs, groups)
    run.rules, run.rules_fidelity, run.rules_note = _read_rules(path, audit)
    return run


def run_names(paths: list[Path]) -> list[str]:
    """Short unique labels: directory names, with parents added until distinct runs differ.

    The same directory given twice (e.g. a run compared with itself) gets ``-2``, ``-3``...
    """
    resolved = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(resolved))
    parts = [p.parts for p in distinct]
    names = [p.name or "root" for p in distinct]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["-".join(p[-depth:]).lstrip("/-") or "root" for p in parts]
        if len(set(names)) == len(names):
            break
    by_path = dict(zip(distinct, names))
    seen: dict[Path, int] = {}
    out = []
    for path in resolved:
        seen[path] = seen.get(path, 0) + 1
        out.append(by_path[path] + (f"-{seen[path]}" if seen[path] > 1 else ""))
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it as JSON ({exc})") from None


def _read_config(path: Path) -> dict:
    file = path / "config.resolved.yaml"
    if not file.is_file():
        raise OutputError(f"{path} is not an xaudit run directory (no config.resolved.yaml)")
    try:
        raw = load_yaml(file.read_text(encoding="utf-8"), str(file))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read it as YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{file}: expected a mapping at the top level")
    return raw


def shared_subjects(ref: RunData, other: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(in ref, in other)`` of the subject ids both runs hold, in ``ref``'s order."""
    position = {sid: i for i, sid in enumerate(other.subject_ids)}
    pairs = [(i, position[sid]) for i, sid in enumerate(ref.subject_ids) if sid in position]
    if not pairs:
        return np.empty(0, int), np.empty(0, int)
    ri, oi = zip(*pairs)
    return np.array(ri), np.array(oi)


def _read_predictions(path: Path, classes: list[str], group_columns: list[str]):
    """ids, labels (-1 unknown), probs ``(n, K)`` and group values from predictions.csv."""
    if not path.is_file():
        raise OutputError(f"{path.parent} has no predictions.csv; the run did not finish")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [{unescape_cell(k): unescape_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    header = set(rows[0]) if rows else set()
    needed = ["subject_id", "label", *[f"prob_{c}" for c in classes], *group_columns]
    missing = [c for c in needed if c not in header]
    if rows and missing:
        raise DataError(f"{path}: columns {missing} are missing (the run's classes are {classes})")
    index = {c: k for k, c in enumerate(classes)}
    try:
        probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=float).reshape(len(rows), len(classes))
    except ValueError as exc:
        raise DataError(f"{path}: a probability is not a number ({exc})") from None
    unknown = sorted({r["label"] for r in rows if r["label"] and r["label"] not in index})
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not among the run's classes {classes}")
    labels = np.array([index[r["label"]] if r["label"] else -1 for r in rows], dtype=int)
    ids = np.array([r["subject_id"] for r in rows], dtype=object)
    groups = {c: np.array([r[c] for r in rows], dtype=object) for c in group_columns}
    return ids, labels, probs, groups


def _read_rules(path: Path, audit: dict) -> tuple[list[dict] | None, float | None, str]:
    """Ranked rule dicts (validated by `RulesResult`) and the fidelity, or None and the reason."""
    file = path / "rules.json"
    if not file.is_file():
        section = audit.get("rules") if isinstance(audit.get("rules"), dict) else {}
        return None, None, section.get("skipped") or "no rules.json"
    result = RulesResult.from_dict(_read_json(file), source=str(file))
    return [r.to_dict(result.class_names) for r in result.rules], result.surrogate.fidelity, ""


def _read_shares(path: Path, subject_ids: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per-subject attribution shares from ``subjects/<safe id>.npz`` (NaN where no record)."""
    run_dir = RunDirectory(path)
    values: dict[tuple[str, str], np.ndarray] = {}
    for i, sid in enumerate(subject_ids):
        record = run_dir.record_path(safe_file_id(str(sid)))
        if not record.is_file():
            continue
        for key, value in _read_share_scalars(record).items():
            _, method, name = key.split("__", 2)
            values.setdefault((method, name), np.full(subject_ids.size, np.nan))[i] = value
    out: dict[str, dict[str, np.ndarray]] = {}
    for (method, name), column in sorted(values.items()):
        out.setdefault(method, {})[name] = column
    return out


def _read_share_scalars(record: Path) -> dict[str, float]:
    """The ``share__*`` scalars of one record.

    Reads the zip members directly: ``np.load`` parses every member's header through
    the general reader, ~3x slower for these tiny scalars (measured on 200 subjects);
    anything that is not a plain scalar goes through numpy's own reader.
    """
    out: dict[str, float] = {}
    try:
        with zipfile.ZipFile(record) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if not name.startswith("share__") or name.split("__", 2)[-1].startswith(SKIPPED_SHARE_PREFIX):
                    continue
                out[name] = _scalar(archive.read(info))
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{record}: cannot read the subject record ({exc})") from None
    return out


def _scalar(raw: bytes) -> float:
    start = 10 if raw[6] == 1 else 12  # .npy v1 has a 2-byte header length, v2/v3 a 4-byte one
    length = int.from_bytes(raw[8:start], "little")
    match = _SCALAR_HEADER.search(raw[start:start + length].decode("latin1"))
    if match is None:
        return float(np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False))
    return float(np.frombuffer(raw[start + length:], dtype=np.dtype(match.group(1)), count=1)[0])
