"""`xaudit compare`: everything but the Typer parsing, so the command itself is a few lines.

Exit codes: 0 done (also when something got worse, unless asked) · 1 a regression with
``--fail-on-regression`` · 2 usage, unreadable or incompatible runs (raised as
`XauditUsageError`; the CLI maps it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO


def compare_command_impl(
    run_dirs: list[Path],
    output: Path | None = None,
    as_json: bool = False,
    fail_on_regression: str | None = None,
    allow_partial: bool = False,
    quiet: bool = False,
    stdout: TextIO | None = None,
    console=None,
    pairing: str = "auto",
) -> int:
    """Compare runs, write compare.json/.md/.html, print, and return the exit code.

    Args:
        run_dirs: finished run directories; the first is the reference.
        output: output directory (default ``<first run>/../compare-<a>-vs-<b>``).
        as_json: print compare.json on stdout (else the output directory's path).
        fail_on_regression: ``"accuracy:0.05,roc_auc:0.05"`` or ``"findings"``; exit 1 when
            a metric drops by more than its threshold or a finding becomes critical.
        allow_partial: compare the common part of incompatible runs.
        pairing: ``auto`` (runs on the same subjects are resampled together) or ``independent``.
        quiet: no summary table on stderr (regressions that fail the command are still shown).
        stdout, console: where results and the human summary go (default: sys.stdout and a
            rich console on stderr).

    Raises:
        XauditUsageError: bad thresholds, unreadable or incompatible runs (exit 2).
    """
    from xaudit.errors import XauditUsageError
    from xaudit.workflows.compare import compare_runs
    from xaudit.analysis.compare.params import make_params, parse_thresholds
    from xaudit.report.compare import print_summary

    stdout = stdout or sys.stdout
    if pairing not in ("auto", "independent"):
        raise XauditUsageError(f"--pairing must be 'auto' or 'independent'. Got {pairing!r} instead.")
    thresholds = parse_thresholds(fail_on_regression) if fail_on_regression is not None else {}
    result = compare_runs(list(run_dirs), output, make_params(allow_partial=allow_partial, thresholds=thresholds, pairing=pairing))
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not quiet:
        print_summary(result, console)
        console.print(f"comparison written to {result['output']}", highlight=False)
    failing = fail_on_regression is not None and bool(result["regressions"])
    if failing and quiet:
        for item in result["regressions"]:
            console.print(f"regression {item['run']}: {item['message']}", markup=False, highlight=False)
    stdout.write(json.dumps(result, indent=2) + "\n" if as_json else result["output"] + "\n")
    return 1 if failing else 0
