"""`kvlab bench vmm`: what mapping and unmapping a page costs, through kvlab and at the driver floor.

Measured in one run, side by side: per-page cost of Arena.map / Arena.unmap at batch sizes 1, 8 and
64 with a warm pool (hits), map with a cold pool (misses: the driver creates physical pages), and the
raw driver floor from a plain loop in the native code with no bookkeeping. The ratio kvlab/floor is
what the goal (<= 1.5x at batch 64) is about.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from kvlab.memory import Arena, PagePool, parse_device
from kvlab.memory._native_loader import native

BATCHES = (1, 8, 64)


def run(device: str = "cpu", page_size: int = 2 << 20, repeats: int = 30,
        progress: Callable[[str], None] | None = None) -> dict:
    dev = parse_device(device)
    say = progress or (lambda _msg: None)
    pool = PagePool(dev, page_size)
    biggest = max(BATCHES)
    rows = []
    with Arena(page_size * biggest * 2, device=dev, page_size=page_size) as arena:
        saved_max_free = pool.max_free
        pool.max_free = biggest  # keep one batch of handles for the warm-pool rows
        try:
            for batch in BATCHES:
                say(f"batch {batch}: kvlab map/unmap with a warm pool")
                pages = range(batch)
                arena.map(pages)  # warm: the pool now holds `batch` free handles after the unmap
                arena.unmap(pages)
                maps, unmaps = [], []
                for _ in range(repeats):
                    t0 = time.perf_counter_ns()
                    arena.map(pages)
                    t1 = time.perf_counter_ns()
                    arena.unmap(pages)
                    t2 = time.perf_counter_ns()
                    maps.append((t1 - t0) / batch / 1000)
                    unmaps.append((t2 - t1) / batch / 1000)
                say(f"batch {batch}: kvlab map with a cold pool")
                cold_us = []
                for _ in range(max(3, repeats // 3)):
                    pool.trim()
                    t0 = time.perf_counter_ns()
                    arena.map(pages)
                    cold_us.append((time.perf_counter_ns() - t0) / batch / 1000)
                    arena.unmap(pages)
                say(f"batch {batch}: raw driver floor")
                floor = native().driver_floor(dev.backend, dev.index, page_size, batch, repeats, arena.capacity)
                row = {
                    "batch": batch,
                    "map_us_per_page": statistics.median(maps),
                    "unmap_us_per_page": statistics.median(unmaps),
                    "map_cold_pool_us_per_page": statistics.median(cold_us),
                    "floor_map_us_per_page": floor["map_ns"] / 1000,
                    "floor_access_us_per_page": floor["access_ns"] / 1000,
                    "floor_unmap_us_per_page": floor["unmap_ns"] / 1000,
                }
                row["map_vs_floor"] = row["map_us_per_page"] / row["floor_map_us_per_page"]
                row["unmap_vs_floor"] = row["unmap_us_per_page"] / row["floor_unmap_us_per_page"]
                rows.append(row)
        finally:
            pool.max_free = saved_max_free
            pool.trim()
    return {"benchmark": "vmm", "device": str(dev), "backend": dev.backend, "page_size": page_size,
            "repeats": repeats, "rows": rows}


def format_table(result: dict) -> str:
    head = (f"kvlab bench vmm on {result['device']} ({result['backend']} backend), "
            f"{result['page_size'] >> 20} MiB pages, median of {result['repeats']} (us per page)")
    cols = ("batch", "map", "unmap", "map cold pool", "floor map", "floor access", "floor unmap", "map/floor",
            "unmap/floor")
    lines = [head, "  ".join(f"{c:>13}" for c in cols)]
    for r in result["rows"]:
        vals = (r["batch"], r["map_us_per_page"], r["unmap_us_per_page"], r["map_cold_pool_us_per_page"],
                r["floor_map_us_per_page"], r["floor_access_us_per_page"], r["floor_unmap_us_per_page"],
                r["map_vs_floor"], r["unmap_vs_floor"])
        lines.append("  ".join(f"{v:>13}" if isinstance(v, int) else f"{v:>13.2f}" for v in vals))
    return "\n".join(lines)
