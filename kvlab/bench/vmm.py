"""`kvlab bench vmm`: what mapping and unmapping a page costs, through kvlab and at the driver floor.

Measured in one run, side by side: per-page cost of Arena.map / Arena.unmap at batch sizes 1, 8 and
64 with a warm pool (hits), map with a cold pool (misses: the driver creates physical pages), and the
raw driver floor from a plain loop in the native code with no bookkeeping. The ratio kvlab/floor is
what the goal (<= 1.5x at batch 64) is about.

Then growth in GiB/s with two handle sizes over the same 2 MiB pages: the page size (one handle per
page) and a chunk-sized handle (``handle_size``, 32 MiB by default). The driver charges per handle, so the
second grows many times faster; both start from an empty pool (every handle is created), as after an idle
engine gave its memory back, and map ``step`` bytes per call, as a burst's chunk plans do.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from kvlab.memory import Arena, InvalidArgument, PagePool, parse_device
from kvlab.memory._native_loader import native

BATCHES = (1, 8, 64)
DEFAULT_HANDLE = 32 << 20


def size_label(n: int) -> str:
    """``"2MiB"``, ``"64KiB"``: the keys results use for handle sizes."""
    return f"{n >> 20}MiB" if n % (1 << 20) == 0 else f"{n >> 10}KiB"


def growth(device: str = "cpu", page_size: int = 2 << 20, handle_size: int = DEFAULT_HANDLE,
           total: int = 1 << 30, step: int = 256 << 20, repeats: int = 5) -> dict:
    """GiB/s of growing an arena from empty to ``total`` bytes in ``step``-byte map calls, and of shrinking it
    back (unmap + trim: the memory goes back to the driver), with ``page_size`` handles and with
    ``handle_size`` handles; medians of ``repeats``."""
    dev = parse_device(device)
    out = {"total_bytes": total, "step_bytes": step, "page_size": page_size, "chunk_handle_size": handle_size}
    for label, handle in (("page", page_size), ("chunk", handle_size)):
        if total % handle or step % handle:
            raise InvalidArgument(f"growth total {total} and step {step} must be multiples of the handle size "
                                  f"{handle}")
        pool = PagePool(dev, handle)
        grow, shrink = [], []
        with Arena(total, device=dev, page_size=page_size, handle_size=handle) as arena:
            per_step = step // page_size
            steps = [range(first, first + per_step) for first in range(0, arena.n_pages, per_step)]
            for _ in range(repeats):
                pool.trim()
                t0 = time.perf_counter()
                for pages in steps:
                    arena.map(pages)
                t1 = time.perf_counter()
                for pages in reversed(steps):
                    arena.unmap(pages)
                pool.trim()
                t2 = time.perf_counter()
                grow.append(total / (t1 - t0) / 2**30)
                shrink.append(total / (t2 - t1) / 2**30)
        out[f"grow_gib_s_{label}"] = statistics.median(grow)
        out[f"shrink_gib_s_{label}"] = statistics.median(shrink)
    out["grow_gib_s"] = {size_label(page_size): out["grow_gib_s_page"], "chunk": out["grow_gib_s_chunk"]}
    return out


def run(device: str = "cpu", page_size: int = 2 << 20, repeats: int = 30,
        progress: Callable[[str], None] | None = None, handle_size: int = DEFAULT_HANDLE,
        growth_bytes: int | None = None) -> dict:
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
    # A GPU grows by gigabytes in a burst; the host commits (zero-fills) what it maps, so it gets less.
    total = growth_bytes or (4 << 30 if dev.backend == "cuda" else 512 << 20)
    say(f"growth to {total >> 20} MiB with {page_size >> 10} KiB and {handle_size >> 10} KiB handles")
    grown = growth(dev, page_size, handle_size, total, step=min(total, 8 * handle_size), repeats=max(3, repeats // 6))
    return {"benchmark": "vmm", "device": str(dev), "backend": dev.backend, "page_size": page_size,
            "repeats": repeats, "rows": rows, "growth": grown, "growth_gib_s": grown["grow_gib_s"]}


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
    g = result.get("growth")
    if g:
        lines.append(f"growth to {g['total_bytes'] >> 20} MiB in {g['step_bytes'] >> 20} MiB steps (GiB/s, from an "
                     f"empty pool): {g['page_size'] >> 10} KiB handles grow {g['grow_gib_s_page']:.1f} / shrink "
                     f"{g['shrink_gib_s_page']:.1f}; {g['chunk_handle_size'] >> 10} KiB handles grow "
                     f"{g['grow_gib_s_chunk']:.1f} / shrink {g['shrink_gib_s_chunk']:.1f}")
    return "\n".join(lines)
