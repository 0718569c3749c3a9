#!/usr/bin/env bash
# Configures and builds the tree into build/ (build/lib/libkvcached_shim.so, build/bin/kvctl).
# BUILD_DIR (default build) and BUILD_TYPE (default RelWithDebInfo) choose where and how; extra
# arguments go to cmake. ccache is used when installed (install-deps.sh installs it): a rebuild
# of a fresh clone on the same machine reuses earlier objects (CCACHE_BASEDIR is the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
launcher=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
            -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
build_dir="${BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" "${launcher[@]}" "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
