"""Which subjects to interrogate, and their inputs and regions on the model-input grid.

A few subjects per class x group-value cell (e.g. lesion at site B), the ones the network
is most confident about for their class: the typical cases, whose representation shows
what the network relies on when it works as trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xaudit.core.outputs import unescape_cell
from xaudit.data.loading import LoadedImage, load_subject, native_grid, read_mask
from xaudit.data.manifest import Subject
from xaudit.data.native import resample_between_grids
from xaudit.errors import DataError, XauditError
from xaudit.data.foreground import preprocessed_foreground

log = logging.getLogger("xaudit")


@dataclass
class SubjectInput:
    """One subject ready to interrogate.

    Attributes:
        subject: its manifest row.
        cell: ``{"class": ..., "group": ...}`` it was chosen for.
        image: float32 ``(C, *S)`` preprocessed input.
        affine: ``(D+1, D+1)`` affine of the input grid.
        foreground: bool ``(*S)``.
        rois: ROI name -> bool ``(*S)`` on the input grid.
    """

    subject: Subject
    cell: dict[str, str]
    image: torch.Tensor
    affine: np.ndarray
    foreground: np.ndarray
    rois: dict[str, np.ndarray] = field(default_factory=dict)


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """``predictions.csv`` of a finished run, every column as text.

    Raises:
        DataError: the run has no predictions (not finished, or a shard).
    """
    path = Path(run_dir) / "predictions.csv"
    if not path.is_file():
        raise DataError(f"{run_dir}: no predictions.csv; interrogate a finished run (after `xaudit run` or `xaudit merge`)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [unescape_cell(c) for c in frame.columns]
    for column in frame.columns:
        frame[column] = frame[column].map(unescape_cell)
    return frame


def choose_subjects(
    predictions: pd.DataFrame, subjects: list[Subject], classes: list[str], group_column: str | None,
    per_cell: int, max_subjects: int,
) -> list[tuple[Subject, dict[str, str]]]:
    """Up to ``per_cell`` subjects per class x group cell, the most confident first.

    The class is the label where known, else the prediction. Cells are visited in turn
    (first pick of every cell, then second picks), so ``max_subjects`` trims evenly.

    Returns:
        ``(subject, cell)`` pairs in a deterministic order.
    """
    by_id = {s.subject_id: s for s in subjects}
    order = {s.subject_id: k for k, s in enumerate(subjects)}
    frame = predictions[predictions["subject_id"].isin(by_id)].copy()
    frame["_class"] = [lab if lab in classes else pred for lab, pred in zip(frame["label"], frame["prediction"])]
    frame["_group"] = frame[group_column] if group_column and group_column in frame.columns else ""
    frame["_confidence"] = [float(row.get(f"prob_{row['_class']}", "nan") or "nan") for _, row in frame.iterrows()]
    frame["_order"] = frame["subject_id"].map(order)
    cells = []
    for (cls, group), rows in frame.groupby(["_class", "_group"], sort=False):
        rows = rows.sort_values(["_confidence", "_order"], ascending=[False, True])
        cells.append(((classes.index(cls) if cls in classes else len(classes), str(group)), cls, group, list(rows["subject_id"])[:per_cell]))
    cells.sort(key=lambda c: c[0])
    chosen = []
    for rank in range(per_cell):
        for _key, cls, group, ids in cells:
            if rank < len(ids) and len(chosen) < max_subjects:
                cell = {"class": str(cls), "group": f"{group_column}={group}" if group_column else ""}
                chosen.append((by_id[ids[rank]], cell))
    return chosen


def load_inputs(chosen: list[tuple[Subject, dict]], transforms, spatial_dims: int, notes: list[str]) -> list[SubjectInput]:
    """Preprocess the chosen subjects; one that fails to load is skipped with a note."""
    inputs = []
    for subject, cell in chosen:
        try:
            loaded = load_subject(subject, transforms, spatial_dims)
            foreground = preprocessed_foreground(subject, loaded, spatial_dims).numpy().astype(bool)
            rois = {name: _mask_on_input(path, loaded, spatial_dims) for name, path in subject.rois.items()}
        except XauditError as exc:
            notes.append(f"subject {subject.subject_id} skipped: {exc}")
            log.warning("interrogate: subject %s skipped: %s", subject.subject_id, exc)
            continue
        inputs.append(SubjectInput(subject, cell, loaded.tensor, loaded.affine, foreground, rois))
    if not inputs:
        raise DataError("interrogate: none of the chosen subjects could be loaded; " + "; ".join(notes[-3:]))
    return inputs


def _mask_on_input(path, loaded: LoadedImage, spatial_dims: int) -> np.ndarray:
    mask_affine, _shape, _img = native_grid(path, spatial_dims)
    mask = torch.from_numpy(read_mask(path, spatial_dims).astype(np.float32))
    shape = tuple(loaded.tensor.shape[1:])
    return resample_between_grids(mask, mask_affine, loaded.affine, shape, mode="nearest").numpy() > 0.5


def batches_by_shape(inputs: list[SubjectInput]) -> list[list[SubjectInput]]:
    """Subjects grouped by input shape (one optimisation batch each), in input order."""
    groups: dict[tuple, list[SubjectInput]] = {}
    for item in inputs:
        groups.setdefault(tuple(item.image.shape), []).append(item)
    return list(groups.values())
