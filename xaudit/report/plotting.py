"""Matplotlib set-up shared by the report's figures: palette, figure creation, PNG bytes.

Figures are built on `matplotlib.figure.Figure` directly, never through `pyplot`, so the
report neither switches the global backend of a user's session nor keeps figures alive in
pyplot's registry; PNG output goes through the Agg canvas whatever the backend.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 90
SEVERITY_COLORS = {"critical": "#c0392b", "warning": "#d68910", "info": "#2874a6", "none": "#1e8449"}
# Colour-blind-safe qualitative palette (Okabe & Ito 2008) for group values.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
OVERALL_COLOR = "#7f7f7f"


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with the report's base style."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout=None)
    fig.patch.set_facecolor("white")
    return fig


def style_axes(ax) -> None:
    """Light axes: no top/right spines, a faint horizontal grid, small ticks."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def to_png(fig: Figure) -> bytes:
    """Render a figure to an 8-bit palette PNG.

    A palette of 256 colours is indistinguishable here (flat charts; maps whose colours
    come from one colormap over grey) and makes the files, and the base64 copies embedded
    in the HTML, three to four times smaller. No metadata, so re-renders are byte-stable.
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    palette = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", compress_level=3)  # optimize=True cost 3x the time for 5% smaller files
    return buffer.getvalue()


def group_color(k: int) -> str:
    return PALETTE[k % len(PALETTE)]


def label_text(text: str, width: int = 28) -> str:
    """A manifest value made safe as a matplotlib label: short lines, no mathtext.

    Long values would squeeze the axes, and a ``$`` would switch matplotlib to mathtext
    (a stray one raises), so each line is shortened and dollars are escaped.
    """
    lines = []
    for line in str(text).split("\n"):
        line = " ".join(line.split())
        line = line if len(line) <= width else line[: width - 1] + "…"
        lines.append(line.replace("$", r"\$"))
    return "\n".join(lines)
