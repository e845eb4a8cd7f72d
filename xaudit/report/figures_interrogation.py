"""Figures of the interrogation: inversions beside the original, channel maxima, retention.

Slices go through the original's brightest voxel, so whatever stands out most (a lesion, a
bright corner artefact) is in view, and the same slices are shown at every depth.
"""

from __future__ import annotations

import numpy as np

from xaudit.report.plotting import group_color, label_text, new_figure, style_axes, to_png

REGION_STYLE = {"foreground": "-", "background": "--", "border": ":"}


def slice_planes(volume: np.ndarray) -> list[tuple[str, tuple]]:
    """``(label, index)`` of the planes through ``volume``'s brightest voxel (one plane in 2D)."""
    peak = np.unravel_index(int(np.argmax(volume)), volume.shape)
    if volume.ndim == 2:
        return [("2D", (slice(None), slice(None)))]
    planes = []
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = int(peak[axis])
        planes.append((f"axis {axis} = {peak[axis]}", tuple(index)))
    return planes


def display_range(volume: np.ndarray) -> tuple[float, float]:
    """1st-99th percentile, so a small bright artefact saturates instead of hiding the anatomy;
    a constant volume shows as mid-grey."""
    lo, hi = (float(v) for v in np.percentile(volume, [1, 99]))
    if hi <= lo:
        lo, hi = float(np.min(volume)), float(np.max(volume))
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi


def _show(ax, image: np.ndarray, vmin: float, vmax: float) -> None:
    ax.imshow(np.asarray(image, float).T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def inversion_figure(original: np.ndarray, inversions: dict[str, np.ndarray], title: str) -> bytes:
    """PNG: rows = planes through the peak, columns = original then each layer's inversion.

    Args:
        original: spatial array (first input channel) on the model-input grid.
        inversions: layer -> inversion of the same shape, in depth order.
        title: figure title (the subject).
    """
    planes = slice_planes(original)
    columns = [("original", original), *inversions.items()]
    vmin, vmax = display_range(original)
    fig = new_figure(1.9 * len(columns), 1.9 * len(planes) + 0.5)
    for r, (plane_label, index) in enumerate(planes):
        for c, (name, volume) in enumerate(columns):
            ax = fig.add_subplot(len(planes), len(columns), r * len(columns) + c + 1)
            _show(ax, volume[index], vmin, vmax)
            if r == 0:
                ax.set_title(label_text(name, 24), fontsize=7)
            if c == 0:
                ax.set_ylabel(plane_label, fontsize=7)
    fig.suptitle(label_text(title, 60), fontsize=9)
    return to_png(fig)


def maximisation_figure(images: dict[str, np.ndarray]) -> bytes:
    """PNG: one row per channel, the planes through its image's brightest voxel."""
    names = list(images)
    ncols = 3 if next(iter(images.values())).ndim == 3 else 1
    fig = new_figure(2.0 * ncols + 1.0, 1.9 * len(names) + 0.3)
    for r, name in enumerate(names):
        volume = images[name]
        vmin, vmax = display_range(volume)
        for c, (plane_label, index) in enumerate(slice_planes(volume)):
            ax = fig.add_subplot(len(names), ncols, r * ncols + c + 1)
            _show(ax, volume[index], vmin, vmax)
            ax.set_title(label_text(plane_label, 20), fontsize=7)
            if c == 0:
                ax.set_ylabel(label_text(name, 26), fontsize=7)
    return to_png(fig)


def retention_figure(table: list[dict], layers: list[str], subsets: list[str]) -> bytes:
    """PNG: Pearson correlation of inversion with original vs depth, one line per region.

    One panel per subset (all subjects, then each group value), at most four.
    """
    subsets = subsets[:4]
    regions = list(dict.fromkeys(r["region"] for r in table))
    fig = new_figure(3.2 * len(subsets) + 0.4, 3.0)
    for k, subset in enumerate(subsets):
        ax = fig.add_subplot(1, len(subsets), k + 1)
        style_axes(ax)
        for j, region in enumerate(regions):
            values = [next((r["pearson"] for r in table if r["subset"] == subset and r["layer"] == layer and r["region"] == region), None)
                      for layer in layers]
            ys = [np.nan if v is None else v for v in values]
            ax.plot(range(len(layers)), ys, REGION_STYLE.get(region, "-."), marker="o", color=group_color(j),
                    label=label_text(region, 20))
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([label_text(name, 24) for name in layers], rotation=30, ha="right", fontsize=7)
        ax.set_ylim(-0.2, 1.05)
        ax.set_title(label_text(subset, 30), fontsize=8)
        if k == 0:
            ax.set_ylabel("r(inversion, original)", fontsize=8)
            ax.legend(fontsize=7, frameon=False)
    fig.subplots_adjust(bottom=0.35, wspace=0.3)
    return to_png(fig)
