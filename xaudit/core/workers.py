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
- A Ctrl-C that lands while a worker is being forked would be lost: Python runs its
  after-fork callbacks (logging's among them) in the parent and ignores what they raise, so the
  KeyboardInterrupt raised inside one is swallowed and the run went on; in the new child it
  broke the threading module's reset, and a report waited on that child forever (a new
  user's trial). So the pool forks its workers with Ctrl-C held back (`interrupts_held`),
  and raises it once the fork is over.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

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
        return _Pool(workers, mp_context=context, initializer=_worker_init,
                     initargs=(os.getpid(), background, initializer, initargs))
    except (OSError, ValueError) as exc:  # no processes here (a sandbox, a limit)
        log.debug("no worker processes (%s)", exc)
        return None


class _Pool(ProcessPoolExecutor):
    """A process pool whose workers are forked with Ctrl-C held back (they are forked by ``submit``)."""

    def submit(self, fn, /, *args, **kwargs):
        with interrupts_held():
            return super().submit(fn, *args, **kwargs)


@contextmanager
def interrupts_held():
    """Hold a Ctrl-C (SIGINT) back while the body runs, then raise it (as `KeyboardInterrupt`).

    Only the main thread can change a signal's handler; elsewhere the body runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
        elif caught and previous == signal.SIG_DFL:
            raise KeyboardInterrupt


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
