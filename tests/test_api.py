"""The public Python API: what a notebook user imports, and the README's example run for real."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

import xaudit
from conftest import make_cohort, make_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_public_name_resolves_and_is_documented():
    from xaudit import api

    assert set(xaudit.__all__) - {"__version__"} == set(api.__all__)
    for name in api.__all__:
        assert getattr(xaudit, name) is getattr(api, name)
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):text.index("## Config reference")]
    for name in api.__all__:
        assert name in section, f"{name} is public but not in the README's Python API section"


def test_import_xaudit_loads_no_heavy_package():
    probe = "import sys, xaudit; print(sorted(m for m in ('torch', 'monai', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_example_runs(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    manifest = make_cohort(tmp_path / "cohort", n=4)
    config = make_config(tmp_path, manifest, methods={"saliency": {}})
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text(yaml.safe_dump(yaml.safe_load(config.read_text())))
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(compile(code, "README.md", "exec"), {"print": lambda *a: printed.append(a)})
    assert printed[0][0] in ("signature", "pathology", "inconclusive") and printed[0][1]["audited"] == 4
    assert (tmp_path / "runs" / "notebook" / "audit.json").is_file()
