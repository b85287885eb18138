"""Each server's /metrics (KV usage, running and waiting requests), polled on a thread of its own.

An HTTP answer from a busy engine can take seconds, and a slow answer must never hold up Telemetry's memory
samples: the poller keeps the latest values per server, and the sampler copies them into each row.
"""

from __future__ import annotations

import threading

from . import probes

ANSWER_TIMEOUT = 3.0  # seconds one /metrics answer may take


class MetricsPoller:
    """Polls ``servers``' /metrics every ``interval`` seconds while started; ``values()`` gives the latest per
    key. It can be stopped and started again: the values and counts go on."""

    def __init__(self, servers, keys, interval: float):
        self.servers, self.keys, self.interval = list(servers), list(keys), float(interval)
        self.polls = 0   # answers read
        self.misses = 0  # polls with no usable answer (refused, timed out, not 200): the last values are kept
        self._values: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kvlab-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread: at once between polls, else when the poll in flight ends (at most ANSWER_TIMEOUT)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=ANSWER_TIMEOUT + 2)
            self._thread = None

    def values(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in list(self._values.items())}

    def _run(self) -> None:
        import httpx

        # A busy server answers late rather than never: a late answer is still the freshest reading, and
        # this thread holds up nothing else.
        timeout = httpx.Timeout(ANSWER_TIMEOUT, connect=0.5)
        with httpx.Client(timeout=timeout, trust_env=False) as http:
            while not self._stop.is_set():
                for server, key in zip(self.servers, self.keys):
                    if self._stop.is_set():
                        break
                    if not server.alive:
                        self._values.pop(key, None)
                        continue
                    self._poll(http, server, key)
                self._stop.wait(self.interval)

    def _poll(self, http, server, key) -> None:
        import httpx

        try:
            r = http.get(f"{server.url}/metrics")
            if r.status_code == 200:
                self._values[key] = probes.parse_metrics(r.text)
                self.polls += 1
                return
        except httpx.HTTPError:
            pass  # busy or going away: keep the last values, try again next round
        self.misses += 1
