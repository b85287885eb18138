"""Dashboard load: 3 models x 4096 pages + a memory timeline, refreshed at 5 Hz, without a kernel.

Three real host arenas (4096 pages of 64 KiB each) are mapped and unmapped by a workload thread;
one PageMap per arena and a MemoryTimeline sample them at 5 Hz on the views thread, exactly as in a
notebook. Comm messages are captured (JSON-encoded as the kernel's session would) instead of sent.

Measured: messages and bytes sent, updates lost (a sampled page state or timeline row that never
reached the front end; must be 0), whether every view's final state arrived, and CPU time: whole
process, the views thread alone, and the process minus the workload thread (the dashboard's cost).

    python benchmarks/dashboard_load.py                 # 60 s, writes benchmarks/results/
    python benchmarks/dashboard_load.py --duration 10
"""

from __future__ import annotations

import argparse
import hashlib
import threading
import time
from pathlib import Path

import numpy as np

from kvlab.memory import Arena
from kvlab.results import write_json_atomic
from kvlab.sysinfo import environment, package_version
from kvlab.views import MemoryTimeline, PageMap, default_coalescer
from kvlab.views.capture import capture


def thread_cpu(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def workload(arenas, stop: threading.Event, hz: float, seed: int = 0) -> None:
    """Each model's demand drifts; pages map from the low end (as kvlab's pools prefer) and unmap from the top."""
    rng = np.random.default_rng(seed)
    while not stop.wait(1 / (4 * hz)):  # changes faster than the views sample: they must keep up
        for a in arenas:
            target = int(np.clip(a.mapped_pages + rng.integers(-96, 97), 0, a.n_pages))
            if target > a.mapped_pages:
                a.map(range(a.mapped_pages, target))
            elif target < a.mapped_pages:
                a.unmap(range(target, a.mapped_pages))


def record_updates(pm: PageMap, log: list) -> None:
    """Remember every distinct state the sampler handed the PageMap, to check each one was sent."""
    update = pm.update

    def wrapped(pool, states, info=None):
        changed = update(pool, states, info)
        if changed:
            log.append((pool, hashlib.blake2b(np.asarray(states).tobytes(), digest_size=8).digest()))
        return changed
    pm.update = wrapped


def run(duration: float, hz: float, models: int, pages: int, page_size: int) -> dict:
    arenas = [Arena(pages * page_size, page_size=page_size) for _ in range(models)]
    names = [f"model-{i}" for i in range(models)]
    sampled: list = []
    stop = threading.Event()
    with capture() as cap:
        maps = []
        for name, a in zip(names, arenas):
            pm = PageMap()
            record_updates(pm, sampled)
            maps.append(PageMap.from_arena(a, name=name, interval_s=1 / hz, into=pm))
        tl = MemoryTimeline(window=int(60 * hz))
        t0 = time.monotonic()
        appended = []

        def sample_timeline():
            row = {n: a.mapped_bytes for n, a in zip(names, arenas)}
            appended.append(round(time.monotonic() - t0, 6))
            tl.append(appended[-1], row, total=sum(a.capacity for a in arenas))
        tl.sample(sample_timeline, 1 / hz, name="timeline")
        tl.set_limit(names[0], arenas[0].capacity * 3 // 4)

        load = threading.Thread(target=workload, args=(arenas, stop, hz), name="workload")
        cpu0, wall0 = time.process_time(), time.monotonic()
        load.start()
        time.sleep(0.05)
        views = default_coalescer()._thread
        views_cpu0 = thread_cpu(views)
        time.sleep(duration)
        stop.set()
        load_cpu = thread_cpu(load)
        load.join()
        time.sleep(0.3)  # let the last samples go out: a view must end on the final value
        views_cpu = thread_cpu(views) - views_cpu0
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        ids = {id(w): w.comm.comm_id for w in (*maps, tl)}
        for w in (*maps, tl):
            w.close()  # stops the samplers; the comm ids stay in the capture

    # What a front end would have seen, message by message.
    sent_hashes = set()
    final_ok = 0
    for pm, name in zip(maps, names):
        for m in cap.updates(ids[id(pm)]):
            for path, buf in zip(m.data["buffer_paths"], m.buffers):
                sent_hashes.add((path[-1], hashlib.blake2b(buf, digest_size=8).digest()))
        final_ok += cap.state(ids[id(pm)])["states"][name] == pm.states[name]
    lost_pages = sum(1 for s in sampled if s not in sent_hashes)
    seen_rows: set = set()
    state: dict = {}
    for m in cap.updates(ids[id(tl)]):
        for path, buf in zip(m.data["buffer_paths"], m.buffers):
            state[path[-1]] = buf
        width = 2 + len(tl.columns)
        rows = np.frombuffer(state.get("base", b"") + state.get("tail", b"")).reshape(-1, width)
        seen_rows.update(rows[:, 0].tolist())
    lost_rows = sum(1 for t in appended if t not in seen_rows)
    final_ok += np.array_equal(np.frombuffer(state["base"] + state["tail"]).reshape(-1, 2 + len(names))[-tl.window:],
                               tl.rows(), equal_nan=True)
    for a in arenas:
        a.close()

    updates = [m for m in cap.messages if m.msg_type == "comm_msg"]
    per_widget = {n: len(cap.updates(ids[id(pm)])) for n, pm in zip(names, maps)}
    per_widget["timeline"] = len(cap.updates(ids[id(tl)]))
    dashboard_cpu = cpu - load_cpu
    return {
        "config": {"duration_s": duration, "refresh_hz": hz, "models": models, "pages_per_model": pages,
                   "page_size": page_size, "flush_interval_s": default_coalescer().settings.flush_interval_s},
        "messages": {"total": len(updates), "per_second": len(updates) / wall, "per_widget": per_widget,
                     "max_per_widget_per_second": max(per_widget.values()) / wall,
                     "bytes_per_second": sum(m.nbytes for m in updates) / wall},
        "updates": {"page_states_sampled": len(sampled), "page_states_lost": lost_pages,
                    "timeline_rows": len(appended), "timeline_rows_lost": lost_rows,
                    "views_with_final_state": f"{final_ok}/{models + 1}"},
        "cpu": {"wall_s": wall, "process_percent_of_core": 100 * cpu / wall,
                "workload_thread_percent": 100 * load_cpu / wall,
                "dashboard_percent_of_core": 100 * dashboard_cpu / wall,
                "views_thread_percent": 100 * views_cpu / wall},
        "pass": lost_pages == 0 and lost_rows == 0 and final_ok == models + 1 and dashboard_cpu / wall < 0.05,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--hz", type=float, default=5.0, help="refresh rate of the views (default 5)")
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--pages", type=int, default=4096)
    p.add_argument("--page-size", type=int, default=64 << 10, help="bytes; small so 3 arenas fit in RAM")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    result = run(args.duration, args.hz, args.models, args.pages, args.page_size)
    env = environment()
    env["versions"].update({k: package_version(k) for k in ("anywidget", "ipywidgets", "traitlets", "comm")})
    result = {"benchmark": "dashboard_load", **result, "environment": env}
    stamp = env["date"].replace(":", "").replace("-", "")[:15]
    path = write_json_atomic(args.out / f"dashboard_load-{stamp}.json", result)
    m, u, c = result["messages"], result["updates"], result["cpu"]
    print(f"{m['total']} messages ({m['per_second']:.1f}/s, at most {m['max_per_widget_per_second']:.1f}/s per view, "
          f"{m['bytes_per_second'] / 1024:.0f} KiB/s); lost: {u['page_states_lost']} of {u['page_states_sampled']} "
          f"page states, {u['timeline_rows_lost']} of {u['timeline_rows']} rows; final state in "
          f"{u['views_with_final_state']} views; CPU {c['dashboard_percent_of_core']:.2f}% of a core for the "
          f"dashboard ({c['process_percent_of_core']:.2f}% with the workload thread); "
          f"{'PASS' if result['pass'] else 'FAIL'} -> {path}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
