"""The manifest: one CSV row per subject image, validated before any heavy work."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xaudit.core.ids import safe_file_id
from xaudit.errors import DataError, did_you_mean, first_line

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


def load_manifest(data_cfg, classes: list[str], check_files: bool = True) -> list[Subject]:
    """Read and validate the manifest named by the config's ``data`` section.

    Args:
        data_cfg: `xaudit.config.DataConfig`.
        classes: the model's class names; labels may be names or indices.
        check_files: verify that every referenced file exists.

    Returns:
        The subjects of the configured split, in manifest order.

    Raises:
        DataError: naming the manifest, column or row and what to do.
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
                f"{path}: split {missing} not found in column {data_cfg.split_column!r}; values present: {sorted(present)}"
            )
        frame = frame[frame[data_cfg.split_column].astype(str).isin(wanted)]
    if frame.empty:
        raise DataError(f"{path}: no rows to audit (check `data.split`)")
    subjects = [_subject_from_row(row, idx, data_cfg, classes, path.parent) for idx, row in frame.iterrows()]
    _check_unique(subjects, path)
    if check_files:
        _check_files_exist(subjects, path)
    return subjects


def read_manifest_csv(path: Path) -> pd.DataFrame:
    """Read the CSV with every column as text; the index holds the file line number."""
    if not path.is_file():
        raise DataError(f"manifest {str(path)!r} does not exist (set `data.manifest`)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {str(path)!r} is not a readable CSV: {first_line(exc)}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = np.arange(2, len(frame) + 2)
    return frame


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
                f" Columns present: {list(frame.columns)}"
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
        f"{where}: label {value!r} is not one of the classes {classes} (or an index 0..{len(classes) - 1});"
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


def _check_unique(subjects: list[Subject], path: Path) -> None:
    seen: dict[str, int] = {}
    safe_seen: dict[str, str] = {}
    for s in subjects:
        if s.subject_id in seen:
            raise DataError(f"{path} line {s.row}: subject id {s.subject_id!r} repeats line {seen[s.subject_id]}; ids must be unique")
        seen[s.subject_id] = s.row
        other = safe_seen.get(s.safe_id.lower())
        if other is not None:
            raise DataError(
                f"{path} line {s.row}: subject ids {other!r} and {s.subject_id!r} map to the same file name"
                f" {s.safe_id!r}; rename one of them"
            )
        safe_seen[s.safe_id.lower()] = s.subject_id


def _check_files_exist(subjects: list[Subject], path: Path) -> None:
    missing = []
    for s in subjects:
        for p in (*s.images, *( [s.mask] if s.mask else []), *s.rois.values()):
            if not p.is_file():
                missing.append(f"line {s.row} ({s.subject_id}): {p}")
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{path}: {len(missing)} file(s) not found: " + "; ".join(missing[:5]) + more)
