"""Design check: planted confounds are found, balanced designs are not flagged."""

from __future__ import annotations

import numpy as np
import pytest

from xaudit.analysis.bias import BiasParams, check_design, cramers_v

CLASSES = ["healthy", "lesion"]


def _labels(n_per_class: int = 20) -> np.ndarray:
    return np.repeat([0, 1], n_per_class)


def test_full_confound_is_critical_with_v_one():
    labels = _labels()
    site = np.where(labels == 0, "A", "B")
    result = check_design(labels, {"site": site}, CLASSES, BiasParams())
    table = result.table("site")
    assert table.cramers_v == pytest.approx(1.0)
    assert table.fully_confounded
    assert table.class_spans == {"healthy": ["A"], "lesion": ["B"]}
    assert table.within_class == {"healthy": False, "lesion": False}
    [finding] = result.findings
    assert finding.id == "design.confounded.site"
    assert finding.severity == "critical"
    assert "no statistic can separate" in finding.message
    assert finding.evidence["counts"] == {"A": {"healthy": 20, "lesion": 0}, "B": {"healthy": 0, "lesion": 20}}


def test_balanced_design_has_no_finding():
    labels = _labels()
    site = np.tile(["A", "B"], 20)
    result = check_design(labels, {"site": site}, CLASSES, BiasParams())
    table = result.table("site")
    assert table.cramers_v == pytest.approx(0.0)
    assert table.p_value == pytest.approx(1.0)
    assert table.within_class == {"healthy": True, "lesion": True}
    assert result.findings == []


def test_class_in_single_site_is_a_warning_and_names_usable_classes():
    labels = _labels()
    site = np.where(labels == 1, "A", np.tile(["A", "B"], 20))  # lesion only at A
    result = check_design(labels, {"site": site}, CLASSES, BiasParams(confound_cramers_v=0.9,
                                                                       confound_cramers_v_critical=0.95))
    [finding] = result.findings
    assert finding.severity == "warning"
    assert finding.evidence["single_value_classes"] == ["lesion"]
    assert "can run for: healthy" in finding.message


def test_split_more_confounded_than_whole_gets_its_own_finding():
    labels = _labels()
    splits = np.array(["train", "test"] * 20)
    site = np.tile(["A", "B"], 20).astype(object)
    test_rows = splits == "test"
    site[test_rows] = np.where(labels[test_rows] == 0, "A", "B")
    result = check_design(labels, {"site": site}, CLASSES, BiasParams(), splits=splits)
    ids = {f.id for f in result.findings}
    assert "design.confounded.site.test" in ids
    assert result.table("site", "test").fully_confounded
    assert not result.table("site", "train").fully_confounded


def test_bias_corrected_v_is_near_zero_for_independent_large_sample():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    site = rng.choice(["A", "B", "C"], 2000)
    v = check_design(labels, {"site": site}, CLASSES, BiasParams()).table("site").cramers_v
    assert v < 0.05


def test_cramers_v_undefined_for_a_single_row():
    assert cramers_v(np.array([[3, 4]])) == (None, None, None, None)


@pytest.mark.parametrize("labels, site", [
    (np.zeros(6, int), np.array(["A", "B"] * 3)),            # one class
    (np.array([0, 1] * 3), np.array(["A"] * 6)),              # one group value
    (np.full(4, -1), np.array(["A", "B", "A", "B"])),         # no known label
    (np.array([0, 1, 0, 1]), np.array(["A", "", "nan", None], dtype=object)),  # missing values
])
def test_degenerate_inputs_give_notes_not_crashes(labels, site):
    result = check_design(labels, {"site": site}, CLASSES, BiasParams())
    assert [f for f in result.findings if f.severity == "critical"] == []
    assert result.notes
    assert isinstance(result.to_dict(), dict)
