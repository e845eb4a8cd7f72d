"""Attribution shift between two runs: per-subject shares and mean maps.

Shares (e.g. ``abs_background``: the fraction of |attribution| outside the foreground)
are compared with a permutation test on the difference of means: two-sample (labels
permuted) for different cohorts, sign-flip on per-subject differences when the runs
share their subjects (Good 2005, "Permutation, Parametric and Bootstrap Tests of
Hypotheses", ch. 3). p-values are Holm-adjusted over all shares and methods of a
comparison. Mean maps (``maps/<method>/mean_<class>.nii.gz``) are subtracted voxel by
voxel when their grids match, and the difference is written as NIfTI.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from xaudit.analysis.compare.load import SKIPPED_SHARE_PREFIX
from xaudit.core.ids import safe_file_id
from xaudit.analysis.compare.params import CompareParams
from xaudit.data.native import save_image


def compare_shares(ref, other, methods: list[str], params: CompareParams, key: str) -> dict:
    """``{method: {share: {"reference", "other", "difference", "p_value", "p_holm", "test", ...}}}``."""
    ref_shares, oth_shares = ref.shares(), other.shares()
    out: dict[str, dict] = {}
    tests = []
    for method in methods:
        a_all, b_all = ref_shares.get(method, {}), oth_shares.get(method, {})
        names = sorted(n for n in set(a_all) & set(b_all) if not n.startswith(SKIPPED_SHARE_PREFIX))
        out[method] = {}
        for name in names:
            entry = share_test(ref.subject_ids, a_all[name], other.subject_ids, b_all[name], params, f"{key}/{method}/{name}")
            out[method][name] = entry
            tests.append(entry)
    for entry, adjusted in zip(tests, holm([t["p_value"] for t in tests])):
        entry["p_holm"] = adjusted
    return out


def share_test(ids_a, a, ids_b, b, params: CompareParams, key: str) -> dict:
    """Difference of mean shares (other - reference) and its permutation p-value."""
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, zlib.crc32(key.encode())]))
    fa, fb = np.isfinite(a), np.isfinite(b)
    entry = {"reference": _mean(a[fa]), "other": _mean(b[fb]), "difference": None, "p_value": None,
             "test": None, "n_reference": int(fa.sum()), "n_other": int(fb.sum())}
    if not fa.any() or not fb.any():
        return entry
    entry["difference"] = entry["other"] - entry["reference"]
    paired = _pairs(ids_a[fa], ids_b[fb]) if params.pairing == "auto" else None
    if paired is not None:
        d = b[fb][paired[1]] - a[fa][paired[0]]
        entry["test"] = "sign-flip permutation (paired subjects)"
        entry["p_value"] = _sign_flip_p(d, params.permutations, rng)
    else:
        entry["test"] = "two-sample permutation"
        entry["p_value"] = _two_sample_p(a[fa], b[fb], params.permutations, rng)
    return entry


def _pairs(ids_a: np.ndarray, ids_b: np.ndarray):
    """Index arrays matching identical subject sets, else None."""
    if ids_a.size != ids_b.size or set(ids_a) != set(ids_b) or len(set(ids_a)) != ids_a.size:
        return None
    position = {sid: i for i, sid in enumerate(ids_b)}
    return np.arange(ids_a.size), np.array([position[s] for s in ids_a])


def _two_sample_p(a: np.ndarray, b: np.ndarray, permutations: int, rng) -> float | None:
    if permutations == 0:
        return None
    pooled = np.concatenate([a, b])
    observed = abs(b.mean() - a.mean())
    shuffled = rng.permuted(np.tile(pooled, (permutations, 1)), axis=1)
    null = np.abs(shuffled[:, a.size:].mean(axis=1) - shuffled[:, : a.size].mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (permutations + 1))


def _sign_flip_p(d: np.ndarray, permutations: int, rng) -> float | None:
    if permutations == 0:
        return None
    observed = abs(d.mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, d.size))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (permutations + 1))


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def compare_mean_maps(ref, other, methods: list[str], classes: list[str], out_dir: Path, base: Path) -> list[dict]:
    """Per method and class: ``other - reference`` mean map written to ``out_dir`` when grids match.

    Returns:
        entries ``{"method", "class", "path" (relative to ``base``), "correlation",
        "mean_abs_difference", "mean_abs_reference", "mean_abs_other"}`` or ``{..., "skipped"}``.
    """
    entries = []
    for method in methods:
        for name in classes:
            entry = {"method": method, "class": name}
            pa, pb = ref.mean_map_path(method, name), other.mean_map_path(method, name)
            if not pa.is_file() or not pb.is_file():
                entry["skipped"] = f"no mean map {pa.relative_to(ref.path) if not pa.is_file() else pb.relative_to(other.path)}"
                entries.append(entry)
                continue
            img_a, img_b = nib.load(str(pa)), nib.load(str(pb))
            if img_a.shape != img_b.shape or not np.allclose(img_a.affine, img_b.affine, atol=1e-4):
                entry["skipped"] = f"grids differ: shape {img_a.shape} vs {img_b.shape}" + (
                    "" if img_a.shape != img_b.shape else " (same shape, different affine)")
                entries.append(entry)
                continue
            a = np.asarray(img_a.dataobj, dtype=np.float64)
            b = np.asarray(img_b.dataobj, dtype=np.float64)
            path = out_dir / method / f"diff_{safe_file_id(name)}.nii.gz"
            write_difference(b - a, img_a, path)
            entry.update(path=str(path.relative_to(base)), **map_statistics(a, b))
            entries.append(entry)
    return entries


def write_difference(data: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    """float32 NIfTI on the reference map's grid, header and affine, written atomically."""
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    image = nib.Nifti1Image(data.astype(np.float32), reference.affine, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    return save_image(image, path)


def map_statistics(a: np.ndarray, b: np.ndarray) -> dict:
    """Pearson correlation of two maps and mean absolute values (of each and of the difference)."""
    x, y = a.ravel(), b.ravel()
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None
    return {"correlation": corr, "mean_abs_difference": float(np.abs(y - x).mean()),
            "mean_abs_reference": float(np.abs(x).mean()), "mean_abs_other": float(np.abs(y).mean())}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None
