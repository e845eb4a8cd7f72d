"""Scale: records stream into the cohort, and every cap engages above its size and says so."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from xaudit.data.cohort import cohort_from_records
from xaudit.data.manifest import Subject
from xaudit.report import sections_subjects
from xaudit.report.sections_subjects import bounds, shown_subjects, strip_statistics
from xaudit.workflows.finish import bounded

CLASSES = ["healthy", "lesion"]


class Record(dict):
    """A record that can be watched (a plain dict cannot be weakly referenced)."""


def _record(i: int, shape=(4, 4, 4)) -> Record:
    rng = np.random.default_rng(i)
    p = float(rng.uniform())
    return Record({
        "subject_id": np.array(f"s{i}"), "probs": np.array([1 - p, p], np.float32), "target": np.array(i % 2),
        "label": np.array(i % 2), "features": rng.normal(size=3).astype(np.float32),
        "concept_acts": np.zeros(2, np.float32), "concept_grads": np.zeros(2, np.float32),
        "probs_fg_blanked": np.array([0.5, 0.5], np.float32), "probs_bg_blanked": np.array([0.5, 0.5], np.float32),
        "image_small": rng.normal(size=shape).astype(np.float16), "input_affine": np.eye(4),
        "input_shape": np.array(shape), "foreground_fraction": np.array(0.3),
        "map__saliency": rng.normal(size=shape).astype(np.float16),
        "share__saliency__abs_background": np.float32(rng.uniform()),
        "stat__saliency__error": np.float32(i),
    })


def _subjects(n: int) -> list[Subject]:
    return [Subject(f"s{i}", f"s{i}", i + 2, (Path(f"s{i}.nii.gz"),), i % 2, {"site": "AB"[i % 2]}) for i in range(n)]


def test_records_stream_into_the_cohort_one_at_a_time():
    alive: list[weakref.ref] = []
    most_alive = 0

    def records(n):
        nonlocal most_alive
        for i in range(n):  # no gc.collect(): a record is freed by its count or it is held (the test's point)
            most_alive = max(most_alive, sum(r() is not None for r in alive))
            record = _record(i)
            alive.append(weakref.ref(record))
            yield record

    cohort = cohort_from_records(_subjects(50), records(50), CLASSES, ["f0", "f1", "f2"])
    assert most_alive <= 1  # the record before, at most: never the cohort's worth
    assert cohort.n == 50 and cohort.maps["saliency"].shape == (50, 4, 4, 4)
    assert cohort.maps["saliency"].dtype == np.float32 and cohort.images_small.dtype == np.float32
    expected = _record(7)
    np.testing.assert_array_equal(cohort.maps["saliency"][7], expected["map__saliency"].astype(np.float32))
    np.testing.assert_array_equal(cohort.probs[7], expected["probs"])
    assert cohort.shares["saliency"]["abs_background"][7] == float(expected["share__saliency__abs_background"])
    assert cohort.stats["saliency"]["error"].tolist() == list(range(50))
    assert cohort.labels.tolist() == [i % 2 for i in range(50)]


def _file_backed(array) -> bool:
    import mmap

    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None)
    return array is not None


def test_big_map_arrays_live_in_an_unlinked_file_of_the_run_and_read_the_same(tmp_path, monkeypatch):
    from xaudit.data import cohort as cohort_module

    in_memory = _cohort(20)
    monkeypatch.setattr(cohort_module, "SPILL_BYTES", 1000)  # 20 maps of 4^3 floats: 5,120 bytes
    spilled = cohort_from_records(_subjects(20), (_record(i) for i in range(20)), CLASSES, [], spill_dir=tmp_path)
    for name in ("maps", "images"):
        got, want = (spilled.maps["saliency"], in_memory.maps["saliency"]) if name == "maps" else \
            (spilled.images_small, in_memory.images_small)
        assert type(got) is np.ndarray and _file_backed(got)  # a plain array over a file mapping
        np.testing.assert_array_equal(got, want)
    assert not _file_backed(in_memory.maps["saliency"])
    assert type(spilled.maps["saliency"].mean(axis=0)) is np.ndarray
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing is left in the run, even after kill -9
    monkeypatch.setattr(cohort_module.tempfile, "TemporaryFile", lambda **_: (_ for _ in ()).throw(OSError("full")))
    fallback = cohort_from_records(_subjects(20), (_record(i) for i in range(20)), CLASSES, [], spill_dir=tmp_path)
    np.testing.assert_array_equal(fallback.maps["saliency"], in_memory.maps["saliency"])  # no room there: in memory


def test_a_key_missing_from_some_records_is_nan_and_maps_of_other_grids_are_not_kept():
    records = [_record(0), _record(1, shape=(4, 4, 5)), _record(2)]
    del records[2]["stat__saliency__error"]
    cohort = cohort_from_records(_subjects(3), records, CLASSES, [])
    assert cohort.stats["saliency"]["error"][:2].tolist() == [0.0, 1.0] and np.isnan(cohort.stats["saliency"]["error"][2])
    assert cohort.maps["saliency"].dtype == object and not cohort.common_grid
    assert cohort.images_small.dtype == object


def test_the_group_view_keeps_every_subject_up_to_its_cap_and_the_extremes_beyond():
    values = np.arange(100, dtype=float)
    values[37], values[62] = 1e6, -1e6  # two outliers between the evenly spaced points
    stats = [("P(lesion)", values.tolist()), ("empty", [float("nan")] * 100)]
    assert shown_subjects(stats, 100, cap=100).tolist() == list(range(100))
    shown = shown_subjects(stats, 100, cap=10, tail=2).tolist()
    assert {0, 99, 37, 62} <= set(shown)  # the ends of the even draw, and both outliers
    assert 10 < len(shown) <= 10 + 2 * 2


def _cohort(n: int):
    return cohort_from_records(_subjects(n), (_record(i) for i in range(n)), CLASSES, ["f0", "f1", "f2"])


def test_bounds_are_empty_below_every_cap_and_name_each_cap_that_engages(monkeypatch):
    cohort = _cohort(12)
    assert bounds(cohort) == {}
    monkeypatch.setattr(sections_subjects, "MAX_POINTS", 5)
    monkeypatch.setattr(sections_subjects, "MAX_TILES", 4)
    monkeypatch.setattr(sections_subjects, "MAX_PAGES", 3)
    out = bounds(cohort)
    assert set(out) == {"group_view", "mosaic", "subject_pages"}
    shown = len(shown_subjects(strip_statistics(cohort), 12))
    assert out["group_view"]["shown"] == shown and out["group_view"]["of"] == 12
    assert f"draws {shown} of 12 subjects: 5 evenly spaced" in out["group_view"]["note"]
    assert out["mosaic"] == {"shown": 4, "of": 12, "note": "the mosaic shows 4 of 12 subjects, evenly spaced in manifest order"}
    assert out["subject_pages"]["shown"] == 3


def test_audit_json_scale_collects_spray_subsampling_and_nothing_for_a_small_cohort():
    cohort = _cohort(6)
    small = {"checks": {"spray": {"classes": [{"class_name": "lesion", "n": 3}]}}}
    assert bounded(small, cohort) == {}
    big = {"checks": {"spray": {"classes": [{"class_name": "lesion", "n": 2000, "n_class": 5000}]}}}
    out = bounded(big, cohort)
    assert out["spray.lesion"]["shown"] == 2000 and out["spray.lesion"]["of"] == 5000
    assert "2,000 of 5,000 maps of class lesion" in out["spray.lesion"]["note"]


def test_load_record_reads_what_np_load_reads(tmp_path):
    from xaudit.core.outputs import load_record, save_record

    arrays = {"fortran": np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)), "text": np.array("sub-01"),
              "scalar": np.float32(3.5), "empty": np.zeros((0, 3)), "half": np.ones((2, 2), np.float16),
              "ints": np.arange(5)}
    path = save_record(tmp_path / "r.npz", arrays)
    for _ in range(2):  # the second read takes the cached headers
        got = load_record(path)
        with np.load(path, allow_pickle=False) as data:
            expected = {k: data[k] for k in data.files}
        assert list(got) == list(expected)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape
            np.testing.assert_array_equal(got[key], value)
            assert got[key].flags.writeable
    np.savez(tmp_path / "o.npz", o=np.array([{"a": 1}], dtype=object))
    import pytest

    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_record(tmp_path / "o.npz")


def test_mean_rows_is_the_mean_of_the_rows_bit_for_bit():
    from xaudit.analysis.stats import mean_rows

    rng = np.random.default_rng(3)
    maps = (rng.normal(size=(300, 6, 5, 4)) * rng.uniform(0, 100, size=(300, 1, 1, 1))).astype(np.float32)
    rows = np.flatnonzero(rng.uniform(size=300) < 0.4)
    np.testing.assert_array_equal(mean_rows(maps, rows), maps[rows].mean(axis=0))
    assert mean_rows(maps, rows).dtype == np.float32
    np.testing.assert_array_equal(mean_rows(maps, np.arange(300) % 3 == 0), maps[::3].mean(axis=0))


def test_mean_rows_in_blocks_of_a_file_mapped_array_is_the_same_and_leaves_its_pages_to_the_kernel(tmp_path, monkeypatch):
    from xaudit.analysis.stats import mean_rows
    from xaudit.core import pages
    from xaudit.data import cohort as cohort_module

    rng = np.random.default_rng(5)
    values = (rng.normal(size=(300, 6, 5, 4)) * rng.uniform(0, 100, size=(300, 1, 1, 1))).astype(np.float32)
    monkeypatch.setattr(cohort_module, "SPILL_BYTES", 1000)
    mapped = cohort_module.spilled(values.shape, tmp_path)
    mapped[:] = values
    released = []
    monkeypatch.setattr(pages, "BLOCK_BYTES", 7 * values[0].nbytes)  # blocks of 7 rows, the last one short
    real = pages.release_pages
    monkeypatch.setattr(pages, "release_pages", lambda *a: (released.append(len(a)), real(*a)))
    rows = np.flatnonzero(rng.uniform(size=300) < 0.4)
    np.testing.assert_array_equal(mean_rows(mapped, rows), values[rows].mean(axis=0))
    assert len(released) == 43  # ceil(300 / 7): one release per block
    np.testing.assert_array_equal(mapped, values)  # released pages read back from the file, unchanged
    np.testing.assert_array_equal(mean_rows(values, slice(None)), values.mean(axis=0))


def test_released_pages_leave_the_resident_set_and_keep_their_data(tmp_path, monkeypatch):
    import sys

    from xaudit.core.pages import release_pages
    from xaudit.data import cohort as cohort_module

    if not sys.platform.startswith("linux"):
        pytest.skip("RssFile is Linux's")

    def file_kib() -> int:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssFile:"))

    monkeypatch.setattr(cohort_module, "SPILL_BYTES", 0)
    mapped = cohort_module.spilled((64, 256, 256), tmp_path)  # 16 MiB, file-mapped
    mapped[:] = 1.5
    before = file_kib()
    release_pages(mapped)
    assert before - file_kib() > 12 * 1024  # most of its 16 MiB left the resident set
    assert float(mapped.sum()) == 1.5 * mapped.size  # and reads back from the file
    release_pages(np.ones(4))  # an array in memory: nothing to do


def test_a_typical_example_is_searched_among_a_bounded_even_draw_of_a_big_cell():
    from xaudit.report.sections_looking import _typical

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(40, 3, 3)).astype(np.float32)
    index = np.arange(40)
    assert _typical(maps, index) == _typical(maps, index, cap=40)  # below the cap: the whole cell
    picked = _typical(maps, index, cap=5)
    assert picked in {0, 10, 20, 29, 39}  # np.linspace(0, 39, 5), rounded


def test_spray_maps_keep_their_float32_and_cluster_as_in_float64():
    from xaudit.analysis.bias import BiasInputs, BiasParams, spray

    rng = np.random.default_rng(1)
    n = 40
    labels = np.repeat([0, 1], n // 2)
    site = np.tile(np.repeat(["A", "B"], n // 4), 2)
    maps = rng.normal(0, 0.3, size=(n, 64)).astype(np.float32)
    maps[(labels == 1) & (site == "A"), :16] += 2
    probs = np.stack([1 - labels, labels], axis=1).astype(float)
    inputs = BiasInputs(labels=labels, predicted=labels, probs=probs, class_names=CLASSES, groups={"site": site},
                        spray_maps=maps)
    assert inputs.spray_maps.dtype == np.float32 and np.shares_memory(inputs.spray_maps, maps)  # no float64 copy
    as32 = spray(inputs.spray_maps, labels, labels, {"site": site}, CLASSES, BiasParams())
    as64 = spray(maps.astype(float), labels, labels, {"site": site}, CLASSES, BiasParams())
    assert [c.to_dict() for c in as32.classes] == [c.to_dict() for c in as64.classes]
    bad = maps.copy()
    bad[33, 3] = np.nan
    import pytest

    from xaudit.errors import DataError

    with pytest.raises(DataError, match="row 33"):
        BiasInputs(labels=labels, predicted=labels, probs=probs, class_names=CLASSES, groups={"site": site},
                   spray_maps=bad)


def test_take_rows_of_a_file_mapped_array_is_fancy_indexing_in_blocks(tmp_path, monkeypatch):
    from xaudit.core import pages
    from xaudit.data import cohort as cohort_module

    values = np.random.default_rng(6).normal(size=(100, 3, 4)).astype(np.float32)
    monkeypatch.setattr(cohort_module, "SPILL_BYTES", 0)
    mapped = cohort_module.spilled(values.shape, tmp_path)
    mapped[:] = values
    index = np.array([97, 3, 3, 50, 0, 99, 12])  # any order, repeats kept
    released = []
    real = pages.release_pages
    monkeypatch.setattr(pages, "release_pages", lambda *a: (released.append(1), real(*a)))
    got = pages.take_rows(mapped, index, block_bytes=2 * values[0].nbytes)
    np.testing.assert_array_equal(got, values[index])
    assert len(released) == 4 and pages._mapping(got) is None  # blocks of 2 rows; a copy in memory
    np.testing.assert_array_equal(pages.take_rows(values, index), values[index])  # in memory: plain indexing
