"""Packs a current GPU vLLM (with its own torch) into chunks that travel one per device command.

Run through tools/device/stage-vllm-current.sh; tools/device/README.md has the device sequence.
The device image has Python 3.12, torch 2.11.0+cu130 and torch 2.11's nvidia-*-cu13 libraries; vLLM 0.33
needs torch 2.14. Only what the image lacks travels: the resolved set minus the image's packages (a
torch-bound few are always carried), minus large optional kernels vLLM imports only on other GPUs or
models, minus files no runtime import reads. The staged torch loads the image's CUDA libraries through
links the collector makes (same sonames); `--with-nvidia` carries a library instead.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEVICE_PACKAGES = HERE / "device-packages.txt"
MIB = 1 << 20

# Built against torch's C++ ABI or pinned to the new torch: the image's copies cannot serve torch 2.14.
ALWAYS_CARRY = {"torch", "triton", "torchvision"}

# Large optional kernels that vLLM imports lazily behind availability checks (has_tilelang,
# is_cutedsl_available, ...), needed only on Blackwell, for other models or for video.
SKIP_PACKAGES = {
    "nvidia-cutlass-dsl": "CuTe DSL kernels (FA4, Blackwell, MoE routers); vLLM checks `import cutlass` first",
    "nvidia-cutlass-dsl-libs-base": "CuTe DSL (see nvidia-cutlass-dsl)",
    "nvidia-cutlass-dsl-libs-core": "CuTe DSL (see nvidia-cutlass-dsl)",
    "nvidia-cutlass-dsl-libs-cu12": "CuTe DSL (see nvidia-cutlass-dsl), CUDA 12 flavour",
    "nvidia-cutlass-dsl-libs-cu13": "CuTe DSL (see nvidia-cutlass-dsl)",
    "quack-kernels": "CuTe DSL kernels; imports cutlass",
    "tilelang": "sparse-attention kernels of other models (has_tilelang)",
    "z3-solver": "tilelang's dependency",
    "tokenspeed-triton": "tokenspeed MLA kernels for DeepSeek-style MLA only",
    "tokenspeed-mla": "MLA kernels for DeepSeek-style models only",
    "pynvvideocodec": "video decoding for multimodal inputs",
    "torchcodec": "audio/video decoding for multimodal inputs",
    "nvidia-cuda-nvcc": "compiler for JIT builds; the image has CUDA 13.0's nvcc",
    "nvidia-nvvm": "NVVM for JIT builds; the image has CUDA 13.0's",
    "nvidia-cuda-crt": "headers for JIT builds; the image has CUDA 13.0's",
    "nvidia-cuda-cccl": "headers for JIT builds; the image has CUDA 13.0's",
    "nvidia-cuda-tileiras": "cuTile compiler, for JIT builds only",
    "flashinfer-cubin": "prebuilt FlashInfer kernels; FlashInfer JIT-builds what it needs",
}

# The image's nvidia libraries are torch 2.11's pins. Per library: same soname, and every symbol the
# staged torch/vLLM/FlashInfer binaries import from it is exported by the image's version (checked
# with nm on torch 2.14.0 against torch 2.11.0's pins), unless a line below says otherwise.
#   cuda-runtime 13.0.96, nvrtc 13.0.88, cupti 13.0.85, nvtx 13.0.85, cufft 12.0.0.61, cufile 1.15.1.6,
#   curand 10.4.0.35, cusolver 12.0.4.66, cusparse 12.6.3.3, nvshmem 3.4.5: the very versions pinned.
#   nvjitlink 13.0.88: torch 2.14 asks >=13.0.88.
#   cublas 13.1.0.3 (pinned 13.1.1.3) and cusparselt 0.8.0 (pinned 0.8.1): patch releases, symbols present.
#   cudnn 9.19.0.56 (pinned 9.24.0.43): symbols present; torch refuses a runtime minor below its build's
#     unless PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK=1, which tools/device/env.sh sets (cuDNN 9 keeps its
#     backend API within the major version).
#   nccl 2.28.9 (pinned 2.30.7): libtorch_cuda.so imports 11 symbols 2.28.9 lacks (ncclCommGrow,
#     ncclCommSuspend, ncclPutSignal, ...), so `import torch` would fail: carried by default.
NVIDIA_WHEELS = {
    "cublas": "nvidia-cublas", "cudnn": "nvidia-cudnn-cu13", "nccl": "nvidia-nccl-cu13",
    "cusparselt": "nvidia-cusparselt-cu13", "nvshmem": "nvidia-nvshmem-cu13",
    "cuda-runtime": "nvidia-cuda-runtime", "nvrtc": "nvidia-cuda-nvrtc", "cupti": "nvidia-cuda-cupti",
    "nvtx": "nvidia-nvtx", "cufft": "nvidia-cufft", "cufile": "nvidia-cufile", "curand": "nvidia-curand",
    "cusolver": "nvidia-cusolver", "cusparse": "nvidia-cusparse", "nvjitlink": "nvidia-nvjitlink",
}
DEFAULT_NVIDIA = "nccl"

# Files inside carried packages that no runtime import reads on a Hopper GPU.
PRUNE = {
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": "FlashAttention 2 is for pre-Hopper GPUs; H100/H200 use FA3",
    "vllm/third_party/fmha_sm100": "Blackwell-only attention",
    "vllm/third_party/deep_gemm": "vendored DeepGEMM (FP8 MoE); has_deep_gemm() is then false",
    "vllm/vllm-rs": "the opt-in Rust frontend binary (VLLM_USE_RUST_FRONTEND-style switch)",
    "triton/backends/nvidia/bin/ptxas-blackwell": "Triton uses it only for arch >= 100",
    "triton/backends/nvidia/lib/cupti/libcupti_static.a": "static library, never loaded",
    "triton/backends/nvidia/lib/cupti/libnvperf_host_static.a": "static library, never loaded",
    "triton/backends/nvidia/lib/cupti-blackwell": "Blackwell profiler libraries (proton)",
    "nccl/ep/lib/cu12": "CUDA 12 flavour of nccl-extensions; the device runs CUDA 13",
    "nccl/m2n/lib/cu12": "CUDA 12 flavour of nccl-extensions",
    "nvidia/nccl/include": "headers, for building against NCCL only",
}

PLATFORM_ARGS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
PLATFORM_ARGS += [a for n in range(5, 40) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
PLATFORM_ARGS += [a for p in ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "any")
                  for a in ("--platform", p)]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"pip {args[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def resolve(specs: list[str], cache: Path) -> list[tuple[str, str]]:
    report = cache / "report.json"
    if not report.exists():
        print(f"[stage] resolving {' '.join(specs)} for the device (CPython 3.12, x86_64)", flush=True)
        pip("install", "-q", "--dry-run", "--ignore-installed", "--report", str(report),
            "--target", str(cache / "none"), *PLATFORM_ARGS, *specs)
    items = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]


def choose(resolved, with_nvidia: set[str], with_pkgs: set[str]) -> tuple[list[str], dict[str, str]]:
    have = {norm(n) for n in DEVICE_PACKAGES.read_text().split()}
    nvidia_carried = {norm(NVIDIA_WHEELS[k]) for k in with_nvidia}
    wanted, skipped = [], {}
    for name, version in resolved:
        n = norm(name)
        if n in with_pkgs or n in ALWAYS_CARRY or n in nvidia_carried:
            wanted.append(f"{name}=={version}")
        elif n in SKIP_PACKAGES:
            skipped[f"{name}=={version}"] = SKIP_PACKAGES[n]
        elif n in have:
            skipped[f"{name}=={version}"] = "the device image has it"
        else:
            wanted.append(f"{name}=={version}")
    for key, wheel in NVIDIA_WHEELS.items():  # an explicit --with-nvidia also stages what the resolve skipped
        if key in with_nvidia and not any(norm(w.split("==")[0]) == norm(wheel) for w in wanted):
            wanted.append(wheel)
    return wanted, skipped


def build_site(wheels: list[Path], site: Path) -> dict[str, str]:
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
            for info in zf.infolist():  # keep executables executable (ptxas, torch_shm_manager)
                mode = info.external_attr >> 16
                if mode & 0o111:
                    os.chmod(site / info.filename, mode & 0o777)
    pruned = {}
    for rel, why in PRUNE.items():
        path = site / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        pruned[rel] = why
    return pruned


def manifest_of(site: Path) -> dict[str, int]:
    return {str(p.relative_to(site)): p.stat().st_size for p in sorted(site.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def tree_mib(root: Path) -> float:
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, text=True).stdout.split("\0")
    return sum((root / f).stat().st_size for f in tracked if f and (root / f).is_file()) / MIB


def write_chunks(archive: Path, out: Path, part_bytes: int, first_extra: list[Path], meta: dict) -> int:
    shutil.rmtree(out / "chunks-tmp", ignore_errors=True)
    for old in out.glob("c[0-9]*"):
        shutil.rmtree(old)
    size, k, done = archive.stat().st_size, 0, 0
    extra_bytes = sum(p.stat().st_size for p in first_extra)
    with archive.open("rb") as src:
        while done < size:
            budget = part_bytes - (extra_bytes if k == 0 else 0)
            chunk = out / f"c{k}"
            chunk.mkdir(parents=True)
            data = src.read(budget)
            (chunk / f"part_{k:02d}").write_bytes(data)
            done += len(data)
            shutil.copy(HERE / "collect-current.sh", chunk / "collect.sh")
            if k == 0:
                for p in first_extra:
                    shutil.copy(p, chunk / p.name)
            k += 1
    meta["chunks"] = k
    for chunk in out.glob("c[0-9]*"):
        (chunk / "meta.json").write_text(json.dumps(meta, indent=1))
    return k


def link_image_nvidia(python: str, site: Path) -> None:
    """What collect-current.sh does on the device: the image's nvidia libraries, where RPATH looks."""
    torch_dir = subprocess.run([python, "-c", "import torch, os; print(os.path.dirname(torch.__file__))"],
                               capture_output=True, text=True, check=True, cwd="/").stdout.strip()
    for lib_dir in (Path(torch_dir).parent / "nvidia").iterdir():
        staged = site / "nvidia" / lib_dir.name
        if not staged.exists():
            staged.parent.mkdir(exist_ok=True)
            staged.symlink_to(lib_dir)
            continue
        for f in (lib_dir / "lib").glob("*"):
            if not (staged / "lib" / f.name).exists():
                (staged / "lib" / f.name).symlink_to(f)


def check(out: Path, python: str | None) -> None:
    """Unpacks the chunks as the device will and checks the tree against the manifest."""
    chunks = sorted(out.glob("c[0-9]*"), key=lambda p: int(p.name[1:]))
    if not chunks:
        sys.exit(f"no chunks in {out}: stage first")
    meta = json.loads((chunks[0] / "meta.json").read_text())
    if len(chunks) != meta["chunks"]:
        sys.exit(f"{len(chunks)} chunk folders, the manifest says {meta['chunks']}")
    digest = hashlib.sha256()
    for k, chunk in enumerate(chunks):
        digest.update((chunk / f"part_{k:02d}").read_bytes())
    if digest.hexdigest() != meta["sha256"]:
        sys.exit("the parts do not add up to the staged archive (sha256 differs)")
    site = out / "check-site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir()
    parts = " ".join(str(c / f"part_{k:02d}") for k, c in enumerate(chunks))
    subprocess.run(f"cat {parts} | zstd -d -q --long=31 | tar -x -C {site}", shell=True, check=True)
    want = json.loads((site / ".kvlab-manifest.json").read_text())
    got = manifest_of(site)
    missing = [f for f in want if f not in got]
    wrong = [f for f in want if f in got and got[f] != want[f]]
    if missing or wrong:
        sys.exit(f"unpacked tree differs: {len(missing)} missing {missing[:5]}, {len(wrong)} sizes {wrong[:5]}")
    # Every installed distribution's RECORD is present, except the files pruned on purpose.
    pruned = tuple(meta["pruned"])
    for record in site.glob("*.dist-info/RECORD"):
        for row in csv.reader(record.read_text().splitlines()):
            rel = row[0] if row else ""
            if rel and not rel.startswith(pruned) and not (site / rel).exists() and ".." not in rel:
                sys.exit(f"{record.parent.name}: {rel} is missing")
    for name in ("torch", "vllm", "triton", "flashinfer-python"):
        if name not in meta["versions"]:
            sys.exit(f"{name} is not in the staged set")
    key = {n: meta["versions"][n] for n in ("vllm", "torch", "triton", "flashinfer-python", "nvidia-nccl-cu13")
           if n in meta["versions"]}
    print(f"[check] {len(got)} files as staged, every RECORD complete but the pruned files; {key}")
    if python:  # a CPython 3.12 with the image's packages (torch 2.11 and its nvidia libraries)
        link_image_nvidia(python, site)
        code = ("import torch, vllm, flashinfer, triton; "
                "print('[check] import ok: torch', torch.__version__, 'vllm', vllm.__version__, "
                "'triton', triton.__version__, 'flashinfer', flashinfer.__version__)")
        env = dict(os.environ, PYTHONPATH=str(site), PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK="1")
        subprocess.run([python, "-c", code], env=env, check=True)
    shutil.rmtree(site)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vllm_version", nargs="?", default="0.33.0")
    ap.add_argument("--torch", help="pin torch (default: what vLLM pins)")
    ap.add_argument("--spec", action="append", default=[],
                    help="stage this requirement instead of vllm (repeatable), e.g. sglang==0.5.23")
    ap.add_argument("--with-nvidia", default=DEFAULT_NVIDIA,
                    help=f"nvidia libraries to carry instead of the image's (comma list of {','.join(NVIDIA_WHEELS)};"
                         f" default {DEFAULT_NVIDIA}; '' for none)")
    ap.add_argument("--with", dest="with_pkgs", default="", help="carry these packages although skipped (comma list)")
    ap.add_argument("--level", type=int, default=6, help="zstd level (higher gains ~4%% at -19, hours here)")
    ap.add_argument("--carry-mib", type=float, default=64, help="what one device call may carry")
    ap.add_argument("--margin-mib", type=float, default=3, help="room left for the working tree to grow")
    ap.add_argument("--site", help="device path to unpack into (default /tmp/vllm-site-<version digits>)")
    ap.add_argument("--check", action="store_true", help="only unpack the chunks here and check the tree")
    ap.add_argument("--check-python", help="with --check: a CPython 3.12 with the image's packages, to import")
    args = ap.parse_args()

    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                               check=True).stdout.strip())
    out = root / ".stage"
    if args.check:
        return check(out, args.check_python)
    specs = args.spec or [f"vllm=={args.vllm_version}"]
    if args.torch:
        specs.append(f"torch=={args.torch}")
    with_nvidia = {s for s in args.with_nvidia.split(",") if s}
    if unknown := with_nvidia - set(NVIDIA_WHEELS):
        sys.exit(f"--with-nvidia: unknown {sorted(unknown)}; known: {sorted(NVIDIA_WHEELS)}")
    tag = hashlib.sha1(" ".join(sorted(specs)).encode()).hexdigest()[:8]
    cache = Path(os.environ.get("KVLAB_STAGE_CACHE", Path.home() / ".cache/kvlab-stage")) / f"current-{tag}"
    cache.mkdir(parents=True, exist_ok=True)

    resolved = resolve(specs, cache)
    wanted, skipped = choose(resolved, with_nvidia, {norm(p) for p in args.with_pkgs.split(",") if p})
    for req, why in sorted(skipped.items()):
        if why != "the device image has it":
            print(f"[stage] skip {req}: {why}")
    print(f"[stage] {len(skipped)} skipped, downloading {len(wanted)} wheels into {cache}/wheels", flush=True)
    pip("download", "-q", "--no-deps", "-d", str(cache / "wheels"), *PLATFORM_ARGS, *wanted)
    pip("download", "-q", "--no-deps", "-d", str(cache / "zstd"), *PLATFORM_ARGS, "zstandard")
    by_name = {norm(w.name.split("-")[0]): w for w in (cache / "wheels").glob("*.whl")}
    wheels = [by_name[norm(req.split("==")[0])] for req in wanted]

    site, archive, stamp = cache / "site", cache / "site.tar.zst", cache / "site.tar.zst.stamp"
    versions = {norm(w.split("==")[0]): w.split("==")[1] for w in wanted if "==" in w}
    recipe = json.dumps([sorted(wanted), sorted(PRUNE), args.level])
    if archive.exists() and stamp.exists() and stamp.read_text() == recipe:
        print(f"[stage] reusing {archive} (same wheels, pruning and level)")
        pruned = {rel: why for rel, why in PRUNE.items()}
    else:
        pruned = build_site(wheels, site)
        manifest = manifest_of(site)
        (site / ".kvlab-manifest.json").write_text(json.dumps(manifest))
        print(f"[stage] site: {sum(manifest.values()) / MIB:.0f} MiB in {len(manifest)} files; "
              f"zstd -{args.level}", flush=True)
        subprocess.run(f"tar -cf - -C {site} . | zstd -T0 -q -{args.level} --long=27 -f -o {archive}",
                       shell=True, check=True)
        stamp.write_text(recipe)
        shutil.rmtree(site)
    tree = tree_mib(root)
    part = int((args.carry_mib - tree - args.margin_mib) * MIB)
    zstd_wheel = sorted((cache / "zstd").glob("zstandard-*.whl"))[-1]
    digits = re.sub(r"\D", "", (specs[0].split("==") + [""])[1])[:3]
    meta = {"specs": specs, "site": args.site or f"/tmp/vllm-site-{digits or tag}",
            "sha256": hashlib.file_digest(archive.open("rb"), "sha256").hexdigest(), "versions": versions,
            "pruned": pruned, "with_nvidia": sorted(with_nvidia)}
    n = write_chunks(archive, out, part, [zstd_wheel], meta)
    size = archive.stat().st_size / MIB
    print(f"[stage] done: {size:.0f} MiB compressed in {n} chunks of <= {part / MIB:.1f} MiB "
          f"(working tree {tree:.1f} MiB + chunk <= {args.carry_mib - args.margin_mib:.0f} MiB per call)")
    print(f"Device, back to back (< 30 s apart): for K = 0..{n - 1}: `bash .stage/cK/collect.sh` carrying .stage/cK")
    print(f"The last prints READY; later commands: source tools/device/env.sh (KVLAB_VLLM_SITE={meta['site']})")


if __name__ == "__main__":
    main()
