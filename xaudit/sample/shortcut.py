"""The shortcut check: does the confounded model fail where site and label disagree?

On a test split with every class x site cell equally filled, a model that decides on the
site signature is right on the "diagonal" cells (healthy from the controls' site, lesion
from the patients' site) and wrong on the off-diagonal ones; a model that decides on
the lesions is right everywhere. This is the stratified evaluation used to expose
shortcut learning (Geirhos et al., "Shortcut learning in deep neural networks", Nature
Machine Intelligence 2, 2020; DeGrave et al., Nature Machine Intelligence 3, 2021).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from xaudit.sample.design import CLASSES, MAJORITY_SITE

# Pass criteria of the check (accuracy, as a fraction).
MIN_DIAGONAL = 0.8  # the confounded model still looks good where the confound holds
MIN_DROP = 0.3  # ... and loses at least this much where it does not
MAX_CONTROL_DROP = 0.15  # the control model barely notices the site
MIN_CONTROL_CELL = 0.7


def cell_accuracy(rows: pd.DataFrame, predictions: np.ndarray) -> dict[str, dict[str, Any]]:
    """Accuracy per class x site cell.

    Args:
        rows: test rows with `label` (class name) and `site` columns.
        predictions: predicted class indices, aligned with `rows`.

    Returns:
        {"<label>/<site>": {"label", "site", "n", "correct", "accuracy", "diagonal"}},
        where diagonal means the site is the label's majority site in split `train`.
    """
    correct = np.asarray([CLASSES[p] for p in predictions]) == rows["label"].to_numpy()
    cells = {}
    for (label, site), index in rows.groupby(["label", "site"]).groups.items():
        hits = int(correct[np.asarray(rows.index.get_indexer(index))].sum())
        cells[f"{label}/{site}"] = {
            "label": label, "site": site, "n": len(index), "correct": hits,
            "accuracy": round(hits / len(index), 4),
            "diagonal": MAJORITY_SITE[label] == site,
        }
    return cells


def _mean_accuracy(cells: dict[str, dict[str, Any]], diagonal: bool) -> float:
    values = [c["accuracy"] for c in cells.values() if c["diagonal"] == diagonal]
    return float(np.mean(values)) if values else float("nan")


def shortcut_verdict(confounded: dict[str, dict[str, Any]],
                     control: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the planted shortcut shows: the confounded model drops off the diagonal,
    the control model does not.

    Args:
        confounded, control: `cell_accuracy` of the two models on the test split.

    Returns:
        Mean diagonal/off-diagonal accuracies, their drop per model, the criteria and
        `holds` (all criteria met).
    """
    summary: dict[str, Any] = {}
    for name, cells in (("confounded", confounded), ("control", control)):
        diagonal, off = _mean_accuracy(cells, True), _mean_accuracy(cells, False)
        summary[name] = {"diagonal": round(diagonal, 4), "off_diagonal": round(off, 4),
                         "drop": round(diagonal - off, 4),
                         "min_cell": min(c["accuracy"] for c in cells.values())}
    checks = {
        "confounded_diagonal_high": summary["confounded"]["diagonal"] >= MIN_DIAGONAL,
        "confounded_drops_off_diagonal": summary["confounded"]["drop"] >= MIN_DROP,
        "control_does_not_drop": summary["control"]["drop"] <= MAX_CONTROL_DROP,
        "control_accurate_everywhere": summary["control"]["min_cell"] >= MIN_CONTROL_CELL,
    }
    summary["criteria"] = {"min_diagonal": MIN_DIAGONAL, "min_drop": MIN_DROP,
                           "max_control_drop": MAX_CONTROL_DROP,
                           "min_control_cell": MIN_CONTROL_CELL}
    summary["checks"] = checks
    summary["holds"] = all(checks.values())
    return summary
