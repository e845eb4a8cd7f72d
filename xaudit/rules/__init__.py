"""Rule extraction: a surrogate random forest imitates the network, its paths become rules,
rules are pruned, merged, ranked, and linked back to the cohort's groups.

Public API::

    extract_rules(features, feature_names, predicted, labels, class_names, groups,
                  subject_ids, params) -> RulesResult
    rule_coverage(rules, features, feature_names=None) -> bool (n_subjects, n_rules)
    format_rule(rule, class_names) -> str
    rules_markdown(result, top_n=None) -> str
    write_rules(result, out_dir) -> (rules.json path, rules.md path)
"""

from __future__ import annotations

from xaudit.rules.api import extract_rules
from xaudit.rules.coverage import rule_coverage
from xaudit.rules.params import RulesParams
from xaudit.rules.render import format_rule, rules_markdown, write_rules
from xaudit.rules.result import (
    Condition,
    GroupCoverage,
    Rule,
    RulesResult,
    SurrogateMetrics,
    ValueCoverage,
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
    "rules_markdown",
    "write_rules",
]
