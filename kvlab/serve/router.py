"""Router: which engine serves a request, waking it (and putting the least recently used to sleep) first.

Per engine, one asyncio lock orders its transitions; a request holds no lock while it is served, only
an in-flight count, so an engine is never put to sleep under a request. A request for a sleeping model
waits for its wake; when ``max_awake`` engines are busy it waits for one to go idle (it never fails
because another model is busy). A monitor task puts idle engines to sleep and notices crashed ones.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .config import ServeConfig
from .sleep import ASLEEP, AWAKE, CRASHED, FAILED, WAKING, EngineUnavailable, ServedEngine

log = logging.getLogger("kvlab.serve")


class UnknownModel(LookupError):
    def __init__(self, name, models: list[str]):
        super().__init__(f"model {name!r} is not served here; models: {', '.join(models)}")
        self.models = models


def lru_victim(engines, keep: ServedEngine) -> ServedEngine | None:
    """The awake engine idle the longest, other than ``keep``; None if every other awake one is busy."""
    idle = [e for e in engines if e is not keep and e.state == AWAKE and e.in_flight == 0]
    return min(idle, key=lambda e: e.last_used, default=None)


class Router:
    def __init__(self, config: ServeConfig, log_dir=None):
        self.config = config
        self.engines: dict[str, ServedEngine] = {}
        try:
            for name, spec in config.models.items():
                self.engines[name] = ServedEngine(name, spec, log_dir=log_dir)
        except ValueError as e:
            raise ValueError(f"model {name}: {e}") from e
        self._locks = {name: asyncio.Lock() for name in self.engines}
        self._monitor: asyncio.Task | None = None
        self.closing = asyncio.Event()

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    def engine(self, name) -> ServedEngine:
        if not isinstance(name, str) or name not in self.engines:
            raise UnknownModel(name, self.names)
        return self.engines[name]

    # ---- requests -------------------------------------------------------------------------------
    async def acquire(self, name) -> tuple[ServedEngine, bool]:
        """The awake engine for ``name`` with one more request in flight, and whether it had to wake."""
        eng = self.engine(name)
        if self.closing.is_set():
            raise EngineUnavailable("the server is shutting down")
        async with self._locks[name]:
            woke = False
            if eng.crashed() or eng.state != AWAKE:
                await self._make_room(eng)
                await asyncio.to_thread(eng.wake)
                woke = True
            eng.in_flight += 1
            eng.requests += 1
            eng.last_used = time.monotonic()
        return eng, woke

    def release(self, eng: ServedEngine) -> None:
        eng.in_flight -= 1
        eng.last_used = time.monotonic()

    async def _make_room(self, eng: ServedEngine) -> None:
        cap = self.config.max_awake
        if cap is None:
            return
        while sum(e.state in (AWAKE, WAKING) for e in self.engines.values() if e is not eng) >= cap:
            victim = lru_victim(self.engines.values(), keep=eng)
            if victim is None:
                await asyncio.sleep(0.05)  # all awake ones are busy: wait for one to finish
                continue
            await self._sleep_if_idle(victim, reason=f"max_awake={cap}, {eng.name} wakes")

    async def _sleep_if_idle(self, eng: ServedEngine, reason: str) -> None:
        lock = self._locks[eng.name]
        if lock.locked():
            await asyncio.sleep(0.05)
            return
        async with lock:
            if eng.state == AWAKE and eng.in_flight == 0 and not eng.crashed():
                log.info("kvlab serve: %s sleeps (%s)", eng.name, reason)
                await asyncio.to_thread(eng.sleep)

    async def wake(self, name) -> float:
        """Wake ``name`` now; the seconds it took (0.0 if it was awake already)."""
        eng, woke = await self.acquire(name)
        self.release(eng)
        return eng.wake_s[-1] if woke else 0.0

    async def sleep(self, name) -> None:
        eng = self.engine(name)
        while eng.in_flight:
            await asyncio.sleep(0.05)
        async with self._locks[name]:
            await asyncio.to_thread(eng.sleep)

    # ---- background -----------------------------------------------------------------------------
    def start_monitor(self, interval: float = 0.25) -> None:
        self._monitor = asyncio.create_task(self._watch(interval))

    async def _watch(self, interval: float) -> None:
        while not self.closing.is_set():
            now = time.monotonic()
            for eng in self.engines.values():
                if eng.state == AWAKE and eng.crashed():  # restarted (or refused) on its next request
                    eng.state, eng.reason = CRASHED, eng.crash_reason()
                    log.warning("kvlab serve: %s", eng.reason)
                timeout = eng.spec.idle_timeout
                if (timeout is not None and eng.state == AWAKE and eng.in_flight == 0
                        and now - eng.last_used > timeout and not eng.crashed()):
                    try:
                        await self._sleep_if_idle(eng, reason=f"idle for {timeout:g} s")
                    except Exception as e:  # keep watching the others
                        log.warning("kvlab serve: %s failed to sleep: %s", eng.name, e)
            try:
                await asyncio.wait_for(self.closing.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        """Stop every engine (shutdown); waits for no request."""
        self.closing.set()
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        await asyncio.to_thread(self.stop_engines)

    def stop_engines(self) -> None:
        errors = []
        for eng in self.engines.values():
            try:
                eng.stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def status(self) -> list[dict]:
        return [e.status() for e in self.engines.values()]


__all__ = ["Router", "UnknownModel", "EngineUnavailable", "lru_victim", "ASLEEP", "AWAKE", "FAILED"]
