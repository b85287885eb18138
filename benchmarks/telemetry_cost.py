"""Telemetry cost: CPU time of the sampler thread at 10 Hz, as a share of one core.

Setup like a two-model notebook session: 2 kvlab pools of 4096 pages each, published by real
registry Publishers in another process (as engines do) and changing 20 times a second (page bitmaps
included), plus
2 "engines" that are real process groups of 4 processes each, whose resident memory is read every
sample. The /metrics poller runs on its own thread (at most 1 Hz) and is left out: what is measured
is the thread that samples memory. Its CPU time comes from its own clock (time.thread_time).

    python benchmarks/telemetry_cost.py                  # 60 s at 10 Hz, writes benchmarks/results/
    python benchmarks/telemetry_cost.py --duration 10 --hz 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kvlab.lab import Telemetry
from kvlab.lab.process import group_pids
from kvlab.registry import Publisher
from kvlab.results import write_json_atomic
from kvlab.sysinfo import environment_or_error, package_version
from kvlab.units import MiB

PAGES = 4096


class ProcessGroup:
    """A stand-in engine for the memory probe: a real process group (leader + 3 children)."""

    def __init__(self, name: str):
        code = "import subprocess,sys,time; [subprocess.Popen([sys.executable,'-c','import time; time.sleep(3600)']) for _ in range(3)]; time.sleep(3600)"
        self.proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        self.name, self.url, self.pool_name = name, "http://127.0.0.1:9", None
        self.pgid = self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        return group_pids(self.pgid)

    def stop(self) -> None:
        os.killpg(self.pgid, signal.SIGKILL)
        self.proc.wait()


def churn(root: Path, ready, stop) -> None:
    """In a child process: publish the pools and keep changing them until ``stop`` is set."""
    pubs = [Publisher(f"model-{i}", capacity=PAGES * 2 * MiB, page_size=2 * MiB, name=f"bench-{i}", root=root)
            for i in range(2)]
    ready.set()
    rng = np.random.default_rng(0)
    while not stop.wait(0.05):
        for pub in pubs:
            n = int(rng.integers(1, PAGES))
            pages = np.zeros(PAGES, np.uint8)
            pages[:n] = 1
            pages[: n // 2] = 2
            pub.update(mapped=n * 2 * MiB, used=n // 2 * 2 * MiB, pages=pages)
    for pub in pubs:
        pub.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kvlab-telemetry-bench-"))
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=churn, args=(root, ready, stop), daemon=True)
    worker.start()
    groups = [ProcessGroup(f"engine-{i}") for i in range(2)]
    if not ready.wait(60):
        raise SystemExit("the publishing process did not start")
    time.sleep(1.0)  # let the children start
    tel = Telemetry(groups, interval=1 / args.hz, metrics_interval=0, pages=True, registry_root=root)
    try:
        t0 = time.monotonic()
        with tel:
            time.sleep(args.duration)
        wall = time.monotonic() - t0
    finally:
        stop.set()
        worker.join()
        for g in groups:
            g.stop()
    df = tel.table()
    if not any(c.startswith("pool_mapped:") for c in df.columns):
        raise SystemExit("the sampler saw no pools: the benchmark measured nothing")
    procs = sum(1 for c in df.columns if c.startswith("mem:"))
    result = {
        "benchmark": "telemetry_cost",
        "config": {"hz": args.hz, "duration_s": args.duration, "pools": 2, "pages_per_pool": PAGES,
                   "servers": len(groups), "processes_per_server": 4, "pages": True, "metrics_interval": 0,
                   "publisher": "another process"},
        "samples": tel.n_samples,
        "expected_samples": int(wall * args.hz) + 1,
        "sampler_cpu_s": round(tel.cpu_seconds, 4),
        "wall_s": round(wall, 3),
        "share_of_one_core": round(tel.cpu_seconds / wall, 5),
        "cpu_ms_per_sample": round(1000 * tel.cpu_seconds / max(tel.n_samples, 1), 3),
        "server_memory_columns": procs,
        "errors": tel.errors,
        "environment": environment_or_error(),
        "pandas": package_version("pandas"),
    }
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = write_json_atomic(Path(args.out) / f"telemetry_cost-{stamp}.json", result)
    print(f"sampler at {args.hz:g} Hz: {result['share_of_one_core']:.3%} of one core "
          f"({result['cpu_ms_per_sample']} ms CPU per sample, {tel.n_samples} samples) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
