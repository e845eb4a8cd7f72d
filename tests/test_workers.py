"""Worker processes (`xaudit.core.workers`): they never outlive the run (tests/test_report.py
checks what the subject pictures' workers draw, tests/test_sample.py the sample data's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

RUN = """
import os, sys, time
from xaudit.core.workers import worker_pool
pool = worker_pool(1, background=True)
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux's; elsewhere they are spawned")
def test_picture_workers_die_with_a_killed_run():
    run, worker = subprocess.Popen([sys.executable, "-c", RUN], stdout=subprocess.PIPE, text=True), None
    try:
        worker = int(run.stdout.readline())
        assert psutil.Process(worker).ppid() == run.pid and psutil.Process(worker).nice() == 19
        os.kill(run.pid, signal.SIGKILL)  # kill -9: no clean-up runs in the run
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the picture worker outlived the killed run (it would keep its lock)"
            time.sleep(0.1)
    finally:
        run.kill()
        if worker is not None and psutil.pid_exists(worker):
            psutil.Process(worker).kill()


def _touch_then_sleep(path: str) -> None:
    open(path, "w").close()
    time.sleep(60)


def test_a_pool_stopped_early_kills_its_workers_at_once(tmp_path):
    from xaudit.core.workers import stop_pool, worker_pool

    pool = worker_pool(1, background=True)
    worker = pool.submit(os.getpid).result(timeout=60)
    mark = tmp_path / "started"
    pool.submit(_touch_then_sleep, str(mark))  # a job that would hold the exit for a minute
    while not mark.exists():
        time.sleep(0.01)
    started = time.monotonic()
    stop_pool(pool, now=True)
    while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() - started < 10, "the worker outlived the stopped pool"
        time.sleep(0.05)


def test_stopping_a_pool_uses_the_public_kill_where_python_has_one():
    """Python 3.14's `ProcessPoolExecutor.kill_workers` is preferred to the private `_processes`."""
    from xaudit.core.workers import stop_pool

    calls = []

    class Pool:  # the two methods stop_pool may call, as 3.14's executor has them
        _processes = {}

        def kill_workers(self):
            calls.append("kill_workers")

        def shutdown(self, wait=True, cancel_futures=False):
            calls.append(("shutdown", wait, cancel_futures))

    stop_pool(Pool(), now=True)
    assert calls == ["kill_workers", ("shutdown", False, True)]
    calls.clear()
    stop_pool(Pool())
    assert calls == [("shutdown", False, True)]


# Ctrl-C (to the whole process group, as a terminal sends it) landing just as a worker is forked:
# the parent's after-fork callbacks run, and Python ignores what they raise.
CTRL_C_AT_FORK = """
import os, signal
os.setpgrp()
from xaudit.core.workers import worker_pool, stop_pool
sent = []
def ctrl_c():
    if not sent:
        sent.append(1)
        os.killpg(os.getpgid(0), signal.SIGINT)
        sum(range(1000))  # Python code after the signal: where the handler runs
os.register_at_fork(after_in_parent=ctrl_c)
pool = worker_pool(2)
try:
    futures = [pool.submit(pow, 2, i) for i in range(4)]
    print("not interrupted", [f.result(timeout=60) for f in futures], flush=True)
except KeyboardInterrupt:
    stop_pool(pool, now=True)
    print("interrupted", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux's; elsewhere they are spawned")
def test_a_ctrl_c_while_a_worker_is_forked_interrupts_the_parent():
    """Caught in an after-fork callback, the KeyboardInterrupt was lost and the run went on (a new
    user's trial: a report then waited forever on a worker the same Ctrl-C had broken)."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_AT_FORK], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "interrupted", done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # no worker printed one either


def test_a_ctrl_c_held_back_is_raised_once_the_body_is_done():
    from xaudit.core.workers import interrupts_held

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, and must not raise yet
            reached.append("the end of the body")
    assert reached == ["the end of the body"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_held():  # nothing to raise when no Ctrl-C came
        pass
