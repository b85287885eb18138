"""Polling helpers shared by tests that watch another process change something."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """True as soon as ``predicate()`` is; False if it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition",
             interval: float = 0.02) -> None:
    """``until``, failing the test with what it waited for when the time runs out."""
    if not until(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class PeakOf:
    """Samples ``measure()`` every 10 ms in a thread while the ``with`` block runs; the largest value is ``.peak``.

    ``.samples`` counts the readings taken. An error in ``measure()`` is raised again when the block ends,
    so a sampler that died early cannot pass for a quiet one.
    """

    def __init__(self, measure: Callable[[], int]):
        self.measure, self.peak, self.samples = measure, 0, 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.measure())
                self.samples += 1
                self._stop.wait(0.01)
        except BaseException as e:  # kept for __exit__: a thread's exception is otherwise only printed
            self.error = e

    def __enter__(self) -> "PeakOf":
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc_type is None:
            raise AssertionError(f"the sampler failed after {self.samples} readings: {self.error!r}") from self.error
