#!/usr/bin/env bash
# Packs what the GPU machine lacks beyond vLLM into one folder that travels with one device command:
#   .stage/extras/nb/        the notebooks' kernel and widget packages (ipykernel, anywidget, nbclient, ...)
#   .stage/extras/kvcached/  kvcached's source release (the benchmark baseline) and posix_ipc
# Run here, in the project root, AFTER ../shared/device/stage-vllm.sh (that script rebuilds .stage/).
# On the device, `bash tools/device/setup.sh` installs them; tools/device/README.md has the whole sequence.
set -euo pipefail
ROOT="$(git rev-parse --show-toplevel)"
OUT="$ROOT/.stage/extras"
rm -rf "$OUT"
mkdir -p "$OUT/nb" "$OUT/kvcached"
grep -qx '/.stage/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.stage/' >> "$ROOT/.git/info/exclude"

# The device runs CPython 3.12 on x86_64 and has no network: binary wheels only.
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform any
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
quiet() { grep -v '^WARNING: Location' || true; }

echo "[extras] notebook kernel and widgets"
pip download -q -d "$OUT/nb" "${PLAT[@]}" anywidget ipywidgets 'ipykernel>=6.29,!=7.0.*' plotly nbclient \
  nbformat jupyter_client 2>&1 | quiet

echo "[extras] kvcached and posix_ipc"
pip download -q --no-deps -d "$OUT/kvcached" "${PLAT[@]}" posix_ipc 2>&1 | quiet
bash "$ROOT/../shared/device/fetch-kvcached.sh" >/dev/null
mv "$ROOT"/.stage/kvcached/kvcached-*.tar.gz "$OUT/kvcached/"
rmdir "$ROOT/.stage/kvcached" 2>/dev/null || true

du -sh "$OUT" | awk '{print "[extras] " $1 " in .stage/extras (a carry holds 64 MiB)"}'
