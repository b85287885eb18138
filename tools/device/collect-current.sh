#!/usr/bin/env bash
# Device side of tools/device/stage-vllm-current.sh, copied into each chunk as .stage/cK/collect.sh:
#   bash .stage/cK/collect.sh      (carrying .stage/cK), K = 0..N-1, back to back (< 30 s apart)
# Gathers the carried part in /tmp/kvlab-stage-current; after the last one, checks the sha256, unpacks the
# site (meta.json names it, e.g. /tmp/vllm-site-033), links the image's nvidia libraries that were not
# carried where the staged torch's RPATH looks (nvidia/<lib>/lib), then imports torch and vLLM, runs a
# matmul and a cuDNN convolution on the GPU and prints READY.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
store=/tmp/kvlab-stage-current
meta() { python3 -c "import json, sys; print(json.load(open('$here/meta.json'))[sys.argv[1]])" "$1"; }
n=$(meta chunks); site=$(meta site); sha=$(meta sha256)
mkdir -p "$store"
# Parts of an earlier, different staging must not mix with this one.
[ -f "$store/sha256" ] && [ "$(cat "$store/sha256")" != "$sha" ] && rm -f "$store"/part_* "$store"/*.whl
echo "$sha" > "$store/sha256"
cp "$here"/part_* "$store"/
cp "$here"/*.whl "$store"/ 2>/dev/null || true
have=$(ls "$store"/part_* | wc -l)
if [ "$have" -lt "$n" ]; then echo "staged $have/$n chunks: carry the next chunk within 30 s"; exit 0; fi

echo "[collect] all $n parts; unpacking into $site"
got=$(cat "$store"/part_* | sha256sum | cut -d' ' -f1)
[ "$got" = "$sha" ] || { echo "sha256 mismatch: a part is missing or stale; start again from c0" >&2; exit 3; }
rm -rf "$site" /tmp/kvlab-zstd && mkdir -p "$site" /tmp/kvlab-zstd
python3 -m zipfile -e "$store"/zstandard-*.whl /tmp/kvlab-zstd
cat "$store"/part_* | PYTHONPATH=/tmp/kvlab-zstd python3 -c "import sys, zstandard
zstandard.ZstdDecompressor(max_window_size=2**31).copy_stream(sys.stdin.buffer, sys.stdout.buffer)" | tar -x -C "$site"

# The staged torch finds its CUDA libraries through RPATH $ORIGIN/../../nvidia/<lib>/lib: point the ones
# not carried at the image's copies (same sonames; see NVIDIA_WHEELS in tools/device/stage_current.py).
image_nvidia=$(cd / && python3 -c "import importlib.util as u, os
print(os.path.join(os.path.dirname(os.path.dirname(u.find_spec('torch').origin)), 'nvidia'))")
for d in "$image_nvidia"/*/; do
  d=${d%/}; name=$(basename "$d")
  if [ ! -e "$site/nvidia/$name" ]; then mkdir -p "$site/nvidia" && ln -s "$d" "$site/nvidia/$name"; continue; fi
  mkdir -p "$site/nvidia/$name/lib"
  for f in "$d"/lib/*; do
    [ -e "$f" ] && [ ! -e "$site/nvidia/$name/lib/$(basename "$f")" ] && ln -s "$f" "$site/nvidia/$name/lib/" || true
  done
done
echo "$site" > /tmp/kvlab-vllm-site
rm -rf "$store"

cd /tmp && PYTHONPATH="$site" PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK=1 python3 - "$site" <<'PY'
import sys, torch, vllm, triton, flashinfer
site = sys.argv[1]
assert torch.__file__.startswith(site), f"torch came from {torch.__file__}, not the staged site"
assert torch.cuda.is_available(), "torch sees no GPU"
a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
err = ((a @ a).float() - a.float() @ a.float()).abs().max().item()
conv = torch.nn.functional.conv2d(torch.randn(1, 3, 16, 16, device="cuda"), torch.randn(4, 3, 3, 3, device="cuda"))
torch.cuda.synchronize()
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if "/nvidia/" in l and ".so" in l})
print("[collect] CUDA libraries:", *(l.replace(site, "$SITE") for l in libs), sep="\n  ")
print(f"READY vllm {vllm.__version__} torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}) triton {triton.__version__} flashinfer {flashinfer.__version__} "
      f"on {torch.cuda.get_device_name()}; matmul err {err:.3g}, conv {tuple(conv.shape)}; "
      f"later commands: source tools/device/env.sh")
PY
