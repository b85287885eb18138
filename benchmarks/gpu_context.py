"""What a CUDA context costs on this GPU: NVML device memory of a process that only initialised CUDA through
torch, and of one that also ran a bf16 matmul (cuBLAS loaded) — the "CUDA context" term of the idle-VRAM goal.

    python benchmarks/gpu_context.py [--out benchmarks/results/gpu_context_h100.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = {
    "torch_init": "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()",
    "torch_cublas": ("import torch; a = torch.randn(1024, 1024, device='cuda', dtype=torch.bfloat16); (a @ a).sum().item(); "
                     "del a; torch.cuda.empty_cache()"),
}


def main() -> None:
    from kvlab.nvml import Nvml
    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/gpu_context_h100.json")
    args = p.parse_args()
    nv = Nvml.open()
    if nv is None:
        raise SystemExit("gpu_context needs an NVIDIA GPU and nvidia-ml-py (NVML)")
    rows = {}
    for name, code in CHILD.items():
        base = nv.memory(0)[1]
        proc = subprocess.Popen([sys.executable, "-c", code + "; print('ready', flush=True); import time; time.sleep(30)"],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        time.sleep(0.5)
        rows[name] = (nv.memory(0)[1] - base) / 2**20
        proc.kill()
        proc.wait()
        time.sleep(1)
        print(f"{name}: {rows[name]:.0f} MiB", flush=True)
    write_json_atomic(args.out, {"benchmark": "gpu_context", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "mib": rows, "system_info": environment()})


if __name__ == "__main__":
    main()
