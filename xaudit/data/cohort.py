"""The finished per-subject results of a run, gathered into dataset-level arrays.

Dataset-level stages (metrics, rules, bias, report) read only this, built from the
per-subject records, so `merge` and `--resume` can run them without the model.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xaudit.data.manifest import Subject
from xaudit.core.outputs import RunDirectory, load_record


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

    @property
    def common_grid(self) -> bool:
        """Whether every subject's downsampled maps share one shape (so they can be averaged)."""
        return self.n > 0 and all(m.ndim > 1 for m in self.maps.values())


def load_cohort(run_dir: RunDirectory, subjects: list[Subject], classes: list[str], feature_names: list[str]) -> Cohort:
    """Read the records of every finished subject, in manifest order."""
    done = run_dir.completed()
    kept = [s for s in subjects if s.safe_id in done]
    records = [load_record(run_dir.record_path(s.safe_id)) for s in kept]
    return cohort_from_records(kept, records, classes, feature_names)


def cohort_from_records(subjects: list[Subject], records: list[dict], classes: list[str], feature_names: list[str]) -> Cohort:
    def stack(key: str, width: int | None = None) -> np.ndarray:
        if not records:
            return np.zeros((0, width or 0), np.float32)
        return np.stack([np.asarray(r[key]) for r in records])

    methods = sorted({k.split("__")[1] for r in records for k in r if k.startswith("map__")})
    maps, shares, stats = {}, {}, {}
    for m in methods:
        shapes = {r[f"map__{m}"].shape for r in records}
        maps[m] = np.stack([r[f"map__{m}"].astype(np.float32) for r in records]) if len(shapes) == 1 else np.empty(len(records), object)
        shares[m] = _collect(records, f"share__{m}__")
        stats[m] = _collect(records, f"stat__{m}__")
    image_shapes = {r["image_small"].shape for r in records}
    return Cohort(
        subjects=subjects,
        classes=classes,
        probs=stack("probs", len(classes)),
        labels=np.array([int(r["label"]) for r in records], dtype=int),
        targets=np.array([int(r["target"]) for r in records], dtype=int),
        features=stack("features"),
        feature_names=feature_names,
        concept_acts=stack("concept_acts"),
        concept_grads=stack("concept_grads"),
        probs_fg_blanked=stack("probs_fg_blanked", len(classes)),
        probs_bg_blanked=stack("probs_bg_blanked", len(classes)),
        images_small=np.stack([r["image_small"].astype(np.float32) for r in records]) if len(image_shapes) == 1 else np.empty(len(records), object),
        input_affines=stack("input_affine"),
        input_shapes=stack("input_shape"),
        foreground_fraction=np.array([float(r["foreground_fraction"]) for r in records]),
        groups={c: np.array([s.groups.get(c, "") for s in subjects], dtype=object) for c in (subjects[0].groups if subjects else {})},
        shares=shares,
        stats=stats,
        maps=maps,
    )


def _collect(records: list[dict], prefix: str) -> dict[str, np.ndarray]:
    keys = sorted({k[len(prefix):] for r in records for k in r if k.startswith(prefix)})
    return {k: np.array([float(r.get(prefix + k, np.nan)) for r in records]) for k in keys}


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
