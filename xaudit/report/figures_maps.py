"""Attribution maps drawn over anatomy: the "where does the model look" pictures.

Conventions (those of nilearn's ``plot_stat_map``): anatomy in grey underneath; the signed
attribution in a diverging map symmetric about 0 (ColorBrewer ``RdBu_r``), so positive
evidence for the target class is red and negative is blue; one colour scale and one
colorbar per figure, so rows can be compared. Weak attribution fades to transparent so
the anatomy stays readable. Volumes are turned to RAS axes with their affine and shown in
neurological orientation (left on the left; anterior, or superior, up).

A 3D row in the ``slices`` layout shows a coronal and a sagittal cut through the peak of the
figure's mean |attribution| (as nilearn places its cuts), then ``slices`` axial slices spread
over the anatomy, then three maximum-intensity projections (MIP) over the whole field of view:
the signed value of largest magnitude along each ray over the mean-intensity projection of
the anatomy, so a hot spot outside the drawn slices (a scanner marker in a corner) cannot
hide. The ``planes`` layout (one subject per row, each on its own grid) shows the three cuts
through that row's own peak and the three MIPs. A 2D image is one panel.

Colour limits are robust and symmetric: ``±`` the `PERCENTILE` th percentile of |attribution|
over the figure's volumes; values below the larger of `THRESHOLD` x limit and the median
|attribution| are transparent, so a map that is positive everywhere (Grad-CAM) shows where it
is high instead of tinting the whole slab.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.ticker import FuncFormatter
from PIL import Image
from scipy import ndimage

from xaudit.report.plotting import DPI, label_text, new_figure, to_png

# ColorBrewer RdBu_r without its pale middle (that range is transparent anyway, see `_overlay`):
# saturated blue for negative, red for positive attribution.
_RDBU = colormaps["RdBu_r"]
DIVERGING = ListedColormap(np.vstack([_RDBU(np.linspace(0.0, 0.36, 128)), _RDBU(np.linspace(0.64, 1.0, 128))]), "xaudit_rdbu")
THRESHOLD, OPAQUE = 0.12, 0.5
PERCENTILE = 99.0  # colour limit: this percentile of |attribution|; said in the captions
PANEL_PX = 124  # longer side of one panel
PANEL_PX_2D = 210  # a 2D image is a single panel per row: draw it larger
GAP_PX = 4
OUTLINE_RGB = (26, 217, 51)  # ROI contours: green
RIGHT_PX = 120  # colorbar, its tick labels and its label
LABEL_PX = 190  # room for the row labels


@dataclass
class MapRow:
    """One row of a map figure: a label, the anatomy and the signed map (same shape)."""

    label: str
    anatomy: np.ndarray
    attribution: np.ndarray
    affine: np.ndarray | None = None  # this row's own grid (``planes`` layout); None: the figure's
    outline: np.ndarray | None = None  # an ROI mask drawn as a contour


@dataclass(frozen=True)
class Scale:
    """The figure's colour limit, the level below which the map is transparent, the grey window."""

    vmax: float
    floor: float
    window: tuple[float, float]


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


def signed_mip(volume: np.ndarray, axis: int) -> np.ndarray:
    """The value of largest magnitude along ``axis`` (sign kept): a signed maximum-intensity projection."""
    pick = np.expand_dims(np.argmax(np.abs(volume), axis=axis), axis)
    return np.take_along_axis(volume, pick, axis=axis).squeeze(axis)


def mip_views(anatomy, attribution, outline, zooms) -> list:
    """Coronal, sagittal and axial MIPs: anatomy as its mean projection, the map signed-max, ROI as its union."""
    views = []
    for title, axis, aspect in (("MIP coronal", 1, zooms[2] / zooms[0]), ("MIP sagittal", 0, zooms[2] / zooms[1]),
                                ("MIP axial", 2, zooms[1] / zooms[0])):
        roi = None if outline is None else outline.max(axis=axis)
        views.append((title, anatomy.mean(axis=axis), signed_mip(attribution, axis), roi, aspect))
    return views


def panel_views(anatomy, attribution, outline, zooms, slices: list[int], peak: tuple[int, ...], layout: str):
    """(title, anatomy 2D, map 2D, outline 2D or None, aspect) of each panel of a row; arrays (horizontal, vertical)."""
    if anatomy.ndim == 2:
        return [("", anatomy, attribution, outline, zooms[1] / zooms[0])]

    def cut(axis: int, k: int):
        index = [slice(None)] * 3
        index[axis] = k
        return anatomy[tuple(index)], attribution[tuple(index)], None if outline is None else outline[tuple(index)]

    x, y, z = peak
    named = layout == "planes"
    views = [(f"coronal y={y}", *cut(1, y), zooms[2] / zooms[0]), (f"sagittal x={x}", *cut(0, x), zooms[2] / zooms[1])]
    views += [(f"axial z={k}", *cut(2, k), zooms[1] / zooms[0]) for k in ([z] if named else slices)]
    if named:
        views = [(t.split()[0] + " (peak)", *rest) for t, *rest in views]
    return views + mip_views(anatomy, attribution, outline, zooms)


_LUT = DIVERGING(np.linspace(0.0, 1.0, DIVERGING.N))[:, :3].astype(np.float32)  # the colormap's own N colours


def _overlay(values: np.ndarray, scale: Scale) -> np.ndarray:
    """RGBA of a signed map: transparent below ``scale.floor``, opaque half-way from there to the limit.

    Like nilearn's thresholded stat maps: near-zero attribution (mostly noise) leaves the
    anatomy visible instead of tinting it. The colours are the colormap's own lookup table
    (what ``DIVERGING(Normalize(-vmax, vmax)(values))`` gives), indexed directly: a page per
    subject must cost milliseconds.
    """
    values = np.asarray(values, dtype=np.float32)
    span = max(2.0 * scale.vmax, 1e-30)
    index = np.clip((values + scale.vmax) * (DIVERGING.N / span), 0, DIVERGING.N - 1).astype(np.intp)
    rgba = np.empty((*values.shape, 4), dtype=np.float32)
    rgba[..., :3] = _LUT[index]
    opaque = scale.floor + (OPAQUE - THRESHOLD) / (1.0 - THRESHOLD) * (scale.vmax - scale.floor)
    ramp = (np.abs(values) - scale.floor) / max(opaque - scale.floor, 1e-12)
    rgba[..., 3] = np.clip(ramp, 0.0, 1.0) * 0.95
    return rgba


def _resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 2D mask (horizontal, vertical) resampled to ``(width, height)`` by nearest neighbour (PIL, in C)."""
    image = Image.fromarray(np.ascontiguousarray(mask.T, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST), dtype=np.float32).T


def panel_scale(scale: Scale, title: str, values: np.ndarray) -> Scale:
    """A MIP panel's own transparency floor: its median |value| when higher than the figure's.

    A projection keeps the largest value along each ray, so a map positive everywhere
    (Grad-CAM) projects to a high value everywhere; only the upper half of the projection is
    coloured then, where the hot spots are.
    """
    if not title.startswith("MIP"):
        return scale
    median = float(np.median(np.abs(values))) if values.size else 0.0
    return Scale(scale.vmax, max(scale.floor, min(median, 0.95 * scale.vmax)), scale.window)


def _contour(mask: np.ndarray) -> np.ndarray:
    """The one-pixel edge of a resized binary mask."""
    inside = mask > 0.5
    return inside & ~ndimage.binary_erosion(inside)


def render_panel(anatomy: np.ndarray, attribution: np.ndarray, aspect: float, scale: Scale, size: int,
                 outline: np.ndarray | None = None) -> np.ndarray:
    """One panel as an 8-bit RGB array (rows top-down) in display orientation (left to right, up).

    Args:
        anatomy, attribution: 2D arrays of one shape, axes (horizontal, vertical).
        aspect: physical height / width of a voxel in this view.
        scale: the figure's colour limit, transparency floor and grey window.
        size: pixels of the panel's longer side.
        outline: an ROI mask of the same shape, drawn as a green contour.
    """
    width, height = anatomy.shape[0], anatomy.shape[1] * aspect
    factor = size / max(width, height)
    out_w, out_h = max(1, round(anatomy.shape[0] * factor)), max(1, round(anatomy.shape[1] * factor * aspect))
    low, high = scale.window
    grey = np.clip((np.asarray(anatomy, np.float32) - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgba = _overlay(attribution, scale)
    alpha = rgba[..., 3:4]
    # blended on the voxel grid, then resampled as a picture (bilinear, in C): a display-sized
    # blend cost ten times more for the same look on scans of a few mm
    rgb = grey[..., None] * (1.0 - alpha) + rgba[..., :3] * alpha
    rgb8 = np.ascontiguousarray(np.transpose(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8), (1, 0, 2)))
    shown = np.array(Image.fromarray(rgb8, mode="RGB").resize((out_w, out_h), Image.Resampling.BILINEAR))
    if outline is not None:  # (vertical, horizontal) here
        shown[_contour(_resize_mask(outline, out_w, out_h)).T] = OUTLINE_RGB
    return shown[::-1]  # vertical axis up -> image rows top-down


def compose_panels(panels: list[list[np.ndarray]], gap: int) -> tuple[np.ndarray, list[int], list[int], list[int], list[int]]:
    """8-bit RGB panels on a white canvas; returns it with column centres/widths and row centres/heights."""
    n_rows, n_cols = len(panels), max(len(r) for r in panels)
    widths = [max(r[c].shape[1] for r in panels if c < len(r)) for c in range(n_cols)]
    heights = [max(p.shape[0] for p in r) for r in panels]
    canvas = np.full((sum(heights) + gap * (n_rows - 1), sum(widths) + gap * (n_cols - 1), 3), 255, dtype=np.uint8)
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


def figure_scale(anatomies: list[np.ndarray], maps: list[np.ndarray], percentile: float = PERCENTILE) -> Scale:
    """One robust symmetric colour limit (a percentile of |map|) and one grey window for a figure."""
    magnitudes = np.concatenate([np.abs(m).ravel() for m in maps])
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    vmax = float(np.percentile(magnitudes, percentile)) if magnitudes.size else 0.0
    if not vmax > 0:
        vmax = float(magnitudes.max()) if magnitudes.size and magnitudes.max() > 0 else 1.0
    floor = max(THRESHOLD * vmax, min(float(np.median(magnitudes)) if magnitudes.size else 0.0, 0.95 * vmax))
    anatomy = np.concatenate([a.ravel() for a in anatomies])
    anatomy = anatomy[np.isfinite(anatomy)]
    window = tuple(float(v) for v in np.percentile(anatomy, [1, 99.5])) if anatomy.size else (0.0, 1.0)
    return Scale(vmax, floor, window)


def draw_canvas(canvas: np.ndarray, margins: tuple[int, int, int, int], vmax: float, colorbar_label: str):
    # the colorbar sits 16 px right of the canvas, 12 px wide; its ticks and label need the
    # rest of the right margin (`RIGHT_PX`), or the label is clipped at the figure's edge
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
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))  # no offset text over the panels
    bar.set_label(label_text(colorbar_label, 22), fontsize=7.5, labelpad=3)
    return fig, ax


def map_grid_png(rows: list[MapRow], affine: np.ndarray | None, slices: int, colorbar_label: str,
                 layout: str = "slices", panel_px: int = PANEL_PX, percentile: float = PERCENTILE) -> bytes:
    """A grid of map panels, one `MapRow` per row (or per column for 2D images).

    All panels are composed into one image and drawn with a single ``imshow``: a figure of
    one Axes per panel costs matplotlib seconds, this costs milliseconds.

    Args:
        rows: the rows; in the ``slices`` layout all arrays of one shape.
        affine: the arrays' affine (for orientation and voxel aspect), unless a row has its own.
        slices: axial slices per 3D row in the ``slices`` layout, after the coronal and sagittal cuts.
        colorbar_label: what the colour measures.
        layout: ``slices`` (common cuts and slices, then MIPs) or ``planes`` (each row's own
            three cuts through its peak, then MIPs; rows may differ in shape).
        panel_px: pixels of a 3D panel's longer side.
        percentile: of |attribution|, the colour limit.

    Returns:
        PNG bytes.
    """
    oriented = []
    for r in rows:
        grid = r.affine if r.affine is not None else affine
        anat, zooms = to_ras(np.nan_to_num(r.anatomy), grid)
        amap = to_ras(np.nan_to_num(r.attribution), grid)[0]
        roi = None if r.outline is None else to_ras(r.outline, grid)[0]
        oriented.append((r.label, anat, amap, roi, zooms))
    scale = figure_scale([o[1] for o in oriented], [o[2] for o in oriented], percentile)
    two_d = oriented[0][1].ndim == 2
    if two_d:
        views = [panel_views(anat, amap, roi, zooms, [], (), layout) for _, anat, amap, roi, zooms in oriented]
    elif layout == "planes":
        views = [panel_views(anat, amap, roi, zooms, [], peak_voxel(amap), layout) for _, anat, amap, roi, zooms in oriented]
    else:
        z_picks = axial_slices(np.mean([o[1] for o in oriented], axis=0), slices)
        peak = peak_voxel(np.mean([np.abs(o[2]) for o in oriented], axis=0))
        views = [panel_views(anat, amap, roi, zooms, z_picks, peak, layout) for _, anat, amap, roi, zooms in oriented]
    size = PANEL_PX_2D if two_d else panel_px
    panels = [[render_panel(a, m, aspect, panel_scale(scale, t, m), size, roi) for t, a, m, roi, aspect in row]
              for row in views]
    if two_d:  # one panel per row: lay the rows out side by side, labelled on top
        panels = [[p[0] for p in panels]]
    canvas, col_x, _, row_y, _ = compose_panels(panels, GAP_PX)
    if two_d:  # narrow columns: one part of each label per line, and room above for the longest
        stacked = [label_text(o[0].replace(" · ", "\n").replace(" (", "\n("), 30) for o in oriented]
        fig, ax = draw_canvas(canvas, (8, 10 + 11 * max(t.count("\n") + 1 for t in stacked), RIGHT_PX, 6), scale.vmax,
                        colorbar_label)
        for c, text in enumerate(stacked):
            ax.text(col_x[c], -4, text, ha="center", va="bottom", fontsize=7.5, linespacing=1.1)
    else:
        label_px = LABEL_PX if any(o[0] for o in oriented) else 8
        fig, ax = draw_canvas(canvas, (label_px, 22, RIGHT_PX, 6), scale.vmax, colorbar_label)
        for c, (title, *_rest) in enumerate(views[0]):
            ax.text(col_x[c], -4, title, ha="center", va="bottom", fontsize=7.5)
        for r, (label, *_rest) in enumerate(oriented):
            ax.text(-8, row_y[r], label_text(label, 36), ha="right", va="center", fontsize=7.5)
    return to_png(fig)

