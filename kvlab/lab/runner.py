"""run_workload: send a workload's schedule to servers, respecting arrival times, and keep every measurement.

Whatever happens — an engine crash, an HTTP error, Ctrl-C — each scheduled request ends up as one
RequestRecord: measured ones "ok", the rest "error" with the reason. When an engine dies, requests
still waiting for it are not sent (marked "not sent: engine ... died") and, by default, the run
stops and raises EngineDied with ``.records`` holding all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings

from .client import Client, RequestRecord
from .errors import EngineDied, RunInterrupted, WorkloadError
from .targets import flatten
from .workloads import Request, Workload


def _as_client(target, concurrency: int | None) -> Client:
    if isinstance(target, Client):
        if concurrency is not None and concurrency != target.concurrency:
            return Client(target.url, target.model, server=target.server, concurrency=concurrency,
                          timeout=target.timeout, connect_timeout=target.connect_timeout)
        return target
    if hasattr(target, "client") and hasattr(target, "url"):  # a Server
        return target.client(**({"concurrency": concurrency} if concurrency is not None else {}))
    raise WorkloadError(f"cannot send requests to {target!r}: give Servers, Clients, a Fleet or a list of them")


def _resolve(req: Request, i: int, clients: list[Client]) -> int:
    t = req.target
    if t is None:
        return i % len(clients)
    if isinstance(t, int):
        if not 0 <= t < len(clients):
            raise WorkloadError(f"request {i} targets index {t}, but there are {len(clients)} target(s)")
        return t
    url = [k for k, c in enumerate(clients) if c.url == t.rstrip("/")]
    if url:
        return url[0]
    named = [k for k, c in enumerate(clients) if t in (c.model, getattr(c.server, "name", None))]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise WorkloadError(f"request {i} targets model {t!r}, which {len(named)} servers serve: "
                            f"name the server (its URL) instead")
    known = [c.model for c in clients] + [c.url for c in clients]
    raise WorkloadError(f"request {i} targets {t!r}, which is none of the targets given: {known}")


class WorkloadRun:
    """One run of a workload against its clients: its state is fields, each step of the run a method.

    ``records`` holds one RequestRecord per scheduled request from the start, so whatever happens
    (an engine dying, Ctrl-C) every request ends up measured or marked with the reason it was not.
    """

    def __init__(self, workload, targets, *, concurrency: int | None = None, on_engine_death: str = "raise",
                 progress: bool = False, on_record=None, telemetry=None, records: list | None = None):
        if on_engine_death not in ("raise", "return"):
            raise ValueError(f"on_engine_death must be 'raise' or 'return', got {on_engine_death!r}")
        self.reqs = workload.requests() if isinstance(workload, Workload) else list(workload)
        if not all(isinstance(r, Request) for r in self.reqs):
            raise WorkloadError("a workload must be a Workload or a list of Request")
        self.clients = [_as_client(t, concurrency) for t in flatten(targets)]
        if not self.clients:
            raise WorkloadError("no targets to send requests to")
        # every target checked before sending
        self.which = [_resolve(r, i, self.clients) for i, r in enumerate(self.reqs)]
        self.records = records if records is not None else []
        self.records[:] = [RequestRecord(self.clients[k].model, self.clients[k].url, index=i, phase=r.phase,
                                         max_tokens=r.max_tokens) for i, (r, k) in enumerate(zip(self.reqs, self.which))]
        self.on_engine_death, self.progress, self.on_record, self.telemetry = on_engine_death, progress, on_record, telemetry
        self.dead: dict[int, str] = {}            # client index -> why its engine is gone
        self.tasks: dict[int, asyncio.Task] = {}  # request index -> its task
        self.reasons: dict[int, str] = {}         # request index -> why it was cancelled
        self.marked: set[int] = set()             # phases whose burst is marked on the telemetry
        self.abort: asyncio.Event | None = None   # made in run(): it belongs to the running loop
        self.bar = None

    def _server_name(self, k: int) -> str:
        return getattr(self.clients[k].server, "name", None) or self.clients[k].model

    def mark_burst(self, phase: int) -> None:
        # At the phase's first request actually sent (after its pause), so markers sit where load starts.
        if self.telemetry is None or phase in self.marked:
            return
        self.marked.add(phase)
        ks = {self.which[i] for i, r in enumerate(self.reqs) if r.phase == phase}
        to = f" -> {self._server_name(next(iter(ks)))}" if len(ks) == 1 and len(self.clients) > 1 else ""
        try:
            self.telemetry.mark(f"burst {phase}{to}")
        except Exception as e:  # a broken telemetry must not lose the run
            warnings.warn(f"telemetry.mark failed: {e!r}", RuntimeWarning)

    def engine_died(self, k: int) -> None:
        if k in self.dead:
            return
        server = self.clients[k].server
        name = f"engine {getattr(server, 'name', '?')} at {self.clients[k].url}"
        if getattr(server, "stopped", False):
            self.dead[k] = f"{name} was stopped (Server.stop())"
        else:
            code = server.exit_code if server is not None else None
            self.dead[k] = f"{name} died" + (f" (exit code {code})" if code is not None else "")
        me = asyncio.current_task()  # a request that noticed the death itself finishes on its own
        for i, task in self.tasks.items():
            if task is not me and not task.done() and (self.which[i] == k or self.on_engine_death == "raise"):
                self.reasons[i] = self.dead[k] if self.which[i] == k else \
                    f"cancelled: the run stopped because {self.dead[k]}"
                task.cancel()
        if self.on_engine_death == "raise":
            self.abort.set()

    async def settle_dead(self, k: int) -> bool:
        server = self.clients[k].server
        if server is None:
            return False
        for _ in range(10):  # after a failed request, give the engine a moment to finish dying
            if server.stopped or not server.alive:
                return True
            await asyncio.sleep(0.1)
        return False

    async def one(self, i: int, phase_start: float, t0: float) -> None:
        r, k, rec = self.reqs[i], self.which[i], self.records[i]
        rec.scheduled = phase_start - t0 + r.at
        try:
            await asyncio.sleep(max(0.0, phase_start + r.at - time.perf_counter()))
            if k in self.dead or self.abort.is_set():
                rec.fail(f"not sent: {self.dead.get(k) or 'the run stopped because an engine died'}")
                return
            self.mark_burst(r.phase)
            await self.clients[k].complete(r.prompt, prompt_len=r.prompt_len, seed=r.seed, max_tokens=r.max_tokens,
                                           record=rec, t0=t0)
            if not rec.ok and await self.settle_dead(k):
                self.engine_died(k)
                rec.error = f"{self.dead[k]}: {rec.error}"
        except asyncio.CancelledError:
            if i not in self.reasons:
                raise  # the whole run was cancelled: the caller fills in the reason
            why = self.reasons[i]
            rec.fail(f"{why}" + (f" (after {rec.tokens_out} tokens)" if rec.tokens_out else "")
                     if rec.start is not None else f"not sent: {why}")
        finally:
            if self.bar is not None:
                self.bar.update(1)
            if self.on_record is not None and rec.status != "pending":
                try:
                    self.on_record(rec)
                except Exception as e:  # a broken callback must not lose the run
                    warnings.warn(f"on_record callback failed: {e!r}", RuntimeWarning)

    async def monitor(self) -> None:
        while True:
            for k, c in enumerate(self.clients):
                if c.server is not None and k not in self.dead and (c.server.stopped or not c.server.alive):
                    self.engine_died(k)
            await asyncio.sleep(0.2)

    async def prepare_prompts(self) -> None:
        for k in sorted({self.which[i] for i, r in enumerate(self.reqs) if r.prompt_len is not None}):
            try:
                await self.clients[k].vocabulary()  # before the clock starts: building prompts is not load
            except Exception as e:
                if await self.settle_dead(k):
                    self.engine_died(k)
                else:
                    raise WorkloadError(f"cannot build prompts from {self.clients[k].url}/tokenize: {e}") from e

    async def send_phases(self) -> None:
        t0 = time.perf_counter()
        for phase in sorted({r.phase for r in self.reqs}):
            if self.abort.is_set():
                break
            start = time.perf_counter()
            for i, r in enumerate(self.reqs):
                if r.phase == phase:
                    self.tasks[i] = asyncio.create_task(self.one(i, start, t0))
            await asyncio.gather(*(self.tasks[i] for i, r in enumerate(self.reqs) if r.phase == phase))

    async def cancel_all(self) -> None:
        for i, task in self.tasks.items():
            if not task.done():
                self.reasons.setdefault(i, "cancelled: the run was interrupted")
                task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def run(self) -> list[RequestRecord]:
        self.abort = asyncio.Event()
        self.bar = _bar(self.progress, len(self.reqs))
        async with contextlib.AsyncExitStack() as stack:
            for c in self.clients:
                if c._http is None:
                    await stack.enter_async_context(c)
            watcher = asyncio.create_task(self.monitor())
            try:
                await self.prepare_prompts()
                await self.send_phases()
            except BaseException:
                await self.cancel_all()
                raise
            finally:
                watcher.cancel()
                for rec in self.records:
                    if rec.status == "pending":
                        rec.fail("not sent: " + (next(iter(self.dead.values())) if self.dead
                                                 else "the run was interrupted"))
                if self.bar is not None:
                    self.bar.close()
        if self.dead:
            await self.report_death()
        return self.records

    async def report_death(self) -> None:
        k = min(self.dead)
        server = self.clients[k].server
        # Let the watchdog finish its cleanup, so the exit code and the log's last lines are complete.
        await asyncio.get_running_loop().run_in_executor(None, server.wait, server.grace)
        code = server.exit_code
        if code is not None and not server.stopped and "exit code" not in self.dead[k]:
            self.dead[k] += f" (exit code {code})" if code >= 0 else f" (killed by signal {-code})"
        done = sum(r.ok for r in self.records)
        msg = (f"{self.dead[k]} during the workload; {done} of {len(self.records)} requests completed, "
               f"the others are marked as errors")
        if self.on_engine_death == "raise":
            if server.stopped:
                raise EngineDied(f"{msg} (all records: err.records)", server.log_tail(), server.exit_code,
                                 self.records)
            raise EngineDied(f"{msg} (all records: err.records)\nlog {server.log_path}, last lines:\n"
                             f"{server.log_tail()}", server.log_tail(), server.exit_code, self.records)
        if not server.stopped:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)


async def arun_workload(workload, targets, *, concurrency: int | None = None, on_engine_death: str = "raise",
                        progress: bool = False, on_record=None, telemetry=None,
                        _records: list | None = None) -> list[RequestRecord]:
    """Async form of run_workload (for ``await`` in a notebook cell)."""
    return await WorkloadRun(workload, targets, concurrency=concurrency, on_engine_death=on_engine_death,
                             progress=progress, on_record=on_record, telemetry=telemetry, records=_records).run()


def run_workload(workload, targets, *, concurrency: int | None = None, on_engine_death: str = "raise",
                 progress: bool = False, on_record=None, telemetry=None) -> list[RequestRecord]:
    """Send ``workload`` to ``targets`` (a Server, Client, Fleet, or a list of them) and return one
    RequestRecord per scheduled request, in schedule order.

    concurrency: in-flight requests per target (default: each client's, 64).
    on_engine_death: "raise" (stop the run, raise EngineDied with ``.records``) or "return" (keep
        driving the other targets, return the records and warn).

    on_record: called with each RequestRecord as it finishes (from the workload's thread), e.g. to
        update a live view.
    telemetry: a kvlab.lab.Telemetry; ``telemetry.mark("burst N")`` is called as each phase's first
        request is sent (``"burst N -> server"`` when the phase drives one of several servers).

    Works in a notebook too: it runs its own event loop in a helper thread. Ctrl-C / interrupting
    the kernel stops the run and raises RunInterrupted with ``.records``.
    """
    records: list[RequestRecord] = []
    box: dict = {}
    loop = asyncio.new_event_loop()
    main: dict = {}

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            main["task"] = loop.create_task(arun_workload(workload, targets, concurrency=concurrency,
                                                          on_engine_death=on_engine_death, progress=progress,
                                                          on_record=on_record, telemetry=telemetry,
                                                          _records=records))
            box["result"] = loop.run_until_complete(main["task"])
        except BaseException as e:  # handed to the calling thread
            box["error"] = e
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            finished.set()

    # An Event, not Thread.join: a KeyboardInterrupt inside join() can make later joins return early.
    finished = threading.Event()
    thread = threading.Thread(target=target, name="kvlab-workload", daemon=True)
    thread.start()
    try:
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        try:
            if "task" in main:
                loop.call_soon_threadsafe(main["task"].cancel)
        except RuntimeError:
            pass  # the loop had just finished
        while not finished.wait(0.1):
            pass
        done = sum(r.ok for r in records)
        raise RunInterrupted(f"workload interrupted: {done} of {len(records)} requests completed; "
                             f"all records are in err.records", records) from None
    if "error" in box:
        raise box["error"]
    return box["result"]


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="requests", unit="req")
