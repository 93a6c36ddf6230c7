"""MLflow writes off the driver's dispatch loop: a few threads write child runs while the workers compute.

Writing one extraction child run takes about fifteen requests to the tracking server (run, metrics,
dataset input, artifacts, logged model). Done inline, the worker that finished the item waited for
all of them before it got its next item (issue 18: ~1.9 s per item against a local server). Here
the driver hands each write to a small thread pool and goes straight back to dispatching; the
server sees a few runs written at once. :meth:`BackgroundWriter.drain` waits for every write (the
submission's summary needs them); the first write that failed is raised there, or at the next
:meth:`submit`, so a store that stops answering still fails the submission, as it did inline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

WRITER_THREADS = 4  # runs written at once: enough to hide a server's latency, few enough for one server worker


class BackgroundWriter:
    """A thread pool for tracking writes that remembers the first failure and re-raises it in the driver."""

    def __init__(self, threads: int = WRITER_THREADS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mvp-mlflow")
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write``; raises the first earlier write's error instead, if one failed."""
        self.check()
        future = self._pool.submit(write)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
            if not future.cancelled() and future.exception() is not None and self._error is None:
                self._error = future.exception()

    @property
    def pending(self) -> int:
        """Writes queued or running."""
        with self._lock:
            return len(self._futures)

    def check(self) -> None:
        """Raise the first failed write's error (once it has failed), else nothing."""
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        """Wait for every queued write (also those queued while waiting); then raise the first failure, if any."""
        while True:
            with self._lock:
                futures = set(self._futures)
            if not futures:
                break
            wait(futures)
        self.check()

    def cancel(self) -> None:
        """Drop the writes not started yet and wait for the running ones (an aborted submission)."""
        with self._lock:
            futures = set(self._futures)
        for future in futures:
            future.cancel()
        wait(futures)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
