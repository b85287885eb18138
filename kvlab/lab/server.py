"""Server: one vLLM OpenAI-compatible server that this Python process owns.

>>> with Server(kvlab.models.synthetic("qwen2", "tiny"), memory="static", max_model_len=512) as s:
...     records = run_workload(bursty(2, 4, pause=1.0, max_tokens=16), s)

The engine runs in its own process group under a watchdog (see process.py): ``stop()``, leaving a
``with`` block, interpreter exit and kernel shutdown stop it, and so does the death of this process
by SIGKILL. Its output goes to a log file; while it starts, a progress bar shows the last log line.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from kvlab.registry.names import slug
from kvlab.settings import ElasticSettings

from . import engine, ports, sglang_engine, startlog
from .errors import EngineDied, InvalidEngineArgs, PortInUse, ServerError, StartTimeout
from .process import EngineProcess

TAIL_LINES = 30
_setup = engine  # Server.__init__ takes a parameter named engine
_live_strong: set = set()  # running servers stay reachable (and stoppable at exit) even if the caller drops them
_lock = threading.Lock()


def running() -> list["Server"]:
    """Servers started from this process that have not been stopped."""
    with _lock:
        return [s for s in _live_strong if s._proc is not None]


def stop_all(grace: float | None = None) -> None:
    """Stop every server this process started (the atexit hook; also handy after a messy notebook)."""
    errors = []
    for server in running():
        try:
            server.stop(grace=grace)
        except Exception as e:  # keep stopping the others
            errors.append(e)
    if errors:
        raise errors[0]


atexit.register(stop_all)


def _log_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"kvlab-{os.getuid()}" / "logs"


class Server:
    """A vLLM (or SGLang) OpenAI-compatible server for ``model``.

    engine: "vllm" (default) or "sglang" (SGLang's server, on a GPU or its CPU backend; its elastic mode is
        kvlab's SGLang adapter, kvlab.engines.sglang; engine_args are SGLang's options, e.g. context_length=512).

    memory: "elastic" (kvlab's elastic KV cache), "static" (stock vLLM) or "kvcached" (the reference
        system; needs kvcached and an NVIDIA GPU).
    elastic: the elastic memory's ``kvlab.settings.ElasticSettings`` (memory="elastic" only; None: the
        defaults). Validated here; the engine gets it as ``additional_config["kvlab"]``, and the
        ``KVLAB_*`` variables of this process's environment do not reach it.
    device: None (a GPU if vLLM's GPU build can use one, else vLLM's CPU build), "cpu", "cuda:N" or N.
    port: None picks a free port; an explicit port that is taken raises PortInUse before starting.
    env: extra environment for the engine (a value of None removes a variable); not for elastic settings.
    engine_args: passed to vLLM as ``--flag value`` (``max_model_len=512`` -> ``--max-model-len 512``;
        True -> ``--flag``, False -> ``--no-flag``).
    start: start now (blocking until the health check answers); False leaves it to ``start()``/``with``.
    """

    def __init__(self, model, memory: str = "elastic", device=None, port: int | None = None, *,
                 elastic: ElasticSettings | None = None, env: dict | None = None, host: str = "127.0.0.1",
                 start: bool = True,
                 start_timeout: float = 900.0, grace: float = 10.0, progress: bool = True,
                 log_dir: str | os.PathLike | None = None, name: str | None = None, engine: str = "vllm",
                 **engine_args):
        self.engine = sglang_engine.check_engine(engine)
        self.model_path = _setup.resolve_model(model)
        if self.engine == "sglang":
            if memory not in _setup.MEMORY_MODES:
                raise ValueError(f"memory must be one of {_setup.MEMORY_MODES}, got {memory!r}")
            self.device = sglang_engine.resolve_device(device, _setup.gpu_count())
            sglang_engine.check_memory(memory)
        else:
            self.device = _setup.resolve_device(device)
            _setup.check_memory(memory, self.device)
        self.memory = memory
        self.host = host
        self._port_asked = None if port is None else ports.check_port(port, host)
        self.port: int | None = self._port_asked
        vllm_cpu = self.device == "cpu" and self.engine == "vllm"
        self.engine_args = _setup.cpu_defaults(engine_args) if vllm_cpu else dict(engine_args)
        served = self.engine_args.get("served_model_name")
        self.model: str = (served[0] if isinstance(served, (list, tuple)) else served) or self.model_path
        self.name = name or Path(self.model).name or self.model
        self.env_extra = _setup.check_env(env)
        # The elastic engine publishes its pool's registry record under this name, so telemetry and
        # kvlab.limits find this server's pool without guessing from pids.
        self.elastic = _setup.check_elastic(memory, elastic)
        if self.elastic is not None and not self.elastic.pool_name:
            self.elastic = replace(self.elastic, pool_name=_pool_name(self.name, self._port_asked))
        self.pool_name: str | None = self.elastic.pool_name if self.elastic is not None else None
        # vLLM takes the settings as additional_config; SGLang's scheduler reads them from its environment.
        settings_args = (self.engine_args if self.engine == "sglang"
                         else _setup.with_settings(self.engine_args, self.elastic))
        self._flags = _setup.engine_flags(settings_args)  # checked now, not after a fork
        self.start_timeout = float(start_timeout)
        self.grace = float(grace)
        self.progress = progress
        self.log_dir = Path(log_dir) if log_dir is not None else _log_dir()
        self.log_path: Path | None = None
        self._proc: EngineProcess | None = None
        self._pgid: int | None = None
        self._exit_code: int | None = None
        self._stopped_by_us = False
        if start:
            self.start()

    # ---- what it runs -------------------------------------------------------------------------
    def command(self, port: int | None = None) -> list[str]:
        """The engine's command line (for reading, or for running it by hand)."""
        port = port or self.port or 0
        if self.engine == "sglang":
            return sglang_engine.command(sys.executable, self.model_path, self.host, port, self.device, self._flags)
        return [sys.executable, *engine.engine_module(self.memory), "--model", self.model_path,
                "--host", self.host, "--port", str(port), *self._flags]

    def environment(self) -> dict[str, str]:
        """The engine's environment: this process's, with the memory mode's switches and ``env``, without
        the ``KVLAB_*`` elastic settings (the engine gets ``self.elastic`` on its command line)."""
        env = engine.engine_env(self.memory, self.device, self.env_extra)
        if self.engine == "sglang" and self.elastic is not None:
            env.update(self.elastic.to_env())
        return env

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Server":
        """Start the engine and wait until it answers /health; idempotent while it runs."""
        if self._proc is not None and self._proc.alive:
            return self
        if self._proc is not None:
            self.stop()
        attempts = 1 if self._port_asked else 3  # a picked port can be taken in between: pick again
        for attempt in range(attempts):
            self.port = self._port_asked or ports.free_port(self.host)
            try:
                self._launch()
                self._wait_ready()
                return self
            except PortInUse:
                self.stop()
                if attempt == attempts - 1:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def _launch(self) -> None:
        if self._port_asked:
            ports.check_port(self._port_asked, self.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = self.log_dir / f"{slug(self.name, 60)}-{self.memory}-{self.port}-{stamp}-{os.getpid()}.log"
        with open(self.log_path, "w") as f:
            f.write(f"# kvlab Server: {' '.join(self.command())}\n"
                    f"# memory={self.memory} device={self.device} env+={engine.MEMORY_ENV[self.memory]}"
                    f" elastic={self.elastic}\n")
        self._exit_code = None
        self._stopped_by_us = False
        self._proc = EngineProcess(self.command(), self.environment(), self.log_path, grace=self.grace)
        self._pgid = self._proc.pgid
        with _lock:
            _live_strong.add(self)

    def _wait_ready(self) -> None:
        bar = startlog.progress_bar(self.progress, f"starting {self.name}", len(startlog.STAGES) + 1)
        t0 = time.monotonic()
        offset, last, stage = 0, "", 0
        drawn, drawn_at = None, 0.0
        try:
            with httpx.Client(timeout=2.0, trust_env=False) as http:
                while True:
                    offset, lines = startlog.read_new(self.log_path, offset)
                    for line in lines:
                        if line.strip() and not line[0].isspace() and not line.startswith("#"):
                            last = line  # continuation lines of warnings and tracebacks say little alone
                        for i, (marker, _) in enumerate(startlog.STAGES):
                            if marker in line and i + 1 > stage:
                                stage = i + 1
                    if bar is not None:
                        shown = (stage, last)
                        if shown != drawn or time.monotonic() - drawn_at > 1.0:
                            bar.n = stage
                            bar.set_description_str(f"{self.name}: {startlog.short(last, 70) or 'starting'}", refresh=False)
                            bar.refresh()
                            drawn, drawn_at = shown, time.monotonic()
                    if not self._proc.alive:
                        self._raise_died(during_start=True)
                    try:
                        if http.get(f"{self.url}/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() - t0 > self.start_timeout:
                        tail = self.log_tail(TAIL_LINES)
                        raise StartTimeout(f"{self.name} did not become healthy within {self.start_timeout:g} s "
                                           f"(stopped it); log {self.log_path}, last lines:\n{tail}", tail)
                    time.sleep(0.25)
            if bar is not None:
                bar.n = bar.total
                bar.set_description_str(f"{self.name} ready at {self.url} in {time.monotonic() - t0:.0f} s")
        finally:
            if bar is not None:
                bar.close()

    def _raise_died(self, during_start: bool = False, records=None):
        self.wait(timeout=self.grace)  # let the watchdog finish, so the log and exit code are complete
        self._exit_code = self._proc.exit_code if self._proc is not None else self._exit_code
        code = _engine_code(self._exit_code)
        tail = self.log_tail(TAIL_LINES)
        when = "while starting" if during_start else "after it had started"
        how = f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"
        msg = f"engine {self.name} ({self.memory}, {self.device}) died {when} ({how}); log {self.log_path}, last lines:\n{tail}"
        if during_start:
            if re.search(r"Address already in use|Errno 98", tail):
                raise PortInUse(98, f"port {self.port} was taken while {self.name} started; last log lines:\n{tail}")
            if "unrecognized arguments" in tail or re.search(r"error: argument ", tail):
                raise InvalidEngineArgs(f"vLLM refused the engine arguments of {self.name}: "
                                        f"{_argparse_error(tail)}\n{msg}", tail, code, records)
        raise EngineDied(msg, tail, code, records)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the engine (and its watchdog's cleanup) has exited; its exit code, or None on timeout."""
        if self._proc is None:
            return self.exit_code
        try:
            self._proc.watchdog.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_code

    def check(self) -> None:
        """Raise EngineDied (with the log's last lines) if the engine has exited."""
        if self._proc is None:
            raise ServerError(f"{self.name} is not running: call start() first")
        if not self._proc.alive and not self._stopped_by_us:
            self._raise_died()

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the engine's process group, SIGKILL after ``grace`` seconds; wait. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._stopped_by_us = True
        try:
            proc.stop(self.grace if grace is None else grace)
            self._exit_code = proc.exit_code
        finally:
            self._proc = None
            with _lock:
                _live_strong.discard(self)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what it offers -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The engine's main (API server) process; its helpers share its process group ``pgid``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pgid(self) -> int | None:
        """The engine's process group (kept after stop(), to check that nothing of it is left)."""
        return self._pgid

    def pids(self) -> list[int]:
        """Every live process of the engine's group (watchdog, API server, EngineCore, workers)."""
        return self._proc.pids() if self._proc is not None else []

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` was called (so an engine that is gone was stopped, not crashed)."""
        return self._stopped_by_us

    @property
    def exit_code(self) -> int | None:
        code = self._proc.exit_code if self._proc is not None else self._exit_code
        return _engine_code(code)

    def log_tail(self, n: int = TAIL_LINES) -> str:
        """The last ``n`` lines of the engine's log."""
        return startlog.tail(self.log_path, n) if self.log_path is not None else ""

    def client(self, **kwargs):
        """An async streaming client bound to this server (see kvlab.lab.client.Client)."""
        from .client import Client

        self.check()
        return Client(self.url, self.model, server=self, **kwargs)

    def __repr__(self) -> str:
        state = "running" if self.alive else ("died" if self._proc is not None else "stopped")
        where = f" url={self.url!r} pid={self.pid}" if self._proc is not None else ""
        return f"Server({self.name!r}, memory={self.memory!r}, device={self.device!r}, {state}{where})"


def _pool_name(name: str, port: int | None) -> str:
    """``<server name>-<port or random>``, a valid registry name (letters, digits, '.', '_', '-')."""
    return f"{slug(name, 48)}-{port if port else secrets.token_hex(3)}"


def _engine_code(code: int | None) -> int | None:
    """The watchdog exits 128+N when the engine was killed by signal N; report that as -N like Popen."""
    if code is not None and 128 < code <= 128 + 64:
        return -(code - 128)
    return code


def _argparse_error(tail: str) -> str:
    for line in reversed(tail.splitlines()):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return "see the log"
