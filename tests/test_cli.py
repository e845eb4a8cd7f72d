"""The command line through Typer's CliRunner: help, exit codes, --json, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_cohort, make_config
from xaudit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = make_config(root, make_cohort(root / "cohort", n=10))
    result = runner.invoke(app, ["run", str(config), "--json", "-q"])
    assert result.exit_code == 0, result.output
    return root, config, json.loads(result.stdout)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "methods", "rules", "merge", "report", "sample-data"):
        assert command in result.stdout


def test_methods_json_lists_parameters():
    result = runner.invoke(app, ["methods", "--json"])
    assert result.exit_code == 0
    methods = {m["name"]: m for m in json.loads(result.stdout)}
    assert "saliency" in methods and "parameters" in methods["saliency"]


def test_run_writes_the_output_contract(finished_run):
    root, _config, summary = finished_run
    run = Path(summary["run_dir"])
    for name in ("config.resolved.yaml", "audit.json", "predictions.csv", "features.csv", "rules.json", "rules.md",
                 "report.html", "report.md", "errors.csv", "run.log"):
        assert (run / name).is_file(), name
    audit = json.loads((run / "audit.json").read_text())
    assert audit["schema_version"] and audit["counts"]["audited"] == 10
    assert audit["run"]["config_hash"] and audit["run"]["device"] == "cpu"
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns[:2]) == ["subject_id", "site"] and len(preds) == 10
    np.testing.assert_allclose(preds[["prob_healthy", "prob_lesion"]].sum(axis=1), 1.0, atol=1e-5)


def test_attribution_volumes_carry_the_source_affine(finished_run):
    root, _config, summary = finished_run
    run = Path(summary["run_dir"])
    for method in ("saliency", "integrated_gradients", "gradcam"):
        for sid in ("sub-000", "sub-007"):
            src = nib.load(str(root / "cohort" / "images" / f"{sid}.nii.gz"))
            out = nib.load(str(run / "attributions" / method / f"{sid}.nii.gz"))
            assert out.shape == src.shape
            np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
            assert out.get_data_dtype() == np.float32
            data = out.get_fdata()
            assert np.isfinite(data).all() and np.abs(data).sum() > 0


def test_audit_json_matches_its_schema(finished_run):
    jsonschema = pytest.importorskip("jsonschema")
    from importlib.resources import files

    schema = json.loads(files("xaudit").joinpath("schemas/audit.schema.json").read_text())
    audit = json.loads((Path(finished_run[2]["run_dir"]) / "audit.json").read_text())
    jsonschema.validate(audit, schema)


def test_existing_run_needs_resume(finished_run):
    _root, config, _ = finished_run
    result = runner.invoke(app, ["run", str(config), "-q"])
    assert result.exit_code == 2
    assert "--resume" in result.output


def test_resume_redoes_nothing(finished_run):
    _root, config, summary = finished_run
    records = sorted((Path(summary["run_dir"]) / "subjects").glob("*.npz"))
    before = {p: p.stat().st_mtime_ns for p in records}
    result = runner.invoke(app, ["run", str(config), "-q", "--resume", "--json"])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in records} == before


def test_fail_on_findings_follows_audit(finished_run):
    _root, config, summary = finished_run
    audit = json.loads((Path(summary["run_dir"]) / "audit.json").read_text())
    severities = {f["severity"] for f in audit["findings"]}
    for threshold, reached in [("info", bool(severities)), ("critical", "critical" in severities)]:
        result = runner.invoke(app, ["run", str(config), "-q", "--resume", "--fail-on-findings", threshold])
        assert result.exit_code == (1 if reached else 0), (threshold, severities)


def test_config_error_exits_2_with_key(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4), data__batch_size=0)
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "data.batch_size" in result.output


def test_set_override_is_applied(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4))
    result = runner.invoke(app, ["validate", str(config), "--set", "attribution.methods={saliency: {}}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["methods"] == ["saliency"]


def test_validate_reports_a_nan_image(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    img = tmp_path / "c" / "images" / "sub-002.nii.gz"
    src = nib.load(str(img))
    data = src.get_fdata().astype(np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, src.affine), str(img))
    result = runner.invoke(app, ["validate", str(make_config(tmp_path, manifest))])
    assert result.exit_code == 2
    assert "sub-002" in result.output and "NaN" in result.output


def test_bad_shard_is_a_usage_error(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4))
    result = runner.invoke(app, ["run", str(config), "--shard", "2/2"])
    assert result.exit_code == 2


def test_readme_lists_every_attribution_method_with_its_parameters():
    from pathlib import Path

    from xaudit.attribution import REGISTRY

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in readme.splitlines()
            if line.startswith("| `") and line.count("|") == 5}
    for name, cls in REGISTRY.items():
        assert name in rows, f"README's method table misses {name}"
        for parameter in cls.Params.model_fields:
            assert f"`{parameter}`" in rows[name], f"README: {name} misses parameter {parameter}"


def test_json_errors_also_go_to_stdout(tmp_path):
    import json

    from typer.testing import CliRunner

    from xaudit.cli import app

    missing = tmp_path / "config.yaml"
    missing.write_text("data: {manifest: nowhere.csv}\nmodel: {factory: tiny_nets:build, classes: [a, b]}\n"
                       "attribution: {methods: {saliency: {}}}\n")
    result = CliRunner().invoke(app, ["validate", str(missing), "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["exit_code"] == 2 and "nowhere.csv" in payload["error"]


def test_methods_in_a_pipe_are_plain_and_whole():
    """In a pipe (CliRunner is not a terminal): no table borders, every name whole, nothing over 80 columns."""
    from xaudit.attribution import REGISTRY

    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in result.stdout and "┃" not in result.stdout
    names = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert names == list(REGISTRY)


def test_console_script_imports_without_the_cycle_collector_and_collects_once_the_command_runs(monkeypatch):
    """`main` (the console script, `python -m xaudit`) keeps the collector off while a command imports
    its modules, freezes what they made, and has it on again from the command's first step."""
    import gc

    from xaudit import cli

    seen = {}

    def command(prog_name):
        seen["importing"] = gc.isenabled()
        cli._guard(lambda: seen.update(running=gc.isenabled(), frozen=gc.get_freeze_count() > 0))

    monkeypatch.setattr(cli, "app", command)
    gc.unfreeze()
    try:
        cli.main()
    finally:
        gc.unfreeze()  # this test process's objects back to the collector
        gc.enable()
    assert seen == {"importing": False, "running": True, "frozen": True}


def test_app_called_from_python_leaves_the_host_process_collector_alone(tmp_path):
    import gc

    config = make_config(tmp_path, make_cohort(tmp_path / "cohort", n=4))
    frozen = gc.get_freeze_count()
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_log_records_are_one_line_each_when_stderr_is_no_terminal(capsys):
    """Cron mails and SLURM logs are read with grep: Rich would wrap a record at 80 columns."""
    import logging

    from xaudit.cli import _setup_logging

    logger = logging.getLogger("xaudit")
    handlers = list(logger.handlers)
    try:
        _setup_logging(quiet=True, verbose=False)
        logger.info("progress that -q drops")
        logger.warning("a warning " + "that is long " * 20 + "ends here")
    finally:
        logger.handlers = handlers
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["WARNING  a warning " + "that is long " * 20 + "ends here"]


def test_json_errors_list_each_problem(tmp_path):
    """Scripts get the problems as a list, not one string with newlines (a new user's trial)."""
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4))
    result = runner.invoke(app, ["validate", str(config), "--set", "seed=-1", "--set", "data.batch_size=0", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(error["problems"]) == 2 and all("\n" not in p for p in error["problems"])
    assert any(p.startswith("`seed`") for p in error["problems"])
    assert any(p.startswith("`data.batch_size`") for p in error["problems"])
    missing = runner.invoke(app, ["validate", str(config), "--set", "model.layer=nowhere", "--json"])
    assert missing.exit_code == 2
    single = json.loads(missing.stdout.strip().splitlines()[-1])
    assert single["problems"] == [single["error"]]


def test_an_output_that_is_a_file_is_named_as_such(tmp_path):
    config = make_config(tmp_path, make_cohort(tmp_path / "c", n=4))
    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    for target in (afile, afile / "run"):
        result = runner.invoke(app, ["run", str(config), "-q", "-o", str(target)])
        assert result.exit_code == 2, result.output
        assert "is a file, not a folder" in result.output and "File exists" not in result.output
    assert afile.read_text() == "mine"  # the user's file untouched
