"""Our hand-written CUDA driver types must match cuda.h where the headers exist (they do on the dev
machines and the GPU machine, not necessarily in CI): a mismatch would corrupt driver calls silently."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_H = next((p for p in [Path("/usr/local/cuda/include/cuda.h")] if p.exists()), None)

CHECK = r"""
#include <cstddef>
#include <cuda.h>
#include "cuda_driver.h"
namespace k = kvlab::cu;
#define SAME(a, b) static_assert(sizeof(a) == sizeof(b), #a);
#define AT(a, b, f) static_assert(offsetof(a, f) == offsetof(b, f), #a "." #f);
SAME(k::CUmemAllocationProp, CUmemAllocationProp)
AT(k::CUmemAllocationProp, CUmemAllocationProp, location)
AT(k::CUmemAllocationProp, CUmemAllocationProp, win32HandleMetaData)
AT(k::CUmemAllocationProp, CUmemAllocationProp, allocFlags)
SAME(k::CUmemAccessDesc, CUmemAccessDesc)
AT(k::CUmemAccessDesc, CUmemAccessDesc, flags)
SAME(k::CUmemLocation, CUmemLocation)
SAME(k::CUdeviceptr, CUdeviceptr)
SAME(k::CUmemGenericAllocationHandle, CUmemGenericAllocationHandle)
static_assert(k::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED ==
              CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, "attr");
static_assert(k::CU_MEM_LOCATION_TYPE_DEVICE == CU_MEM_LOCATION_TYPE_DEVICE, "loc");
static_assert(k::CU_MEM_ALLOCATION_TYPE_PINNED == CU_MEM_ALLOCATION_TYPE_PINNED, "pinned");
static_assert(k::CU_MEM_ACCESS_FLAGS_PROT_READWRITE == CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "rw");
static_assert(k::CUDA_ERROR_OUT_OF_MEMORY == CUDA_ERROR_OUT_OF_MEMORY, "oom");
int main() { return 0; }
"""


@pytest.mark.skipif(CUDA_H is None or shutil.which("g++") is None, reason="needs cuda.h and g++")
def test_driver_types_match_cuda_h(tmp_path):
    src = tmp_path / "abi.cpp"
    src.write_text(CHECK)
    proc = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", f"-I{CUDA_H.parent}", f"-I{ROOT / 'native/src'}",
                           str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
