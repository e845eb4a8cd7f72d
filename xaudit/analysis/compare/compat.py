"""Which parts of several runs can be compared, and a refusal that says what differs.

Runs are comparable part by part:
    metrics, prediction shift   need the same class set (class order may differ: columns
                                are matched by name, the reference's order is used)
    attribution, per method     needs the method in every run with the same parameters
    mean-map differences        need the same preprocessing (``data.transforms``)
    findings, roles, rules      always comparable (they are named)
By default any difference is refused with a message listing every difference; with
``allow_partial`` the common part is compared and the rest is listed as left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xaudit.analysis.compare.load import RunData, shared_subjects
from xaudit.errors import DataError


class IncompatibleRunsError(DataError):
    """The runs differ in classes, attribution methods or preprocessing. Exit code 2."""


@dataclass
class Scope:
    """The common part of the runs.

    Attributes:
        classes: the reference's classes (the common ones, in its order, when class sets differ).
        metrics: whether metrics and predictions are compared (same class set everywhere).
        methods: attribution methods compared (in every run, same parameters).
        maps: whether mean-map differences are computed (same preprocessing everywhere).
        differences: one sentence per difference found.
        left_out: ``{"part", "runs", "reason"}`` for each part not compared.
        notes: differences that do not prevent a comparison (class order, layer, shared ids).
        unpaired: runs whose subject ids, though shared with the reference, name other
            subjects (a label or group value differs): never paired with the reference's.
    """

    classes: list[str]
    metrics: bool = True
    methods: list[str] = field(default_factory=list)
    maps: bool = True
    differences: list[str] = field(default_factory=list)
    left_out: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)  # runs whose shared ids name other subjects

    def to_dict(self) -> dict:
        return {"classes": self.classes, "metrics": self.metrics, "methods": self.methods, "maps": self.maps,
                "differences": self.differences, "left_out": self.left_out, "notes": self.notes}


def resolve_scope(runs: list[RunData], allow_partial: bool) -> Scope:
    """The common part of ``runs`` (the first is the reference).

    Raises:
        IncompatibleRunsError: the runs differ and ``allow_partial`` is False; the message
            lists every difference and how to compare anyway.
    """
    ref, others = runs[0], runs[1:]
    scope = Scope(classes=list(ref.classes), methods=sorted(ref.methods))
    for other in others:
        _compare_classes(ref, other, scope)
        _compare_methods(ref, other, scope)
        _compare_preprocessing(ref, other, scope)
        _compare_dimensions(ref, other, scope)
        _compare_layer(ref, other, scope)
        _compare_subjects(ref, other, scope)
    if scope.differences and not allow_partial:
        listed = "\n  - ".join(scope.differences)
        raise IncompatibleRunsError(
            f"the runs cannot be compared as they are (reference: {ref.name}):\n  - {listed}\n"
            "Re-run them with matching settings, or pass --allow-partial (allow_partial=True) to compare"
            " the common part; what is left out is then listed in the result."
        )
    return scope


def _compare_classes(ref: RunData, other: RunData, scope: Scope) -> None:
    if set(ref.classes) != set(other.classes):
        scope.differences.append(
            f"classes differ: {ref.name} has {ref.classes}, {other.name} has {other.classes}"
            f" (only in {ref.name}: {sorted(set(ref.classes) - set(other.classes))};"
            f" only in {other.name}: {sorted(set(other.classes) - set(ref.classes))})"
        )
        scope.metrics = False
        scope.classes = [c for c in scope.classes if c in other.classes]
        scope.left_out.append({"part": "metrics and prediction shift", "runs": [other.name],
                               "reason": "the class sets differ, so metrics and probabilities mean different things"})
    elif ref.classes != other.classes:
        scope.notes.append(
            f"class order differs ({ref.name}: {ref.classes}; {other.name}: {other.classes});"
            f" probabilities are matched by class name in {ref.name}'s order"
        )


def _compare_methods(ref: RunData, other: RunData, scope: Scope) -> None:
    only_ref = sorted(set(ref.methods) - set(other.methods))
    only_other = sorted(set(other.methods) - set(ref.methods))
    if only_ref or only_other:
        scope.differences.append(
            f"attribution methods differ: only in {ref.name}: {only_ref}; only in {other.name}: {only_other}"
        )
    for method in only_ref + only_other:
        owner = ref.name if method in ref.methods else other.name
        scope.left_out.append({"part": f"attribution method {method}", "runs": [owner],
                               "reason": f"only in {owner}"})
    for method in sorted(set(ref.methods) & set(other.methods)):
        changed = describe_changes(ref.methods[method], other.methods[method], ref.name, other.name)
        if changed:
            scope.differences.append(f"parameters of {method} differ: {changed}")
            scope.left_out.append({"part": f"attribution method {method}", "runs": [other.name],
                                   "reason": f"its parameters differ ({changed})"})
    dropped = {d["part"].removeprefix("attribution method ") for d in scope.left_out if d["part"].startswith("attribution method ")}
    scope.methods = [m for m in scope.methods if m in other.methods and m not in dropped]


def _compare_preprocessing(ref: RunData, other: RunData, scope: Scope) -> None:
    changed = describe_changes(ref.transforms, other.transforms, ref.name, other.name)
    if changed:
        scope.differences.append(f"preprocessing (data.transforms) differs: {changed}")
        scope.maps = False
        scope.left_out.append({"part": "mean-map differences", "runs": [other.name],
                               "reason": "the preprocessing differs, so the maps' voxels do not correspond"})


def _compare_dimensions(ref: RunData, other: RunData, scope: Scope) -> None:
    dims = [(run.config.get("provenance") or {}).get("spatial_dims") for run in (ref, other)]
    if None not in dims and dims[0] != dims[1]:
        scope.differences.append(f"input dimensionality differs: {ref.name} is {dims[0]}D, {other.name} is {dims[1]}D")
        if scope.maps:
            scope.maps = False
            scope.left_out.append({"part": "mean-map differences", "runs": [other.name],
                                   "reason": "2D and 3D maps have no voxels in common"})


def _compare_layer(ref: RunData, other: RunData, scope: Scope) -> None:
    layer_ref = (ref.config.get("model") or {}).get("layer")
    layer_other = (other.config.get("model") or {}).get("layer")
    if layer_ref != layer_other:
        scope.notes.append(
            f"model.layer differs ({layer_ref!r} in {ref.name}, {layer_other!r} in {other.name}): layer-based maps"
            " (Grad-CAM) and the features behind rules and roles come from different layers"
        )


def _compare_subjects(ref: RunData, other: RunData, scope: Scope) -> None:
    """Whether the subject ids both runs hold name the same subjects.

    Runs are paired by subject id (a paired bootstrap, the prediction changes). Two cohorts
    numbered alike (``sub-01``... at two sites) share ids and nothing else: a shared id whose
    label or group value differs between the runs shows it, and the runs are then not paired.
    """
    ri, oi = shared_subjects(ref, other)
    if not ri.size:
        return
    mismatch = {}  # what differs per shared id: each group column (named first), then the label
    for column in sorted(set(ref.groups) & set(other.groups)):
        a, b = ref.groups[column][ri].astype(str), other.groups[column][oi].astype(str)
        mismatch[f"{column} differs"] = (a != b) & (a != "") & (b != "")
    known = (ref.labels[ri] >= 0) & (other.labels[oi] >= 0)
    mismatch["the label differs"] = known & (np.asarray(ref.classes, dtype=object)[np.maximum(ref.labels[ri], 0)]
                                             != np.asarray(other.classes, dtype=object)[np.maximum(other.labels[oi], 0)])
    differs = np.logical_or.reduce(list(mismatch.values()))
    if differs.any():
        first = int(np.flatnonzero(differs)[0])
        why = next(what for what, m in mismatch.items() if m[first])
        sid = ref.subject_ids[ri[first]]
        scope.unpaired.append(other.name)
        scope.notes.append(
            f"{int(differs.sum())} of {ri.size} subject ids in both {ref.name} and {other.name} have a different "
            f"label or group value (e.g. {sid}: {why}): the ids name different subjects, so the runs are compared as "
            "independent cohorts (no paired bootstrap, no per-subject prediction changes)")
        return
    manifests = [str((run.config.get("data") or {}).get("manifest") or "") for run in (ref, other)]
    if all(manifests) and manifests[0] != manifests[1]:
        scope.notes.append(
            f"{ref.name} and {other.name} read different manifests ({manifests[0]}; {manifests[1]}) that share "
            f"{ri.size} subject ids with the same labels and groups; they are taken to be the same subjects "
            "(paired). If they are not, compare with --pairing independent")


def describe_changes(a: dict, b: dict, name_a: str, name_b: str, limit: int = 6) -> str:
    """'intensity: 'zscore' (A) vs 'none' (B); ...' for the keys (dotted) whose values differ."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k))
    parts = [f"{k}: {flat_a.get(k)!r} ({name_a}) vs {flat_b.get(k)!r} ({name_b})" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in (d or {}).items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif value is not None:  # an unset option and a missing one mean the same
            out[f"{prefix}{key}"] = value
    return out
