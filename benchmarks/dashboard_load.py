"""Dashboard load: 3 models x 4096 pages refreshed at 5 Hz for a minute, without a kernel.

Three real host arenas (4096 pages of 64 KiB each) are mapped and unmapped by a workload thread.

``--mode dashboard`` (default): each arena's page states are published in a kvlab registry record, as
an elastic engine's scheduler does; a ``kvlab.views.Dashboard`` (PageMap, MemoryTimeline, LatencyView and
a limit row per pool) listens to a real ``Telemetry`` sampling the registry at 5 Hz; latencies are fed
to it too. ``--mode views``: the three views alone, sampling the arenas directly on the views thread.
Comm messages are captured (JSON-encoded as the kernel's session would) instead of sent.

Measured: messages and bytes sent, updates lost (a page state or timeline row handed to a view that
never reached the front end; must be 0), whether every view's final state arrived, and CPU time: whole
process, the views and telemetry threads, and the process minus the workload thread (the dashboard's
cost in the kernel; must stay under 5% of a core).

    python benchmarks/dashboard_load.py                 # 60 s, writes benchmarks/results/
    python benchmarks/dashboard_load.py --duration 10 --mode views
"""

from __future__ import annotations

import argparse
import hashlib
import threading
import time
from pathlib import Path

import numpy as np

from kvlab.memory import Arena
from kvlab.registry import PageState, Publisher
from kvlab.results import write_json_atomic
from kvlab.sysinfo import environment, package_version
from kvlab.views import MemoryTimeline, PageMap, default_coalescer
from kvlab.views.capture import capture


def thread_cpu(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def workload(arenas, stop: threading.Event, hz: float, publishers=None, seed: int = 0) -> None:
    """Each model's demand drifts; pages map from the low end (as kvlab's pools prefer) and unmap from the top.
    With ``publishers``, each change is published to the registry as an engine's scheduler would."""
    rng = np.random.default_rng(seed)
    while not stop.wait(1 / (4 * hz)):  # changes faster than the views sample: they must keep up
        for i, a in enumerate(arenas):
            target = int(np.clip(a.mapped_pages + rng.integers(-96, 97), 0, a.n_pages))
            if target > a.mapped_pages:
                a.map(range(a.mapped_pages, target))
            elif target < a.mapped_pages:
                a.unmap(range(target, a.mapped_pages))
            if publishers:
                states = a.mapped.astype(np.uint8) * PageState.MAPPED
                used = int(target * rng.uniform(0.3, 1.0))
                states[:used] = PageState.USED
                publishers[i].update(mapped=a.mapped_bytes, used=used * a.page_size, pages=states)


def _digest(data) -> bytes:
    return hashlib.blake2b(bytes(data), digest_size=8).digest()


def record_updates(pm: PageMap, log: list) -> None:
    """Remember every distinct state handed to the PageMap, to check each one was sent."""
    update = pm.update

    def wrapped(pool, states, info=None):
        changed = update(pool, states, info)
        if changed:
            log.append(_digest(np.asarray(states).tobytes()))
        return changed
    pm.update = wrapped


def record_rows(tl: MemoryTimeline, log: list) -> None:
    """Remember the time of every row appended to the timeline."""
    append = tl.append

    def wrapped(t_s, usage, total=None):
        append(t_s, usage, total)
        log.append(float(t_s))
    tl.append = wrapped


def check_pagemap(cap, pm: PageMap, comm_id: str, sampled: list) -> tuple[int, bool]:
    """(page states handed to ``pm`` that no message carried, whether the front end ends on its state)."""
    sent = {_digest(buf) for m in cap.updates(comm_id) for buf in m.buffers}
    final = cap.state(comm_id).get("states") == pm.states
    return sum(1 for s in sampled if s not in sent), final


def check_timeline(cap, tl: MemoryTimeline, comm_id: str, appended: list) -> tuple[int, bool]:
    """(rows appended that no front end state ever held, whether the final window arrived exactly)."""
    seen: set = set()
    state: dict = {}
    for m in cap.updates(comm_id):
        for path, buf in zip(m.data["buffer_paths"], m.buffers):
            state[path[-1]] = buf
        if "columns" in m.data["state"]:
            state["columns"] = m.data["state"]["columns"]
        width = 2 + len(state.get("columns", tl.columns))
        rows = np.frombuffer(state.get("base", b"") + state.get("tail", b"")).reshape(-1, width)
        seen.update(rows[:, 0].tolist())
    final = np.frombuffer(state["base"] + state["tail"]).reshape(-1, 2 + len(tl.columns))[-tl.window:]
    return sum(1 for t in appended if t not in seen), bool(np.array_equal(final, tl.rows(), equal_nan=True))


def _measure(duration: float, load: threading.Thread, stop: threading.Event,
             extra_threads=()) -> dict:
    """Run ``load`` for ``duration`` s; CPU of the process, the views thread and ``extra_threads``."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    load.start()
    time.sleep(0.05)
    views = default_coalescer()._thread
    threads = {"views": views, **{t.name: t for t in extra_threads}}
    t_cpu0 = {k: thread_cpu(t) for k, t in threads.items()}
    time.sleep(duration)
    stop.set()
    load_cpu = thread_cpu(load)
    load.join()
    t_cpu = {k: thread_cpu(t) - t_cpu0[k] for k, t in threads.items() if t.is_alive()}
    time.sleep(0.4)  # let the last samples go out: a view must end on the final value
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {"wall_s": wall, "process_percent_of_core": 100 * cpu / wall,
            "workload_thread_percent": 100 * load_cpu / wall,
            "dashboard_percent_of_core": 100 * (cpu - load_cpu) / wall,
            **{f"{k}_thread_percent": 100 * v / wall for k, v in t_cpu.items()}}


def _messages(cap, ids: dict, wall: float) -> dict:
    updates = [m for m in cap.messages if m.msg_type == "comm_msg"]
    per_widget = {name: len(cap.updates(cid)) for name, cid in ids.items()}
    return {"total": len(updates), "per_second": len(updates) / wall, "per_widget": per_widget,
            "max_per_widget_per_second": max(per_widget.values()) / wall,
            "bytes_per_second": sum(m.nbytes for m in updates) / wall}


def run(duration: float, hz: float, models: int, pages: int, page_size: int) -> dict:
    """The views alone: one PageMap per arena and a timeline, sampling the arenas on the views thread."""
    arenas = [Arena(pages * page_size, page_size=page_size) for _ in range(models)]
    names = [f"model-{i}" for i in range(models)]
    logs, appended, stop = [[] for _ in arenas], [], threading.Event()
    with capture() as cap:
        maps = []
        for name, a, log in zip(names, arenas, logs):
            pm = PageMap()
            record_updates(pm, log)
            maps.append(PageMap.from_arena(a, name=name, interval_s=1 / hz, into=pm))
        tl = MemoryTimeline(window=int(60 * hz))
        record_rows(tl, appended)
        t0 = time.monotonic()
        tl.sample(lambda: tl.append(round(time.monotonic() - t0, 6), {n: a.mapped_bytes for n, a in zip(names, arenas)},
                                    total=sum(a.capacity for a in arenas)), 1 / hz, name="timeline")
        tl.set_limit(names[0], arenas[0].capacity * 3 // 4)
        load = threading.Thread(target=workload, args=(arenas, stop, hz), name="workload")
        cpu = _measure(duration, load, stop)
        ids = {**{n: pm.comm.comm_id for n, pm in zip(names, maps)}, "timeline": tl.comm.comm_id}
        for w in (*maps, tl):
            w.close()  # stops the samplers; the comm ids stay in the capture
    checks = [check_pagemap(cap, pm, ids[n], log) for n, pm, log in zip(names, maps, logs)]
    sampled = [s for log in logs for s in log]
    lost_rows, tl_ok = check_timeline(cap, tl, ids["timeline"], appended)
    for a in arenas:
        a.close()
    return _result("views", duration, hz, models, pages, page_size, _messages(cap, ids, cpu["wall_s"]),
                   sampled, sum(c[0] for c in checks), appended, lost_rows,
                   sum(c[1] for c in checks) + tl_ok, models + 1, cpu)


def run_dashboard(duration: float, hz: float, models: int, pages: int, page_size: int) -> dict:
    """A Dashboard on a real Telemetry over registry records that a workload thread keeps current."""
    from kvlab.lab import Server
    from kvlab.lab.telemetry import Telemetry
    from kvlab.models import synthetic
    from kvlab.views import Dashboard

    model = synthetic("qwen2", "tiny")
    servers = [Server(model, memory="elastic", device="cpu", start=False, name=f"model-{i}") for i in range(models)]
    arenas = [Arena(pages * page_size, page_size=page_size) for _ in range(models)]
    pubs = [Publisher(f"model-{i}", pages * page_size, page_size, name=s.pool_name) for i, s in enumerate(servers)]
    sampled, appended, stop = [], [], threading.Event()
    try:
        with capture() as cap:
            tel = Telemetry(servers, interval=1 / hz, metrics_interval=0)
            dash = Dashboard(servers, telemetry=tel)
            record_updates(dash.pagemap, sampled)
            record_rows(dash.timeline, appended)
            tel.start()
            rng = np.random.default_rng(1)
            for s in servers:  # latencies arrive too, as run_workload(on_record=dash.record) feeds them
                dash.latency.add(s.name, rng.lognormal(-3, 0.5, 500), rng.lognormal(0, 0.5, 500))
            load = threading.Thread(target=workload, args=(arenas, stop, hz, pubs), name="workload")
            telemetry = [t for t in threading.enumerate() if t.name == "kvlab-telemetry"]
            cpu = _measure(duration, load, stop, extra_threads=telemetry)
            tel.stop()  # takes a last sample, which the Dashboard shows like any other
            default_coalescer().idle(2.0)
            ids = {"pagemap": dash.pagemap.comm.comm_id, "timeline": dash.timeline.comm.comm_id,
                   "latency": dash.latency.comm.comm_id}
            dash.close()
    finally:
        for p in pubs:
            p.close()
        for a in arenas:
            a.close()
    lost_pages, pm_ok = check_pagemap(cap, dash.pagemap, ids["pagemap"], sampled)
    lost_rows, tl_ok = check_timeline(cap, dash.timeline, ids["timeline"], appended)
    cpu["telemetry_sampler_seconds"] = tel.cpu_seconds
    return _result("dashboard", duration, hz, models, pages, page_size, _messages(cap, ids, cpu["wall_s"]),
                   sampled, lost_pages, appended, lost_rows, pm_ok + tl_ok, 2, cpu,
                   dashboard_errors=dash.errors, telemetry_errors=list(tel.errors))


def _result(mode, duration, hz, models, pages, page_size, messages, sampled, lost_pages, appended, lost_rows,
            final_ok, n_views, cpu, **extra) -> dict:
    ok = (lost_pages == 0 and lost_rows == 0 and final_ok == n_views and cpu["dashboard_percent_of_core"] < 5
          and not extra.get("dashboard_errors"))
    return {
        "config": {"mode": mode, "duration_s": duration, "refresh_hz": hz, "models": models, "pages_per_model": pages,
                   "page_size": page_size, "flush_interval_s": default_coalescer().settings.flush_interval_s},
        "messages": messages,
        "updates": {"page_states_sampled": len(sampled), "page_states_lost": lost_pages,
                    "timeline_rows": len(appended), "timeline_rows_lost": lost_rows,
                    "views_with_final_state": f"{final_ok}/{n_views}", **extra},
        "cpu": cpu,
        "pass": ok,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("dashboard", "views"), default="dashboard")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--hz", type=float, default=5.0, help="refresh rate of the views (default 5)")
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--pages", type=int, default=4096)
    p.add_argument("--page-size", type=int, default=64 << 10, help="bytes; small so 3 arenas fit in RAM")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    fn = run_dashboard if args.mode == "dashboard" else run
    result = fn(args.duration, args.hz, args.models, args.pages, args.page_size)
    env = environment()
    env["versions"].update({k: package_version(k) for k in ("anywidget", "ipywidgets", "traitlets", "comm")})
    result = {"benchmark": "dashboard_load", **result, "environment": env}
    stamp = env["date"].replace(":", "").replace("-", "")[:15]
    path = write_json_atomic(args.out / f"dashboard_load-{args.mode}-{stamp}.json", result)
    m, u, c = result["messages"], result["updates"], result["cpu"]
    print(f"{args.mode}: {m['total']} messages ({m['per_second']:.1f}/s, "
          f"at most {m['max_per_widget_per_second']:.1f}/s "
          f"per view, {m['bytes_per_second'] / 1024:.0f} KiB/s); lost: {u['page_states_lost']} of "
          f"{u['page_states_sampled']} page states, {u['timeline_rows_lost']} of {u['timeline_rows']} rows; final "
          f"state in {u['views_with_final_state']} views; CPU {c['dashboard_percent_of_core']:.2f}% of a core for the "
          f"dashboard ({c['process_percent_of_core']:.2f}% with the workload thread); "
          f"{'PASS' if result['pass'] else 'FAIL'} -> {path}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
