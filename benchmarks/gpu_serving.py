"""Issue 7, benchmarks 2-5 (and issue 3's GPU server checks): static vLLM vs kvcached vs kvlab, served.

    python benchmarks/gpu_serving.py single --out benchmarks/results/gpu_serving_single_h100.json
    python benchmarks/gpu_serving.py multi --models 2 --out benchmarks/results/gpu_serving_multi2_h100.json
    python benchmarks/gpu_serving.py identity --out benchmarks/results/gpu_server_identity_h100.json

Every engine is a real vLLM OpenAI server in multi-process mode, started by ``kvlab.lab.Server`` (memory
"static", "kvcached" or "elastic") over kvlab's random-weight Qwen2.5-0.5B-shaped model, run as ``--graphs``
says (benchmarks/graphs.py). Device memory is NVML's used memory minus the device's baseline before the engines,
sampled at 10 Hz in a thread (peaks) and read at fixed points (idle).

* single (benchmarks 2-4), per system: idle VRAM after start; burst onset: ``--bursts`` bursts of 32
  requests arriving after ``--pause`` s of idle (TTFT of each burst); idle VRAM after the bursts;
  saturation throughput (256 requests, 64 in flight, 3 repeats) and steady Poisson load (TTFT p50/p99).
* multi (benchmark 5): N models on the GPU, alternating bursts (kvlab.lab.alternating); TTFT p99 per model
  and per burst, device memory, and each elastic pool's pages mapped and unmapped; static vLLM gets an
  even split of ``--util`` per model.
* identity (issue 3): the same greedy prompts, one at a time, to a static and an elastic server running at
  the same time (the elastic one starts while the static one holds its whole pool): outputs must match.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

from graphs import add_graphs_option, graph_engine_args
from stats import percentile, pool_change, pool_state

SYSTEMS = ("static", "kvcached", "elastic")


class VramSampler:
    """Device memory used (NVML) over time, in a thread, relative to a baseline taken at construction."""

    def __init__(self, index: int = 0, interval: float = 0.1):
        from kvlab.nvml import Nvml

        self._nvml, self._index = Nvml.open(), index
        if self._nvml is None:
            raise SystemExit("gpu_serving needs an NVIDIA GPU and nvidia-ml-py (NVML)")
        self.base = self.used_abs()
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._t.start()

    def used_abs(self) -> int:
        return self._nvml.memory(self._index)[1]

    def used(self) -> int:
        return self.used_abs() - self.base

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.samples.append((time.time(), self.used()))

    def peak(self, since: float, until: float | None = None) -> int:
        vals = [v for t, v in self.samples if t >= since and (until is None or t <= until)]
        return max(vals) if vals else self.used()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def _stats(records, wall: float | None = None) -> dict:
    ok = [r for r in records if r.ok]
    ttft = [r.ttft for r in ok]
    out = {"requests": len(records), "ok": len(ok), "ttft_p50": percentile(ttft, 50), "ttft_p90": percentile(ttft, 90),
           "ttft_p99": percentile(ttft, 99), "e2e_p50": percentile([r.e2e for r in ok], 50),
           "e2e_p99": percentile([r.e2e for r in ok], 99)}
    if wall:
        out["wall_s"] = wall
        out["output_tok_s"] = sum(r.tokens_out or 0 for r in ok) / wall
    return out


def per_burst(records) -> list[dict]:
    """Each burst (workload phase) in the order sent: its model, when its first request left (s from the
    run's start) and its TTFTs. Tells whether a run's slow requests are each model's burst onset."""
    out = []
    for phase in sorted({r.phase for r in records}):
        recs = [r for r in records if r.phase == phase]
        sent = [r.start for r in recs if r.start is not None]
        s = _stats(recs)
        out.append({"phase": phase, "model": recs[0].model, "sent_s": min(sent) if sent else None,
                    "requests": s["requests"], "ok": s["ok"], "ttft_p50": s["ttft_p50"], "ttft_p99": s["ttft_p99"]})
    return out


def _server(model, system: str, args, util: float, name: str):
    from kvlab.lab import Server

    kw = dict(gpu_memory_utilization=util, max_model_len=4096, seed=0, served_model_name=name,
              progress=False, start_timeout=900, name=name, **graph_engine_args(args.graphs))
    return Server(model, memory=system, device="cuda:0", **kw)


def _run(workload, target, **kw):
    from kvlab.lab import run_workload

    t0 = time.perf_counter()
    recs = run_workload(workload, target, **kw)
    return recs, time.perf_counter() - t0


def single(args, vram: VramSampler, save) -> list[dict]:
    from kvlab.lab import bursty, poisson
    from kvlab.models import synthetic

    model = synthetic("qwen2", "qwen2.5-0.5b")
    rows = []
    for system in args.systems.split(","):
        print(f"[single] {system}: starting", flush=True)
        row: dict = {"system": system}
        rows.append(row)
        t0 = time.perf_counter()
        try:
            with _server(model, system, args, args.util, "m") as srv:
                row["start_s"] = time.perf_counter() - t0
                time.sleep(3)
                row["idle_after_start_mib"] = vram.used() / 2**20
                bursts = []
                for i in range(args.bursts):
                    time.sleep(args.pause)
                    t = time.time()
                    recs, wall = _run(bursty(1, 32, 0, max_tokens=64, prompt_len=512, seed=i), srv)
                    b = _stats(recs, wall)
                    b["peak_mib"] = vram.peak(t) / 2**20
                    bursts.append(b)
                    print(f"[single] {system} burst {i}: ttft p99 {b['ttft_p99']:.3f} s, peak {b['peak_mib']:.0f} MiB",
                          flush=True)
                row["burst_onset"] = bursts
                time.sleep(args.pause)
                row["idle_after_burst_mib"] = vram.used() / 2**20
                sat = []
                for i in range(3):
                    t = time.time()
                    recs, wall = _run(bursty(1, 256, 0, max_tokens=128, prompt_len=256, seed=100 + i), srv,
                                      concurrency=64)
                    s = _stats(recs, wall)
                    s["peak_mib"] = vram.peak(t) / 2**20
                    sat.append(s)
                row["saturation"] = sat
                row["saturation_output_tok_s"] = statistics.median(s["output_tok_s"] for s in sat)
                steady = []
                for i in range(3):
                    recs, wall = _run(poisson(args.rate, args.duration, max_tokens=128, prompt_len=256, seed=200 + i),
                                      srv)
                    steady.append(_stats(recs, wall))
                row["steady"] = steady
                row["steady_ttft_p50"] = statistics.median(s["ttft_p50"] for s in steady)
                row["steady_ttft_p99"] = statistics.median(s["ttft_p99"] for s in steady)
                time.sleep(args.pause)
                row["idle_end_mib"] = vram.used() / 2**20
                print(f"[single] {system}: sat {row['saturation_output_tok_s']:.0f} tok/s, steady ttft p50 "
                      f"{row['steady_ttft_p50']:.4f} p99 {row['steady_ttft_p99']:.4f}, idle "
                      f"{row['idle_after_burst_mib']:.0f} MiB", flush=True)
        except Exception as e:  # keep what was measured; the next system still runs
            row["error"] = f"{type(e).__name__}: {e}"[-3000:]
            print(f"[single] {system} FAILED: {row['error']}", flush=True)
        time.sleep(2)
        row["after_stop_mib"] = vram.used() / 2**20
        save(rows)
    return rows


def multi(args, vram: VramSampler, save) -> list[dict]:
    from kvlab.lab import Fleet, alternating
    from kvlab.models import synthetic

    models = [synthetic("qwen2", "qwen2.5-0.5b", seed=i) for i in range(args.models)]
    rows = []
    for system in args.systems.split(","):
        util = args.util / args.models if system == "static" else args.util
        print(f"[multi x{args.models}] {system}: starting (util {util:.2f} each)", flush=True)
        row: dict = {"system": system, "models": args.models, "util_each": util}
        rows.append(row)
        try:
            servers = [_server(m, system, args, util, f"m{i}") for i, m in enumerate(models)]
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[-3000:]
            print(f"[multi] {system} FAILED to start: {row['error']}", flush=True)
            save(rows)
            continue
        try:
            with Fleet(servers, start=False) as fleet:
                time.sleep(3)
                row["idle_mib"] = vram.used() / 2**20
                pools_before = {srv.model: pool_state(srv) for srv in fleet}
                t = time.time()
                wl = alternating(list(fleet), rounds=args.rounds, burst_size=32, pause=args.pause, max_tokens=64,
                                 prompt_len=512)
                recs, wall = _run(wl, list(fleet))
                row["peak_mib"] = vram.peak(t) / 2**20
                row["timeline_mib"] = [(round(ts - t, 2), round(v / 2**20)) for ts, v in vram.samples if ts >= t]
                row["per_model"] = {m: _stats([r for r in recs if r.model == m]) for m in sorted({r.model for r in recs})}
                row["all"] = _stats(recs, wall)
                row["per_burst"] = per_burst(recs)
                # Pages an elastic pool mapped and unmapped over the run (kvcached and static publish none).
                row["pools"] = {srv.model: pool_change(pools_before[srv.model], pool_state(srv))
                                for srv in fleet if pools_before[srv.model] is not None}
                time.sleep(args.pause)
                row["idle_after_mib"] = vram.used() / 2**20
                print(f"[multi x{args.models}] {system}: ttft p99 {row['all']['ttft_p99']:.3f} s, peak "
                      f"{row['peak_mib']:.0f} MiB, idle after {row['idle_after_mib']:.0f} MiB", flush=True)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[-3000:]
            print(f"[multi] {system} FAILED: {row['error']}", flush=True)
        time.sleep(2)
        save(rows)
    return rows


def identity(args, vram: VramSampler, save) -> list[dict]:
    from kvlab.models import synthetic

    model = synthetic("qwen2", "qwen2.5-0.5b")
    prompts = [" ".join(["garden river light"] * n) for n in (3, 40, 300, 1200)]
    rows = []
    with _server(model, "static", args, args.util, "m") as static:
        row = {"static_idle_mib": vram.used() / 2**20}
        t0 = time.perf_counter()
        with _server(model, "elastic", args, args.util, "m") as elastic:
            row["elastic_start_s"] = time.perf_counter() - t0
            outs = {}
            for srv in (static, elastic):
                with httpx.Client(timeout=120) as c:
                    outs[srv.memory] = [c.post(f"{srv.url}/v1/completions", json={
                        "model": "m", "prompt": p, "max_tokens": 48, "temperature": 0, "ignore_eos": True,
                    }).json()["choices"][0]["text"] for p in prompts]
            row["identical"] = outs["static"] == outs["elastic"]
            row["n_prompts"] = len(prompts)
            row["both_running_mib"] = vram.used() / 2**20
            if not row["identical"]:
                row["outputs"] = outs
        rows.append(row)
    print(f"[identity] {rows}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("single", "multi", "identity"))
    p.add_argument("--out", required=True)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--util", type=float, default=0.5)
    add_graphs_option(p)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--pause", type=float, default=6.0)
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()

    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment, package_version

    vram = VramSampler()
    meta = {"benchmark": f"gpu_serving_{args.mode}", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": vars(args), "versions": {k: package_version(k) for k in ("vllm", "kvcached", "torch", "kvlab")},
            "baseline_used_mib": vram.base / 2**20, "system_info": environment()}

    def save(rows: list[dict], complete: bool = False) -> None:
        # After every system, not only at the end: a run cut off by a time limit keeps what it measured.
        write_json_atomic(args.out, {**meta, "complete": complete, "rows": rows})

    try:
        rows = {"single": single, "multi": multi, "identity": identity}[args.mode](args, vram, save)
    finally:
        vram.stop()
    save(rows, complete=True)


if __name__ == "__main__":
    main()
