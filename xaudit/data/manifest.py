"""The manifest: one CSV row per subject image, validated before any heavy work."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xaudit.core.ids import safe_file_id
from xaudit.errors import DataError, did_you_mean, first_line, short

DEFAULT_MAX_IMAGE_BYTES = 4 << 30  # `data.max_image_gb` = 4


@dataclass(frozen=True)
class Subject:
    """One manifest row, with paths made absolute and the label as a class index.

    Attributes:
        subject_id: the id as written in the manifest.
        safe_id: the id made safe as a file name (never trusted as a path).
        row: the manifest line number (header = line 1), for error messages.
        images: one path per input channel.
        label: class index, or -1 when the manifest has no label for this row.
        groups: group column -> value (as text).
        split: the split value, or "".
        mask: foreground/brain mask path, or None.
        rois: ROI name -> mask path.
        max_image_bytes: the largest image read for this subject (``data.max_image_gb``).
    """

    subject_id: str
    safe_id: str
    row: int
    images: tuple[Path, ...]
    label: int
    groups: dict[str, str] = field(default_factory=dict)
    split: str = ""
    mask: Path | None = None
    rois: dict[str, Path] = field(default_factory=dict)
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def load_manifest(data_cfg, classes: list[str], check_files: bool = True, problems: list[dict] | None = None) -> list[Subject]:
    """Read and validate the manifest named by the config's ``data`` section.

    A row that cannot be a subject (empty id or image path, a label outside the classes, a
    repeated id) is a problem of that row only: with ``problems`` given, each is appended
    there (``subject_id``, ``row``, ``stage`` = "manifest", ``reason``) and the row is left
    out; without it, every such row is listed in one error.

    Args:
        data_cfg: `xaudit.config.DataConfig`.
        classes: the model's class names; labels may be names or indices.
        check_files: verify that every referenced file exists.
        problems: where to collect per-row problems instead of raising.

    Returns:
        The subjects of the configured split, in manifest order.

    Raises:
        DataError: the manifest is not a readable table, lacks a column or split, holds no
            usable row, or (without ``problems``) has rows with problems.
    """
    path = Path(data_cfg.manifest)
    frame = read_manifest_csv(path)
    _require_columns(frame, data_cfg, path)
    if data_cfg.split is not None:
        wanted = [data_cfg.split] if isinstance(data_cfg.split, str) else list(data_cfg.split)
        present = set(frame[data_cfg.split_column].astype(str))
        missing = [s for s in wanted if s not in present]
        if missing:
            raise DataError(
                f"{path}: split {missing} not found in column {data_cfg.split_column!r}; values present: {short(sorted(present), 300)}"
            )
        frame = frame[frame[data_cfg.split_column].astype(str).isin(wanted)]
    if frame.empty:
        raise DataError(f"{path}: no rows to audit (check `data.split`)")
    found: list[dict] = []
    subjects = []
    for idx, row in frame.iterrows():
        try:
            subjects.append(_subject_from_row(row, idx, data_cfg, classes, path.parent))
        except DataError as exc:
            found.append(_row_problem(str(row[data_cfg.subject_column]).strip(), idx, str(exc)))
    subjects = _unique(subjects, path, found)
    if found and (problems is None or not subjects):
        raise DataError(rows_message(sorted(found, key=lambda p: p["row"])))
    if problems is not None:
        problems.extend(sorted(found, key=lambda p: p["row"]))
    if check_files:
        _check_files_exist(subjects, path)
    return subjects


#: problem rows listed in one error message; the rest are counted
MAX_LISTED = 10


def rows_message(problems: list[dict]) -> str:
    """One error listing the problem rows (the first `MAX_LISTED`, then a count)."""
    lines = [f"manifest line {p['row']} ({p['subject_id']}): {p['reason']}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more subject(s) with problems")
    return lines[0] if len(lines) == 1 else f"{len(problems)} subjects have problems:\n  " + "\n  ".join(lines)


def _row_problem(subject_id: str, line: int, reason: str) -> dict:
    return {"subject_id": subject_id, "row": int(line), "stage": "manifest", "reason": reason}


def read_manifest_csv(path: Path) -> pd.DataFrame:
    """Read the CSV with every column as text; the index holds each row's first line in the file.

    Line numbers are counted by the CSV reader itself, so a quoted value holding a newline
    does not shift them; blank lines are skipped. A header without a comma but with semicolons
    (a spreadsheet's CSV in many locales) or tabs (TSV) sets the delimiter to that one.
    """
    if not path.is_file():
        raise DataError(f"manifest {str(path)!r} does not exist or is not a regular file (set `data.manifest`)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            delimiter = _delimiter(fh.readline())
            fh.seek(0)  # the decoder starts again, and drops a BOM again
            reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
            header = next(reader, None)
            lines, records, start = [], [], reader.line_num + 1
            for record in reader:
                if record and any(v.strip() for v in record):
                    lines.append(start)
                    records.append(record)
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"manifest {str(path)!r} is not a readable CSV: {first_line(exc)}") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"manifest {str(path)!r} is empty: it needs a header row and one row per image")
    columns = _unique_names([str(c).strip() for c in header])
    for line, record in zip(lines, records):
        if len(record) > len(columns):
            raise DataError(f"manifest {str(path)!r} line {line}: {len(record)} fields, the header has {len(columns)};"
                            f" quote values that contain {DELIMITERS[delimiter]}s")
    rows = [record + [""] * (len(columns) - len(record)) for record in records]
    return pd.DataFrame(rows, columns=columns, index=np.asarray(lines, dtype=int), dtype=str)


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


def _delimiter(header: str) -> str:
    """The manifest's field delimiter, from its header line: a comma unless the header has none."""
    return "," if "," in header else next((d for d in (";", "\t") if d in header), ",")


def _unique_names(columns: list[str]) -> list[str]:
    """Repeated header names become ``name.1``, ``name.2`` (as pandas names them)."""
    seen: dict[str, int] = {}
    out = []
    for name in columns:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def _require_columns(frame: pd.DataFrame, data_cfg, path: Path) -> None:
    needed = {"data.subject_column": data_cfg.subject_column}
    for i, col in enumerate(data_cfg.image_columns):
        needed[f"data.image_column[{i}]"] = col
    optional = {
        "data.label_column": data_cfg.label_column,
        "data.mask_column": data_cfg.mask_column,
        **{f"data.group_columns[{i}]": c for i, c in enumerate(data_cfg.group_columns)},
        **{f"data.roi_columns[{i}]": c for i, c in enumerate(data_cfg.roi_columns)},
    }
    if data_cfg.split is not None:
        optional["data.split_column"] = data_cfg.split_column
    for key, col in {**needed, **optional}.items():
        if col is not None and col not in frame.columns:
            raise DataError(
                f"{path}: column {col!r} (from `{key}`) is not in the manifest.{did_you_mean(col, frame.columns)}"
                f" Columns present: {short(list(frame.columns), 400)}"
            )


def parse_label(value: str, classes: list[str], where: str) -> int:
    """A label given as a class name or an index -> index; '' -> -1 (unknown)."""
    value = value.strip()
    if value == "":
        return -1
    if value in classes:
        return classes.index(value)
    try:
        index = int(float(value))
    except (ValueError, OverflowError):
        index = None
    if index is not None and float(value) == index and 0 <= index < len(classes):
        return index
    raise DataError(
        f"{where}: label {short(value)} is not one of the classes {classes} (or an index 0..{len(classes) - 1});"
        f"{did_you_mean(value, classes)} fix the row or `model.classes`"
    )


def _subject_from_row(row: pd.Series, line: int, data_cfg, classes: list[str], base: Path) -> Subject:
    where = f"{data_cfg.manifest} line {line}"
    subject_id = str(row[data_cfg.subject_column]).strip()
    if not subject_id:
        raise DataError(f"{where}: empty subject id in column {data_cfg.subject_column!r}")
    images = tuple(_resolve(row[c], base, where, c) for c in data_cfg.image_columns)
    label = parse_label(str(row[data_cfg.label_column]), classes, where) if data_cfg.label_column else -1
    mask = _resolve(row[data_cfg.mask_column], base, where, data_cfg.mask_column, optional=True) if data_cfg.mask_column else None
    rois = {c: p for c in data_cfg.roi_columns if (p := _resolve(row[c], base, where, c, optional=True)) is not None}
    split = str(row[data_cfg.split_column]).strip() if data_cfg.split_column in row.index else ""
    return Subject(
        subject_id=subject_id,
        safe_id=safe_file_id(subject_id),
        row=int(line),
        images=images,
        label=label,
        groups={c: str(row[c]).strip() for c in data_cfg.group_columns},
        split=split,
        mask=mask,
        rois=rois,
        max_image_bytes=int(data_cfg.max_image_gb * (1 << 30)),
    )


def _resolve(value: str, base: Path, where: str, column: str, optional: bool = False) -> Path | None:
    value = str(value).strip()
    if not value:
        if optional:
            return None
        raise DataError(f"{where}: empty path in column {column!r}")
    path = Path(value)
    return path if path.is_absolute() else (base / path)


def _unique(subjects: list[Subject], path: Path, problems: list[dict]) -> list[Subject]:
    """The subjects whose id (and file name) no earlier row took; the others become problems."""
    seen: dict[str, int] = {}
    safe_seen: dict[str, str] = {}
    kept = []
    for s in subjects:
        if s.subject_id in seen:
            problems.append(_row_problem(s.subject_id, s.row, f"{path} line {s.row}: subject id {short(s.subject_id)} repeats"
                                         f" line {seen[s.subject_id]}; ids must be unique"))
            continue
        other = safe_seen.get(s.safe_id.lower())
        if other is not None:
            problems.append(_row_problem(s.subject_id, s.row, f"{path} line {s.row}: subject ids {short(other)} and"
                                         f" {short(s.subject_id)} map to the same file name {short(s.safe_id)}; rename one of them"))
            continue
        seen[s.subject_id] = s.row
        safe_seen[s.safe_id.lower()] = s.subject_id
        kept.append(s)
    return kept


def _check_files_exist(subjects: list[Subject], path: Path) -> None:
    missing = []
    for s in subjects:
        for p in (*s.images, *( [s.mask] if s.mask else []), *s.rois.values()):
            if not p.is_file():
                missing.append(f"line {s.row} ({s.subject_id}): {p}")
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{path}: {len(missing)} file(s) not found: " + "; ".join(missing[:5]) + more)
