"""The command line: parse, call the API, map errors to exit codes. Nothing else.

Exit codes: 0 done · 1 findings at or above the chosen severity (only with
``--fail-on-findings``) or subjects failed (only with ``--fail-on-errors``) · 2 config,
data, model, output or usage error · 3 an unexpected failure (one line on stderr, the
traceback in a ``crash-*.txt`` file in the run directory, or the temp folder before there
is one). Results for scripts go to stdout (``--json``); progress and logs go to stderr.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

CRASH_DIR = "xaudit.crash_dir"  # key in the click context's shared `meta`: where a crash file goes


class _GuardedGroup(TyperGroup):
    """Every command's unexpected exception becomes exit 3, a line and a crash file."""

    def invoke(self, ctx):
        from typer.exceptions import TyperException

        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors and exits: the parser's own
            raise
        except KeyboardInterrupt:  # Typer would exit 130 without a word
            _interrupted(ctx.invoked_subcommand)
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are reported
            _crash(exc, ctx.meta.get(CRASH_DIR))


app = typer.Typer(
    cls=_GuardedGroup,
    name="xaudit",
    help="Audit a medical image classifier over a NIfTI cohort: attribution maps, rules, and a dataset-bias report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SEVERITIES = ("info", "warning", "critical")


def _console():
    from rich.console import Console

    return Console(stderr=True)


class _LineHandler(logging.StreamHandler):
    """Log records on a stderr that is no terminal (cron's mail, a SLURM log): one line each, as
    grep and log collectors expect, where Rich would wrap them at 80 columns."""

    def __init__(self, level: int):
        super().__init__(sys.stderr)
        self.setLevel(level)
        self.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))


def _setup_logging(quiet: bool, verbose: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("xaudit")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, (RichHandler, _LineHandler))]
    console = _console()
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, show_time=False, level=level)
    else:
        handler = _LineHandler(level)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _fail(exc: Exception) -> None:
    """Print a one-line(ish) error on stderr and exit with the error's code."""
    from xaudit.errors import XauditError

    code = exc.exit_code if isinstance(exc, XauditError) else 3
    _console().print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
    context = typer.main.get_current_context(silent=True)
    if context is not None and context.params.get("as_json"):  # scripts read stdout: say it there too
        typer.echo(json.dumps({"error": str(exc), "problems": problems_of(exc), "type": type(exc).__name__,
                               "exit_code": code}))
    raise typer.Exit(code)


def problems_of(exc: Exception) -> list[str]:
    """An error's problems one per item: the lines under a headline such as ``invalid config:``, else the message."""
    lines = [line.strip() for line in str(exc).splitlines()]
    listed = [line for line in lines[1:] if line]
    return listed if len(lines) > 1 and lines[0].endswith(":") and listed else [str(exc)]


def _crash(exc: Exception, folder) -> None:
    """Exit 3: one line on stderr; the traceback in a crash file (`xaudit.core.crash`)."""
    from xaudit.core.crash import write_crash_file
    from xaudit.errors import first_line

    path = write_crash_file(exc, folder)
    where = f"traceback in {path}" if path else "the traceback could not be written"
    message = f"unexpected {type(exc).__name__}: {first_line(exc, 300)} ({where}; please report it)"
    _console().print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    context = typer.main.get_current_context(silent=True)
    if context is not None and context.params.get("as_json"):
        typer.echo(json.dumps({"error": message, "type": type(exc).__name__, "exit_code": 3}))
    raise typer.Exit(3)


def _interrupted(command: str | None) -> None:
    """Exit 130 (the shell's code for Ctrl-C) with one line saying what is kept and how to go on."""
    then = ("the finished subjects are kept: the same command with --resume continues from them"
            if command == "run" else "nothing half-written is left behind; run the command again")
    _console().print(f"[bold yellow]interrupted:[/] {then}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _crash_dir(folder) -> None:
    """Name the run directory a crash file should go to, once it is known."""
    context = typer.main.get_current_context(silent=True)
    if context is not None and folder is not None:
        context.meta[CRASH_DIR] = folder


def _guard(func, *args, **kwargs):
    from xaudit.errors import XauditError

    _imports_done()
    try:
        return func(*args, **kwargs)
    except XauditError as exc:
        _fail(exc)


def _parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if count < 1 or not 0 <= index < count:
        raise typer.BadParameter(f"--shard expects i/N with 0 <= i < N, got {text!r}")
    return index, count


def _progress_factory(bars: bool):
    """Rich bars on a terminal (log lines into run.log), else log lines at least every 30 s."""
    from xaudit.core.progress import bar_progress, log_progress

    return bar_progress(_console()) if bars else log_progress


@app.command()
def run(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="YAML config"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="run directory (overrides `output`)"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set attribution.seed=3"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda[:k] (overrides `device`)"),
    shard: Optional[str] = typer.Option(None, help="i/N: audit the i-th of N deterministic parts"),
    resume: bool = typer.Option(False, "--resume", help="continue a run; finished subjects are not redone"),
    fail_on_findings: Optional[str] = typer.Option(None, "--fail-on-findings", help="exit 1 if a finding reaches this severity (info, warning, critical); 'config' uses bias.fail_severity"),
    fail_on_errors: bool = typer.Option(False, "--fail-on-errors", help="exit 1 if any subject failed"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON on stdout"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="only warnings and errors on stderr; no progress bar"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="debug logging"),
) -> None:
    """Audit the classifier named in CONFIG over its cohort."""
    _setup_logging(quiet, verbose)
    if fail_on_findings is not None and fail_on_findings not in (*SEVERITIES, "config"):
        raise typer.BadParameter(f"--fail-on-findings expects one of {SEVERITIES} or 'config', got {fail_on_findings!r}")
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    cfg = _guard(load_config, config, set_)
    _crash_dir(output or cfg.output)
    options = RunOptions(output=output, device=device, shard=_parse_shard(shard), resume=resume)
    result = _guard(run_audit, cfg, options, _progress_factory(not quiet and sys.stderr.isatty()))
    summary = _run_summary(result)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        _print_summary(summary)
    threshold = cfg.bias.fail_severity if fail_on_findings == "config" else fail_on_findings
    if threshold and _reaches(summary.get("findings", []), threshold):
        raise typer.Exit(1)
    if fail_on_errors and result.failed:
        raise typer.Exit(1)


def _run_summary(result) -> dict:
    audit = result.audit
    findings = [{k: f.get(k) for k in ("id", "severity", "title")} for f in audit.get("findings", [])]
    return {
        "run_dir": str(result.run_dir),
        "report": str(Path(result.run_dir) / "report.html") if "findings" in audit else None,
        "counts": audit.get("counts", {"done": audit.get("done"), "failed": audit.get("failed")}),
        "metrics": (audit.get("metrics") or {}).get("overall"),
        "verdict": audit.get("verdict"),
        "findings": findings,
    }


def _reaches(findings: list[dict], threshold: str) -> bool:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return any(rank.get(f.get("severity"), -1) >= rank[threshold] for f in findings)


def _print_summary(summary: dict) -> None:
    console = _console()
    counts = summary["counts"]
    console.print(f"[bold]run directory:[/] {summary['run_dir']}")
    console.print(f"subjects: {counts}")
    verdict = summary.get("verdict")
    if verdict:
        console.print(f"[bold]verdict:[/] {verdict.get('sentence', verdict) if isinstance(verdict, dict) else verdict}", highlight=False)
    for f in summary.get("findings", [])[:8]:
        console.print(f"  [{f['severity']}] {f['title']}", markup=False)
    if summary.get("report"):
        console.print(f"[bold green]report:[/] {summary['report']}")


@app.command()
def validate(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="YAML config"),
    set_: list[str] = typer.Option([], "--set", help="override a key"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda[:k]"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on stdout"),
) -> None:
    """Check config, manifest, every image, the model and layer names; no heavy work."""
    _setup_logging(True, False)
    from xaudit.config import load_config
    from xaudit.stages.validate import validate_setup

    cfg = _guard(load_config, config, set_)
    setup = _guard(validate_setup, cfg, device, True)
    info = {
        "ok": True, "subjects": len(setup.subjects), "spatial_dims": setup.spatial_dims,
        "input_shape": list(setup.input_shape), "model": setup.model.kind, "device": str(setup.device),
        "methods": [m.name for m in setup.methods], "layer": cfg.model.layer,
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        _console().print(f"[bold green]ok:[/] {info['subjects']} subjects, {info['spatial_dims']}D input {tuple(info['input_shape'])}, "
                         f"{info['model']} model, methods {info['methods']}", highlight=False)


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="machine-readable list on stdout")) -> None:
    """The attribution methods, their parameters and defaults."""
    from xaudit.attribution import REGISTRY

    described = [cls.describe() for cls in REGISTRY.values()]
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    if not sys.stdout.isatty():  # a pipe or a file: plain lines, nothing cut, nothing wider than 80 columns
        typer.echo(_methods_text(described))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="xaudit attribution methods", show_lines=True)
    table.add_column("method", no_wrap=True, min_width=max(len(d["name"]) for d in described))  # never "input_x_gra…"
    table.add_column("parameters (default)", overflow="fold")
    table.add_column("needs", no_wrap=True)
    table.add_column("summary", ratio=1, overflow="fold")
    for d in described:
        params = "\n".join(f"{k} = {v['default']!r}" for k, v in d["parameters"].items()) or "-"
        table.add_row(d["name"], params, _needs(d) or "-", d["summary"])
    Console().print(table)


def _needs(d: dict) -> str:
    return ", ".join(word for key, word in (("needs_layer", "layer"), ("needs_hooks", "hooks"), ("stochastic", "seed"))
                     if d.get(key))


def _methods_text(described: list[dict]) -> str:
    """One block per method: its name and needs, its summary wrapped at 80 columns, its parameters."""
    import textwrap

    lines = []
    for d in described:
        needs = _needs(d)
        lines.append(d["name"] + (f"  (needs: {needs})" if needs else ""))
        lines += textwrap.wrap(d["summary"], 80, initial_indent="    ", subsequent_indent="    ")
        lines += textwrap.wrap(", ".join(f"{k}={v['default']!r}" for k, v in d["parameters"].items()) or "no parameters",
                               80, initial_indent="    parameters: ", subsequent_indent="      ")
        lines.append("")
    return "\n".join(lines).rstrip()


@app.command()
def rules(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="a finished run directory"),
    top: int = typer.Option(10, "--top", min=1, help="how many rules"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """The ranked rules of a finished run."""
    from xaudit.errors import OutputError

    path = run_dir / "rules.json"
    if not path.is_file():
        _fail(OutputError(f"{run_dir} has no rules.json (the rules stage did not run; see audit.json)"))
    from xaudit.analysis.rules import RulesResult, format_rule

    result = RulesResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    chosen = result.rules[:top]
    if as_json:
        typer.echo(json.dumps([r.to_dict() if hasattr(r, "to_dict") else r for r in chosen], indent=2, default=str))
        return
    if not chosen:
        why = "; ".join(getattr(result, "notes", None) or []) or "the forest produced none"
        typer.echo(f"no rules in {run_dir}: {why}")
    for i, rule in enumerate(chosen, 1):
        typer.echo(f"{i:>3}. {format_rule(rule, result.class_names)}")


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., exists=True, file_okay=False, help="finished runs; the first is the reference"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: <first run>/../compare-<a>-vs-<b>"),
    as_json: bool = typer.Option(False, "--json", help="print compare.json on stdout"),
    fail_on_regression: Optional[str] = typer.Option(
        None, "--fail-on-regression",
        help="e.g. 'accuracy:0.05,roc_auc:0.05' or 'findings'; exit 1 on a larger drop or a new critical finding"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="compare the common part of runs with different classes, methods or preprocessing"),
    pairing: str = typer.Option(
        "auto", "--pairing",
        help="auto: runs on the same subjects (same ids, labels and groups) are resampled together; "
             "independent: each run on its own (cohorts that share ids but not subjects)"),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Compare finished runs with the first: metric differences with intervals, findings, rules, attribution."""
    from xaudit.workflows.compare_command import compare_command_impl

    raise typer.Exit(_guard(compare_command_impl, run_dirs, output, as_json, fail_on_regression, allow_partial, quiet,
                            pairing=pairing))


@app.command()
def merge(
    shard_dirs: list[Path] = typer.Argument(..., exists=True, file_okay=False, help="shard run directories"),
    output: Path = typer.Option(..., "-o", "--output", help="merged run directory"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="merge even if some subjects are in no shard given (counted as missing)"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON on stdout"),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Combine shard directories, then run the dataset-level stages (every shard, unless --allow-partial)."""
    _setup_logging(quiet, False)
    from xaudit.workflows.merge import merge_runs

    _crash_dir(output)
    result = _guard(merge_runs, shard_dirs, output, allow_partial)
    summary = _run_summary(result)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        _print_summary(summary)


@app.command()
def submit(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="YAML config"),
    shards: int = typer.Option(..., "--shards", min=1, help="number of shard jobs (a job array)"),
    output: Path = typer.Option(..., "-o", "--output", help="merged run directory (shards go to OUT/shards/i)"),
    set_: list[str] = typer.Option([], "--set", help="override a key"),
    cluster: str = typer.Option("slurm", help="slurm, or local to run the jobs as local processes"),
    partition: Optional[str] = typer.Option(None, help="SLURM partition"),
    timeout_min: int = typer.Option(240, help="time limit per job, minutes"),
    cpus_per_task: int = typer.Option(4, help="CPUs per job"),
    gpus_per_node: int = typer.Option(0, help="GPUs per job"),
    mem_gb: int = typer.Option(16, help="memory per job, GB"),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="at most this many shard jobs running at once (array throttle %N)"),
    python: Optional[str] = typer.Option(None, "--python", help="command running python in a job, e.g. 'apptainer exec --nv xaudit.sif python' (default: this python)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda (inside each job)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait for the jobs, then merge"),
    resume: bool = typer.Option(False, "--resume", help="continue OUT's submission: wait for its running shards, submit again only those neither done nor running"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Run the shards of an audit as a SLURM job array (submitit), then merge them.

    Each shard's stdout/stderr: OUT/submitit/<jobid>_0_log.out/.err (named in OUT/submit.json
    and in the error when a shard fails). Without --wait, finish later with --resume (or
    `xaudit merge OUT/shards/* -o OUT` once every shard is done).
    """
    _setup_logging(quiet, False)
    from xaudit.workflows.submit import ClusterOptions, submit_shards

    options = ClusterOptions(cluster=cluster, partition=partition, timeout_min=timeout_min, cpus_per_task=cpus_per_task,
                             gpus_per_node=gpus_per_node, mem_gb=mem_gb, max_parallel=max_parallel,
                             python=python)
    result = _guard(submit_shards, config, set_, shards, output, options, device, wait, resume)
    if not wait:
        typer.echo(json.dumps({"jobs": result}) if as_json else "\n".join(result))
        return
    summary = _run_summary(result)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        _print_summary(summary)


@app.command()
def report(run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="a finished run directory")) -> None:
    """Re-render report.html and report.md from a run's results."""
    _setup_logging(True, False)
    from xaudit.workflows.rerender import rerender_report

    _crash_dir(run_dir)
    path = _guard(rerender_report, run_dir)
    typer.echo(str(path))


@app.command()
def interrogate(
    run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="a finished run directory"),
    set_: list[str] = typer.Option([], "--set", help="override an interrogate key: --set steps=50 (or interrogate.steps=50)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:k]"),
    fail_on_findings: Optional[str] = typer.Option(None, "--fail-on-findings", help="exit 1 if a finding of the run reaches this severity (info, warning, critical)"),
    as_json: bool = typer.Option(False, "--json", help="print the interrogation summary as JSON on stdout"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="only warnings and errors on stderr"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="debug logging"),
) -> None:
    """Invert the network's representations at several depths on a finished run (no rerun of the rest).

    Writes RUN_DIR/interrogate/, adds `interrogation` and its findings to audit.json and
    re-renders the report. Parameters: the run config's `interrogate:` section, else defaults.
    """
    _setup_logging(quiet, verbose)
    if fail_on_findings is not None and fail_on_findings not in SEVERITIES:
        raise typer.BadParameter(f"--fail-on-findings expects one of {SEVERITIES}, got {fail_on_findings!r}")
    from xaudit.workflows.interrogate import interrogate_finished_run, params_for_run

    _crash_dir(run_dir)
    params = _guard(params_for_run, run_dir, set_)
    audit = _guard(interrogate_finished_run, run_dir, params, device)
    result = audit["interrogation"]
    summary = {
        "run_dir": str(run_dir), "report": str(run_dir / "report.html"),
        "layers": [layer["name"] for layer in result.get("layers", [])],
        "subjects": len(result.get("subjects", [])),
        "retention": result.get("retention", {}).get("table", []),
        "findings": [{k: f.get(k) for k in ("id", "severity", "title")} for f in audit.get("findings", [])
                     if f.get("check") == "retention"],
        "notes": result.get("notes", []), "time": result.get("time", {}),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    elif not quiet:
        console = _console()
        console.print(f"[bold]interrogated:[/] {summary['subjects']} subjects at {len(summary['layers'])} depths "
                      f"({', '.join(summary['layers'])}) in {summary['time'].get('elapsed_s', 0):.0f} s", highlight=False)
        for f in summary["findings"]:
            console.print(f"  [{f['severity']}] {f['title']}", markup=False)
        for note in summary["notes"]:
            console.print(f"  note: {note}", markup=False, highlight=False)
        console.print(f"[bold green]report:[/] {summary['report']}")
    if fail_on_findings and _reaches(audit.get("findings", []), fail_on_findings):
        raise typer.Exit(1)


@app.command("sample-data")
def sample_data(
    directory: Path = typer.Argument(Path("sample_data"), help="where to write the demo cohort and models"),
    seed: int = typer.Option(0, help="random seed (the cohort is deterministic given it)"),
    quick: bool = typer.Option(False, "--quick", help="a tiny cohort for smoke tests"),
    train: bool = typer.Option(False, "--train", help="synthesise the training splits and train the models"
                               " (default: the test split and the models shipped with xaudit), then compare"
                               " them with the shipped ones"),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Write the demo cohort (real MNI anatomy, two sites, lesions) and its small models."""
    from xaudit.sample import generate_sample_data

    console = _console()
    summary = _guard(generate_sample_data, directory, seed=seed, quick=quick, train=train,
                     progress=None if quiet else (lambda msg: console.print(msg, highlight=False)))
    if not quiet:
        console.print(f"[bold green]sample data:[/] {directory}")
    typer.echo(json.dumps(summary, default=str) if quiet else "", nl=quiet)


# Start-up imports about a million objects that live until exit (torch, MONAI, scipy). The
# cycle collector walked them all six times while they were imported (1.3-1.7 s of a 9 s
# start-up) and once more at exit (2.2 s of interpreter shutdown), measured with gc.callbacks
# and exit timestamps on the demo run. So the console script imports with the collector off,
# moves what start-up made to the permanent generation (gc.freeze) once a command has its
# modules, and freezes again before exit. Only the console script does this: `app` called from
# Python (tests, notebooks) leaves the host process's collector alone.
_GC_DEFERRED = False


def _imports_done() -> None:
    """The command has imported what it needs: freeze the start-up's objects, collect as usual from now."""
    global _GC_DEFERRED
    if _GC_DEFERRED:
        _GC_DEFERRED = False
        gc.freeze()
        gc.enable()


def main() -> None:  # pragma: no cover - the console script; tests run it as `python -m xaudit`
    """The console script and ``python -m xaudit``: the CLI, with start-up kept out of the cycle collector."""
    global _GC_DEFERRED
    _GC_DEFERRED = True
    gc.disable()
    try:
        app(prog_name="xaudit")
    finally:
        gc.freeze()  # interpreter shutdown need not walk every object once more
