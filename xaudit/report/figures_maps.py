"""Attribution maps drawn over anatomy: the "where does the model look" pictures.

Conventions (those of nilearn's ``plot_stat_map``): anatomy in grey underneath; the signed
attribution in nilearn's ``cold_hot`` map, symmetric about 0, so positive evidence for the
target class is red-yellow and negative is blue-cyan; one colour scale and one colorbar
per figure, so rows can be compared. Weak attribution fades to transparent so the anatomy
stays readable. Volumes are turned to RAS axes with their affine and shown in neurological
orientation (left on the left, anterior or superior up).

A 3D row shows signed maximum-intensity projections along the three axes (the value of
largest magnitude on each ray, so a marker in a corner or a ghost in the background cannot
hide between slices) and then ``slices`` axial slices through the anatomy. A 2D image is
one panel.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from nilearn.plotting.cm import cold_hot

from xaudit.report.plotting import label_text, new_figure, to_png

PANEL_INCHES = 1.35
PROJECTIONS = (("axial", 2), ("coronal", 1), ("sagittal", 0))


@dataclass
class MapRow:
    """One row of a map figure: a label, the anatomy and the signed map (same shape)."""

    label: str
    anatomy: np.ndarray
    attribution: np.ndarray


def to_ras(volume: np.ndarray, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a 2D/3D array to the RAS axes nearest its affine's; also return voxel sizes.

    Args:
        volume: spatial array.
        affine: its voxel-to-world affine (4x4, or 3x3 for 2D); None keeps the array.

    Returns:
        ``(array, zooms)`` with zooms in the new axis order.
    """
    dims = volume.ndim
    if affine is None or affine.shape[0] < dims + 1:
        return volume, np.ones(dims)
    affine = np.asarray(affine, dtype=float)
    if affine.shape[0] != dims + 1:  # a 2D image with a 4x4 affine: keep its in-plane part
        keep = [*range(dims), affine.shape[0] - 1]
        affine = affine[np.ix_(keep, keep)]
    zooms = np.sqrt((affine[:dims, :dims] ** 2).sum(axis=0))
    if not np.all(np.isfinite(affine)) or np.any(zooms == 0):
        return volume, np.ones(dims)
    ornt = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt("RAS"[:dims])
    transform = nib.orientations.ornt_transform(ornt, target)
    out = nib.orientations.apply_orientation(volume, transform)
    new_zooms = np.ones(dims)
    for axis in range(dims):
        new_zooms[int(transform[axis, 0])] = zooms[axis]
    return np.ascontiguousarray(out), new_zooms


def signed_projection(volume: np.ndarray, axis: int) -> np.ndarray:
    """The value of largest magnitude along ``axis`` (a signed maximum-intensity projection)."""
    index = np.expand_dims(np.abs(volume).argmax(axis=axis), axis)
    return np.take_along_axis(volume, index, axis=axis).squeeze(axis)


def axial_slices(anatomy: np.ndarray, count: int) -> list[int]:
    """``count`` axial slice indices spread evenly over the extent of the anatomy."""
    depth = anatomy.shape[2]
    profile = anatomy.reshape(-1, depth).mean(axis=0)
    inside = np.flatnonzero(profile > profile.min() + 0.2 * (profile.max() - profile.min()))
    low, high = (inside[0], inside[-1]) if inside.size else (0, depth - 1)
    picks = np.linspace(low, high, count + 2)[1:-1] if count < high - low + 1 else np.arange(low, high + 1)
    return sorted({int(round(z)) for z in picks})


def _views(anatomy: np.ndarray, attribution: np.ndarray, zooms: np.ndarray, slices: list[int]):
    """(title, anatomy 2D, map 2D, aspect) of each panel of a row, displayed as ``.T``."""
    if anatomy.ndim == 2:
        return [("", anatomy, attribution, zooms[1] / zooms[0])]
    views = []
    for name, axis in PROJECTIONS:
        plane = [a for a in range(3) if a != axis]
        views.append((f"{name} projection", anatomy.mean(axis=axis), signed_projection(attribution, axis),
                      zooms[plane[1]] / zooms[plane[0]]))
    for z in slices:
        views.append((f"axial z={z}", anatomy[:, :, z], attribution[:, :, z], zooms[1] / zooms[0]))
    return views


def _overlay(values: np.ndarray, vmax: float) -> np.ndarray:
    """RGBA of a signed map in ``cold_hot``; transparency rises as |value| falls to 0."""
    rgba = cold_hot(Normalize(-vmax, vmax, clip=True)(values))
    rgba[..., 3] = np.clip(np.abs(values) / (0.45 * vmax), 0.0, 1.0) * 0.92
    return rgba


def map_grid_png(rows: list[MapRow], affine: np.ndarray | None, slices: int, colorbar_label: str) -> bytes:
    """A grid of map panels, one `MapRow` per row (or per column for 2D images).

    Args:
        rows: the rows, all arrays of one shape.
        affine: the arrays' affine (for orientation and voxel aspect).
        slices: axial slices per 3D row, after the three projections.
        colorbar_label: what the colour measures.

    Returns:
        PNG bytes.
    """
    reoriented = [(r.label, *to_ras(r.anatomy, affine)[:1], *to_ras(r.attribution, affine)) for r in rows]
    zooms = reoriented[0][3]
    values = np.concatenate([np.abs(a[2]).ravel() for a in reoriented])
    vmax = float(np.percentile(values, 99.5)) if values.size else 0.0
    vmax = vmax if vmax > 0 else 1.0
    anat_all = np.concatenate([a[1].ravel() for a in reoriented])
    a_lo, a_hi = np.percentile(anat_all, [1, 99.5])
    z_picks = axial_slices(np.mean([a[1] for a in reoriented], axis=0), slices) if reoriented[0][1].ndim == 3 else []
    panels = [_views(anat, amap, zooms, z_picks) for _, anat, amap, _ in reoriented]
    two_d = reoriented[0][1].ndim == 2
    n_rows, n_cols = (1, len(panels)) if two_d else (len(panels), len(panels[0]))
    fig = new_figure(PANEL_INCHES * n_cols + 1.9, PANEL_INCHES * n_rows + 0.55)
    left, right, top, bottom = 1.6 / fig.get_figwidth(), 1 - 0.75 / fig.get_figwidth(), 1 - 0.3 / fig.get_figheight(), 0.2 / fig.get_figheight()
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.subplots_adjust(left=left if not two_d else 0.02, right=right, top=top, bottom=bottom, wspace=0.04, hspace=0.12)
    for r, (label, *_rest) in enumerate(reoriented):
        for c, (title, anat2d, map2d, aspect) in enumerate(panels[r]):
            ax = axes[0, r] if two_d else axes[r, c]
            ax.imshow(anat2d.T, cmap="gray", origin="lower", vmin=a_lo, vmax=a_hi, aspect=aspect, interpolation="bilinear")
            ax.imshow(_overlay(map2d.T, vmax), origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if two_d:
                ax.set_title(label_text(label, 34), fontsize=7.5)
            else:
                if r == 0:
                    ax.set_title(title, fontsize=7.5)
                if c == 0:
                    ax.set_ylabel(label_text(label, 60), fontsize=7.5, rotation=0, ha="right", va="center", labelpad=4)
    cax = fig.add_axes((right + 0.15 / fig.get_figwidth(), bottom + 0.1 * (top - bottom), 0.12 / fig.get_figwidth(), 0.8 * (top - bottom)))
    bar = fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), cold_hot), cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(colorbar_label, fontsize=7.5)
    return to_png(fig)
