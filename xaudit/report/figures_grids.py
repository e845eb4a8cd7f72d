"""Grids of map panels beyond the figure rows of `figures_maps`: MIP tables, subject strips, mosaics.

* `mip_grid_png`: rows x columns of maximum-intensity projections on one colour scale (the
  picture under the verdict: class x site, and the site difference).
* `planes_png`: one subject's map in three planes and three MIPs, without matplotlib, so a
  page per subject costs milliseconds.
* `mosaic_png`: every subject's map side by side, like FSL's ``slicesdir``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from xaudit.report.figures_maps import (GAP_PX, PANEL_PX_2D, PERCENTILE, RIGHT_PX, MapRow, compose_panels,
                                        draw_canvas, figure_scale, mip_views, panel_scale, panel_views, peak_voxel,
                                        render_panel, to_ras)
from xaudit.report.plotting import label_text, to_png

MIP_LABEL_PX = 130  # row labels of a MIP table are short (a class and its count)


def _projection(row: MapRow, affine, axis_name: str):
    """(anatomy 2D, map 2D, outline 2D or None, aspect) of one MIP of a row."""
    grid = row.affine if row.affine is not None else affine
    anat, zooms = to_ras(np.nan_to_num(row.anatomy), grid)
    amap = to_ras(np.nan_to_num(row.attribution), grid)[0]
    roi = None if row.outline is None else to_ras(row.outline, grid)[0]
    if anat.ndim == 2:
        return anat, amap, roi, zooms[1] / zooms[0]
    title = f"MIP {axis_name}"
    return next(v[1:] for v in mip_views(anat, amap, roi, zooms) if v[0] == title)


def mip_grid_png(grid: list[list[MapRow | None]], row_labels: list[str], column_labels: list[str],
                 affine: np.ndarray | None, colorbar_label: str, directions: tuple[str, ...] = ("coronal", "axial"),
                 panel_px: int = 112, percentile: float = PERCENTILE) -> bytes:
    """A compact table of maximum-intensity projections: rows x columns of maps, one colour scale.

    Each cell shows the MIPs of its map in ``directions`` side by side, over the whole field of
    view; a 2D map is shown as is. Empty cells (None) stay white.

    Args:
        grid: rows of cells (a `MapRow` or None); the MapRow labels are not drawn.
        row_labels, column_labels: one per row and per column of ``grid``.
        affine: the maps' affine, unless a cell's MapRow has its own.
        colorbar_label: what the colour measures.
        directions: MIP directions per cell (``coronal``, ``sagittal``, ``axial``).
    """
    cells = [c for row in grid for c in row if c is not None]
    scale = figure_scale([c.anatomy for c in cells], [c.attribution for c in cells], percentile)
    two_d = cells[0].anatomy.ndim == 2
    per_cell = 1 if two_d else len(directions)
    panels, blank = [], None
    for row in grid:
        drawn = []
        for cell in row:
            for direction in directions[:per_cell]:
                if cell is None:
                    drawn.append(None)
                    continue
                anat, amap, roi, aspect = _projection(cell, affine, direction)
                drawn.append(render_panel(anat, amap, aspect, panel_scale(scale, "" if two_d else "MIP", amap),
                                          PANEL_PX_2D if two_d else panel_px, roi))
                blank = drawn[-1]
        panels.append(drawn)
    panels = [[p if p is not None else np.full_like(blank, 255) for p in row] for row in panels]
    canvas, col_x, _, row_y, _ = compose_panels(panels, GAP_PX)
    fig, ax = draw_canvas(canvas, (MIP_LABEL_PX, 36, RIGHT_PX, 6), scale.vmax, colorbar_label)
    for c, label in enumerate(column_labels):
        centre = np.mean(col_x[c * per_cell:(c + 1) * per_cell])
        ax.text(centre, -16, label_text(label, 34), ha="center", va="bottom", fontsize=8, fontweight="bold")
        for k, direction in enumerate(directions[:per_cell] if not two_d else []):
            ax.text(col_x[c * per_cell + k], -3, f"MIP {direction}", ha="center", va="bottom", fontsize=7)
    for r, label in enumerate(row_labels):
        ax.text(-8, row_y[r], label_text(label, 24), ha="right", va="center", fontsize=8)
    return to_png(fig)


PLANE_TITLES = ("coronal (peak)", "sagittal (peak)", "axial (peak)", "MIP coronal", "MIP sagittal", "MIP axial")


def planes_png(row: MapRow, panel_px: int = 170, percentile: float = PERCENTILE) -> tuple[bytes, float]:
    """One subject's map in three planes through its peak and three MIPs, as a bare PNG strip.

    No matplotlib (a page per subject must cost milliseconds): the panels are composed with
    numpy and encoded by PIL; titles and the colour limit go into the page's caption.

    Returns:
        ``(png, vmax)``: the PNG bytes and the colour limit (±vmax).
    """
    anat, zooms = to_ras(np.nan_to_num(row.anatomy), row.affine)
    amap = to_ras(np.nan_to_num(row.attribution), row.affine)[0]
    roi = None if row.outline is None else to_ras(row.outline, row.affine)[0]
    scale = figure_scale([anat], [amap], percentile)
    if anat.ndim == 2:
        views = panel_views(anat, amap, roi, zooms, [], (), "planes")
    else:
        views = panel_views(anat, amap, roi, zooms, [], peak_voxel(amap), "planes")
    panels = [[render_panel(a, m, aspect, panel_scale(scale, t, m), panel_px, r) for t, a, m, r, aspect in views]]
    canvas = compose_panels(panels, GAP_PX)[0]
    image = Image.fromarray(canvas)
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue(), scale.vmax


def mosaic_png(labels: list[str], anatomies: np.ndarray, maps: np.ndarray, affine: np.ndarray | None,
               columns: int = 10, tile_px: int = 84, percentile: float = PERCENTILE) -> bytes:
    """Every subject's axial MIP of its map over its mean-intensity projection, labelled, one colour scale.

    Args:
        labels: one per subject (its id).
        anatomies, maps: ``(n, *spatial)`` arrays on one grid (3D: projected along the vertical axis).
        affine: their affine.
        columns: tiles per row.
        tile_px: pixels of a tile's longer side.
    """
    oriented = [(to_ras(np.nan_to_num(a), affine), to_ras(np.nan_to_num(m), affine)[0]) for a, m in zip(anatomies, maps)]
    scale = figure_scale([o[0][0] for o in oriented], [o[1] for o in oriented], percentile)
    tiles = []
    for (anat, zooms), amap in oriented:
        if anat.ndim == 3:
            view = next(v for v in mip_views(anat, amap, None, zooms) if v[0] == "MIP axial")
            anat2, amap2, aspect = view[1], view[2], view[4]
        else:
            anat2, amap2, aspect = anat, amap, zooms[1] / zooms[0]
        tiles.append(render_panel(anat2, amap2, aspect, panel_scale(scale, "MIP", amap2), tile_px))
    rows = [tiles[k:k + columns] for k in range(0, len(tiles), columns)]
    canvas, col_x, _, row_y, heights = compose_panels(rows, 16)  # the gap holds each tile's label
    fig, ax = draw_canvas(canvas, (8, 6, RIGHT_PX, 18), scale.vmax, "attribution")
    for k, label in enumerate(labels):
        r, c = divmod(k, columns)
        ax.text(col_x[c], row_y[r] + heights[r] / 2 + 2, label_text(label, 14), ha="center", va="top", fontsize=6.5)
    return to_png(fig)
