"""Retention: how much of each image region a layer keeps, read off its inversion.

For every subject, depth and region, the inversion ``x*`` is correlated with the original
input inside the region (Pearson and Spearman). A region the layer keeps comes back in
``x*`` (high correlation); one it discards is filled in by the prior (near zero). Regions:
the foreground (anatomy), the background, the border shell (within ``k`` voxels of a face,
where scanner artefacts, burned-in labels and field-of-view edges live) and each ROI of the
manifest (e.g. a lesion mask).

A layer that keeps the background or border to the last block while the ROI fades
decides with a representation in which a site signature survives and the pathology does
not, the "Clever Hans" pattern of Lapuschkin et al. (2019, Nat. Commun. 10:1096), seen
here in the representation rather than in an attribution map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from xaudit.analysis.bias.findings import Finding
from xaudit.analysis.bias.looking import border_shell
from xaudit.config.interrogate import InterrogateParams

SITE_REGIONS = ("background", "border")
MIN_VOXELS = 3


def region_masks(
    foreground: np.ndarray, rois: dict[str, np.ndarray], border_width: int, restricted: bool = False
) -> dict[str, np.ndarray]:
    """The regions of one subject on the model-input grid.

    Args:
        foreground: bool ``(*S)``.
        rois: ROI name -> bool ``(*S)``.
        border_width: border shell width in voxels.
        restricted: the inversion held the outside of the foreground fixed, so background
            and border say nothing and are left out.

    Returns:
        region name -> bool mask (``roi_<name>`` for ROIs).
    """
    fg = np.asarray(foreground, bool)
    regions = {"foreground": fg}
    if not restricted:
        regions["background"] = ~fg
        regions["border"] = border_shell(fg.shape, border_width)
    for name, mask in rois.items():
        regions[f"roi_{name}"] = np.asarray(mask, bool)
    return regions


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or too short."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size < MIN_VOXELS:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def region_correlations(original: np.ndarray, inverted: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Pearson and Spearman correlation of ``inverted`` with ``original`` per region.

    Args:
        original, inverted: ``(C, *S)`` arrays (channels pooled into one sample per region).
        regions: region -> bool ``(*S)``.

    Returns:
        region -> ``{"pearson", "spearman", "voxels"}`` (NaN where undefined).
    """
    out = {}
    for name, mask in regions.items():
        a = original[:, mask]
        b = inverted[:, mask]
        out[name] = {
            "pearson": pearson(a, b),
            "spearman": pearson(rankdata(a.ravel()), rankdata(b.ravel())) if a.size >= MIN_VOXELS else float("nan"),
            "voxels": int(mask.sum()),
        }
    return out


def retention_table(
    per_subject: list[dict[str, Any]], layers: list[str], subsets: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Mean correlation per subset x depth x region.

    Args:
        per_subject: rows ``{"subject_id", "layer", "region", "pearson", "spearman"}`` and
            optionally ``start_pearson``.
        layers: the layers in depth order.
        subsets: subset name (``all``, ``site=B``) -> subject ids.

    Returns:
        Rows ``{"subset", "layer", "depth", "region", "n", "pearson", "pearson_sd", "spearman",
        "start_pearson"}`` (``n`` counts subjects where the correlation is defined;
        ``start_pearson`` is the starting image's correlation, the floor of a discarded region).
    """
    rows = []
    regions = list(dict.fromkeys(r["region"] for r in per_subject))
    for subset, ids in subsets.items():
        members = set(ids)
        for depth, layer in enumerate(layers):
            for region in regions:
                picked = [r for r in per_subject if r["layer"] == layer and r["region"] == region and r["subject_id"] in members]
                p = np.array([r["pearson"] for r in picked], float)
                s = np.array([r["spearman"] for r in picked], float)
                b = np.array([r.get("start_pearson", np.nan) for r in picked], float)
                ok = np.isfinite(p)
                rows.append({
                    "subset": subset, "layer": layer, "depth": depth, "region": region, "n": int(ok.sum()),
                    "pearson": float(p[ok].mean()) if ok.any() else None,
                    "pearson_sd": float(p[ok].std()) if ok.sum() > 1 else None,
                    "spearman": float(np.nanmean(s)) if np.isfinite(s).any() else None,
                    "start_pearson": float(np.nanmean(b)) if np.isfinite(b).any() else None,
                })
    return rows


def _value(table: list[dict], subset: str, layer: str, region: str) -> float | None:
    """Correlation above the start's: what the layer brought back, not what the start had."""
    for row in table:
        if row["subset"] == subset and row["layer"] == layer and row["region"] == region:
            if row["pearson"] is None:
                return None
            return row["pearson"] - max(row.get("start_pearson") or 0.0, 0.0)
    return None


def retention_finding(table: list[dict[str, Any]], layers: list[str], params: InterrogateParams) -> Finding | None:
    """A finding when a site region survives to the deepest layer while the ROI fades.

    Retention here is the Pearson correlation above the starting image's own (which is
    about zero from noise; from the mean image it discounts the shared anatomy and any
    artefact shared by many subjects). For every subset (all subjects, each group value),
    the site region (background or border) with the highest retention at the deepest layer
    is compared with
    the pathology region: the best-kept ROI when the manifest has ROIs, else the
    foreground. The finding fires where the site region keeps ``r >= retention_high`` and
    exceeds the pathology region by ``retention_gap`` (critical at twice the gap); the
    subset with the widest gap is reported.

    Returns:
        The `Finding` (check ``retention``, points to ``signature``), or None.
    """
    if not table or not layers:
        return None
    deepest, first = layers[-1], layers[0]
    regions = list(dict.fromkeys(r["region"] for r in table))
    rois = [r for r in regions if r.startswith("roi_")]
    pathology_regions = rois or ["foreground"]
    best = None
    for subset in dict.fromkeys(r["subset"] for r in table):
        site = [(reg, _value(table, subset, deepest, reg)) for reg in SITE_REGIONS if reg in regions]
        site = [(reg, v) for reg, v in site if v is not None]
        path = [(reg, _value(table, subset, deepest, reg)) for reg in pathology_regions]
        path = [(reg, v) for reg, v in path if v is not None]
        if not site or not path:
            continue
        site_region, site_r = max(site, key=lambda t: t[1])
        path_region, path_r = max(path, key=lambda t: t[1])
        gap = site_r - path_r
        if site_r >= params.retention_high and gap >= params.retention_gap and (best is None or gap > best["gap"]):
            best = {"subset": subset, "site_region": site_region, "site_r": site_r, "path_region": path_region,
                    "path_r": path_r, "gap": gap, "path_r_first": _value(table, subset, first, path_region),
                    "site_r_first": _value(table, subset, first, site_region)}
    if best is None:
        return None
    return _finding(best, deepest, first, bool(rois), params)


def _finding(best: dict, deepest: str, first: str, has_rois: bool, params: InterrogateParams) -> Finding:
    severity = "critical" if best["gap"] >= 2 * params.retention_gap else "warning"
    path_name = best["path_region"].removeprefix("roi_") if has_rois else "foreground (no ROI in the manifest)"
    subset = "all subjects" if best["subset"] == "all" else best["subset"]
    title = (
        f"The {best['site_region']} survives to {deepest} (r={best['site_r']:.2f}) while the"
        f" {path_name} fades (r={best['path_r']:.2f}), {subset}"
    )
    message = (
        f"Inverting the representation at {deepest}, the deepest layer interrogated, reproduces the"
        f" {best['site_region']} of the inputs (mean Pearson r={best['site_r']:.2f} with the original) but not the"
        f" {path_name} (r={best['path_r']:.2f}; at {first}: {_fmt(best['path_r_first'])}). The network carries"
        " image content from where scanner and site artefacts live to its last block, and less of the pathology:"
        " a shortcut candidate. Look at the inversions and the activation maxima, and test the decision with"
        " the background masked (bias masked-input check) or on data from other sites."
    )
    evidence = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}
    evidence.update({"deepest_layer": deepest, "first_layer": first})
    return Finding(
        id=f"retention.{best['site_region']}.{best['subset']}", check="retention", severity=severity,
        title=title, message=message, evidence=evidence,
        threshold={"retention_high": params.retention_high, "retention_gap": params.retention_gap},
        points_to="signature",
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"r={value:.2f}"
