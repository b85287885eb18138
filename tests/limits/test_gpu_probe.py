"""The headroom rule's GPU probe and `kvlab top` on a real NVIDIA GPU (GPU machine only; skipped elsewhere).

Both must read device memory through NVML without creating a CUDA context: the multi-process engine core
and `kvlab top` run beside engines, and a context costs the device hundreds of MiB.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

CODE = """
import json, sys
from kvlab.engines.vllm import headroom
name, uuid, probe = headroom.device_probe("cuda", 0)
reading = probe()
free, total = reading.free, reading.total
print(json.dumps({"name": name, "uuid": uuid, "free": free, "total": total, "torch": "torch" in sys.modules}))
"""


def _context_pids():
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    return {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)}


def test_probe_reads_nvml_without_a_cuda_context():
    pytest.importorskip("pynvml")
    child = subprocess.Popen([sys.executable, "-c", CODE + "\nimport time; print('', flush=True); time.sleep(3)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        got = json.loads(child.stdout.readline())
        child.stdout.readline()
        assert child.pid not in _context_pids()  # no CUDA context: NVML lists none for it
    finally:
        child.kill()
        child.wait()
    assert got["name"] == "cuda:0" and got["uuid"].startswith("GPU-") and 0 < got["free"] <= got["total"]
    assert got["torch"] is False


def test_top_once_json_reports_the_gpu(tmp_path):
    pytest.importorskip("pynvml")
    out = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "top", "--once", "--json", "--interval", "0.1"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, KVLAB_REGISTRY_DIR=str(tmp_path / "reg")))
    assert out.returncode == 0, out.stderr
    gpu = json.loads(out.stdout)["devices"]["cuda:0"]
    assert gpu["source"] == "nvml" and gpu["uuid"].startswith("GPU-") and 0 < gpu["used"] < gpu["total"]
