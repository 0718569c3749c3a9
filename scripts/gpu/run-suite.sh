#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repo root, after scripts/gpu/build-for-gpu.sh built build-gpu/
# here and it was carried there. Runs every GPU test binary directly (not via ctest: the CTest
# files hold the build machine's paths), the Python GPU tests, then the benchmarks; writes logs and
# JSON to $OUT (or build-gpu/suite-out) and prints a summary table last.
# Knobs: KVCACHED_SUITE_SKIP_BENCH=1, KVCACHED_SUITE_SKIP_TESTS=1, KVCACHED_SUITE_FILTER=REGEX
# (run only programs whose name matches), KVCACHED_GPU_TEST_CYCLES=N (churn test length).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
build=${KVCACHED_GPU_BUILD_DIR:-build-gpu}
out=${OUT:-$build/suite-out}
mkdir -p "$out"
[ -d "$build/bin" ] || { echo "run-suite: $build/bin missing: run scripts/gpu/build-for-gpu.sh" >&2; exit 1; }
unset KVCACHED_CUDA_DRIVER  # the real driver, always
export KVCACHED_LOG_LEVEL=${KVCACHED_LOG_LEVEL:-error}

{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
  uname -r
} 2>&1 | tee "$out/device.txt"

run() {  # run NAME TIMEOUT CMD...: output to $out/NAME.log, exit status to $out/NAME.rc
  local name=$1 limit=$2; shift 2
  [[ $name =~ ${KVCACHED_SUITE_FILTER:-.} ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$rc" >"$out/$name.rc"
  printf '  %-36s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))"
}

if [ -z "${KVCACHED_SUITE_SKIP_TESTS:-}" ]; then
  echo "== GPU tests (GoogleTest)"
  for t in "$build"/bin/gpu_*_test; do
    [ -x "$t" ] || continue
    n=$(basename "$t")
    run "$n" 300 "$t" --gtest_output="json:$out/$n.gtest.json"
  done
  # The demo, on the GPU (examples/demo/run.sh picks the GPU when nvidia-smi works).
  run demo 120 examples/demo/run.sh "$build"
  # Hook for the Python GPU tests (engine hook, PyTorch under LD_PRELOAD): every
  # tests/gpu/python/test_*.py, with the shim's path in KVCACHED_SHIM_LIB.
  export KVCACHED_SHIM_LIB=$PWD/$build/lib/libkvcached_shim.so KVCACHED_BUILD_DIR=$PWD/$build
  for py in tests/gpu/python/test_*.py; do
    [ -f "$py" ] || continue
    n=py_$(basename "$py" .py)
    limit=300
    [ "$n" = py_test_throughput ] && limit=480  # six in-process A/B pairs plus a plain process
    if python3 -c 'import pytest' 2>/dev/null; then
      run "$n" "$limit" python3 -m pytest -q -rs "$py"
    else
      run "$n" "$limit" python3 "$py"
    fi
  done
fi

if [ -z "${KVCACHED_SUITE_SKIP_BENCH:-}" ]; then
  echo "== benchmarks"
  for b in "$build"/bin/bench_* "$build"/bin/interpose_* "$build"/bin/preload_*; do
    [ -x "$b" ] || continue
    n=$(basename "$b")
    # The JSON report (docs/performance.md) when the program offers --json-out; else its log only.
    if grep -q -- '--json-out' "$b"; then
      run "$n" 300 "$b" --json-out "$out/$n.bench.json"
    else
      run "$n" 300 "$b"
    fi
  done
fi

echo
python3 scripts/gpu/summarize.py "$out"
