"""A background thread that keeps an iterator a few items ahead of its consumer."""

from __future__ import annotations

import queue
import threading


class prefetched:
    """Iterate ``iterable`` on a background thread, ``depth`` items ahead of the consumer.

    Without DataLoader worker processes (``data.num_workers: 0``), loading and preprocessing
    the next batch (gzip, resampling: GIL-free for the most part) overlaps the current
    batch's passes instead of waiting for them. An exception in the loader is raised in
    the consumer; `close` stops the thread when the consumer stops early.
    """

    _END = object()

    def __init__(self, iterable, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iterable,), name="xaudit-loader", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, iterable) -> None:
        try:
            for item in iterable:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._put((None, exc))
            return
        self._put((self._END, None))

    def __iter__(self):
        while True:
            item, exc = self._queue.get()
            if exc is not None:
                raise exc
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
