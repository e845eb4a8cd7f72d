"""Scripted comparisons between finished runs: `compare_runs`, `regressions`.

Modules, one concept each:
    params            CompareParams, threshold parsing
    load              a run directory -> RunData
    compat            which parts are comparable; refusal listing what differs
    metrics_diff      metric differences with intervals, overall and per group value
    shift             prediction-distribution shift (KS, chi-square, changed predictions)
    findings_diff     findings and feature roles matched by name
    rules_diff        top-N rules that persist, appear, disappear
    attribution_diff  attribution-share tests and mean-map differences (NIfTI)

The comparison as a whole (`compare_runs`, `regressions`) is `xaudit.workflows.compare`;
its pages are rendered by `xaudit.report.compare`.
"""

from xaudit.analysis.compare.compat import IncompatibleRunsError
from xaudit.analysis.compare.params import METRICS, CompareParams, make_params, parse_thresholds

__all__ = ["METRICS", "CompareParams", "IncompatibleRunsError", "make_params", "parse_thresholds"]
