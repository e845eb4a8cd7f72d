"""Attribution maps drawn over anatomy: the "where does the model look" pictures.

Conventions (those of nilearn's ``plot_stat_map``): anatomy in grey underneath; the signed
attribution in a diverging map symmetric about 0 (ColorBrewer ``RdBu_r``), so positive
evidence for the target class is red and negative is blue; one colour scale and one
colorbar per figure, so rows can be compared. Weak attribution fades to transparent so
the anatomy stays readable. Volumes are turned to RAS axes with their affine and shown in
neurological orientation (left on the left; anterior, or superior, up).

A 3D row shows a coronal and a sagittal cut through the peak of the figure's mean
|attribution| (as nilearn places its cuts), then ``slices`` axial slices spread over the
anatomy. A 2D image is one panel.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from scipy import ndimage

from xaudit.report.plotting import DPI, label_text, new_figure, to_png

# ColorBrewer RdBu_r without its pale middle (that range is transparent anyway, see `_overlay`):
# saturated blue for negative, red for positive attribution.
_RDBU = colormaps["RdBu_r"]
DIVERGING = ListedColormap(np.vstack([_RDBU(np.linspace(0.0, 0.36, 128)), _RDBU(np.linspace(0.64, 1.0, 128))]), "xaudit_rdbu")
THRESHOLD, OPAQUE = 0.12, 0.5
PANEL_PX = 124  # longer side of one panel
PANEL_PX_2D = 210  # a 2D image is a single panel per row: draw it larger
GAP_PX = 4
LABEL_PX = 190  # room for the row labels


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


def axial_slices(anatomy: np.ndarray, count: int) -> list[int]:
    """``count`` axial slice indices spread evenly over the extent of the anatomy."""
    depth = anatomy.shape[2]
    profile = anatomy.reshape(-1, depth).mean(axis=0)
    inside = np.flatnonzero(profile > profile.min() + 0.2 * (profile.max() - profile.min()))
    low, high = (inside[0], inside[-1]) if inside.size else (0, depth - 1)
    picks = np.linspace(low, high, count + 2)[1:-1] if count < high - low + 1 else np.arange(low, high + 1)
    return sorted({int(round(z)) for z in picks})


def peak_voxel(attribution: np.ndarray) -> tuple[int, ...]:
    """Where the smoothed |attribution| is largest: the orthogonal cuts go through it."""
    smooth = ndimage.uniform_filter(np.abs(np.nan_to_num(attribution)), size=3)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(smooth)), smooth.shape))


def _views(anatomy: np.ndarray, attribution: np.ndarray, zooms: np.ndarray, slices: list[int], peak: tuple[int, ...]):
    """(title, anatomy 2D, map 2D, aspect) of each panel of a row; arrays indexed (horizontal, vertical)."""
    if anatomy.ndim == 2:
        return [("", anatomy, attribution, zooms[1] / zooms[0])]
    x, y, _ = peak
    views = [(f"coronal y={y}", anatomy[:, y, :], attribution[:, y, :], zooms[2] / zooms[0]),
             (f"sagittal x={x}", anatomy[x, :, :], attribution[x, :, :], zooms[2] / zooms[1])]
    views += [(f"axial z={z}", anatomy[:, :, z], attribution[:, :, z], zooms[1] / zooms[0]) for z in slices]
    return views


def _overlay(values: np.ndarray, vmax: float) -> np.ndarray:
    """RGBA of a signed map: transparent below `THRESHOLD` x vmax, opaque from `OPAQUE` x vmax.

    Like nilearn's thresholded stat maps: near-zero attribution (mostly noise) leaves the
    anatomy visible instead of tinting it.
    """
    rgba = DIVERGING(Normalize(-vmax, vmax, clip=True)(values))
    ramp = (np.abs(values) / vmax - THRESHOLD) / (OPAQUE - THRESHOLD)
    rgba[..., 3] = np.clip(ramp, 0.0, 1.0) * 0.95
    return rgba


def render_panel(anatomy: np.ndarray, attribution: np.ndarray, aspect: float, window: tuple[float, float],
                 vmax: float, size: int) -> np.ndarray:
    """One panel as an RGB array in display orientation (first axis horizontal, second up).

    Args:
        anatomy, attribution: 2D arrays of one shape, axes (horizontal, vertical).
        aspect: physical height / width of a voxel in this view.
        window: grey level range of the anatomy.
        vmax: colour scale limit of the map.
        size: pixels of the panel's longer side.
    """
    width, height = anatomy.shape[0], anatomy.shape[1] * aspect
    scale = size / max(width, height)
    zoom = (scale, scale * aspect)
    grey = ndimage.zoom(anatomy.astype(float), zoom, order=1)
    grey = np.clip((grey - window[0]) / max(window[1] - window[0], 1e-12), 0.0, 1.0)
    rgba = _overlay(ndimage.zoom(attribution.astype(float), zoom, order=1), vmax)
    alpha = rgba[..., 3:4]
    rgb = grey[..., None] * (1.0 - alpha) + rgba[..., :3] * alpha
    return np.transpose(rgb, (1, 0, 2))[::-1]  # (vertical up, horizontal) -> image rows top-down


def _mosaic(panels: list[list[np.ndarray]], gap: int) -> tuple[np.ndarray, list[int], list[int], list[int], list[int]]:
    """Panels on a white canvas; returns it with column centres/widths and row centres/heights."""
    n_rows, n_cols = len(panels), max(len(r) for r in panels)
    widths = [max(r[c].shape[1] for r in panels if c < len(r)) for c in range(n_cols)]
    heights = [max(p.shape[0] for p in r) for r in panels]
    canvas = np.ones((sum(heights) + gap * (n_rows - 1), sum(widths) + gap * (n_cols - 1), 3))
    y = 0
    for r, row in enumerate(panels):
        x = 0
        for c, panel in enumerate(row):
            top, left = y + (heights[r] - panel.shape[0]) // 2, x + (widths[c] - panel.shape[1]) // 2
            canvas[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
            x += widths[c] + gap
        y += heights[r] + gap
    col_x = [int(sum(widths[:c]) + gap * c + widths[c] / 2) for c in range(n_cols)]
    row_y = [int(sum(heights[:r]) + gap * r + heights[r] / 2) for r in range(n_rows)]
    return canvas, col_x, widths, row_y, heights


def _scales(oriented: list) -> tuple[float, tuple[float, float]]:
    """One colour limit (99.5th percentile of |map|) and one grey window for the whole figure."""
    magnitudes = np.concatenate([np.abs(o[2]).ravel() for o in oriented])
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    vmax = float(np.percentile(magnitudes, 99.5)) if magnitudes.size else 0.0
    anatomy = np.concatenate([o[1].ravel() for o in oriented])
    window = tuple(np.percentile(anatomy[np.isfinite(anatomy)], [1, 99.5]))
    return (vmax if vmax > 0 else 1.0), window


def _draw(canvas: np.ndarray, margins: tuple[int, int, int, int], vmax: float, colorbar_label: str):
    """The mosaic at one figure pixel per canvas pixel, with a colorbar on the right."""
    left, top, right, bottom = margins
    fig_w, fig_h = canvas.shape[1] + left + right, canvas.shape[0] + top + bottom
    fig = new_figure(fig_w / DPI, fig_h / DPI)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, canvas.shape[1] / fig_w, canvas.shape[0] / fig_h))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    cax = fig.add_axes(((left + canvas.shape[1] + 16) / fig_w, (bottom + 0.1 * canvas.shape[0]) / fig_h,
                        12 / fig_w, 0.8 * canvas.shape[0] / fig_h))
    bar = fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), DIVERGING), cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(label_text(colorbar_label, 40), fontsize=7.5)
    return fig, ax


def map_grid_png(rows: list[MapRow], affine: np.ndarray | None, slices: int, colorbar_label: str) -> bytes:
    """A grid of map panels, one `MapRow` per row (or per column for 2D images).

    All panels are composed into one image and drawn with a single ``imshow``: a figure of
    one Axes per panel costs matplotlib seconds, this costs milliseconds.

    Args:
        rows: the rows, all arrays of one shape.
        affine: the arrays' affine (for orientation and voxel aspect).
        slices: axial slices per 3D row, after the coronal and sagittal cuts.
        colorbar_label: what the colour measures.

    Returns:
        PNG bytes.
    """
    oriented = [(r.label, to_ras(r.anatomy, affine)[0], *to_ras(r.attribution, affine)) for r in rows]
    vmax, window = _scales(oriented)
    two_d = oriented[0][1].ndim == 2
    z_picks = [] if two_d else axial_slices(np.mean([o[1] for o in oriented], axis=0), slices)
    peak = () if two_d else peak_voxel(np.mean([np.abs(o[2]) for o in oriented], axis=0))
    views = [_views(np.nan_to_num(anat), np.nan_to_num(amap), zooms, z_picks, peak) for _, anat, amap, zooms in oriented]
    size = PANEL_PX_2D if two_d else PANEL_PX
    panels = [[render_panel(a, m, aspect, window, vmax, size) for _, a, m, aspect in row] for row in views]
    if two_d:  # one panel per row: lay the rows out side by side, labelled on top
        panels = [[p[0] for p in panels]]
    canvas, col_x, _, row_y, _ = _mosaic(panels, GAP_PX)
    if two_d:  # narrow columns: one part of each label per line, and room above for the longest
        stacked = [label_text(o[0].replace(" · ", "\n").replace(" (", "\n("), 30) for o in oriented]
        fig, ax = _draw(canvas, (8, 10 + 11 * max(t.count("\n") + 1 for t in stacked), 100, 6), vmax, colorbar_label)
        for c, text in enumerate(stacked):
            ax.text(col_x[c], -4, text, ha="center", va="bottom", fontsize=7.5, linespacing=1.1)
    else:
        fig, ax = _draw(canvas, (LABEL_PX, 22, 100, 6), vmax, colorbar_label)
        for c, (title, *_rest) in enumerate(views[0]):
            ax.text(col_x[c], -4, title, ha="center", va="bottom", fontsize=7.5)
        for r, (label, *_rest) in enumerate(oriented):
            ax.text(-8, row_y[r], label_text(label, 36), ha="right", va="center", fontsize=7.5)
    return to_png(fig)
