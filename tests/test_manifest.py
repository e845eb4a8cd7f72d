"""Manifest parsing and validation: clear errors naming the row and column."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xaudit.config import config_from_dict
from xaudit.core.ids import safe_file_id
from xaudit.data.manifest import load_manifest, parse_label
from xaudit.errors import DataError

CLASSES = ["healthy", "lesion"]


def data_cfg(tmp_path, manifest_text: str, **data):
    path = tmp_path / "manifest.csv"
    path.write_text(manifest_text)
    raw = {"data": {"manifest": str(path), **data}, "model": {"factory": "tiny_nets:build", "classes": CLASSES}}
    raw["attribution"] = {"methods": {"saliency": {}}}
    return config_from_dict(raw, base_dir=tmp_path).data


def touch(tmp_path, *names):
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")


def test_rows_become_subjects_with_absolute_paths_and_indices(tmp_path):
    touch(tmp_path, "a.nii.gz", "b.nii.gz")
    cfg = data_cfg(tmp_path, "subject_id,image,label,site\ns1,a.nii.gz,lesion,X\ns2,b.nii.gz,0,Y\n", group_columns=["site"])
    subjects = load_manifest(cfg, CLASSES)
    assert [s.label for s in subjects] == [1, 0]
    assert subjects[0].images[0] == tmp_path / "a.nii.gz"
    assert subjects[1].groups == {"site": "Y"}
    assert subjects[1].row == 3


def test_missing_column_is_named_with_suggestion(tmp_path):
    cfg = data_cfg(tmp_path, "subject_id,image,lable\ns1,a.nii,healthy\n")
    with pytest.raises(DataError) as err:
        load_manifest(cfg, CLASSES)
    assert "'label'" in str(err.value) and "Did you mean 'lable'" in str(err.value)


def test_label_outside_classes_names_the_line(tmp_path):
    touch(tmp_path, "a.nii")
    cfg = data_cfg(tmp_path, "subject_id,image,label\ns1,a.nii,tumour\n")
    with pytest.raises(DataError, match="line 2.*tumour"):
        load_manifest(cfg, CLASSES)


def test_duplicate_ids_are_rejected(tmp_path):
    touch(tmp_path, "a.nii")
    cfg = data_cfg(tmp_path, "subject_id,image,label\ns1,a.nii,healthy\ns1,a.nii,lesion\n")
    with pytest.raises(DataError, match="repeats line 2"):
        load_manifest(cfg, CLASSES)


def test_ids_that_collide_as_file_names_are_rejected(tmp_path):
    touch(tmp_path, "a.nii")
    cfg = data_cfg(tmp_path, "subject_id,image,label\na/b,a.nii,healthy\na:b,a.nii,lesion\n")
    with pytest.raises(DataError, match="same file name"):
        load_manifest(cfg, CLASSES)


def test_missing_files_are_listed(tmp_path):
    cfg = data_cfg(tmp_path, "subject_id,image,label\ns1,nope.nii.gz,healthy\n")
    with pytest.raises(DataError, match="not found.*line 2"):
        load_manifest(cfg, CLASSES)


def test_split_filter_and_unknown_split(tmp_path):
    touch(tmp_path, "a.nii", "b.nii")
    text = "subject_id,image,label,split\ns1,a.nii,healthy,train\ns2,b.nii,lesion,test\n"
    assert [s.subject_id for s in load_manifest(data_cfg(tmp_path, text, split="test"), CLASSES)] == ["s2"]
    with pytest.raises(DataError, match="values present"):
        load_manifest(data_cfg(tmp_path, text, split="val"), CLASSES)


def test_hostile_ids_never_escape_as_paths():
    for sid in ["../../etc/passwd", "/abs/path", "..", ".hidden", "a\\b", "x" * 500]:
        safe = safe_file_id(sid)
        assert "/" not in safe and "\\" not in safe and not safe.startswith(".") and len(safe) <= 120


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_safe_file_id_is_always_a_plain_file_name(sid):
    safe = safe_file_id(sid)
    assert safe and "/" not in safe and "\x00" not in safe and not safe.startswith(".")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=10))
def test_parse_label_accepts_only_classes_or_indices(value):
    try:
        index = parse_label(value, CLASSES, "here")
    except DataError as exc:
        assert "here" in str(exc)
        return
    assert index in (-1, 0, 1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abc,\"\n x", max_size=6), st.sampled_from(["healthy", "lesion", "2", ""])), min_size=1, max_size=5))
def test_arbitrary_manifest_text_gives_data_errors_only(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("m")
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["subject_id", "image", "label"])
    for sid, label in rows:
        writer.writerow([sid, "img.nii", label])
    try:
        load_manifest(data_cfg(tmp, buf.getvalue()), CLASSES, check_files=False)
    except DataError:
        pass


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_semicolon_or_tab_separated_manifest_is_read_as_such(tmp_path, delimiter):
    """A spreadsheet's CSV in many locales uses semicolons, and a TSV tabs; with a BOM, as Excel writes."""
    touch(tmp_path, "a.nii.gz", "b,1.nii.gz")
    rows = [["subject_id", "image", "label", "site"], ["s1", "a.nii.gz", "lesion", "X"], ["s2", "b,1.nii.gz", "healthy", "Y"]]
    cfg = data_cfg(tmp_path, "\ufeff" + "".join(delimiter.join(r) + "\n" for r in rows), group_columns=["site"])
    subjects = load_manifest(cfg, CLASSES)
    assert [s.subject_id for s in subjects] == ["s1", "s2"] and [s.label for s in subjects] == [1, 0]
    assert subjects[1].images[0] == tmp_path / "b,1.nii.gz" and subjects[1].groups == {"site": "Y"}


def test_a_row_with_more_fields_than_the_header_names_its_delimiter(tmp_path):
    cfg = data_cfg(tmp_path, "subject_id;image;label\ns1;a.nii;healthy;extra\n")
    with pytest.raises(DataError, match="line 2: 4 fields, the header has 3; quote values that contain semicolons"):
        load_manifest(cfg, CLASSES)
