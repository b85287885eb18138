"""Gateway: `kvlab serve` from Python (the endpoint in a background thread) or in the foreground (the CLI).

>>> with Gateway("serve.yaml") as gw:             # or a ServeConfig, or a dict
...     client = gw.client()                      # openai.OpenAI bound to the endpoint
...     client.completions.create(model="qwen-a", prompt="Hello", max_tokens=8)

Engines start on their first request (a model is asleep until then). ``stop()``, leaving the ``with``
block, and Ctrl-C/SIGTERM in the foreground stop every engine; the lab's watchdogs stop them if this
process dies some other way.
"""

from __future__ import annotations

import os
import threading
import time

import uvicorn

from . import config as cfg
from .app import create_app


def as_config(config, **overrides) -> cfg.ServeConfig:
    if isinstance(config, (str, os.PathLike)):
        config = cfg.load(config)
    elif isinstance(config, dict):
        try:
            config = cfg.ServeConfig.model_validate(config)
        except Exception as e:
            raise cfg.ConfigError(f"<dict>: {e}") from None
    elif not isinstance(config, cfg.ServeConfig):
        raise TypeError(f"a serve config is a YAML path, a dict or a ServeConfig, not {type(config).__name__}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        try:
            config = cfg.ServeConfig.model_validate({**config.model_dump(), **overrides})
        except Exception as e:
            raise cfg.ConfigError(f"<overrides {overrides}>: {e}") from None
    return config


class Gateway:
    def __init__(self, config, *, host: str | None = None, port: int | None = None, start: bool = True,
                 log_dir: str | os.PathLike | None = None):
        self.config = as_config(config, host=host, port=port)
        self.app = create_app(self.config, log_dir=log_dir)
        self.router = self.app.state.router
        self._uv: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        if start:
            self.start()

    def _uvicorn(self) -> uvicorn.Server:
        # A short graceful shutdown: open SSE streams end when the router closes, and a request still
        # being generated is not worth keeping engines (and the user's Ctrl-C) waiting for.
        return uvicorn.Server(uvicorn.Config(self.app, host=self.config.host, port=self.config.port,
                                             log_level="warning", lifespan="on", timeout_graceful_shutdown=3))

    def start(self, timeout: float = 30.0) -> "Gateway":
        if self._thread is not None and self._thread.is_alive():
            return self
        self._uv = self._uvicorn()
        self._thread = threading.Thread(target=self._uv.run, name="kvlab-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kvlab serve did not start on {self.config.host}:{self.config.port} "
                                   "(port taken? see the log above)")
            time.sleep(0.02)
        self._port = self._uv.servers[0].sockets[0].getsockname()[1]
        return self

    def run(self, on_ready=None) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM (uvicorn handles both), then stop every engine.
        ``on_ready(url)`` is called once the endpoint listens."""
        self._uv = self._uvicorn()
        if on_ready is not None:
            threading.Thread(target=self._announce, args=(on_ready,), daemon=True).start()
        try:
            self._uv.run()
        finally:
            self.router.stop_engines()

    def _announce(self, on_ready) -> None:
        uv = self._uv
        while not uv.started and not uv.should_exit:
            time.sleep(0.05)
        if uv.started:
            self._port = uv.servers[0].sockets[0].getsockname()[1]
            on_ready(self.url)

    def stop(self) -> None:
        if self._uv is not None:
            self._uv.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60.0)
        self.router.stop_engines()  # also when the lifespan never ran or was cut short

    @property
    def url(self) -> str:
        port = self._port or self.config.port  # the port picked for port 0
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{port}"

    def client(self, **kwargs):
        """An ``openai.OpenAI`` client for this endpoint (needs the openai package)."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.config.api_key or "none", **kwargs)

    def status(self) -> list[dict]:
        return self.router.status()

    def pgids(self) -> list[int]:
        """Every process group any of its engines ever ran (to check that none is left)."""
        return [g for e in self.router.engines.values() for g in e.pgids]

    def watch(self, **kwargs):
        """A live view of the served fleet (kvlab.views.ServedFleet) fed by /kvlab/events."""
        from kvlab.views.served import ServedFleet  # lazy: serving runs without the widget stack

        return ServedFleet(self.url, **kwargs)

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        states = ", ".join(f"{e.name}: {e.state}" for e in self.router.engines.values())
        return f"Gateway({self.url!r}, {states})"


def serve(config, **kwargs) -> Gateway:
    """Start the endpoint in the background (the Python twin of `kvlab serve CONFIG.yaml`)."""
    return Gateway(config, **kwargs)
