"""Scripted comparisons between finished runs: `compare_runs`, `regressions`.

Modules, one concept each:
    params            CompareParams, threshold parsing
    load              a run directory -> RunData
    compat            which parts are comparable; refusal listing what differs
    bootstrap         vectorised bootstrap of accuracy, balanced accuracy, ROC AUC
    metrics_diff      metric differences with intervals, overall and per group value
    shift             prediction-distribution shift (KS, chi-square, changed predictions)
    findings_diff     findings and feature roles matched by name
    rules_diff        top-N rules that persist, appear, disappear
    attribution_diff  attribution-share tests and mean-map differences (NIfTI)
    render            compare.md, compare.html, terminal summary
    api               compare_runs, regressions
    cli_impl          the `xaudit compare` command without its parsing
"""

from xaudit.compare.api import SCHEMA_VERSION, compare_runs, regressions
from xaudit.compare.compat import IncompatibleRunsError
from xaudit.compare.params import METRICS, CompareParams, make_params, parse_thresholds

__all__ = ["METRICS", "SCHEMA_VERSION", "CompareParams", "IncompatibleRunsError", "compare_runs", "make_params",
           "parse_thresholds", "regressions"]
