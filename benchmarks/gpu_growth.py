"""Issue 7, benchmark 1: how fast a KV pool grows and shrinks, kvlab vs kvcached vs the driver floor.

    python benchmarks/gpu_growth.py [--out benchmarks/results/gpu_growth_h100.json] [--total 8G] [--step 256M]
                                    [--handle-size 32M]

For each KV geometry (Qwen2.5-0.5B and Llama-3.1-8B shapes, bf16, 16-token blocks) the pool grows from
empty to ``--total`` bytes of KV (all layers, K and V) in steps of ``--step`` (one step = the blocks a
burst of requests asks for), then shrinks back to empty, through each system's public allocation path:

* kvlab: ``kvlab.memory.Arena`` on cuda, one region per layer like vLLM 0.24's per-layer KV tensors; a
  step maps the next pages of every layer with one ``Arena.map`` call (what the engine's worker does for
  a chunk plan); shrink unmaps in the same steps and trims the page pool (the physical memory goes back
  to the device, as the engine does). Grown with an empty page pool (every page is created), the
  realistic case after an idle engine gave its memory back.
* kvlab-chunk: the same with one physical handle of ``--handle-size`` per layer's share of a step (the
  adapter's KVLAB_HANDLE_SIZE): same 2 MiB page map, far fewer driver calls. A step then covers at least
  one handle per layer. The summary ``growth_gib_s`` gives both, as {"2MiB": .., "chunk": ..}.
* kvcached (the PyPI release, built against the local torch): ``alloc_kv_cache`` + ``get_kv_cache_manager``;
  a step is ``manager.alloc(blocks)``; shrink is ``manager.free`` of the same blocks, then ``trim()``.
  Its defaults (2 MiB pages, page pre-allocation thread, contiguous layout on CUDA) are kept.
* floor: the native driver loop (cuMemCreate excluded: a pre-created handle) at batch 64, no bookkeeping.

Each system runs in its own process (clean CUDA state). GiB/s = KV bytes mapped (or unmapped) / wall time.
Repeated ``--repeats`` times; median, min and max are saved with the hardware and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from stats import spread

GEOMETRIES = {  # layers, KV heads, head dim (bf16, 16-token blocks)
    "qwen2.5-0.5b": (24, 2, 64),
    "llama-3.1-8b": (32, 8, 128),
}
BLOCK_TOKENS = 16
DTYPE_BYTES = 2


def block_bytes_per_layer(geometry: str) -> int:
    """K and V of one 16-token block in one layer."""
    _, heads, dim = GEOMETRIES[geometry]
    return 2 * BLOCK_TOKENS * heads * dim * DTYPE_BYTES


def run_kvlab(geometry: str, total: int, step: int, repeats: int, page_size: int, handle_size: int = 0) -> dict:
    import numpy as np

    from kvlab.memory import Arena

    handle = handle_size or page_size
    layers = GEOMETRIES[geometry][0]
    region = -(-(total // layers) // handle) * handle  # one layer's KV, in whole handles
    per_layer_step = -(-max(step // layers, 1) // handle) * handle  # whole handles: a handle maps only whole
    pages_per_step = per_layer_step // page_size
    pages_per_region = region // page_size
    n_steps = -(-pages_per_region // pages_per_step)
    steps = []  # each step: the next pages of every layer's region, mapped in one call
    for s in range(n_steps):
        first = s * pages_per_step
        idx = np.arange(first, min(first + pages_per_step, pages_per_region))
        steps.append(np.concatenate([idx + layer * pages_per_region for layer in range(layers)]))
    arena = Arena(region * layers, device="cuda:0", page_size=page_size, handle_size=handle)
    grow, shrink = [], []
    try:
        for _ in range(repeats):
            arena.pool.trim(0)
            t0 = time.perf_counter()
            for pages in steps:
                arena.map(pages)
            t1 = time.perf_counter()
            mapped = arena.mapped_bytes
            for pages in reversed(steps):
                arena.unmap(pages)
                arena.pool.trim(0)
            t2 = time.perf_counter()
            grow.append(mapped / (t1 - t0) / 2**30)
            shrink.append(mapped / (t2 - t1) / 2**30)
    finally:
        arena.close()
    return {"system": "kvlab-chunk" if handle_size else "kvlab", "page_size": page_size, "handle_size": handle,
            "bytes": mapped, "steps": n_steps, "grow_gib_s": grow, "shrink_gib_s": shrink}


def _load_vllm_ops() -> str | None:
    """Import vLLM's compiled ops, as every vLLM process has them before kvcached runs; their name, or None.

    Alone in a process with torch, kvcached 0.1.6's C++ allocator died on the H100 (2026-11-24) at its
    first ``std::cout`` of a number (the text before the number was printed), while the same allocator
    ran in vLLM's servers. Why is not known yet; loading vLLM's extensions first makes this process like
    theirs, and the result records it (``preloaded``), so the next run says whether that was the difference.
    """
    try:
        import vllm._C  # noqa: F401
    except ImportError:
        return None
    return "vllm._C"


def run_kvcached(geometry: str, total: int, step: int, repeats: int) -> dict:
    os.environ.setdefault("KVCACHED_LOG_LEVEL", "WARNING")
    import torch

    preloaded = _load_vllm_ops()
    from kvcached.integration.vllm.interfaces import (alloc_kv_cache, get_kv_cache_manager, init_kvcached,
                                                      shutdown_kvcached)
    from kvcached.utils import CONTIGUOUS_LAYOUT, PAGE_PREALLOC_ENABLED, PAGE_SIZE
    from kvcached.vmm_ops import kv_tensors_created

    layers, heads, dim = GEOMETRIES[geometry]
    per_block = block_bytes_per_layer(geometry) * layers  # all layers, K and V
    torch.cuda.set_device(0)
    init_kvcached(tp_rank=0, world_size=1, is_worker=True, async_sched=False)
    # kvcached sizes its virtual tensors from the device, whatever number of blocks is asked for here.
    alloc_kv_cache(kvcache_shape=(2, 2 * total // per_block, BLOCK_TOKENS, heads, dim), block_size=BLOCK_TOKENS,
                   dtype=torch.bfloat16, device="cuda:0", num_layers=layers)
    deadline = time.time() + 30
    while not kv_tensors_created():
        if time.time() > deadline:
            raise RuntimeError("kvcached did not create its KV tensors within 30 s")
        time.sleep(0.05)
    # The manager through the factory vLLM's integration calls (it checks the manager against the tensors
    # alloc_kv_cache made and, given no number of blocks, sizes it to them). On the H100 (2026-11-24) its
    # C++ page allocator died with SIGSEGV here, as when built directly, and so did kvcached 0.1.6's own
    # tests/test_kvcache_manager.py: the fault is kvcached's, on that machine, not this harness's.
    mgr = get_kv_cache_manager(None, BLOCK_TOKENS, heads * dim * DTYPE_BYTES, layers)
    if mgr.num_blocks * per_block < total:
        raise RuntimeError(f"kvcached's pool holds {mgr.num_blocks} blocks, fewer than {total} bytes of KV")
    blocks_per_step = step // per_block
    n_steps = total // step
    grow, shrink = [], []
    try:
        mgr.free(mgr.alloc(1))  # waits for kvcached's background initialisation, outside the timing
        for _ in range(repeats):
            mgr.trim()
            base = mgr.get_mapped_memory_size()
            held = []
            t0 = time.perf_counter()
            for _s in range(n_steps):
                got = mgr.alloc(blocks_per_step)
                if got is None:
                    raise RuntimeError(f"kvcached refused to allocate {blocks_per_step} blocks")
                held.append(got)
            t1 = time.perf_counter()
            mapped = mgr.get_mapped_memory_size() - base
            for got in reversed(held):
                mgr.free(got)
            mgr.trim()
            t2 = time.perf_counter()
            grow.append(mapped / (t1 - t0) / 2**30)
            shrink.append(mapped / (t2 - t1) / 2**30)
    finally:
        shutdown_kvcached()
    return {"system": "kvcached", "page_size": PAGE_SIZE, "bytes": int(mapped), "steps": n_steps,
            "contiguous_layout": CONTIGUOUS_LAYOUT, "page_prealloc": PAGE_PREALLOC_ENABLED,
            "preloaded": preloaded, "grow_gib_s": grow, "shrink_gib_s": shrink}


def run_floor(page_size: int, repeats: int) -> dict:
    from kvlab.memory._native_loader import native

    batch = 64
    f = native().driver_floor("cuda", 0, page_size, batch, repeats, page_size * batch * 2)
    map_ns, unmap_ns = f["map_ns"] + f["access_ns"], f["unmap_ns"]
    return {"system": "floor", "page_size": page_size, "batch": batch,
            "grow_gib_s": [page_size / map_ns * 1e9 / 2**30], "shrink_gib_s": [page_size / unmap_ns * 1e9 / 2**30]}


def growth_summary(rows: list[dict], page_size: int) -> dict:
    """Per geometry, kvlab's median growth with page-sized and with chunk-sized handles (GiB/s), keyed as
    `kvlab bench vmm` keys them."""
    from kvlab.bench.vmm import size_label

    out = {}
    for geometry in GEOMETRIES:
        got = {r["system"]: r["grow"]["median"] for r in rows if r.get("geometry") == geometry and "grow" in r}
        out[geometry] = {size_label(page_size): got.get("kvlab"), "chunk": got.get("kvlab-chunk")}
    return out


def _child(args) -> None:
    if args.child == "kvlab":
        out = run_kvlab(args.geometry, args.total, args.step, args.repeats, args.page_size)
    elif args.child == "kvlab-chunk":
        out = run_kvlab(args.geometry, args.total, args.step, args.repeats, args.page_size, args.handle_size)
    elif args.child == "kvcached":
        out = run_kvcached(args.geometry, args.total, args.step, args.repeats)
    else:
        out = run_floor(args.page_size, max(args.repeats, 20))
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/gpu_growth_h100.json")
    p.add_argument("--total", default="8G")
    p.add_argument("--step", default="256M")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--page-size", default="2M")
    p.add_argument("--handle-size", default="32M", help="kvlab-chunk's physical handle size")
    p.add_argument("--systems", default="kvlab,kvlab-chunk,kvcached,floor")
    p.add_argument("--child", choices=("kvlab", "kvlab-chunk", "kvcached", "floor"))
    p.add_argument("--geometry", choices=sorted(GEOMETRIES))
    args = p.parse_args()
    if args.child:
        # Sizes come as bytes from the parent, so that a child imports nothing of kvlab it does not
        # measure. kvcached's child, which used to load kvlab's native module first, died on the H100
        # inside kvcached's C++ allocator, at its first iostream output of a number: if two C++ runtimes
        # in one process were the cause, this keeps them apart.
        args.total, args.step, args.page_size = int(args.total), int(args.step), int(args.page_size)
        args.handle_size = int(args.handle_size)
        return _child(args)
    from kvlab.memory.args import parse_size

    args.total, args.step, args.page_size = parse_size(args.total), parse_size(args.step), parse_size(args.page_size)
    args.handle_size = parse_size(args.handle_size)

    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment

    rows = []
    for geometry in GEOMETRIES:
        for system in args.systems.split(","):
            if system == "floor" and geometry != next(iter(GEOMETRIES)):
                continue  # the floor does not depend on the geometry
            # -X faulthandler: a child that dies in native code (kvcached's C++ allocator did, once) still
            # leaves its Python stack on stderr.
            cmd = [sys.executable, "-X", "faulthandler", __file__, "--child", system, "--geometry", geometry,
                   "--total", str(args.total), "--step", str(args.step), "--repeats", str(args.repeats),
                   "--page-size", str(args.page_size), "--handle-size", str(args.handle_size)]
            print(f"[growth] {geometry} {system} ...", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                rows.append({"system": system, "geometry": geometry, "returncode": proc.returncode,
                             "error": proc.stderr[-3000:], "stdout": proc.stdout[-2000:]})
                print(f"[growth] {geometry} {system} FAILED (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                      f"{proc.stderr[-3000:]}", flush=True)
                continue
            row = json.loads(line[7:])
            row["geometry"] = geometry
            row["grow"], row["shrink"] = spread(row.pop("grow_gib_s")), spread(row.pop("shrink_gib_s"))
            rows.append(row)
            print(f"[growth] {geometry} {system}: grow {row['grow']['median']:.1f} GiB/s, "
                  f"shrink {row['shrink']['median']:.1f} GiB/s", flush=True)
    floor = next((r for r in rows if r["system"] == "floor" and "error" not in r), None)
    for geometry in GEOMETRIES:
        got = {r["system"]: r for r in rows if r.get("geometry") == geometry and "error" not in r}
        if "kvlab" in got and "kvcached" in got:
            got["kvlab"]["grow_vs_kvcached"] = got["kvlab"]["grow"]["median"] / got["kvcached"]["grow"]["median"]
            got["kvlab"]["shrink_vs_kvcached"] = (got["kvlab"]["shrink"]["median"]
                                                  / got["kvcached"]["shrink"]["median"])
        if "kvlab" in got and floor:
            got["kvlab"]["floor_vs_grow"] = floor["grow"]["median"] / got["kvlab"]["grow"]["median"]
            got["kvlab"]["floor_vs_shrink"] = floor["shrink"]["median"] / got["kvlab"]["shrink"]["median"]
    result = {"benchmark": "gpu_growth", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "config": {"total": args.total, "step": args.step, "repeats": args.repeats,
                         "page_size": args.page_size, "handle_size": args.handle_size, "geometries": GEOMETRIES,
                         "block_tokens": BLOCK_TOKENS},
              "summary": {"growth_gib_s": growth_summary(rows, args.page_size)},
              "system_info": environment(), "rows": rows}
    write_json_atomic(args.out, result)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
