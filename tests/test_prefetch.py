"""The loader prefetch of the subject pass: order kept, errors raised where consumed, stops early."""

from __future__ import annotations

import threading
import time

import pytest

from xaudit.core.prefetch import prefetched


def test_items_arrive_in_order_and_the_thread_ends():
    items = prefetched(iter(range(50)), depth=3)
    assert list(items) == list(range(50))
    items.close()
    assert not items._thread.is_alive()


def test_the_loader_runs_ahead_of_the_consumer():
    produced = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    items = prefetched(source(), depth=2)
    iterator = iter(items)
    assert next(iterator) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(produced) >= 3  # the next items were loaded while the consumer held the first
    items.close()


def test_a_loader_error_is_raised_in_the_consumer():
    def source():
        yield 1
        raise OSError("disk gone")

    items = prefetched(source())
    with pytest.raises(OSError, match="disk gone"):
        list(items)
    items.close()


def test_closing_early_stops_the_thread():
    items = prefetched(iter(range(10_000)), depth=1)
    assert next(iter(items)) == 0
    items.close()
    assert not items._thread.is_alive()
    assert not any(t.name == "xaudit-loader" and t.is_alive() for t in threading.enumerate())


def test_a_run_with_loader_worker_processes_finishes(tmp_path):
    """``data.num_workers > 0`` uses the DataLoader's own workers, not the prefetch thread."""
    from conftest import make_cohort, make_config
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    manifest = make_cohort(tmp_path / "cohort", n=4)
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}, data__num_workers=1))
    result = run_audit(config, RunOptions(output=tmp_path / "run", shard=(0, 1)))
    assert result.failed == 0 and len(list((tmp_path / "run" / "attributions" / "saliency").glob("*.nii.gz"))) == 4
