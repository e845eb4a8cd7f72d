"""The report's charts: metrics by group, attribution outside the anatomy, masked inputs, probes.

Each function takes plain values (from ``audit.json`` or the cohort's per-subject arrays)
and returns PNG bytes; the section builders decide what to plot and write the captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaudit.report.plotting import OVERALL_COLOR, group_color, label_text, new_figure, style_axes, to_png

METRIC_LABELS = {"balanced_accuracy": "balanced\naccuracy", "roc_auc": "ROC AUC", "accuracy": "accuracy",
                 "sensitivity": "sensitivity", "specificity": "specificity"}


def _estimate(est) -> tuple[float, float, float]:
    """(value, low, high) of a bootstrap estimate dict, NaN where missing."""
    if not isinstance(est, dict):
        return (np.nan, np.nan, np.nan)
    return tuple(np.nan if est.get(k) is None else float(est[k]) for k in ("value", "low", "high"))


def _bars_with_ci(ax, x: np.ndarray, estimates: list[tuple[float, float, float]], width: float, color: str, label: str) -> None:
    values = np.array([e[0] for e in estimates], dtype=float)
    low = np.array([e[1] for e in estimates], dtype=float)
    high = np.array([e[2] for e in estimates], dtype=float)
    err = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
    err = np.nan_to_num(err)
    ax.bar(x, np.nan_to_num(values), width, color=color, label=label, yerr=err, capsize=2,
           error_kw={"elinewidth": 0.9, "ecolor": "#333333"})


def performance_png(panels: list[tuple[str, list[dict]]], overall: dict, metrics: list[str]) -> bytes:
    """Grouped bars per group column: each metric, overall (grey) and per value, 95% CIs.

    Args:
        panels: (group column, its ``bias.checks.group_metrics.groups`` rows), one panel each.
        overall: metric -> estimate dict (``value``, ``low``, ``high``).
        metrics: the metrics to show, in order.
    """
    most = max(len(groups) for _, groups in panels) + 1
    width = min(10.0, 0.8 + (0.35 + 0.22 * most) * len(metrics))
    fig = new_figure(width + 2.2, 0.4 + 2.3 * len(panels))
    x = np.arange(len(metrics), dtype=float)
    for row, (column, groups) in enumerate(panels):
        top = 1 - (0.15 + 2.3 * row) / fig.get_figheight()
        ax = fig.add_axes((0.7 / (width + 2.2), top - 1.75 / fig.get_figheight(), (width - 0.8) / (width + 2.2),
                           1.6 / fig.get_figheight()))
        series = [("overall", OVERALL_COLOR, [_estimate(overall.get(m)) for m in metrics])]
        series += [(f"{g['value']} (n={g['n']})", group_color(k), [_estimate(g["metrics"].get(m)) for m in metrics])
                   for k, g in enumerate(groups)]
        bar = 0.8 / len(series)
        for k, (label, color, estimates) in enumerate(series):
            _bars_with_ci(ax, x - 0.4 + bar * (k + 0.5), estimates, bar, color, label_text(label, 30))
        ax.axhline(0.5, color="#999999", linestyle=":", linewidth=1)
        ax.set_xticks(x, [METRIC_LABELS.get(m, m) for m in metrics])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(label_text(column, 20), fontsize=8.5)
        style_axes(ax)
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=label_text(column, 24),
                  title_fontsize=7.5)
    return to_png(fig)


@dataclass
class ShareBox:
    """The per-subject shares of one class x group-value cell."""

    label: str
    values: np.ndarray
    color: str


def shares_png(panels: dict[str, list[ShareBox]], uniform: dict[str, float], thresholds: dict[str, float], ylabel: str) -> bytes:
    """Box plots with the subjects as points, one panel per method.

    Args:
        panels: method -> boxes (one per class x group value).
        uniform: method -> the share a uniform map would have (the region's volume share).
        thresholds: name -> value, drawn as dashed lines (e.g. the warning level).
        ylabel: what the share is.
    """
    n_boxes = max(len(b) for b in panels.values())
    fig = new_figure(min(11.0, 0.9 + len(panels) * (0.9 + 0.55 * n_boxes)), 3.1)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.2, wspace=0.08)
    rng = np.random.default_rng(0)  # jitter only: fixed so re-renders are identical
    for ax, (method, boxes) in zip(axes, panels.items()):
        data = [b.values[np.isfinite(b.values)] for b in boxes]
        parts = ax.boxplot(data, widths=0.55, patch_artist=True, showfliers=False,
                           medianprops={"color": "#222222"}, whiskerprops={"color": "#666666"}, capprops={"color": "#666666"})
        for patch, box in zip(parts["boxes"], boxes):
            patch.set_facecolor(box.color)
            patch.set_alpha(0.35)
        for k, (values, box) in enumerate(zip(data, boxes), start=1):
            ax.scatter(k + rng.uniform(-0.15, 0.15, len(values)), values, s=9, color=box.color, zorder=3, linewidths=0)
        if method in uniform and np.isfinite(uniform[method]):
            ax.axhline(uniform[method], color="#555555", linestyle=":", linewidth=1, label="uniform map (volume share)")
        for (name, value), color in zip(thresholds.items(), ("#d68910", "#c0392b")):
            ax.axhline(value, color=color, linestyle="--", linewidth=1, label=name)
        ax.set_xticks(range(1, len(boxes) + 1), [label_text(b.label, 16) for b in boxes], fontsize=7.5)
        ax.set_title(method, fontsize=9)
        ax.set_ylim(0, 1)
        style_axes(ax)
    axes[0].set_ylabel(ylabel, fontsize=8)
    axes[-1].legend(fontsize=7, frameon=False, loc="upper right")
    return to_png(fig)


VARIANT_COLORS = {"full": OVERALL_COLOR, "background_only": "#D55E00", "foreground_only": "#0072B2"}


def masked_input_png(variants: dict[str, dict]) -> bytes:
    """ROC AUC against the true label of the full, foreground-only and background-only inputs."""
    names = list(variants)
    estimates = [_estimate(variants[n].get("auc_vs_label")) for n in names]
    fig = new_figure(4.6, 2.6)
    ax = fig.add_axes((0.3, 0.2, 0.65, 0.72))
    y = np.arange(len(names))
    values = np.array([e[0] for e in estimates])
    low = np.array([e[1] for e in estimates])
    high = np.array([e[2] for e in estimates])
    colors = [VARIANT_COLORS.get(n, OVERALL_COLOR) for n in names]
    ax.barh(y, np.nan_to_num(values), 0.6, color=colors, alpha=0.8,
            xerr=np.nan_to_num(np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])), capsize=2)
    ax.axvline(0.5, color="#999999", linestyle=":", linewidth=1)
    ax.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("ROC AUC vs true label (95% CI); 0.5 = chance", fontsize=8)
    style_axes(ax)
    ax.grid(axis="x", color="#e5e5e5")
    return to_png(fig)


def probes_png(scores: list[dict]) -> bytes:
    """Balanced accuracy of each linear probe, with its chance level marked."""
    labels = [f"{s['target']} ({s['scope']})" for s in scores]
    values = np.array([np.nan if s.get("balanced_accuracy") is None else s["balanced_accuracy"] for s in scores], dtype=float)
    chance = np.array([np.nan if s.get("chance") is None else s["chance"] for s in scores], dtype=float)
    fig = new_figure(5.6, 1.2 + 0.32 * len(scores))
    ax = fig.add_axes((0.38, 0.75 / fig.get_figheight(), 0.57, 1 - 1.1 / fig.get_figheight()))
    y = np.arange(len(scores))[::-1]
    colors = [OVERALL_COLOR if s["target"] == "label" else group_color(1) for s in scores]
    ax.barh(y, np.nan_to_num(values), 0.6, color=colors)
    ax.scatter(chance, y, marker="|", s=160, color="#222222", zorder=3, label="chance")
    ax.set_yticks(y, [label_text(t, 40) for t in labels], fontsize=7.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("balanced accuracy of a linear probe on the features (CV)", fontsize=8)
    style_axes(ax)
    ax.grid(axis="x", color="#e5e5e5")
    ax.legend(fontsize=7, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.1)
    return to_png(fig)


def quality_png(methods: dict[str, dict]) -> bytes:
    """Per method: deletion and insertion curves against random deletion; then randomisation."""
    with_random = [m for m, q in methods.items() if q.get("randomisation")]
    n_panels = len(methods) + (1 if with_random else 0)
    fig = new_figure(min(12.0, 0.6 + 2.6 * n_panels), 2.7)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    fig.subplots_adjust(left=0.06, right=0.98, top=0.86, bottom=0.2, wspace=0.3)
    for ax, (name, q) in zip(axes, methods.items()):
        x = np.asarray(q.get("x") or [], dtype=float)
        for key, style, label in (("deletion_curve", "-", "deletion"), ("insertion_curve", "--", "insertion"),
                                  ("random_deletion_curve", ":", "random deletion")):
            y = np.asarray(q.get(key) or [], dtype=float)
            if len(y) == len(x) and len(x):
                ax.plot(x, y, style, color=OVERALL_COLOR if key.startswith("random") else group_color(0), label=label)
        ax.set_title(label_text(name, 30), fontsize=9)
        ax.set_xlabel("fraction of the image changed", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        style_axes(ax)
    axes[0].set_ylabel("target probability", fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    if with_random:
        ax = axes[-1]
        for k, name in enumerate(with_random):
            steps = methods[name]["randomisation"]
            ax.plot([s.get("step") for s in steps], [np.nan if s.get("spearman_abs") is None else s["spearman_abs"] for s in steps],
                    "o-", color=group_color(k), label=label_text(name, 24), markersize=3)
        ax.set_title("randomisation test", fontsize=9)
        ax.set_xlabel("cascading randomisation step", fontsize=8)
        ax.set_ylabel("Spearman |map| vs original", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        style_axes(ax)
        ax.legend(fontsize=7, frameon=False)
    return to_png(fig)
