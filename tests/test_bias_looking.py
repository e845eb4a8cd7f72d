"""Where the model looks: exact shares on hand-built maps, foreground masks, mean maps."""

from __future__ import annotations

import numpy as np
import pytest

from xaudit.analysis.bias import (
    BiasParams,
    MeanMapAccumulator,
    attribution_shares,
    border_shell,
    compare_attribution_shares,
    foreground_from_image,
)
from xaudit.errors import DataError

CLASSES = ["healthy", "lesion"]


def _volume():
    """6^3 volume, foreground = the central 2^3 cube, three hand-placed attributions."""
    fg = np.zeros((6, 6, 6), bool)
    fg[2:4, 2:4, 2:4] = True
    a = np.zeros((6, 6, 6))
    a[fg] = 1.0           # 8 voxels of +1 inside
    a[0, 0, 0] = -2.0     # border (width 1), background
    a[1, 1, 1] = 3.0      # background, not border
    return a, fg


def test_shares_are_exact_fractions():
    a, fg = _volume()
    roi = np.zeros_like(fg)
    roi[2, 2, 2] = roi[1, 1, 1] = True
    shares = attribution_shares(a, fg, {"spot": roi}, border=1)
    assert shares["pos_foreground"] == pytest.approx(8 / 11)
    assert shares["pos_background"] == pytest.approx(3 / 11)
    assert shares["pos_border"] == pytest.approx(0.0)
    assert shares["abs_foreground"] == pytest.approx(8 / 13)
    assert shares["abs_background"] == pytest.approx(5 / 13)
    assert shares["abs_border"] == pytest.approx(2 / 13)
    assert shares["pos_roi_spot"] == pytest.approx(4 / 11)
    assert shares["abs_roi_spot"] == pytest.approx(4 / 13)
    assert shares["vol_foreground"] == pytest.approx(8 / 216)
    assert shares["vol_border"] == pytest.approx((216 - 64) / 216)


def test_channel_axis_is_summed_and_shapes_are_checked():
    a, fg = _volume()
    two = np.stack([a / 2, a / 2])
    assert attribution_shares(two, fg, border=1) == attribution_shares(a, fg, border=1)
    with pytest.raises(DataError, match="does not match"):
        attribution_shares(a[:5], fg)
    with pytest.raises(DataError, match="ROI mask 'x'"):
        attribution_shares(a, fg, {"x": fg[:3]})


def test_zero_map_gives_nan_shares():
    _, fg = _volume()
    shares = attribution_shares(np.zeros(fg.shape), fg)
    assert np.isnan(shares["abs_foreground"]) and np.isnan(shares["pos_background"])


def test_border_shell_counts_and_2d():
    assert border_shell((6, 6, 6), 1).sum() == 6 ** 3 - 4 ** 3
    assert border_shell((5, 7), 2).sum() == 5 * 7 - 1 * 3
    assert border_shell((4, 4), 0).sum() == 0


def test_foreground_from_image_keeps_largest_component_and_fills_holes():
    grid = np.indices((24, 24, 24)) - 11.5
    radius = np.sqrt((grid ** 2).sum(axis=0))
    head = radius < 8
    img = np.where(head, 100.0, 0.0)
    img[radius < 3] = 5.0          # dark "ventricle" inside the head
    img[0, 0, 0] = 100.0           # bright speck in the air
    rng = np.random.default_rng(0)
    img += rng.normal(0, 1, img.shape)
    mask = foreground_from_image(img)
    np.testing.assert_array_equal(mask, head)


def test_foreground_of_constant_image_is_an_error():
    with pytest.raises(DataError, match="constant"):
        foreground_from_image(np.ones((4, 4)))


def _table(shift: float, n: int = 12, seed: int = 0, volume: float = 0.2):
    rng = np.random.default_rng(seed)
    rows = []
    for label in (0, 1):
        for site in ("A", "B"):
            for _ in range(n):
                bg = 0.1 + (shift if (label == 1 and site == "B") else 0.0) + rng.uniform(0, 0.05)
                rows.append({"label": CLASSES[label] if label else 0, "site": site, "method": "ig",
                             "abs_background": bg, "abs_foreground": 1 - bg, "vol_background": volume})
    return rows


def test_share_difference_by_site_within_class_and_background_are_found():
    result = compare_attribution_shares(_table(shift=0.6), CLASSES, ["site"], BiasParams())
    ids = {f.id for f in result.findings}
    assert "looking.by_group.site.lesion.ig" in ids
    assert "looking.by_group.site.healthy.ig" not in ids
    assert "looking.background.ig" in ids  # mean share 0.1 + 0.6/4 + 0.025 = 0.275 > 0.25
    test = next(t for t in result.tests if t.class_name == "lesion" and t.share == "abs_background")
    assert test.test == "mann-whitney"
    assert test.rank_biserial == pytest.approx(-1.0)  # every A share below every B share
    assert result.signature_tests == 4


def test_background_share_no_larger_than_the_background_volume_is_not_a_finding():
    # 27% of |attribution| outside a foreground that leaves 60% of the volume outside:
    # less attention per voxel outside than inside, so no background finding
    result = compare_attribution_shares(_table(shift=0.6, volume=0.6), CLASSES, ["site"], BiasParams())
    assert "looking.background.ig" not in {f.id for f in result.findings}


def test_clean_shares_raise_nothing():
    result = compare_attribution_shares(_table(shift=0.0), CLASSES, ["site"], BiasParams())
    assert result.findings == []
    assert result.summary["ig"]["abs_background"]["by_class"]["lesion"] < 0.2


def test_share_table_problems_are_data_errors():
    with pytest.raises(DataError, match="lacks the label column 'label'"):
        compare_attribution_shares([{"site": "A", "abs_background": 0.1}], CLASSES, ["site"], BiasParams())
    unknown = compare_attribution_shares([{"label": "", "site": "A", "abs_background": 0.1}], CLASSES, ["site"],
                                         BiasParams())
    assert unknown.summary["all"]["abs_background"]["by_class"] == {}
    absent = compare_attribution_shares([{"label": 0, "abs_background": 0.1}], CLASSES, ["site"], BiasParams())
    assert "no column(s) ['site']" in absent.notes[0]
    with pytest.raises(DataError, match="'tumour' is not one of"):
        compare_attribution_shares([{"label": "tumour", "site": "A"}], CLASSES, ["site"], BiasParams())


def test_mean_map_accumulator_equals_numpy_mean_and_merges():
    rng = np.random.default_rng(0)
    maps = {key: rng.normal(size=(5, 4, 3, 3)) for key in [("lesion", "A"), ("healthy", "B")]}
    whole, first, second = MeanMapAccumulator(), MeanMapAccumulator(), MeanMapAccumulator()
    for key, stack in maps.items():
        for i, m in enumerate(stack):
            whole.add(key, m)
            (first if i < 2 else second).add(key, m)
    merged = first.merge(second)
    for key, stack in maps.items():
        np.testing.assert_allclose(whole.means()[key], stack.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(merged.means()[key], stack.mean(axis=0), rtol=1e-12)
    assert merged.counts == {("lesion", "A"): 5, ("healthy", "B"): 5}
    with pytest.raises(DataError, match="must all have shape"):
        whole.add(("lesion", "A"), np.zeros((2, 2)))


def test_share_summaries_and_tests_equal_pandas_groupby_on_missing_values():
    """Means per class and group value skip missing shares (NaN, None, pd.NA) and unknown groups, as pandas does."""
    import pandas as pd

    rng = np.random.default_rng(3)
    n = 60
    table = pd.DataFrame({"pos_background": rng.random(n), "abs_border": rng.random(n),
                          "label": rng.integers(-1, 2, n), "site": rng.choice(["A", "B", "C", ""], n)})
    table.loc[rng.random(n) < 0.2, "abs_border"] = np.nan
    table["abs_roi"] = pd.Series(list(rng.random(n)), dtype=object)
    table.loc[[0, 5, 9], "abs_roi"] = [pd.NA, None, np.nan]
    result = compare_attribution_shares(table, CLASSES, ["site"], BiasParams(min_group_size=3))
    summary = result.summary["all"]
    table["abs_roi"] = pd.to_numeric(table["abs_roi"])  # the reference: pandas on a numeric column
    known = table[(table["label"] >= 0) & (table["site"] != "")]
    for share in ("pos_background", "abs_border", "abs_roi"):
        assert summary[share]["mean"] == pytest.approx(table[share].mean(), rel=1e-12)
        assert summary[share]["median"] == pytest.approx(table[share].median(), rel=1e-12)
        expected = {CLASSES[c]: {v: g2[share].mean() for v, g2 in g.groupby("site")} for c, g in known.groupby("label")}
        assert list(summary[share]["by_class_site"]) == list(expected)
        for name, by_site in expected.items():
            assert summary[share]["by_class_site"][name] == pytest.approx(by_site, rel=1e-12, nan_ok=True)
    for test in result.tests:
        cell = known[known["label"] == CLASSES.index(test.class_name)]
        for site, mean in test.means.items():
            values = cell.loc[cell["site"] == site, test.share].dropna()
            assert test.n[site] == len(values) and mean == pytest.approx(values.mean(), rel=1e-12)
    assert result.tests
