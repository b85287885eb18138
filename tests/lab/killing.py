"""Act (kill an engine, interrupt the run) at a moment timed from the client's own records.

Counting "POST /v1/completions" lines in the server's log, or polling its /metrics, raced with the
burst on 2 busy cores (the kill meant for the second burst sometimes hit the third). The client knows
exactly when the first burst's last request finished; the next burst follows after the workload's pause.
"""

from __future__ import annotations

import threading


class KillAfter:
    """An ``on_record`` callback: ``delay`` seconds after the ``count``-th finished request, ``kill()`` runs once
    (in a timer thread)."""

    def __init__(self, count: int, delay: float, kill):
        self.count, self.seen = count, 0
        self._timer = threading.Timer(delay, kill)
        self._timer.daemon = True

    def __call__(self, record) -> None:
        self.seen += 1
        if self.seen == self.count:
            self._timer.start()

    def join(self, timeout: float | None = None) -> None:
        if self._timer.is_alive() or self.seen >= self.count:
            self._timer.join(timeout)
