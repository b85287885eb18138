#!/usr/bin/env bash
# Stages a current GPU vLLM with its own torch (default vLLM 0.33.0, torch 2.14.0) for the device:
#   bash tools/device/stage-vllm-current.sh [VLLM_VERSION] [--torch VER] [--with-nvidia nccl,cudnn] [--with PKG,...]
#   bash tools/device/stage-vllm-current.sh --spec sglang==0.5.23     # another top-level requirement
#   bash tools/device/stage-vllm-current.sh --check [--check-python PY312]   # unpack the chunks here, check
# Writes .stage/c0 .. .stage/cN-1 (git-ignored; the 0.24 layout .stage/sK stays as it is). Wheels and the
# resolve are cached under ~/.cache/kvlab-stage/current-*. tools/device/README.md has the device sequence;
# tools/device/stage_current.py says what is skipped and why.
set -euo pipefail
exec python3 "$(dirname "$0")/stage_current.py" "$@"
