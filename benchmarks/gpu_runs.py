"""What the static-vs-elastic GPU benchmarks share (vllm_elastic_gpu, vllm_tp2_gpu, hybrid_gpu).

Each mode runs in a child process of its own, so NVML's numbers hold one engine and nothing a previous
mode left behind: the script runs itself with ``--child MODE``, the child ends with ``report(result)``
(one ``RESULT {json}`` line on stdout) and the parent collects the lines with ``run_children``. Device
memory comes from NVML (``used_bytes``), which counts what the CUDA driver handed out, mapped KV pages
included, where torch's counters would miss them.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

RESULT = "RESULT "


def report(result: dict) -> None:
    """The child's last word: its result as one line the parent picks out of vLLM's own output."""
    print(RESULT + json.dumps(result), flush=True)


def run_children(script: str, modes, args_of, env_of=None) -> dict[str, dict]:
    """Run ``script --child MODE <args_of(mode)>`` for each mode, one after the other; their results by mode.

    ``env_of(mode)``: extra environment variables for that child. A child that fails, or ends without a
    result, stops the benchmark with the end of its output (nothing is saved from a half-run comparison).
    """
    results = {}
    for mode in modes:
        cmd = [sys.executable, script, "--child", mode.split("-")[0], *args_of(mode)]
        env = dict(os.environ, **((env_of(mode) if env_of else None) or {}))
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT)]
        if p.returncode or not lines:
            print(p.stdout[-3000:], p.stderr[-8000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"{os.path.basename(script)}: the {mode} run failed (exit code {p.returncode}"
                             f"{', no result' if not p.returncode else ''})")
        results[mode] = json.loads(lines[-1][len(RESULT):])
    return results


def used_bytes(count: int = 1, who: str = "this benchmark") -> list[int]:
    """Used bytes of CUDA devices 0..count-1 as this process sees them (NVML ignores CUDA_VISIBLE_DEVICES:
    the indices are translated)."""
    from kvlab.nvml import Nvml

    nv = Nvml.open()
    if nv is None or len(nv) < count:
        raise SystemExit(f"{who} needs {count} NVIDIA GPU{'s' if count > 1 else ''} and nvidia-ml-py (NVML)")
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return [nv.memory(nv.index_of_cuda(i, visible)).used for i in range(count)]
    finally:
        nv.close()


def gpu_names() -> list[str]:
    """"name, driver" of each GPU (nvidia-smi), for the result's hardware record; [] without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_slug(name: str) -> str:
    """The short GPU name result files carry (``..._h100.json``)."""
    m = re.search(r"(GH200|H100|H200|A100|L40S?|B200|A10G?|L4)", name, re.I)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def random_prompts(lengths, high: int = 150_000, seed: int = 0) -> list[dict]:
    """Token-id prompts (ids in [10, high)) of the given lengths, the same for every mode: greedy identity
    compares their outputs."""
    rng = random.Random(seed)
    return [{"prompt_token_ids": [rng.randrange(10, high) for _ in range(n)]} for n in lengths]
