#!/usr/bin/env bash
# On the GPU machine, after the `bash .stage/sK/collect.sh` (vLLM 0.24) or `bash .stage/cK/collect.sh`
# (vLLM 0.33, tools/device/stage-vllm-current.sh) runs printed READY, carrying .stage/extras:
#   bash tools/device/setup.sh
# Installs kvlab from this working tree (the native extension is built for the device's Python 3.12),
# the notebooks' kernel and widget packages, and kvcached (its CUDA extension builds in ~30 s), then
# prints the versions it sees. Later commands on the same warm machine start with `source tools/device/env.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/device/env.sh
EXTRAS=.stage/extras
[ -d "$KVLAB_VLLM_SITE/vllm" ] || { echo "no staged vLLM in $KVLAB_VLLM_SITE: run the collect.sh calls first" >&2; exit 2; }
[ -d "$EXTRAS/nb" ] || { echo "carry .stage/extras (made here by tools/device/stage-extras.sh)" >&2; exit 2; }

echo "[setup] kvlab (editable, native extension)"
python3 -m pip install -q --no-build-isolation --no-deps -e .
echo "[setup] notebook packages (from .stage/extras/nb only)"
python3 -m pip install -q --no-index --find-links "$EXTRAS/nb" anywidget ipywidgets 'ipykernel>=6.29,!=7.0.*' \
  plotly nbclient nbformat jupyter_client
echo "[setup] kvcached"
python3 -m pip install -q --no-deps "$EXTRAS"/kvcached/posix_ipc-*.whl
rm -rf /tmp/kvcached-src && mkdir -p /tmp/kvcached-src
tar -xzf "$EXTRAS"/kvcached/kvcached-*.tar.gz -C /tmp/kvcached-src
python3 -m pip install -q --no-build-isolation --no-deps /tmp/kvcached-src/kvcached-*/
python3 - <<'PY'
import importlib
for name in ("kvlab", "vllm", "torch", "kvcached", "anywidget", "ipykernel", "nbclient", "pynvml"):
    try:
        print(f"[setup] {name} {getattr(importlib.import_module(name), '__version__', 'ok')}")
    except Exception as e:  # say which one is missing; the checks that need it will skip or fail loudly
        print(f"[setup] {name} MISSING: {e!r}")
PY
