"""Issue 7, benchmark 2: serving overhead at steady load, measured paired and interleaved.

    python benchmarks/serving_overhead.py --out benchmarks/results/serving_overhead_h100.json --graphs decode
    python benchmarks/serving_overhead.py --device cpu --model tiny --rounds 2 --out /tmp/overhead_cpu.json

Why not ``gpu_serving.py single``: there the systems ran one after the other, three repeats each, and the
same static server's steady TTFT p50 moved from 55.7 to 70.3 ms between two invocations; its streaming client
(one Python process parsing ~3000 SSE chunks/s) set the saturation figure as much as the server did
(min-max spreads of 18-26 %). A 3 % goal cannot be judged from that. Here:

* every system's server runs for the whole benchmark (started one after another, static first so that its
  fixed pool finds the memory free); only one is under load at a time, the others are idle;
* ``--rounds`` rounds, each driving every system once in a rotated order, so slow drifts of the machine
  fall on all of them and each round gives a *paired* ratio against static (adjacent in time);
* saturation: ``--sat-requests`` non-streaming requests, ``--sat-concurrency`` in flight: the client
  parses one JSON body per request, so it is not what limits the throughput;
* steady load: open-loop Poisson arrivals at ``--rate`` for ``--duration`` s, streamed, for TTFT.

For an elastic server each phase also records its pool's page maps/unmaps and mapped bytes before and after
(from kvlab's registry), so a gap can be told apart: pages mapped inside the measured window, or a per-step cost.

The JSON keeps every round; ``summary`` has each system's median (min-max) and the median (min-max) of
its per-round ratios to static. It is saved after every round, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from graphs import add_graphs_option, graph_engine_args
from stats import paired_ratios, percentile, pool_change, pool_state, round_figure, spread

SYSTEMS = ("static", "kvcached", "elastic")


async def _saturate(url: str, model: str, prompts: list[list[int]], max_tokens: int, concurrency: int) -> dict:
    """Every prompt once, ``concurrency`` in flight, not streamed; output tokens from the server's usage."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as http:
        async def one(prompt):
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                    "ignore_eos": True}
            async with sem:
                r = await http.post(url + "/v1/completions", json=body)
            r.raise_for_status()  # a benchmark with failed requests measures nothing: stop loudly
            return r.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(one(p) for p in prompts))
        wall = time.perf_counter() - t0
    if any(t != max_tokens for t in tokens):
        raise RuntimeError(f"{url}: some requests ended early ({sorted(set(tokens))} tokens, {max_tokens} asked)")
    return {"requests": len(prompts), "wall_s": wall, "output_tok_s": sum(tokens) / wall}


def saturation(server, args, seed: int) -> dict:
    from kvlab.lab import Client

    async def go():
        async with Client(server.url, server.model) as c:  # prompts of exact length from its tokenizer
            prompts = [await c.prompt_ids(args.prompt_len, seed * 100_000 + i) for i in range(args.sat_requests)]
        return await _saturate(server.url, server.model, prompts, args.sat_tokens, args.sat_concurrency)

    return asyncio.run(go())


def steady(server, args, seed: int) -> dict:
    from kvlab.lab import poisson, run_workload

    t0 = time.perf_counter()
    recs = run_workload(poisson(args.rate, args.duration, max_tokens=args.steady_tokens,
                                prompt_len=args.prompt_len, seed=seed), server)
    wall = time.perf_counter() - t0
    ok = [r for r in recs if r.ok]
    if len(ok) != len(recs):
        bad = next(r for r in recs if not r.ok)
        raise RuntimeError(f"{server.url}: {len(recs) - len(ok)} of {len(recs)} steady requests failed: {bad.error}")
    ttft = [r.ttft for r in ok]
    return {"requests": len(recs), "wall_s": wall, "ttft_p50": percentile(ttft, 50), "ttft_p90": percentile(ttft, 90),
            "ttft_p99": percentile(ttft, 99), "itl_p50": percentile([x for r in ok for x in r.itl], 50)}


def measured(phase, server) -> dict:
    """``phase()``'s figures, and for an elastic pool what it mapped and unmapped while it ran."""
    before = pool_state(server)
    out = phase()
    after = pool_state(server)
    if before is not None:
        out["pool"] = pool_change(before, after)
    return out


def _pool_note(part: dict) -> str:
    pool = part.get("pool")
    if pool is None:
        return ""
    return (f" [pool {pool['mapped_before'] >> 20}->{pool['mapped_after'] >> 20} MiB, "
            f"+{pool['pages_mapped']}/-{pool['pages_unmapped']} pages]")


def summarize(rounds: list[dict], systems: list[str]) -> dict:
    """Per system: median (min-max) of each figure; and of its per-round ratio to static's figure."""
    keys = {"output_tok_s": ("saturation", "output_tok_s"), "ttft_p50": ("steady", "ttft_p50"),
            "ttft_p99": ("steady", "ttft_p99"), "itl_p50": ("steady", "itl_p50")}

    out = {}
    for system in systems:
        row = {key: spread(round_figure(r, system, *keys[key]) for r in rounds) for key in keys}
        if system != "static" and "static" in systems:
            for key in keys:
                row[f"{key}_vs_static"] = spread(paired_ratios(rounds, system, *keys[key]))
        out[system] = row
    return out


def _server_kwargs(args, system: str, name: str) -> dict:
    kw = dict(max_model_len=args.max_model_len, seed=0, served_model_name=name, progress=False,
              start_timeout=900, name=name)
    if args.device == "cpu":
        # CPU: an explicit KV size per engine (vLLM's CPU backend has no utilisation fraction of a device).
        kw.update(device="cpu", kv_cache_memory_bytes=args.cpu_kv_mib << 20)
    else:
        kw.update(device=args.device, gpu_memory_utilization=args.util, **graph_engine_args(args.graphs))
    return kw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated; static is started first")
    p.add_argument("--device", default="cuda:0", help="cuda:N, or cpu (a check of the harness, not a result)")
    p.add_argument("--model", default="qwen2.5-0.5b", help="a kvlab.models.synthetic qwen2 size")
    p.add_argument("--util", type=float, default=0.25, help="gpu_memory_utilization of each server")
    add_graphs_option(p)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--sat-requests", type=int, default=256)
    p.add_argument("--sat-concurrency", type=int, default=64)
    p.add_argument("--sat-tokens", type=int, default=128)
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--steady-tokens", type=int, default=128)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--cpu-kv-mib", type=int, default=256)
    args = p.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems or args.rounds < 1:
        p.error(f"--systems takes some of {','.join(SYSTEMS)} (got {args.systems!r}); --rounds >= 1")
    systems.sort(key=lambda s: s != "static")  # static first: its pool is sized from the memory free then

    from kvlab.lab import Fleet, Server
    from kvlab.models import synthetic
    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment, package_version

    model = synthetic("qwen2", args.model)
    env = environment()
    meta = {"benchmark": "serving_overhead", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": vars(args), "systems": systems, "model": f"qwen2 {args.model} (random weights)",
            "versions": {**env["versions"], "kvcached": package_version("kvcached")}, "system_info": env}
    rounds: list[dict] = []

    def save(complete: bool) -> None:
        write_json_atomic(args.out, {**meta, "complete": complete, "rounds": rounds,
                                     "summary": summarize(rounds, systems)})

    servers = [Server(model, memory=s, start=False, **_server_kwargs(args, s, s)) for s in systems]
    t0 = time.perf_counter()
    with Fleet(servers) as fleet:
        meta["start_s"] = time.perf_counter() - t0
        print(f"[overhead] {len(systems)} servers up in {meta['start_s']:.0f} s: {', '.join(systems)}", flush=True)
        by_name = {s.memory: s for s in fleet}
        for i in range(args.rounds):
            order = systems[i % len(systems):] + systems[:i % len(systems)]
            rnd: dict = {"round": i, "order": order}
            for system in order:
                srv = by_name[system]
                s = measured(lambda: saturation(srv, args, seed=i + 1), srv)
                st = measured(lambda: steady(srv, args, seed=i + 1), srv)
                rnd[system] = {"saturation": s, "steady": st}
                print(f"[overhead] round {i} {system}: {s['output_tok_s']:.0f} tok/s saturated{_pool_note(s)}, "
                      f"steady TTFT p50 {st['ttft_p50'] * 1000:.1f} ms p99 {st['ttft_p99'] * 1000:.1f} ms "
                      f"({st['requests']} req){_pool_note(st)}", flush=True)
            rounds.append(rnd)
            save(complete=False)
    save(complete=True)
    for system, row in summarize(rounds, systems).items():
        ratio = row.get("output_tok_s_vs_static", {}).get("median")
        lat = row.get("ttft_p50_vs_static", {}).get("median")
        print(f"[overhead] {system}: {row['output_tok_s']['median']:.0f} tok/s, TTFT p50 "
              f"{row['ttft_p50']['median'] * 1000:.1f} ms" + (f"; vs static x{ratio:.3f} throughput, "
                                                              f"x{lat:.3f} TTFT p50" if ratio else ""), flush=True)


if __name__ == "__main__":
    main()
