"""Rules as text, Markdown and JSON: format, round trip, atomic files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from xaudit.errors import DataError
from xaudit.analysis.rules import (
    Condition,
    Rule,
    RulesParams,
    RulesResult,
    extract_rules,
    format_rule,
    rule_coverage,
)
from xaudit.report.rules_md import rules_markdown
from xaudit.stages.rules import write_rules


@pytest.fixture(scope="module")
def result() -> RulesResult:
    rng = np.random.default_rng(0)
    n = 150
    site = np.where(rng.random(n) < 0.5, "A", "B")
    x = rng.normal(size=(n, 8))
    x[:, 3] += 2.5 * (site == "B")
    predicted = (x[:, 3] > 1.2).astype(int)
    labels = rng.integers(-1, 2, n)
    return extract_rules(x, [f"features.4:ch{i}" for i in range(8)], predicted, labels,
                         ["healthy", "lesion"], {"site": site}, [f"s{i}" for i in range(n)],
                         RulesParams(n_estimators=10, cv_folds=3, top_n=4))


def test_format_rule():
    rule = Rule(conditions=(Condition("features.4:ch12", 12, ">", 0.8312),
                            Condition("features.4:ch3", 3, "<=", 0.1)),
                predicted_class=1, n_covered=31, support=0.31, confidence=0.96)
    assert format_rule(rule, ["healthy", "lesion"]) == (
        "IF features.4:ch12 > 0.831 AND features.4:ch3 <= 0.1 THEN lesion "
        "(support 31%, confidence 96%)")


def test_json_round_trip(result):
    assert result.rules, "fixture must produce rules"
    text = json.dumps(result.to_dict(), allow_nan=False)
    back = RulesResult.from_dict(json.loads(text))
    assert back.to_dict() == result.to_dict()
    assert back.rules == result.rules
    assert back.params == result.params


def test_json_schema_fields(result):
    d = result.to_dict()
    assert d["schema_version"] == "1.0"
    assert set(d["surrogate"]) >= {"fidelity", "fidelity_train", "surrogate_accuracy"}
    r = d["rules"][0]
    assert set(r) >= {"id", "text", "conditions", "length", "support", "confidence", "error",
                      "predicted_class", "importance", "rank", "coverage_by_group",
                      "label_accuracy"}
    assert r["id"] == "R1" and r["rank"] == 1
    assert r["error"] == pytest.approx(1 - r["confidence"])
    assert set(r["conditions"][0]) >= {"feature", "op", "threshold"}
    assert r["coverage_by_group"]["site"]["values"][0]["value"] == "A"


def test_thresholds_survive_json_exactly(result):
    back = RulesResult.from_dict(json.loads(json.dumps(result.to_dict())))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 8))
    np.testing.assert_array_equal(rule_coverage(back.rules, x), rule_coverage(result.rules, x))


def test_from_dict_rejects_bad_input(result):
    with pytest.raises(DataError, match="schema_version must be 1"):
        RulesResult.from_dict({"rules": []})
    d = result.to_dict()
    del d["rules"][0]["support"]
    with pytest.raises(DataError, match="my.json: not a valid rules file.*support"):
        RulesResult.from_dict(d, source="my.json")


def test_markdown_has_fidelity_table_and_group_highlights(result):
    md = rules_markdown(result)
    assert "Surrogate fidelity (3-fold CV)" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "Rank" not in line]
    assert len(rows) == min(4, len(result.rules))
    assert "site: B" in rows[0] and "**skewed**" in rows[0]
    assert len([line for line in rules_markdown(result, top_n=2).splitlines()
                if line.startswith("| ") and "Rank" not in line]) == 2


def test_write_rules_is_atomic_and_complete(tmp_path, result):
    out = tmp_path / "run"
    json_path, md_path = write_rules(result, out)
    assert json.loads(json_path.read_text())["rules"][0]["id"] == "R1"
    assert md_path.read_text().startswith("# Rules")
    write_rules(result, out)  # overwriting works
    assert sorted(os.listdir(out)) == ["rules.json", "rules.md"]  # no temp files left


def test_empty_result_renders(tmp_path):
    x = np.random.default_rng(1).normal(size=(20, 3))
    res = extract_rules(x, ["a", "b", "c"], np.zeros(20, dtype=int), None, ["h", "l"], {},
                        [str(i) for i in range(20)], RulesParams(n_estimators=5))
    md = rules_markdown(res)
    assert "No rules were extracted" in md and "single class" in md
    json_path, _ = write_rules(res, tmp_path)
    assert RulesResult.from_dict(json.loads(json_path.read_text())).rules == []
