#!/usr/bin/env bash
# Run HERE (no GPU needed): builds what the GPU suite runs, Release, for sm_90, and packs it into
# build-gpu/ (bin/ + lib/, stripped, checked to stay under 40 MiB) -- the one folder to carry to the
# GPU machine. The object tree stays in build-gpu-obj/ so rebuilds are incremental.
# Then, on the GPU machine, from the repo root: scripts/gpu/run-suite.sh
# Extra CMake targets to pack: KVCACHED_GPU_EXTRA_TARGETS="t1 t2". kvctl is built without
# cpp-httplib (`kvctl metrics --once` only), so that it needs no libcpp-httplib on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
obj=${KVCACHED_GPU_OBJ_DIR:-build-gpu-obj}
pack=${KVCACHED_GPU_BUILD_DIR:-build-gpu}
jobs=${JOBS:-2}

cmake -S . -B "$obj" -DCMAKE_BUILD_TYPE=Release -DKVCACHED_GPU=ON -DKVCACHED_BUILD_TESTS=ON \
  -DKVCACHED_BUILD_BENCH=ON -DKVCACHED_KVCTL_HTTP=OFF >"$obj.configure.log" 2>&1 ||
  { cat "$obj.configure.log" >&2; echo "build-for-gpu: configure failed" >&2; exit 1; }

# GPU tests and benchmarks by their source names, plus the shim, kvctl and the demo.
targets=(kvcached_shim kvcached_python kvctl kvcached_demo static_cudart_app)
for f in tests/gpu/gpu_*_test.cpp bench/*.cpp bench/*.cu; do
  [ -e "$f" ] || continue
  n=$(basename "$f"); targets+=("${n%.*}")
done
# shellcheck disable=SC2206
targets+=(${KVCACHED_GPU_EXTRA_TARGETS:-})
echo "build-for-gpu: building ${targets[*]}"
cmake --build "$obj" -j"$jobs" --target "${targets[@]}"

rm -rf "$pack"
mkdir -p "$pack/bin" "$pack/lib"
for t in "${targets[@]}"; do
  if [ -x "$obj/bin/$t" ]; then cp "$obj/bin/$t" "$pack/bin/"; fi
done
cp "$obj"/lib/*.so* "$pack/lib/" 2>/dev/null || true
cp -r "$obj/lib/kvcached_python" "$pack/lib/"  # the engine hook, found next to the shim
strip --strip-unneeded "$pack"/bin/* "$pack"/lib/*.so* 2>/dev/null || true

size_kib=$(du -sk "$pack" | cut -f1)
echo "build-for-gpu: $pack is $((size_kib / 1024)) MiB ($(find "$pack/bin" -type f | wc -l) programs)"
if ((size_kib > 40 * 1024)); then
  echo "build-for-gpu: $pack is over 40 MiB; too big to carry" >&2
  exit 1
fi
# Shared libraries the programs need besides glibc/libstdc++ (must exist on the GPU machine).
ldd "$pack"/bin/* "$pack"/lib/*.so* 2>/dev/null | awk '/=>/ {print $1}' | sort -u |
  grep -Ev '^(linux-vdso|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libgcc_s\.|libstdc\+\+\.|ld-linux)' |
  sed 's/^/build-for-gpu: needs /' || true
echo "build-for-gpu: done. On the GPU machine, from the repo root: scripts/gpu/run-suite.sh"
