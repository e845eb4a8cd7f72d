"""The interrogation section: what each depth of the network retains of the image.

Representation inversion reconstructs, per depth, an input that the network cannot tell
from the subject's; the retention table says how much of each region (brain, lesion
ROIs, background, borders) that reconstruction brings back. A site artefact in the
background or border that survives to the last block while the lesion fades is the
network keeping the scanner signature for its decision.
"""

from __future__ import annotations

from pathlib import Path

from xaudit.report.document import Figure, Note, Paragraph, Section, Table
from xaudit.report.format import fmt_num, fmt_seconds
from xaudit.report.sections_common import notes

# inversion figures shown inline; the rest are listed by file
MAX_FIGURES = 8


def interrogation_section(interrogation: dict | None, run_dir) -> Section:
    """Retention table and plot, one inversion figure per interrogated subject."""
    section = Section("What each depth retains (representation inversion)", "interrogation")
    if not isinstance(interrogation, dict):
        return section.add(Note("Interrogation did not run: add an `interrogate:` section to the config, "
                                "or run `xaudit interrogate RUN_DIR` on this run."))
    if "failed" in interrogation:
        return section.add(Note(f"Interrogation failed: {interrogation['failed']}. The rest of the audit is complete; "
                                "fix the cause and run `xaudit interrogate RUN_DIR`."))
    layers = [layer.get("name") for layer in interrogation.get("layers") or []]
    time = interrogation.get("time") or {}
    section.add(Paragraph(
        f"For {fmt_num(len(interrogation.get('subjects') or []))} subjects (a few per class x "
        f"{interrogation.get('group_column') or 'class'} cell), an input was optimised so that its activations at "
        f"each of {len(layers)} depths match the subject's (Mahendran and Vedaldi, 2015). The table gives the "
        "correlation of that reconstruction with the original inside each region, above the correlation of the "
        "optimisation's starting image: what the layer keeps. A background or border artefact that stays high at "
        "the deepest layer while the lesion fades is a scanner signature the network carries to its decision. "
        f"Time: {fmt_seconds(time.get('elapsed_s'))}."))
    section.add(*notes(interrogation))
    table = (interrogation.get("retention") or {}).get("table") or []
    if table:
        section.add(retention_table(table))
    root = Path(getattr(run_dir, "root", run_dir))
    plot = interrogation.get("retention_plot")
    if plot and (root / plot).is_file():
        section.add(Figure("retention", "Correlation of the inversion with the original per depth and region "
                           "(all subjects, then per group value); the table gives the starting image's own correlation.", (root / plot).read_bytes()))
    figures = [root / f for f in interrogation.get("figures") or [] if (root / f).is_file()]
    for path in figures[:MAX_FIGURES]:
        section.add(Figure(path.stem, f"Original and its reconstruction from each depth ({path.stem.removeprefix('inversion_')}); "
                           "NIfTI in the subject's native space under interrogate/inversions/.", path.read_bytes()))
    if len(figures) > MAX_FIGURES:
        section.add(Note(f"{len(figures) - MAX_FIGURES} more inversion figures in interrogate/figures/."))
    maxima = interrogation.get("maximisation") or []
    if maxima:
        rows = [[m.get("name"), fmt_num(m.get("activation_initial")), fmt_num(m.get("activation_final")),
                 fmt_num(m.get("activation_real_mean")), m.get("volume")] for m in maxima]
        section.add(Table(["Channel", "Activation at start", "Maximised", "Mean over real subjects", "Volume"], rows,
                          caption="Activation maximisation of the channels the top rules use.",
                          numeric=[False, True, True, True, False]))
    return section


def retention_table(table: list[dict]) -> Table:
    """Rows: subset x region; columns: depth (retention above the start)."""
    layers = list(dict.fromkeys(row["layer"] for row in table))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in table:
        above = None if row.get("pearson") is None else row["pearson"] - (row.get("start_pearson") or 0.0)
        cells.setdefault((row["subset"], row["region"]), {})[row["layer"]] = (
            f"{fmt_num(row.get('pearson'))} ({'+' if (above or 0) >= 0 else ''}{fmt_num(above)})" if above is not None else "-")
    rows = [[subset, region, *[values.get(layer, "-") for layer in layers]] for (subset, region), values in cells.items()]
    return Table(["Subjects", "Region", *layers], rows,
                 caption="Pearson correlation of the inversion with the original (in brackets: above the start's).",
                 numeric=[False, False, *[True] * len(layers)])
