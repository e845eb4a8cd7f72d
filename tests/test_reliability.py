"""Reliability round two: xaudit touches only its own files, and no input hangs, exhausts
or crashes it (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import pytest
from typer.testing import CliRunner

from conftest import make_cohort, make_config
from xaudit.cli import app

runner = CliRunner()


def _user_folder(root: Path) -> dict[Path, bytes]:
    files = {root / "report.html": b"<p>mine</p>", root / "predictions.csv": b"a,b\n1,2\n",
             root / "audit.json": b"{}", root / "figures" / "mean_map_mine.png": b"png", root / "notes.txt": b"notes"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def test_a_users_non_empty_folder_is_refused_and_left_untouched(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    out = tmp_path / "mine"
    files = _user_folder(out)
    result = runner.invoke(app, ["run", str(config), "-q", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "is not an xaudit run" in result.output and "(-o)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_re_render_removes_only_figures_the_run_recorded(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    assert runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0"]).exit_code == 0
    run = tmp_path / "run"
    assert (run / ".xaudit-run.json").is_file()
    figures = run / "figures"
    recorded = sorted(p.name for p in figures.glob("*.png"))
    assert recorded
    mine = figures / "mean_map_mine.png"
    mine.write_bytes(b"the user's own")
    # an earlier render's figure that this render no longer makes
    from xaudit.core.outputs import RunDirectory

    run_dir = RunDirectory(run)
    run_dir.own("report_figures", run_dir.owned("report_figures") | {"figures/mean_map_gone.png"})
    (figures / "mean_map_gone.png").write_bytes(b"stale")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == b"the user's own"
    assert not (figures / "mean_map_gone.png").exists()
    assert sorted(p.name for p in figures.glob("*.png")) == sorted([*recorded, mine.name])


def test_a_checkpoint_of_other_widths_is_a_model_error_exit_2(tmp_path):
    import tiny_nets

    wide = tiny_nets.TinyCNN(3, 1, 2, width=8)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    manifest = make_cohort(tmp_path / "c", n=4)
    config = make_config(tmp_path, manifest, methods={"saliency": {}},
                         model={"factory": {"function": "tiny_nets:build", "checkpoint": str(tmp_path / "wide.pth")},
                                "classes": ["healthy", "lesion"], "layer": "features.3"})
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "other sizes" in result.output and "features.0.weight" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_unexpected_error_exits_3_with_one_line_and_a_crash_file(tmp_path, monkeypatch):
    import tempfile

    import xaudit.workflows.finish as finish

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(finish, "rules_stage", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 3, result.output
    assert "unexpected ZeroDivisionError: a bug" in result.output and "Traceback" not in result.output
    crashes = list((tmp_path / "run").glob("crash-*.txt"))
    assert len(crashes) == 1 and "ZeroDivisionError" in crashes[0].read_text() and "Traceback" in crashes[0].read_text()
    # before a run directory exists, the crash file goes to the temp folder
    monkeypatch.setattr("xaudit.stages.validate.validate_setup", broken)
    monkeypatch.setattr("xaudit.workflows.audit.validate_setup", broken)
    result = runner.invoke(app, ["run", str(config), "-q", "-o", str(tmp_path / "new")])
    assert result.exit_code == 3 and not (tmp_path / "new").exists()
    assert len(list((tmp_path / "tmp").glob("crash-*.txt"))) == 1


def test_a_memory_error_has_a_message():
    from xaudit.errors import reason_of

    assert "out of memory" in reason_of(MemoryError())
    assert reason_of(ValueError()) == "ValueError"


def _bomb(depth: int = 7) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["report:\n  title: *a6", "data:\n  group_columns: *a6",
                                   "attribution:\n  methods:\n    saliency: {absolute: *a6}", "interrogate: *a6"])
def test_yaml_alias_bombs_are_refused_quickly(tmp_path, where):
    import time

    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=2))
    text = config.read_text()
    bomb = "\n".join(line for line in text.splitlines() if not line.startswith(where.split(":")[0] + ":"))
    config.write_text("x-anchors:\n" + "\n".join("  " + line for line in _bomb().splitlines()) + "\n" + bomb + "\n" + where + "\n")
    assert len(config.read_bytes()) < 4000
    import xaudit.stages.validate  # noqa: F401 - the import (torch, MONAI) is not what is timed

    t0 = time.perf_counter()
    result = runner.invoke(app, ["validate", str(config)])
    assert time.perf_counter() - t0 < 5
    assert result.exit_code == 2, result.output
    assert "YAML aliases expand to more than" in result.output and len(result.output) < 600


def test_recursive_aliases_and_set_bombs_are_config_errors(tmp_path):
    from xaudit.config import load_config
    from xaudit.errors import ConfigError

    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=2))
    with pytest.raises(ConfigError, match="expand to more than"):
        load_config(config, ["report.title=" + "{" + _bomb().replace("\n", ", ") + "}"])
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(config, ["report.title=&a [*a]"])
    # a small, legitimate alias still works
    assert load_config(config, ["data.group_columns=[&s site]"]).data.group_columns == ["site"]


def test_values_echoed_in_config_errors_are_short(tmp_path):
    from xaudit.config import load_config
    from xaudit.errors import ConfigError

    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=2))
    with pytest.raises(ConfigError) as info:
        load_config(config, ["attribution.target=" + "x" * 100_000, "data.batch_size=" + "y" * 100_000,
                             "attribution.methods.saliency=" + "[" + ",".join(["1"] * 10_000) + "]"])
    message = str(info.value)
    assert len(message) < 2000 and "chars)" in message


def test_csv_cells_that_would_run_as_formulas_are_neutralised(tmp_path):
    import csv
    import json

    manifest = make_cohort(tmp_path / "c", n=6)
    frame = pd.read_csv(manifest)
    frame.loc[0, "subject_id"] = '=HYPERLINK("http://x","y")'
    frame.loc[1, "subject_id"] = "=cmd|' /C calc'!A0"
    frame.loc[1, "image"] = "images/missing.nii.gz"
    frame["site"] = frame["site"].map({"A": "@SUM(1+1)", "B": "-2"})
    frame.to_csv(manifest, index=False)
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    result = runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in ("predictions.csv", "errors.csv", "features.csv"):
        with open(run / name, newline="") as fh:
            cells = [cell for row in csv.reader(fh) for cell in row]
        assert not [c for c in cells if c[:1] in "=+@\t\r" or (c[:1] == "-" and c != "-2" and not c[1:2].isdigit())], name
    predictions = pd.read_csv(run / "predictions.csv", dtype=str, keep_default_na=False)
    assert "'=HYPERLINK(\"http://x\",\"y\")" in set(predictions["subject_id"])
    assert set(predictions["site"]) == {"'@SUM(1+1)", "-2"}
    errors = pd.read_csv(run / "errors.csv", dtype=str, keep_default_na=False)
    assert list(errors["subject_id"]) == ["'=cmd|' /C calc'!A0"]
    audit = json.loads((run / "audit.json").read_text())
    assert audit["counts"]["failed"] == 1  # errors.csv read back as the ids it was given
    text = (run / "audit.json").read_text()
    assert "@SUM(1+1)" in text and "\"'@SUM" not in text and "''@SUM" not in text  # JSON keeps the values exact


@pytest.mark.parametrize("value", ["=1+1", "'=1", "''@x", "-1.5", "+3", "-", "-x", "\tx", "plain", "'quoted", ""])
def test_spreadsheet_escaping_round_trips(value):
    from xaudit.core.outputs import spreadsheet_safe, unescape_cell

    written = spreadsheet_safe(value)
    assert unescape_cell(written) == value
    assert not (written[:1] in ("=", "+", "-", "@", "\t") and written not in ("-1.5", "+3"))


def _header_only(path: Path, shape, dtype, zooms=(1.0, 1.0, 1.0), affine=None) -> Path:
    """A .nii.gz of a few KiB whose header declares ``shape`` (the voxels are never written)."""
    import gzip

    import nibabel as nib
    import numpy as np

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms(zooms)
    header.set_sform(np.diag([*zooms, 1.0]) if affine is None else affine, code=1)
    header.set_qform(None)
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + b"\0" * 4096)
    return path


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    import numpy as np

    manifest = make_cohort(tmp_path / "c", n=6)
    frame = pd.read_csv(manifest)
    bomb = _header_only(manifest.parent / frame.loc[2, "image"], (1280, 1280, 1280), np.float64)
    assert bomb.stat().st_size < 64 * 1024
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "15.6 GiB" in result.output and "data.max_image_gb" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0"])
    assert result.exit_code == 0, result.output
    errors = pd.read_csv(tmp_path / "run" / "errors.csv")
    assert list(errors["subject_id"]) == [frame.loc[2, "subject_id"]] and "data.max_image_gb" in errors["reason"][0]
    # the limit is the user's to raise: a real 4 KiB-voxel image under a 1 KiB limit is refused
    from xaudit.data.loading import check_header
    from xaudit.errors import DataError

    with pytest.raises(DataError, match="max_image_gb"):
        check_header(manifest.parent / frame.loc[0, "image"], 3, max_bytes=1024)


def test_bad_voxel_sizes_affines_and_special_files_are_named_at_validation(tmp_path):
    import os

    import numpy as np

    manifest = make_cohort(tmp_path / "c", n=8)
    frame = pd.read_csv(manifest)
    image = lambda i: manifest.parent / frame.loc[i, "image"]  # noqa: E731
    _header_only(image(0), (12, 14, 10), np.float32, zooms=(1.0, 0.0, 1.0))
    _header_only(image(1), (12, 14, 10), np.float32, affine=np.diag([1.0, 1.0, np.nan, 1.0]))
    _header_only(image(2), (12, 14, 10), np.float32, affine=np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    image(3).unlink()
    os.mkfifo(image(3))
    image(4).unlink()
    image(4).symlink_to("/dev/zero")
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "5 subjects have problems" in out
    assert "pixdim" in out and "NaN/Inf" in out and "singular" in out
    assert out.count("not a regular file") == 2 and "file not found" not in out


def _manifest_with_bad_rows(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A cohort of 8 whose manifest has a quoted newline, a blank path, an unknown label and a repeated id."""
    import csv

    manifest = make_cohort(tmp_path / "c", n=8)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[0, "site"] = "A\nwith a newline"  # one record, two lines in the file
    frame.loc[2, "image"] = ""
    frame.loc[4, "label"] = "tumour"
    frame.loc[6, "subject_id"] = frame.loc[5, "subject_id"]
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(frame.columns))
        writer.writerows(frame.values.tolist())
    # header is line 1; the record of row 0 takes lines 2-3, so row k starts at line k + 3
    return manifest, {"blank": 5, "label": 7, "duplicate": 9}


def test_validate_lists_every_bad_manifest_row_with_its_true_line(tmp_path):
    manifest, lines = _manifest_with_bad_rows(tmp_path)
    result = runner.invoke(app, ["validate", str(make_config(tmp_path, manifest))])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "3 subjects have problems" in out
    assert f"manifest line {lines['blank']} (sub-002)" in out and "empty path" in out
    assert f"manifest line {lines['label']} (sub-004)" in out and "tumour" in out
    assert f"manifest line {lines['duplicate']} (sub-005)" in out and f"repeats line {lines['duplicate'] - 1}" in out


def test_a_run_with_skip_puts_bad_manifest_rows_in_errors_csv_and_audits_the_rest(tmp_path):
    manifest, lines = _manifest_with_bad_rows(tmp_path)
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    result = runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0", "--json"])
    assert result.exit_code == 0, result.output
    errors = pd.read_csv(tmp_path / "run" / "errors.csv", dtype=str)
    assert sorted(errors["manifest_line"].astype(int)) == sorted(lines.values())
    assert set(errors["stage"]) == {"manifest"}
    import json

    counts = json.loads((tmp_path / "run" / "audit.json").read_text())["counts"]
    assert counts == {"subjects": 8, "audited": 5, "failed": 3, "missing": 0}


def test_a_shard_into_a_full_runs_directory_is_refused(tmp_path):
    from filelock import FileLock

    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    assert runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0"]).exit_code == 0
    resolved = (tmp_path / "run" / "config.resolved.yaml").read_text()
    result = runner.invoke(app, ["run", str(config), "-q", "--shard", "0/2"])
    assert result.exit_code == 2 and "holds a full run" in result.output, result.output
    assert (tmp_path / "run" / "config.resolved.yaml").read_text() == resolved
    live = tmp_path / "live"
    live.mkdir()
    with FileLock(str(live / ".lock")):  # a full run at work
        result = runner.invoke(app, ["run", str(config), "-q", "--shard", "1/2", "-o", str(live)])
    assert result.exit_code == 2 and "being written by a full run" in result.output, result.output


def test_merge_with_a_shard_missing_exits_non_zero_unless_partial(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), methods={"saliency": {}})
    assert runner.invoke(app, ["run", str(config), "-q", "--shard", "0/2", "-o", str(tmp_path / "s0")]).exit_code == 0
    result = runner.invoke(app, ["merge", str(tmp_path / "s0"), "-o", str(tmp_path / "m"), "-q"])
    assert result.exit_code == 2 and "--allow-partial" in result.output, result.output
    result = runner.invoke(app, ["merge", str(tmp_path / "s0"), "-o", str(tmp_path / "m"), "-q", "--allow-partial"])
    assert result.exit_code == 0, result.output


def test_atomic_writes_fsync_the_file_before_the_rename_and_then_the_folder(tmp_path, monkeypatch):
    import os

    import xaudit.core.outputs as outputs

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    outputs.write_json(tmp_path / "audit.json", {"a": 1})
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert ".tmp" in events[0][1] and events[2][1] == str(tmp_path)


def test_group_values_that_collide_as_file_names_get_distinct_mean_maps(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=8)
    frame = pd.read_csv(manifest)
    frame["site"] = frame["site"].map({"A": "site A", "B": "site_A"})
    frame.to_csv(manifest, index=False)
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    result = runner.invoke(app, ["run", str(config), "-q", "--set", "quality.subjects=0"])
    assert result.exit_code == 0, result.output
    site_maps = sorted(p.name for p in (tmp_path / "run" / "maps" / "saliency").glob("*__site-*.nii.gz"))
    assert len(site_maps) == 4, site_maps  # 2 classes x 2 site values, none replacing another


def test_a_dead_writers_temp_file_is_removed_even_when_its_pid_is_reused(tmp_path):
    import os
    import time

    from xaudit.core.outputs import WRITER, remove_orphaned_temp_files

    # a killed run's leftover whose pid the resumed run (this process) now has
    orphan = tmp_path / f".rules.md.{WRITER}.k3j2.tmp.md"
    orphan.write_text("half")
    old = time.time() - 86400
    os.utime(orphan, (old, old))
    live = tmp_path / f".audit.json.{WRITER}.a1b2.tmp.json"
    live.write_text("in progress")
    assert remove_orphaned_temp_files(tmp_path) == 1
    assert not orphan.exists() and live.exists()


def test_validate_names_missing_files_before_decoding_any_image(tmp_path, monkeypatch):
    import xaudit.stages.validate as validate

    manifest = make_cohort(tmp_path / "c", n=6)
    frame = pd.read_csv(manifest)
    (manifest.parent / frame.loc[3, "image"]).unlink()
    decoded = []
    monkeypatch.setattr(validate, "voxel_problem", lambda s, dims: decoded.append(s.subject_id))
    result = runner.invoke(app, ["validate", str(make_config(tmp_path, manifest))])
    assert result.exit_code == 2 and "file not found" in result.output, result.output
    assert decoded == []
    # and it says what it has not checked yet, so a second validate is expected, not a surprise
    assert "voxels of the other 5 subject(s) were not read yet" in " ".join(result.output.split())
