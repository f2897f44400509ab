"""A single-slot inference worker thread (no rclpy): one job at a time, newest pending wins.

``submit(job)`` puts ``job`` in the one pending slot; a job already waiting there (not started)
is superseded: it is handed back to the caller (who answers it as stale) and never runs. The
worker thread takes the pending job and calls ``run(job)``. Lifecycle: ``start()``, ``stop()``
(sets the stop Event, wakes the thread, joins with a timeout). An exception in ``run`` does not
kill the thread: it goes to ``on_error(job, exc)``; after ``max_consecutive_errors`` in a row
the worker stops and ``fatal`` holds the last exception (the node then exits non-zero).

Lock order: only ``_cond`` (a Condition) guards ``_pending`` / ``_busy``; ``run`` is called
without it held, so ``submit`` never waits for inference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["InferenceWorker"]

J = TypeVar("J")


class InferenceWorker(Generic[J]):
    """See the module docstring."""

    def __init__(
        self,
        run: Callable[[J], Any],
        on_error: Callable[[J, BaseException], None],
        *,
        name: str = "inference",
        max_consecutive_errors: int = 5,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        if max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be >= 1")
        self._run = run
        self._on_error = on_error
        self._on_start = on_start
        self._max_errors = max_consecutive_errors
        self._cond = threading.Condition()
        self._pending: J | None = None
        self._busy = False
        self._stop = threading.Event()
        self.stop_event = self._stop  # for interruptible waits inside run (latency injection)
        self.fatal: BaseException | None = None
        self.completed = 0
        self.superseded = 0
        self.errors = 0
        self._consecutive = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: J) -> J | None:
        """Queue ``job``; returns the job it superseded (never run), or None."""
        with self._cond:
            old = self._pending
            self._pending = job
            if old is not None:
                self.superseded += 1
            self._cond.notify()
        return old

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except BaseException as exc:  # noqa: BLE001 - surfaced as fatal, never swallowed
                self.fatal = exc
                return
        while not self._stop.is_set():
            with self._cond:
                while self._pending is None and not self._stop.is_set():
                    self._cond.wait(timeout=0.5)
                if self._stop.is_set():
                    return
                job, self._pending = self._pending, None
                self._busy = True
            try:
                self._run(job)
                self.completed += 1
                self._consecutive = 0
            except BaseException as exc:  # noqa: BLE001 - handed to on_error, counted, capped
                self.errors += 1
                self._consecutive += 1
                try:
                    self._on_error(job, exc)
                finally:
                    if self._consecutive >= self._max_errors:
                        self.fatal = exc
                        self._stop.set()
            finally:
                with self._cond:
                    self._busy = False

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
