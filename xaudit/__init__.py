"""xaudit: batch auditing of medical image classifiers.

The public API, for notebooks and scripts (each name is imported on first use, so
``import xaudit`` stays instant)::

    from xaudit import load_config, run_audit, RunOptions
    result = run_audit(load_config("config.yaml"), RunOptions(output="runs/a"))
    result.audit["verdict"]

See `xaudit.api` for the whole list.
"""

from __future__ import annotations

from xaudit._version import __version__

__all__ = [
    "__version__",
    "METHODS",
    "Config",
    "RunOptions",
    "RunResult",
    "compare_runs",
    "get_method",
    "interrogate_run",
    "load_config",
    "load_run_config",
    "merge_runs",
    "rerender_report",
    "run_audit",
    "validate",
]


def __getattr__(name: str):
    if name in __all__:
        from xaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'xaudit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
