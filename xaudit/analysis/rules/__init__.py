"""Rule extraction: a surrogate random forest imitates the network, its paths become rules,
rules are pruned, merged, ranked, and linked back to the cohort's groups.

Public API::

    extract_rules(features, feature_names, predicted, labels, class_names, groups,
                  subject_ids, params) -> RulesResult
    rule_coverage(rules, features, feature_names=None) -> bool (n_subjects, n_rules)
    format_rule(rule, class_names) -> str

``rules.md`` is rendered by `xaudit.report.rules_md`; the files are written by the rules
stage (`xaudit.stages.rules`).
"""

from __future__ import annotations

from xaudit.analysis.rules.api import extract_rules
from xaudit.analysis.rules.coverage import rule_coverage
from xaudit.config.rules import RulesParams
from xaudit.analysis.rules.result import (
    Condition,
    GroupCoverage,
    Rule,
    RulesResult,
    SurrogateMetrics,
    ValueCoverage,
    format_rule,
)

__all__ = [
    "Condition",
    "GroupCoverage",
    "Rule",
    "RulesParams",
    "RulesResult",
    "SurrogateMetrics",
    "ValueCoverage",
    "extract_rules",
    "format_rule",
    "rule_coverage",
]
