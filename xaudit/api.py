"""The public Python API: everything ``xaudit`` does on the command line, as functions.

    load_config(path, overrides)          -> Config
    run_audit(config, RunOptions(...))    -> RunResult (run_dir, audit: the audit.json content)
    validate(config, device=None)         -> Setup (config, manifest, images, model checked; nothing heavy)
    merge_runs(shard_dirs, output)        -> RunResult
    rerender_report(run_dir)              -> Path of report.html
    interrogate_run(run_dir, params=None) -> dict (the audit.json, with the interrogation folded in)
    compare_runs(run_dirs, ...)           -> dict (compare.json)
    load_run_config(run_dir)              -> Config of a finished run
    METHODS, get_method(name)             the attribution method registry

Errors are `xaudit.errors.XauditError` subclasses (ConfigError, DataError, ModelError,
OutputError), each with a message naming the key, file or row.
"""

from __future__ import annotations

from xaudit.attribution import REGISTRY as METHODS
from xaudit.attribution import get_method
from xaudit.config import Config, load_config
from xaudit.core.provenance import load_run_config
from xaudit.stages.validate import validate_setup as validate
from xaudit.workflows.audit import RunOptions, RunResult, run_audit
from xaudit.workflows.compare import compare_runs
from xaudit.workflows.interrogate import interrogate_finished_run as interrogate_run
from xaudit.workflows.merge import merge_runs
from xaudit.workflows.rerender import rerender_report

__all__ = [
    "METHODS", "Config", "RunOptions", "RunResult", "compare_runs", "get_method", "interrogate_run", "load_config",
    "load_run_config", "merge_runs", "rerender_report", "run_audit", "validate",
]
