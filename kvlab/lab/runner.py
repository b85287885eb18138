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


async def arun_workload(workload, targets, *, concurrency: int | None = None, on_engine_death: str = "raise",
                        progress: bool = False, on_record=None, telemetry=None,
                        _records: list | None = None) -> list[RequestRecord]:
    """Async form of run_workload (for ``await`` in a notebook cell)."""
    if on_engine_death not in ("raise", "return"):
        raise ValueError(f"on_engine_death must be 'raise' or 'return', got {on_engine_death!r}")
    reqs = workload.requests() if isinstance(workload, Workload) else list(workload)
    if not all(isinstance(r, Request) for r in reqs):
        raise WorkloadError("a workload must be a Workload or a list of Request")
    clients = [_as_client(t, concurrency) for t in flatten(targets)]
    if not clients:
        raise WorkloadError("no targets to send requests to")
    which = [_resolve(r, i, clients) for i, r in enumerate(reqs)]  # every target checked before sending
    records = _records if _records is not None else []
    records[:] = [RequestRecord(clients[k].model, clients[k].url, index=i, phase=r.phase, max_tokens=r.max_tokens)
                  for i, (r, k) in enumerate(zip(reqs, which))]
    dead: dict[int, str] = {}
    tasks: dict[int, asyncio.Task] = {}
    reasons: dict[int, str] = {}
    abort = asyncio.Event()
    bar = _bar(progress, len(reqs))
    marked: set[int] = set()

    def mark_burst(phase: int) -> None:
        # At the phase's first request actually sent (after its pause), so markers sit where load starts.
        if telemetry is None or phase in marked:
            return
        marked.add(phase)
        ks = {which[i] for i, r in enumerate(reqs) if r.phase == phase}
        to = ""
        if len(ks) == 1 and len(clients) > 1:
            k = next(iter(ks))
            to = f" -> {getattr(clients[k].server, 'name', None) or clients[k].model}"
        try:
            telemetry.mark(f"burst {phase}{to}")
        except Exception as e:  # a broken telemetry must not lose the run
            warnings.warn(f"telemetry.mark failed: {e!r}", RuntimeWarning)

    def engine_died(k: int) -> None:
        if k in dead:
            return
        server = clients[k].server
        name = f"engine {getattr(server, 'name', '?')} at {clients[k].url}"
        if getattr(server, "stopped", False):
            dead[k] = f"{name} was stopped (Server.stop())"
        else:
            code = server.exit_code if server is not None else None
            dead[k] = f"{name} died" + (f" (exit code {code})" if code is not None else "")
        me = asyncio.current_task()  # a request that noticed the death itself finishes on its own
        for i, task in tasks.items():
            if task is not me and not task.done() and (which[i] == k or on_engine_death == "raise"):
                reasons[i] = dead[k] if which[i] == k else f"cancelled: the run stopped because {dead[k]}"
                task.cancel()
        if on_engine_death == "raise":
            abort.set()

    async def settle_dead(k: int) -> bool:
        server = clients[k].server
        if server is None:
            return False
        for _ in range(10):  # after a failed request, give the engine a moment to finish dying
            if server.stopped or not server.alive:
                return True
            await asyncio.sleep(0.1)
        return False

    async def one(i: int, phase_start: float, t0: float) -> None:
        r, k, rec = reqs[i], which[i], records[i]
        rec.scheduled = phase_start - t0 + r.at
        try:
            await asyncio.sleep(max(0.0, phase_start + r.at - time.perf_counter()))
            if k in dead or abort.is_set():
                rec.fail(f"not sent: {dead.get(k) or 'the run stopped because an engine died'}")
                return
            mark_burst(r.phase)
            await clients[k].complete(r.prompt, prompt_len=r.prompt_len, seed=r.seed, max_tokens=r.max_tokens,
                                      record=rec, t0=t0)
            if not rec.ok and await settle_dead(k):
                engine_died(k)
                rec.error = f"{dead[k]}: {rec.error}"
        except asyncio.CancelledError:
            if i not in reasons:
                raise  # the whole run was cancelled: the caller fills in the reason
            rec.fail(f"{reasons[i]}" + (f" (after {rec.tokens_out} tokens)" if rec.tokens_out else "")
                     if rec.start is not None else f"not sent: {reasons[i]}")
        finally:
            if bar is not None:
                bar.update(1)
            if on_record is not None and rec.status != "pending":
                try:
                    on_record(rec)
                except Exception as e:  # a broken callback must not lose the run
                    warnings.warn(f"on_record callback failed: {e!r}", RuntimeWarning)

    async def monitor() -> None:
        while True:
            for k, c in enumerate(clients):
                if c.server is not None and k not in dead and (c.server.stopped or not c.server.alive):
                    engine_died(k)
            await asyncio.sleep(0.2)

    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            if c._http is None:
                await stack.enter_async_context(c)
        watcher = asyncio.create_task(monitor())
        try:
            for k in sorted({which[i] for i, r in enumerate(reqs) if r.prompt_len is not None}):
                try:
                    await clients[k].vocabulary()  # before the clock starts: building prompts is not load
                except Exception as e:
                    if await settle_dead(k):
                        engine_died(k)
                    else:
                        raise WorkloadError(f"cannot build prompts from {clients[k].url}/tokenize: {e}") from e
            t0 = time.perf_counter()
            for phase in sorted({r.phase for r in reqs}):
                if abort.is_set():
                    break
                start = time.perf_counter()
                for i, r in enumerate(reqs):
                    if r.phase == phase:
                        tasks[i] = asyncio.create_task(one(i, start, t0))
                await asyncio.gather(*(tasks[i] for i, r in enumerate(reqs) if r.phase == phase))
        except BaseException:
            for i, task in tasks.items():
                if not task.done():
                    reasons.setdefault(i, "cancelled: the run was interrupted")
                    task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
        finally:
            watcher.cancel()
            for rec in records:
                if rec.status == "pending":
                    rec.fail("not sent: " + (next(iter(dead.values())) if dead else "the run was interrupted"))
            if bar is not None:
                bar.close()
    if dead:
        k = min(dead)
        server = clients[k].server
        # Let the watchdog finish its cleanup, so the exit code and the log's last lines are complete.
        await asyncio.get_running_loop().run_in_executor(None, server.wait, server.grace)
        code = server.exit_code
        if code is not None and not server.stopped and "exit code" not in dead[k]:
            dead[k] += f" (exit code {code})" if code >= 0 else f" (killed by signal {-code})"
        done = sum(r.ok for r in records)
        msg = (f"{dead[k]} during the workload; {done} of {len(records)} requests completed, "
               f"the others are marked as errors")
        if on_engine_death == "raise":
            if server.stopped:
                raise EngineDied(f"{msg} (all records: err.records)", server.log_tail(), server.exit_code, records)
            raise EngineDied(f"{msg} (all records: err.records)\nlog {server.log_path}, last lines:\n"
                             f"{server.log_tail()}", server.log_tail(), server.exit_code, records)
        if not server.stopped:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return records


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
