"""Where the model looks: attribution inside the foreground, the background, the border, ROIs.

A classifier that decides on pathology should put its attribution on the anatomy; one
that decides on a site signature often looks at the background, the field-of-view edge or
burned-in markers (the "Clever Hans" horse tag of Lapuschkin et al. 2019, Nat. Commun.
10:1096; hospital tokens in Zech et al. 2018). Per subject, `attribution_shares` splits
positive and absolute attribution over regions; over the dataset,
`compare_attribution_shares` tests whether the shares differ between group values within
a class (Mann-Whitney U for two values, Kruskal-Wallis otherwise, Benjamini-Hochberg
adjusted; effect size eta^2_H = (H - k + 1) / (n - k), Tomczak & Tomczak 2014).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, kruskal, mannwhitneyu

from xaudit.analysis.bias.findings import Finding, severity_for, severity_rank
from xaudit.analysis.bias.inputs import MISSING_GROUP_VALUES, group_strings
from xaudit.core.jsonable import to_jsonable
from xaudit.analysis.bias.mean_maps import MeanMapAccumulator  # noqa: F401 (re-exported: mean maps belong here)
from xaudit.config.bias import BiasParams
from xaudit.data.masks import foreground_from_image  # noqa: F401 (re-exported)
from xaudit.errors import DataError

SHARE_KINDS = ("pos", "abs")


def border_shell(shape: tuple[int, ...], width: int) -> np.ndarray:
    """Boolean mask of the voxels within ``width`` voxels of any face of the volume."""
    shell = np.zeros(shape, dtype=bool)
    if width <= 0:
        return shell
    for axis, size in enumerate(shape):
        index = [slice(None)] * len(shape)
        index[axis] = slice(0, min(width, size))
        shell[tuple(index)] = True
        index[axis] = slice(max(size - width, 0), size)
        shell[tuple(index)] = True
    return shell


def attribution_shares(
    a: np.ndarray, foreground: np.ndarray, rois: dict[str, np.ndarray] | None = None, border: int = 2
) -> dict[str, float]:
    """Share of positive and of absolute attribution in each region of one subject.

    Args:
        a: attribution map, spatial (same shape as ``foreground``) or with a leading
            channel axis (summed over channels first, as the per-voxel attribution).
        foreground: foreground (e.g. brain) mask; nonzero = inside.
        rois: name -> ROI mask of the same shape (may overlap each other).
        border: width in voxels of the border shell at the volume's faces.

    Returns:
        ``{kind}_{region}`` for kind ``pos`` (share of sum(max(a, 0))) and ``abs`` (share of
        sum|a|) and region ``foreground``, ``background``, ``border``, ``roi_<name>``; NaN
        when the map has no positive (or no nonzero) attribution. ``vol_{region}`` gives
        each region's share of the voxels, the share a uniform map would have.

    Raises:
        DataError: when shapes disagree.
    """
    fg = np.asarray(foreground) != 0
    a = np.asarray(a, dtype=float)
    if a.ndim == fg.ndim + 1 and a.shape[1:] == fg.shape:
        a = a.sum(axis=0)
    if a.shape != fg.shape:
        raise DataError(f"attribution map of shape {a.shape} does not match the foreground mask {fg.shape}.")
    regions = {"foreground": fg, "background": ~fg, "border": border_shell(fg.shape, border)}
    for name, mask in (rois or {}).items():
        mask = np.asarray(mask) != 0
        if mask.shape != fg.shape:
            raise DataError(f"ROI mask {name!r} of shape {mask.shape} does not match the map {fg.shape}.")
        regions[f"roi_{name}"] = mask
    weights = {"pos": np.clip(a, 0, None), "abs": np.abs(a)}
    shares: dict[str, float] = {}
    for kind, w in weights.items():
        total = float(w.sum())
        for region, mask in regions.items():
            shares[f"{kind}_{region}"] = float(w[mask].sum()) / total if total > 0 else float("nan")
    for region, mask in regions.items():
        shares[f"vol_{region}"] = float(mask.mean())
    return shares


@dataclass
class ShareTest:
    """A comparison of one share between group values within one class."""

    method: str
    share: str
    column: str
    class_name: str
    test: str
    statistic: float
    p_value: float
    q_value: float
    eta2_h: float
    rank_biserial: float | None
    n: dict[str, int]
    means: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


@dataclass
class LookingResult:
    """Share summaries per method, within-class group tests, findings and notes."""

    summary: dict[str, Any] = field(default_factory=dict)
    tests: list[ShareTest] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"summary": self.summary, "tests": [t.to_dict() for t in self.tests],
                            "notes": self.notes, "signature_tests": self.signature_tests,
                            "findings": [f.id for f in self.findings]})


def rank_test(samples: list[np.ndarray]) -> tuple[str, float, float, float, float | None]:
    """Mann-Whitney (two samples) or Kruskal-Wallis test with the eta^2_H effect size.

    Returns:
        ``(test, statistic, p, eta2_h, rank_biserial)``; rank-biserial r = 2 U1/(n1 n2) - 1
        (positive when the first sample is larger) for two samples, else None.
    """
    pooled = np.concatenate(samples)
    n, k = len(pooled), len(samples)
    if np.all(pooled == pooled[0]):
        return ("mann-whitney" if k == 2 else "kruskal-wallis"), 0.0, 1.0, 0.0, (0.0 if k == 2 else None)
    h_test = kruskal(*samples)
    h = float(h_test.statistic)
    eta2_h = (h - k + 1) / (n - k) if n > k else float("nan")
    if k == 2:
        u, p = mannwhitneyu(samples[0], samples[1], alternative="two-sided")
        return "mann-whitney", float(u), float(p), eta2_h, 2 * float(u) / (len(samples[0]) * len(samples[1])) - 1
    return "kruskal-wallis", h, float(h_test.pvalue), eta2_h, None


def compare_attribution_shares(
    table: pd.DataFrame | list[dict[str, Any]], class_names: list[str], group_columns: list[str],
    params: BiasParams, label_column: str = "label",
) -> LookingResult:
    """Summarise attribution shares and test them between group values within each class.

    Args:
        table: one row per subject (and method): the `attribution_shares` keys, the label
            (class index, -1 unknown, or class name), the group columns and optionally
            ``method``.
        class_names: the class names.
        group_columns: the group columns to compare.
        params: ``background_share_*``, ``border_share_warning``, ``share_p_value``,
            ``share_effect``, ``min_group_size``.
        label_column: name of the label column.

    Returns:
        A `LookingResult`; ``signature_tests`` counts the within-class tests run.
    """
    result = LookingResult()
    columns = list(pd.DataFrame(table).columns)
    absent = [c for c in group_columns if c not in columns]
    if absent:
        result.notes.append(f"Attribution share table has no column(s) {absent}; they are not compared.")
    group_columns = [c for c in group_columns if c in columns]
    frame = _frame(table, class_names, group_columns, label_column)
    methods = sorted(frame["method"].unique()) if "method" in frame else [""]
    for method in methods:
        rows = frame[frame["method"] == method] if method else frame
        shares = [c for c in rows.columns if c.split("_", 1)[0] in SHARE_KINDS]
        if not shares:
            result.notes.append(f"No share columns (pos_*, abs_*) in the attribution share table {method}.")
            continue
        result.summary[method or "all"] = _summary(rows, shares, class_names, group_columns)
        result.findings += _region_findings(rows, method, params)
        tests = _group_tests(rows, method, shares, class_names, group_columns, params, result.notes)
        result.tests += tests
        result.signature_tests += len(tests)
        result.findings += _difference_findings(tests, params)
    return result


def _frame(table: Any, class_names: list[str], group_columns: list[str], label_column: str) -> pd.DataFrame:
    frame = pd.DataFrame(table).copy()
    if label_column not in frame.columns:
        raise DataError(f"attribution share table lacks the label column {label_column!r}; "
                        f"it has {sorted(map(str, frame.columns))}.")
    codes = []
    for row, value in enumerate(frame[label_column].tolist()):
        if isinstance(value, str) and value.strip().lower() in MISSING_GROUP_VALUES:
            codes.append(-1)  # an unknown label, written as an empty cell
        elif isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in class_names:
                raise DataError(f"attribution share table row {row}: label {value!r} is not one of {class_names}.")
            codes.append(class_names.index(value))
        else:
            codes.append(int(value) if value is not None and not pd.isna(value) else -1)
    frame["_label"] = codes
    for column in group_columns:
        frame[column] = group_strings(frame[column].to_numpy())[0]
    return frame


def _mean(values: np.ndarray) -> float:
    """The mean of the non-NaN values (NaN where there are none), summed as pandas' ``mean`` sums:
    NaNs as zeros, then divided by the count (so the result equals pandas' to the last bit)."""
    known = ~np.isnan(values)
    count = int(known.sum())
    return float(np.where(known, values, 0.0).sum() / count) if count else float("nan")


def _floats(column: pd.Series) -> np.ndarray:
    """A share column as float64, any missing value (None, NaN, pd.NA) as NaN."""
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _by_value(values: np.ndarray, keys: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` per distinct key, keys in sorted order."""
    return {str(k): _mean(values[keys == k]) for k in np.unique(keys)}


# Numpy masks instead of pandas groupby: the summaries and tests run per method x share x
# column x class, and pandas' per-call overhead was most of the share checks' time (measured:
# 1.3 of 3.1 s of the stage's looking checks under cProfile, on 80 subjects and 4 methods).
def _summary(rows: pd.DataFrame, shares: list[str], class_names: list[str], columns: list[str]) -> dict:
    out: dict[str, Any] = {"n": len(rows)}
    labels = rows["_label"].to_numpy()
    labelled = labels >= 0
    groups = {column: rows[column].to_numpy(str) for column in columns}
    for share in shares:
        values = _floats(rows[share])
        present = values[~np.isnan(values)]
        entry = {"mean": _mean(values), "median": float(np.median(present)) if present.size else float("nan"),
                 "by_class": {class_names[c]: _mean(values[labels == c]) for c in np.unique(labels[labelled])}}
        for column, keys in groups.items():
            known = labelled & (keys != "")
            entry[f"by_{column}"] = _by_value(values[known], keys[known])
            cells = {c: known & (labels == c) for c in np.unique(labels[known])}
            entry[f"by_class_{column}"] = {class_names[c]: _by_value(values[m], keys[m]) for c, m in cells.items()}
        out[share] = entry
    return out


def _group_tests(rows, method, shares, class_names, columns, params, notes) -> list[ShareTest]:
    tests: list[ShareTest] = []
    labels = rows["_label"].to_numpy()
    values = {share: _floats(rows[share]) for share in shares}
    for column in columns:
        keys = rows[column].to_numpy(str)
        for c, name in enumerate(class_names):
            cell = (labels == c) & (keys != "")
            found, counts = np.unique(keys[cell], return_counts=True)
            usable = sorted(str(v) for v, k in zip(found, counts) if k >= params.min_group_size)
            if len(usable) < 2:
                if len(found):
                    where = f" ({method})" if method else ""
                    notes.append(f"Shares{where}: {column} within {name} has fewer than two values "
                                 f"with >= {params.min_group_size} subjects; not compared.")
                continue
            members = [cell & (keys == v) for v in usable]
            for share in shares:
                present = ~np.isnan(values[share])
                samples = [values[share][m & present] for m in members]
                if min(len(s) for s in samples) < 2:
                    continue
                test, stat, p, eta2, rbc = rank_test(samples)
                tests.append(ShareTest(method, share, column, name, test, stat, p, p, eta2, rbc,
                                       {v: len(s) for v, s in zip(usable, samples)},
                                       {v: float(s.mean()) for v, s in zip(usable, samples)}))
    if tests:
        q = false_discovery_control([t.p_value for t in tests], method="bh")
        for t, qv in zip(tests, q):
            t.q_value = float(qv)
    return tests


def background_enrichment(share: float, volume: float) -> float:
    """Attribution per voxel outside the foreground relative to inside (inf if inside is 0)."""
    if not np.isfinite(volume) or volume <= 0 or volume >= 1:
        return float("inf") if share > 0 else 0.0
    inside = (1 - share) / (1 - volume)
    return float("inf") if inside <= 0 else (share / volume) / inside


def _region_findings(rows: pd.DataFrame, method: str, params: BiasParams) -> list[Finding]:
    findings = []
    tag = f".{method}" if method else ""
    label = f" ({method})" if method else ""
    if "abs_background" in rows:
        share = float(rows["abs_background"].mean())
        volume = float(rows["vol_background"].mean()) if "vol_background" in rows else float("nan")
        enrichment = background_enrichment(share, volume)
        severity = severity_for(share, params.background_share_warning, params.background_share_critical)
        by_density = severity_for(enrichment, params.background_enrichment_warning, 2 * params.background_enrichment_warning)
        if severity is not None and by_density is not None:
            severity = min(severity, by_density, key=severity_rank)
            findings.append(Finding(
                id=f"looking.background{tag}", check="looking", severity=severity,
                title=f"{share:.0%} of |attribution| lies outside the foreground{label}",
                message=(f"On average {share:.0%} of the absolute attribution falls outside the foreground "
                         f"mask, which is {volume:.0%} of the volume: per voxel, the background draws "
                         f"{enrichment:.2g}x the attribution of the anatomy, over {len(rows)} subjects. "
                         "The decision draws on image regions that hold no anatomy."),
                evidence={"mean_share": share, "median_share": float(rows["abs_background"].median()),
                          "background_volume_share": volume, "per_voxel_enrichment": enrichment, "n": len(rows),
                          "subjects_over_warning": int((rows["abs_background"] >= params.background_share_warning).sum())},
                threshold={"background_share_warning": params.background_share_warning,
                           "background_share_critical": params.background_share_critical,
                           "background_enrichment_warning": params.background_enrichment_warning},
                points_to="signature",
            ))
    if "abs_border" in rows:
        share = float(rows["abs_border"].mean())
        volume = float(rows["vol_border"].mean()) if "vol_border" in rows else 0.0
        if share >= params.border_share_warning and share >= 2 * volume:
            findings.append(Finding(
                id=f"looking.border{tag}", check="looking", severity="warning",
                title=f"{share:.0%} of |attribution| lies in the border shell of the volume{label}",
                message=(f"The voxels at the faces of the volume ({volume:.0%} of it) hold {share:.0%} of the "
                         "absolute attribution: look for field-of-view edges, padding or burned-in markers."),
                evidence={"mean_share": share, "border_volume_share": volume, "n": len(rows)},
                threshold={"border_share_warning": params.border_share_warning, "enrichment": 2.0},
                points_to="signature",
            ))
    return findings


def _difference_findings(tests: list[ShareTest], params: BiasParams) -> list[Finding]:
    hits: dict[tuple[str, str, str], list[ShareTest]] = {}
    for t in tests:
        if t.q_value <= params.share_p_value and t.eta2_h >= params.share_effect:
            hits.setdefault((t.method, t.column, t.class_name), []).append(t)
    findings = []
    for (method, column, class_name), group in hits.items():
        best = max(group, key=lambda t: t.eta2_h)
        means = ", ".join(f"{v}: {m:.0%}" for v, m in best.means.items())
        findings.append(Finding(
            id=f"looking.by_group.{column}.{class_name}" + (f".{method}" if method else ""),
            check="looking", severity="warning", column=column,
            title=(f"where the model looks differs by {column} within class {class_name} "
                   f"({best.share}{f' of {method}' if method else ''}, eta2_H {best.eta2_h:.2f}, q={best.q_value:.2g})"),
            message=(f"Among {class_name} subjects, the share {best.share} differs between {column} values "
                     f"({means}; {best.test}, q={best.q_value:.2g}). Shares that differ: "
                     f"{', '.join(t.share for t in group)}."),
            evidence={"tests": [t.to_dict() for t in group]},
            threshold={"share_p_value": params.share_p_value, "share_effect": params.share_effect},
            points_to="signature",
        ))
    return findings
