"""Progress on long steps: log lines at least every interval (cron and SLURM logs), in run.log too."""

from __future__ import annotations

import logging
import time

from conftest import make_cohort, make_config
from xaudit.config import load_config
from xaudit.core.progress import Step
from xaudit.workflows.audit import RunOptions, run_audit


def test_a_step_logs_done_total_rate_and_time_left_while_nothing_else_happens(caplog):
    caplog.set_level(logging.INFO, logger="xaudit")
    with Step("subjects", 10, interval=0.05) as step:
        step.advance(2, detail="batch 1")
        time.sleep(0.3)  # no advance for a while: the timer still writes lines
    lines = [r.getMessage() for r in caplog.records]
    beats = [line for line in lines if line.startswith("subjects (batch 1): 2/10 after")]
    assert len(beats) >= 2, lines
    assert "per minute" in beats[0] and "left" in beats[0]
    assert lines[-1].startswith("subjects: 2/10 done in")


def test_with_a_bar_the_lines_go_to_the_file_only(caplog):
    class Bar:  # the interface of rich.progress.Progress that Step uses
        def __init__(self):
            self.updates = []

        def start(self):
            pass

        def stop(self):
            pass

        def add_task(self, *_args, **_kwargs):
            return 0

        def update(self, _task, advance=0, description=""):
            self.updates.append((advance, description))

    caplog.set_level(logging.DEBUG, logger="xaudit")
    bar = Bar()
    with Step("stages", 3, bar=bar, interval=0.05) as step:
        step.describe("rules")
        time.sleep(0.15)
        step.advance(1)
    assert bar.updates[-1] == (1, "stages rules")
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}  # not on the terminal under the bar


def test_a_run_writes_its_progress_into_run_log(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", n=4)
    run = run_audit(load_config(make_config(tmp_path, manifest, methods={"saliency": {}})),
                    RunOptions(output=tmp_path / "run"))
    text = (run.run_dir / "run.log").read_text()
    assert "subjects: 4/4 done in" in text
    assert "dataset-level stages: 7/7 done in" in text  # metrics, attribution, rules, bias, interventions, quality, report
    assert "bias stage done in" in text
