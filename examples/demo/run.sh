#!/usr/bin/env bash
# Runs the demo: on the GPU when nvidia-smi works here, else on the bundled fake
# CUDA driver (host memory standing in for the GPU), and says which.
# usage: examples/demo/run.sh [BUILD_DIR] [virtual GiB]   (BUILD_DIR default: build, else build-gpu)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-}
if [ -z "$build" ]; then
  for d in build build-gpu; do [ -x "$root/$d/bin/kvcached_demo" ] && build=$root/$d && break; done
fi
[ -n "$build" ] || { echo "run.sh: kvcached_demo not built; run scripts/build.sh first" >&2; exit 1; }
case $build in /*) ;; *) build=$root/$build ;; esac
demo=$build/bin/kvcached_demo
shim=$build/lib/libkvcached_shim.so
for f in "$demo" "$shim"; do
  [ -e "$f" ] || { echo "run.sh: $f missing; build it: cmake --build $build" >&2; exit 1; }
done

# nvidia-smi working means the NVIDIA driver (and its libcuda.so.1) is installed.
if nvidia-smi -L >/dev/null 2>&1; then
  echo "== kvcached demo on the GPU: $(nvidia-smi -L | head -n1)"
  unset KVCACHED_CUDA_DRIVER
else
  fake=$build/fakecuda/libcuda.so.1
  [ -f "$fake" ] || { echo "run.sh: no GPU here and no fake driver at $fake (build target fakecuda)" >&2; exit 1; }
  echo "== kvcached demo on the FAKE CUDA driver (no GPU found here; host memory stands in for it)"
  export KVCACHED_CUDA_DRIVER=$fake
  export FAKECUDA_TOTAL_MB=${FAKECUDA_TOTAL_MB:-16384}
fi
exec "$demo" "$shim" "${2:-8}"
