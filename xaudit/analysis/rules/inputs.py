"""Checking and cleaning the arrays rule extraction is given.

Every problem a user can fix raises `DataError` naming the array, the feature or the
subject; problems the stage can work around (constant features) become notes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaudit.errors import DataError

UNKNOWN_LABEL = -1


@dataclass
class RulesInputs:
    """Validated inputs.

    Attributes:
        features: float32 ``(n, n_features)``; float32 because scikit-learn's trees
            split on float32 values, so rules evaluated on this matrix agree exactly
            with the forest.
        feature_names: one per column of `features`.
        used: indices of the non-constant columns, the ones the forest sees.
        predicted, labels: int arrays ``(n,)``; labels -1 where unknown (all -1 if None).
        class_names, groups, subject_ids: as given, groups as str arrays.
        notes: plain-sentence notes on what was dropped.
    """

    features: np.ndarray
    feature_names: list[str]
    used: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    groups: dict[str, np.ndarray]
    subject_ids: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> list[str]:
        keep = set(self.used.tolist())
        return [n for i, n in enumerate(self.feature_names) if i not in keep]


def validate_inputs(features: Any, feature_names: Any, predicted: Any, labels: Any,
                    class_names: Any, groups: Any, subject_ids: Any) -> RulesInputs:
    """Check shapes, types and values; drop constant features with a note.

    Returns:
        `RulesInputs`. Raises DataError for anything the user must fix.
    """
    x = _feature_matrix(features)
    n, n_feat = x.shape
    names = _names(feature_names, n_feat, "feature_names", f"features has {n_feat} columns")
    ids = _names(subject_ids, n, "subject_ids", f"features has {n} rows")
    classes = _names(class_names, None, "class_names", "")
    if not classes:
        raise DataError("class_names is empty; expected the network's class names.")
    _check_finite(x, names, ids)
    with np.errstate(over="ignore"):  # overflow becomes Inf, reported just below
        x32 = x.astype(np.float32)
    _check_finite(x32, names, ids, why=" after conversion to float32 (|value| > 3.4e38)")
    pred = _class_indices(predicted, n, "predicted", classes, ids, allow_unknown=False)
    lab = (np.full(n, UNKNOWN_LABEL, dtype=np.int64) if labels is None else
           _class_indices(labels, n, "labels", classes, ids, allow_unknown=True))
    grp = _groups(groups, n)
    used, notes = _non_constant(x32, names)
    return RulesInputs(x32, names, used, pred, lab, classes, grp, ids, notes)


def _feature_matrix(features: Any) -> np.ndarray:
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"features must be a numeric array; could not convert it ({exc}).")
    if x.ndim != 2:
        raise DataError(f"features must be 2-D (n_subjects, n_features). Got shape {x.shape}.")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"features has shape {x.shape}; need at least one subject and "
                        "one feature.")
    return x


def _names(values: Any, expected: int | None, what: str, why: str) -> list[str]:
    names = [str(v) for v in values]
    if expected is not None and len(names) != expected:
        raise DataError(f"{what} has {len(names)} entries but {why}.")
    dupes = [k for k, c in Counter(names).items() if c > 1]
    if dupes:
        raise DataError(f"{what} must be unique; duplicated: {dupes[:5]}.")
    return names


def _check_finite(x: np.ndarray, names: list[str], ids: list[str], why: str = "") -> None:
    bad_cols = np.flatnonzero(~np.isfinite(x).all(axis=0))
    if bad_cols.size == 0:
        return
    parts = []
    for j in bad_cols[:5]:
        col = x[:, j]
        first = ids[int(np.flatnonzero(~np.isfinite(col))[0])]
        parts.append(f"{names[j]!r} ({int(np.isnan(col).sum())} NaN, "
                     f"{int(np.isinf(col).sum())} Inf; first subject {first!r})")
    more = f" and {bad_cols.size - 5} more" if bad_cols.size > 5 else ""
    raise DataError(f"features must be finite{why}; {bad_cols.size} feature(s) are not: "
                    f"{', '.join(parts)}{more}.")


def _class_indices(values: Any, n: int, what: str, classes: list[str], ids: list[str],
                   allow_unknown: bool) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{what} must have shape ({n},), one class index per subject. "
                        f"Got shape {arr.shape}.")
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and
                                        not np.all(np.isfinite(arr) & (arr == np.round(arr)))):
        raise DataError(f"{what} must hold integer class indices. Got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    low = UNKNOWN_LABEL if allow_unknown else 0
    bad = np.flatnonzero((arr < low) | (arr >= len(classes)))
    if bad.size:
        i = int(bad[0])
        unknown = " or -1 for unknown" if allow_unknown else ""
        raise DataError(f"{what} must be class indices in [0, {len(classes) - 1}]{unknown} "
                        f"(class_names {classes}). Got {int(arr[i])} for subject {ids[i]!r} "
                        f"({bad.size} subject(s) out of range).")
    return arr


def _groups(groups: Any, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, values in (groups or {}).items():
        arr = np.asarray(values).astype(str)
        if arr.shape != (n,):
            raise DataError(f"groups[{name!r}] must have one value per subject, shape ({n},). "
                            f"Got shape {arr.shape}.")
        out[str(name)] = arr
    return out


def _non_constant(x32: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    constant = np.ptp(x32, axis=0) == 0
    used = np.flatnonzero(~constant)
    if not constant.any():
        return used, []
    dropped = [names[j] for j in np.flatnonzero(constant)]
    shown = ", ".join(repr(d) for d in dropped[:10])
    more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
    if used.size == 0:
        return used, [f"All {len(dropped)} features are constant across subjects; no rule "
                      "can separate subjects, so none were extracted."]
    return used, [f"Dropped {len(dropped)} constant feature(s) (same value for every subject, "
                  f"no split possible): {shown}{more}."]
