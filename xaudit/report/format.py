"""Number formatting shared by the HTML and Markdown reports.

One formatter per kind of number, so the same value from ``audit.json`` reads the same
everywhere in both reports (and a test can find it): ratios and statistics with three
significant digits, shares of attribution as percentages, p-values with two.
"""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_num(value: Any) -> str:
    """Three significant digits (``0.750``, ``12.3``); integers as integers; None -> ``n/a``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = _finite(value)
    if number is None:
        return NA if not isinstance(value, str) else value
    if number == 0:
        return "0"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    text = f"{number:#.3g}"
    if "e" in text:  # tiny values: scientific notation is the honest short form
        mantissa, exponent = text.split("e")
        return f"{mantissa.rstrip('.')}e{int(exponent)}"
    return text.rstrip(".")


def fmt_pct(value: Any) -> str:
    """A fraction as a percentage with one decimal (``0.5996 -> 60.0%``); two digits below 1%."""
    number = _finite(value)
    if number is None:
        return NA
    if 0 < abs(number) < 0.01:  # a small ROI's share must not read as 0.0%
        return f"{100 * number:.2g}%"
    return f"{100 * number:.1f}%"


def fmt_p(value: Any) -> str:
    """A p-value: three significant digits (as the findings quote them), two below 0.001."""
    number = _finite(value)
    if number is None:
        return NA
    if 0 < number < 0.001:
        return f"{number:.2g}"
    return fmt_num(number)


def fmt_ci(estimate: Any) -> str:
    """A bootstrap estimate ``{"value", "low", "high"}`` as ``0.750 [0.600, 0.900]``."""
    if not isinstance(estimate, dict):
        return fmt_num(estimate)
    value = fmt_num(estimate.get("value"))
    low, high = _finite(estimate.get("low")), _finite(estimate.get("high"))
    if value == NA or low is None or high is None:
        return value
    return f"{value} [{fmt_num(low)}, {fmt_num(high)}]"


def fmt_seconds(value: Any) -> str:
    number = _finite(value)
    return NA if number is None else f"{number:.1f} s"


def fmt_value(key: str, value: Any) -> str:
    """Format an evidence or threshold value by the hint in its key name."""
    if isinstance(value, dict):
        if {"value", "low", "high"} <= set(value):
            return fmt_ci(value)
        return ", ".join(f"{k}: {fmt_value(f'{key}.{k}', v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) > 8 or any(isinstance(v, dict) for v in value):
            return f"{len(value)} items"
        return ", ".join(fmt_value(key, v) for v in value)
    name = key.lower()
    if ("p_value" in name or name in ("p", "q_value", "p_adjusted")) and _finite(value) is not None:
        return fmt_p(value)
    if "share" in name and _finite(value) is not None and not isinstance(value, int):
        return fmt_pct(value)
    return fmt_num(value)


METRIC_NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "roc_auc": "ROC AUC",
                "sensitivity": "Sensitivity", "specificity": "Specificity"}


def humanize(key: str) -> str:
    """``balanced_accuracy -> Balanced accuracy`` (known metrics), else ``a_b -> a b``."""
    return METRIC_NAMES.get(key, key.replace("_", " "))


def fmt_time(iso: Any) -> str:
    """``2026-11-22T02:47:23.96+00:00 -> 2026-11-22 02:47:23 UTC`` (audit.json keeps the full stamp)."""
    if not isinstance(iso, str) or len(iso) < 19:
        return NA if iso is None else str(iso)
    suffix = " UTC" if iso.endswith(("+00:00", "Z")) else ""
    return iso[:19].replace("T", " ") + suffix


VERDICT_WORDS = {
    "signature": "site/scanner signature",
    "pathology": "pathology",
    "consistent_with_pathology": "consistent with pathology",
    "inconclusive": "inconclusive",
    "near_chance": "near chance",
}


def verdict_words(label: str) -> str:
    """The verdict as the report says it (``audit.json`` keeps the machine label)."""
    return VERDICT_WORDS.get(label, label.replace("_", " "))

