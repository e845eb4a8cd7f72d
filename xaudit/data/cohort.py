"""The finished per-subject results of a run, gathered into dataset-level arrays.

Dataset-level stages (metrics, rules, bias, report) read only this, built from the
per-subject records, so `merge` and `--resume` can run them without the model.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xaudit.core.outputs import RunDirectory, load_record
from xaudit.core.pages import release_pages
from xaudit.data.manifest import Subject


@dataclass
class Cohort:
    """Aligned per-subject arrays of the subjects that finished.

    Attributes:
        subjects: manifest rows, in manifest order.
        probs: ``(n, K)``; ``predicted``, ``labels`` (-1 unknown), ``targets``: ``(n,)``.
        features: ``(n, F)`` with ``feature_names``.
        groups: group column -> values ``(n,)``.
        shares: method -> {share name -> ``(n,)``}.
        stats: method -> {stat name -> ``(n,)``}.
        maps: method -> ``(n, *small)`` downsampled maps on the model-input grid.
    """

    subjects: list[Subject]
    classes: list[str]
    probs: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    concept_acts: np.ndarray
    concept_grads: np.ndarray
    probs_fg_blanked: np.ndarray
    probs_bg_blanked: np.ndarray
    images_small: np.ndarray
    input_affines: np.ndarray
    input_shapes: np.ndarray
    foreground_fraction: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    shares: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.subjects)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.subjects]

    @property
    def splits(self) -> np.ndarray:
        return np.array([s.split for s in self.subjects], dtype=object)

    def release(self) -> None:
        """Hand the resident pages of the file-mapped maps and images back to the kernel
        (`xaudit.core.pages.release_pages`); the data stays. A stage that read them calls this."""
        release_pages(self.images_small, *self.maps.values())

    @property
    def common_grid(self) -> bool:
        """Whether every subject's downsampled maps share one shape (so they can be averaged)."""
        return self.n > 0 and all(m.ndim > 1 for m in self.maps.values())


def load_cohort(run_dir: RunDirectory, subjects: list[Subject], classes: list[str], feature_names: list[str]) -> Cohort:
    """Read the records of every finished subject, in manifest order.

    The records stream into preallocated arrays, one at a time: memory holds the cohort's
    arrays, never every record as well; the downsampled maps and images of a big cohort are
    kept on disk (`spilled`).
    """
    done = run_dir.completed()
    kept = [s for s in subjects if s.safe_id in done]
    records = (load_record(run_dir.record_path(s.safe_id)) for s in kept)
    return cohort_from_records(kept, records, classes, feature_names, spill_dir=run_dir.root)


#: record keys stacked as they are (one row per subject); maps and ``image_small`` become float32
STACKED = ("probs", "features", "concept_acts", "concept_grads", "probs_fg_blanked", "probs_bg_blanked",
           "input_affine", "input_shape")
SCALARS = {"label": int, "target": int, "foreground_fraction": float}
VOLUMES = ("map__", "image_small")
COLUMNS = ("share__", "stat__")  # one float per subject; a subject without the key gets NaN


#: a cohort's map (or image) array above this many bytes lives in a file, not in memory
SPILL_BYTES = 64 * 2**20
RELEASE_EVERY = 256  # records between two releases of the spilled arrays' pages while they fill


def spilled(shape: tuple[int, ...], folder: Path | None) -> np.ndarray:
    """A zeroed float32 array of ``shape``: in memory, or above `SPILL_BYTES` mapped from a file.

    The file is created in ``folder`` (the run directory: the disk that holds the attribution
    volumes, where /tmp may be memory) and unlinked at once, so nothing is left behind, even
    after ``kill -9``; its space is freed when the array is. Its pages are the kernel's page
    cache: read and written as memory, dropped to disk under memory pressure instead of
    counting against the run (10,000 subjects of two 16^3 maps and an image: 480 MiB that
    were the whole growth of a run's memory from 1,000 to 10,000 subjects).
    """
    size = int(np.prod(shape, dtype=np.int64)) * 4
    if folder is None or size <= SPILL_BYTES:
        return np.zeros(shape, np.float32)
    try:
        handle = tempfile.TemporaryFile(dir=folder, prefix=".cohort-")
        handle.truncate(size)
        array = np.memmap(handle, dtype=np.float32, mode="r+", shape=shape)
    except OSError:  # no room or no right to write there: in memory, as below the threshold
        return np.zeros(shape, np.float32)
    handle.close()  # the mapping keeps the (unlinked) file alive
    return array.view(np.ndarray)  # a plain array on the mapping: numpy never returns memmaps from it


class _Columns:
    """One preallocated array per record key, filled record by record (volumes spilled to
    ``spill_dir`` above `SPILL_BYTES`)."""

    def __init__(self, n: int, spill_dir: Path | None = None):
        self.n, self.arrays, self.spill_dir = n, {}, spill_dir

    def add(self, i: int, record: dict) -> None:
        for key, value in record.items():
            if key in SCALARS:
                self._put(key, i, SCALARS[key](value), np.dtype(int if SCALARS[key] is int else float), ())
            elif key in STACKED:
                value = np.asarray(value)
                self._put(key, i, value, value.dtype, value.shape)
            elif key.startswith(VOLUMES):
                self._volume(key, i, np.asarray(value))
            elif key.startswith(COLUMNS):
                self._put(key, i, float(value), np.dtype(float), (), fill=np.nan)

    def _put(self, key, i, value, dtype, shape, fill=0) -> None:
        array = self.arrays.get(key)
        if array is None:
            array = self.arrays[key] = np.full((self.n, *shape), fill, dtype=dtype)
        elif array.shape[1:] != shape:
            raise ValueError(f"record key {key!r} has shape {shape} in subject {i + 1}, {array.shape[1:]} before: "
                             "all input arrays must have the same shape")
        elif np.result_type(array.dtype, dtype) != array.dtype:
            array = self.arrays[key] = array.astype(np.result_type(array.dtype, dtype))
        array[i] = value

    def _volume(self, key: str, i: int, value: np.ndarray) -> None:
        array = self.arrays.get(key)
        if array is None:
            array = self.arrays[key] = spilled((self.n, *value.shape), self.spill_dir)
        if array.dtype == object:  # no common grid: not kept
            return
        if array.shape[1:] != value.shape:
            self.arrays[key] = np.empty(self.n, object)
            return
        array[i] = value

    def get(self, key: str, width: int | None = None) -> np.ndarray:
        if self.n == 0:
            return np.zeros((0, width or 0), np.float32)
        return self.arrays[key]

    def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: self.arrays[k] for k in sorted(self.arrays) if k.startswith(prefix)}


def cohort_from_records(subjects: list[Subject], records, classes: list[str], feature_names: list[str],
                        spill_dir: Path | None = None) -> Cohort:
    """The cohort of ``subjects`` from their records (any iterable, read once, in the same order);
    big map and image arrays are mapped from an unlinked file in ``spill_dir`` (`spilled`)."""
    columns = _Columns(len(subjects), spill_dir)
    for i, record in enumerate(records):
        columns.add(i, record)
        if i % RELEASE_EVERY == RELEASE_EVERY - 1:  # the rows written so far leave the resident set
            release_pages(*columns.arrays.values())
    release_pages(*columns.arrays.values())
    methods = sorted(k[len("map__"):] for k in columns.arrays if k.startswith("map__"))
    empty = np.zeros(0)
    return Cohort(
        subjects=subjects,
        classes=classes,
        probs=columns.get("probs", len(classes)),
        labels=columns.arrays.get("label", empty.astype(int)),
        targets=columns.arrays.get("target", empty.astype(int)),
        features=columns.get("features"),
        feature_names=feature_names,
        concept_acts=columns.get("concept_acts"),
        concept_grads=columns.get("concept_grads"),
        probs_fg_blanked=columns.get("probs_fg_blanked", len(classes)),
        probs_bg_blanked=columns.get("probs_bg_blanked", len(classes)),
        images_small=columns.arrays["image_small"] if subjects else np.empty(0, object),
        input_affines=columns.get("input_affine"),
        input_shapes=columns.get("input_shape"),
        foreground_fraction=columns.arrays.get("foreground_fraction", empty),
        groups={c: np.array([s.groups.get(c, "") for s in subjects], dtype=object) for c in (subjects[0].groups if subjects else {})},
        shares={m: columns.prefixed(f"share__{m}__") for m in methods},
        stats={m: columns.prefixed(f"stat__{m}__") for m in methods},
        maps={m: columns.arrays[f"map__{m}"] for m in methods},
    )


def write_predictions(cohort: Cohort, path: Path) -> Path:
    """``predictions.csv``: subject, groups, split, label, probabilities, prediction."""
    from xaudit.core.outputs import write_csv

    group_cols = list(cohort.groups)
    header = ["subject_id", *group_cols, "split", "label", *[f"prob_{c}" for c in cohort.classes], "prediction", "target", "correct"]
    rows = []
    for i, s in enumerate(cohort.subjects):
        label = cohort.classes[s.label] if s.label >= 0 else ""
        pred = cohort.classes[int(cohort.predicted[i])]
        correct = "" if s.label < 0 else int(s.label == int(cohort.predicted[i]))
        rows.append([s.subject_id, *[s.groups.get(c, "") for c in group_cols], s.split, label,
                     *[f"{p:.6f}" for p in cohort.probs[i]], pred, cohort.classes[int(cohort.targets[i])], correct])
    return write_csv(path, header, rows)


def write_features(cohort: Cohort, path: Path) -> Path:
    """``features.csv``: one row per subject, one column per ``layer:chN`` feature."""
    from xaudit.core.outputs import write_csv

    rows = [[s.subject_id, *[f"{v:.6g}" for v in cohort.features[i]]] for i, s in enumerate(cohort.subjects)]
    return write_csv(path, ["subject_id", *cohort.feature_names], rows)


def feature_names_of(run_dir: RunDirectory) -> list[str]:
    """The layer feature names the subject pass recorded (``features.json``), or none."""
    path = run_dir / "features.json"
    return json.loads(path.read_text())["names"] if path.is_file() else []
