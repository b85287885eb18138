"""ServedFleet: a live table of a `kvlab serve` endpoint, read from its event stream (also remotely).

One row per model: awake/asleep (or crashed/failed, with the reason), KV mapped/used/limit of its pool,
requests served and in flight, the last wake time and TTFT after it. A background thread reads
``GET /kvlab/events`` (server-sent events; no token needed) and sets one HTML trait per sample, so the
update rate is the endpoint's sample interval (keep it >= 0.1 s: Jupyter drops floods of messages).
"""

from __future__ import annotations

import html
import json
import threading

import httpx
import ipywidgets as widgets

from .controls import fmt_bytes

STATE_COLOURS = {"awake": "#2e7d32", "waking": "#f9a825", "sleeping": "#f9a825", "asleep": "#757575",
                 "crashed": "#c62828", "failed": "#c62828"}


def render(sample: dict) -> str:
    """The HTML table of one /kvlab/events (or /kvlab/pools) sample."""
    rows = []
    for m in sample.get("models", []):
        kv = m.get("kv")
        kv_text = (f"{fmt_bytes(kv['used'])} used / {fmt_bytes(kv['mapped'])} mapped / limit {fmt_bytes(kv['limit'])}"
                   if kv else "released" if m["state"] == "asleep" else "-")
        wake = f"{m['wake_s'][-1]:.2f} s" if m.get("wake_s") else "-"
        ttft = f"{m['ttft_after_wake_ms'][-1]:.0f} ms" if m.get("ttft_after_wake_ms") else "-"
        colour = STATE_COLOURS.get(m["state"], "#000")
        reason = f"<br><small>{html.escape(m['reason'])}</small>" if m.get("reason") and m["state"] in ("crashed", "failed") else ""
        rows.append(f"<tr><td><b>{html.escape(m['model'])}</b></td>"
                    f"<td style='color:{colour}'>{m['state']}{reason}</td><td>{kv_text}</td>"
                    f"<td>{m['requests']}</td><td>{m['in_flight']}</td><td>{wake}</td><td>{ttft}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("model", "state", "KV", "requests", "in flight", "last wake",
                                              "TTFT after wake"))
    return f"<table class='kvlab-served'><tr>{head}</tr>{''.join(rows)}</table>"


class ServedFleet:
    """``ServedFleet("http://host:8000")`` (or ``gateway.watch()``); ``close()`` stops reading."""

    def __init__(self, url: str, interval: float | None = None):
        self.url = url.rstrip("/")
        self.widget = widgets.HTML("<i>connecting to " + html.escape(self.url) + " ...</i>")
        self.sample: dict | None = None
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._params = {"interval": interval} if interval else {}
        self._thread = threading.Thread(target=self._read, name="kvlab-served-view", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                with httpx.stream("GET", f"{self.url}/kvlab/events", params=self._params, timeout=httpx.Timeout(30.0),
                                  trust_env=False) as r:
                    for line in r.iter_lines():
                        if self._stop.is_set():
                            return
                        if line.startswith("data: "):
                            self.sample = json.loads(line[6:])
                            self.samples += 1
                            self.error = None
                            self.widget.value = render(self.sample)
            except (httpx.HTTPError, ValueError) as e:  # the endpoint restarted or went away: say so, retry
                self.error = f"{type(e).__name__}: {e}"
                self.widget.value = f"<i>{html.escape(self.url)}: {html.escape(self.error)} (retrying)</i>"
            self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=35.0)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
