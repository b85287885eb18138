"""Elastic vLLM at tensor_parallel_size=2 on two GPUs: benchmarks/vllm_tp2_gpu.py, checked.

Greedy outputs identical to stock vLLM at TP=2 (Qwen2.5-0.5B and Llama-3.1-8B shapes), each GPU holding far
less than the static engine's pool once the elastic engine has been idle for its grace (every rank unmapped
its shard), and a limit set from outside binding on both ranks. Runs on a
machine with two NVIDIA GPUs only; writes benchmarks/results/tp2_gpu_<gpu>.json.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

pytest.importorskip("vllm")
pynvml = pytest.importorskip("pynvml")

from kvlab.lab.engine import vllm_build  # noqa: E402
from kvlab.nvml import Nvml  # noqa: E402

if vllm_build() != "gpu":
    pytest.skip("needs the GPU build of vLLM", allow_module_level=True)
_nv = Nvml.open()
if _nv is None or len(_nv) < 2:
    pytest.skip("needs two NVIDIA GPUs", allow_module_level=True)
_nv.close()

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tp2_identical_and_every_gpu_gives_its_kv_back(tmp_path):
    out = tmp_path / "tp2.json"
    p = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "vllm_tp2_gpu.py"), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    result = json.loads(out.read_text())
    assert result["tp"] == 2 and result["identical"], result["mismatched_requests"]
    static, elastic = result["idle_MiB"]["static"], result["idle_MiB"]["elastic"]
    assert len(static) == len(elastic) == 2
    for s, e in zip(static, elastic):
        assert e < s / 4, result["idle_MiB"]  # the static pool is most of 0.5 x the GPU; elastic: weights + chunk 0
    for shape, figures in result["shapes"].items():
        assert figures["identical"], (shape, figures["mismatched_requests"])
        for rank in figures["runs"]["elastic"]["ranks_after_grace"]:
            assert rank["mapped_chunks"] == [0] and rank["partial_chunks"] == []
        limited = figures["limit"]  # set from outside while idle, as `kvlab ctl limit` does
        assert limited["complete"] and limited["samples"] > 0
        assert limited["max_mapped_bytes"] <= limited["limit_bytes"], limited
        assert len(set(limited["plans_applied"])) == 1 and len(set(limited["rank_mapped_bytes"])) == 1, limited
