"""What the bias checks take in: `BiasInputs`, its validation, and missing-value rules.

All per-subject arrays are aligned: row ``i`` of each is subject ``i``. Unknown labels are
``-1``; a group value is missing when it is None, NaN or one of `MISSING_GROUP_VALUES`
(what a CSV's empty cell becomes after ``astype(str)``). Checks leave missing values out
of the analyses they would distort and say so in their notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xaudit.errors import DataError
from xaudit.core.pages import row_blocks

MISSING_GROUP_VALUES = frozenset({"", "nan", "none", "na", "n/a", "<na>", "null"})


def group_strings(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Group values as strings plus a mask of the known ones.

    Returns:
        ``(strings, known)``: a str array (missing -> "") and a bool array.
    """
    items = np.asarray(values, dtype=object).ravel()
    strings = np.array(
        ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in items],
        dtype=object,
    )
    known = np.array([s.strip().lower() not in MISSING_GROUP_VALUES for s in strings], dtype=bool)
    strings[~known] = ""
    return strings.astype(str), known


def values_with_count(values: np.ndarray, keep: np.ndarray, min_count: int) -> list[str]:
    """Sorted distinct ``values[keep]`` that occur at least ``min_count`` times."""
    uniq, counts = np.unique(values[keep], return_counts=True)
    return [str(u) for u, c in zip(uniq, counts) if c >= min_count]


@dataclass
class BiasInputs:
    """The arrays the bias checks run on; optional ones enable optional checks.

    Attributes:
        labels: ``(n,)`` int true class index, -1 unknown.
        predicted: ``(n,)`` int predicted class index.
        probs: ``(n, K)`` class probabilities, or None (no AUCs then).
        class_names: the K class names.
        groups: group column -> ``(n,)`` values (site, scanner, sex, ...).
        splits: ``(n,)`` split name per subject, or None.
        subject_ids: ``(n,)`` ids for naming representative subjects, or None.
        features: ``(n, F)`` layer features for probes and feature roles.
        feature_names: F names (default ``f0``, ``f1``, ...).
        importances: feature name -> importance from the rule surrogate.
        attribution_shares: table (DataFrame or list of dicts) of
            `xaudit.analysis.bias.looking.attribution_shares` rows per subject, with a ``label``
            column, the group columns and optionally ``method``.
        probs_fg_blanked: ``(n, K)`` probabilities with the foreground blanked.
        probs_bg_blanked: ``(n, K)`` probabilities with the background blanked.
        tcav_activations: ``(n, F)`` activations of the TCAV layer (pooled or flattened).
        tcav_gradients: ``(n, F)`` gradient of the target logit w.r.t. those activations.
        tcav_targets: ``(n,)`` the class whose logit each gradient row is of (default
            ``predicted``).
        spray_maps: ``(n, D)`` downsampled, flattened attribution maps.
        spray_classes: ``(n,)`` the class each map explains (default ``predicted``).
    """

    labels: Any
    predicted: Any
    probs: Any
    class_names: list[str]
    groups: dict[str, Any] = field(default_factory=dict)
    splits: Any = None
    subject_ids: Any = None
    features: Any = None
    feature_names: list[str] | None = None
    importances: dict[str, float] | None = None
    attribution_shares: Any = None
    probs_fg_blanked: Any = None
    probs_bg_blanked: Any = None
    tcav_activations: Any = None
    tcav_gradients: Any = None
    tcav_targets: Any = None
    spray_maps: Any = None
    spray_classes: Any = None

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        k = len(self.class_names)
        if k < 1:
            raise DataError("bias input `class_names` must name at least one class. Got [] instead.")
        self.labels = class_indices("labels", self.labels, None, k, allow_unknown=True)
        n = len(self.labels)
        self.predicted = class_indices("predicted", self.predicted, n, k, allow_unknown=False)
        self.probs = _matrix("probs", self.probs, n, k)
        self.groups = {str(c): _vector(f"groups[{c!r}]", v, n) for c, v in self.groups.items()}
        self.splits = None if self.splits is None else _vector("splits", self.splits, n).astype(str)
        if self.subject_ids is None:
            self.subject_ids = np.array([str(i) for i in range(n)])
        self.subject_ids = _vector("subject_ids", self.subject_ids, n).astype(str)
        self.features = _matrix("features", self.features, n, None)
        self._check_feature_names()
        self.probs_fg_blanked = _matrix("probs_fg_blanked", self.probs_fg_blanked, n, k)
        self.probs_bg_blanked = _matrix("probs_bg_blanked", self.probs_bg_blanked, n, k)
        self.tcav_activations = _matrix("tcav_activations", self.tcav_activations, n, None)
        width = None if self.tcav_activations is None else self.tcav_activations.shape[1]
        self.tcav_gradients = _matrix("tcav_gradients", self.tcav_gradients, n, width)
        if self.tcav_targets is not None:
            self.tcav_targets = class_indices("tcav_targets", self.tcav_targets, n, k, allow_unknown=False)
        # the maps keep their float precision: a float64 copy of 10,000 subjects' maps is gigabytes
        self.spray_maps = _matrix("spray_maps", self.spray_maps, n, None, keep_float=True)
        if self.spray_classes is not None:
            self.spray_classes = class_indices("spray_classes", self.spray_classes, n, k, allow_unknown=False)

    @property
    def n(self) -> int:
        """Number of subjects."""
        return len(self.labels)

    def _check_feature_names(self) -> None:
        if self.features is None:
            return
        width = self.features.shape[1]
        if self.feature_names is None:
            self.feature_names = [f"f{i}" for i in range(width)]
        self.feature_names = [str(f) for f in self.feature_names]
        if len(self.feature_names) != width:
            raise DataError(
                f"bias input `feature_names` must name the {width} feature columns. "
                f"Got {len(self.feature_names)} names instead."
            )


def class_indices(name: str, values: Any, n: int | None, k: int, allow_unknown: bool) -> np.ndarray:
    """Validate a vector of class indices in ``[0, k)`` (or -1 when ``allow_unknown``)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        raise DataError(f"bias input `{name}` must be a vector of {n or 'n'} class indices. Got shape {arr.shape} instead.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise DataError(f"bias input `{name}` must hold integer class indices. Got dtype {arr.dtype} instead.")
    arr = arr.astype(int)
    low = -1 if allow_unknown else 0
    bad = (arr < low) | (arr >= k)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"bias input `{name}` must hold class indices in [{low}, {k - 1}]. "
            f"Got {arr[row]} at row {row} instead."
        )
    return arr


def _vector(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"bias input `{name}` must have one value per subject (n={n}). Got shape {arr.shape} instead.")
    return arr


def _matrix(name: str, values: Any, n: int, width: int | None, keep_float: bool = False) -> np.ndarray | None:
    """``values`` as an ``(n, width)`` finite float array (float64, or its own float type with ``keep_float``)."""
    if values is None:
        return None
    arr = np.asarray(values)
    if not (keep_float and np.issubdtype(arr.dtype, np.floating)):
        arr = np.asarray(arr, dtype=float)
    expected = f"({n}, {width if width is not None else 'F'})"
    if arr.ndim != 2 or arr.shape[0] != n or (width is not None and arr.shape[1] != width):
        raise DataError(f"bias input `{name}` must have shape {expected}. Got shape {arr.shape} instead.")
    for start, block in row_blocks(arr):  # a mask of a block of rows at a time (a mapped block's pages released)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise DataError(f"bias input `{name}` must be finite. Got NaN or inf in row {row}.")
    return arr
