#!/usr/bin/env bash
# Configures and builds the tree into build/ (build/lib/libkvcached_shim.so, build/bin/kvctl).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build build -j"$(nproc)"
