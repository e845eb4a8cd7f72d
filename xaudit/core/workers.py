"""Worker processes for CPU work beside (or instead of) the main process: `worker_pool`.

Forked where the platform allows it (Linux): no re-import, and the parent's arrays are shared
copy-on-write, as PyTorch's DataLoader workers are. A worker must not touch torch, the model
or the run directory's bookkeeping; it gets its job's data and returns results (files it
writes are written atomically, as every output). Elsewhere workers are spawned.

Two hazards of forked workers are handled here, both found by tests:

- A forked worker holds a copy of its own job queue's writing end, so after a ``kill -9`` of
  the parent it would wait for jobs forever, holding copies of the parent's descriptors (a
  run's lock among them). Linux kills it when the parent dies (``PR_SET_PDEATHSIG``).
- Ctrl-C reaches the whole process group; a worker ignores it and leaves it to the parent,
  which stops the pool (no traceback per worker).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger("xaudit")

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def forks() -> bool:
    """Whether workers are forked here (Linux): they inherit the parent's memory, closures included."""
    return sys.platform.startswith("linux")


def worker_pool(workers: int, background: bool = False, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor | None:
    """A pool of ``workers`` processes, or None where none can be started (the caller then works alone).

    Args:
        workers: processes.
        background: run them at the lowest priority, so they use only the cores the parent
            leaves idle (measured: at normal priority one worker beside the stages' two PyTorch
            threads slowed the rules stage from 2.6 to 6.6 s on 2 cores).
        initializer, initargs: called in each worker after the set-up here.
    """
    context = multiprocessing.get_context("fork" if forks() else "spawn")
    try:
        return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                   initargs=(os.getpid(), background, initializer, initargs))
    except (OSError, ValueError) as exc:  # no processes here (a sandbox, a limit)
        log.debug("no worker processes (%s)", exc)
        return None


def _worker_init(parent: int, background: bool, initializer, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
    if background:
        try:
            os.nice(19)
        except (OSError, AttributeError):
            pass
    if initializer is not None:
        initializer(*initargs)


def stop_pool(pool: ProcessPoolExecutor, now: bool = False) -> None:
    """Shut ``pool`` down without waiting; ``now`` (the run stops early: Ctrl-C, an error) also
    kills its workers, so that the exit does not wait for the jobs they had queued (seconds at
    the lowest priority on a busy machine, measured)."""
    if now and hasattr(pool, "kill_workers"):  # Python 3.14's public way
        pool.kill_workers()
    elif now:  # before 3.14 the executor's worker processes are reachable only as `_processes`
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                process.kill()
            except (OSError, AttributeError):
                pass
    pool.shutdown(wait=False, cancel_futures=True)
