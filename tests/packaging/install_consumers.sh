#!/usr/bin/env bash
# `cmake --install` into a temporary prefix lays out the library, the engine hook, kvctl, the
# header and docs; a C program then links the C API through the installed CMake package and
# through pkg-config, and both run on the fake CUDA driver (the installed library, never the
# build tree's). usage: install_consumers.sh BUILD_DIR SOURCE_DIR C_COMPILER
set -euo pipefail
build=$1 src=$2 cc=$3
fake=$build/fakecuda/libcuda.so.1
tmp=$(mktemp -d /tmp/kvcached-install-test.XXXXXX)
ipc=pkginstall_$$
trap 'rm -rf "$tmp"; rm -f /dev/shm/kvcached_${ipc}*' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install"; }
for f in lib/kvcached/libkvcached_shim.so bin/kvctl include/kvcached/kvcached.h \
         lib/kvcached/kvcached_python/kvcached_hook/__init__.py \
         lib/kvcached/kvcached_python/kvcached_boot/sitecustomize.py \
         lib/cmake/kvcached/kvcachedConfig.cmake lib/cmake/kvcached/kvcachedConfigVersion.cmake \
         lib/cmake/kvcached/kvcachedTargets.cmake lib/pkgconfig/kvcached.pc \
         share/doc/kvcached/configuration.md share/doc/kvcached/kvctl.md; do
  [ -e "$prefix/$f" ] || fail "cmake --install did not lay out $f"
done
ls "$prefix"/lib/kvcached/kvcached_python/kvcached_hook/__pycache__/*.pyc >/dev/null 2>&1 ||
  fail "the engine hook is installed without its byte-compiled files"
for bin in lib/kvcached/libkvcached_shim.so bin/kvctl; do
  if readelf -d "$prefix/$bin" | grep -Eq 'RPATH|RUNPATH'; then
    fail "$bin carries an RPATH/RUNPATH after install: $(readelf -d "$prefix/$bin" | grep -E 'RPATH|RUNPATH')"
  fi
done
echo "layout: ok ($(find "$prefix" -type f | wc -l) files)"

# Consumer 1: find_package(kvcached CONFIG) -> kvcached::shim.
cmake -S "$src/tests/packaging/consumer" -B "$tmp/cmake-consumer" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/consumer.log" 2>&1 || { cat "$tmp/consumer.log"; fail "configuring the CMake consumer"; }
cmake --build "$tmp/cmake-consumer" >>"$tmp/consumer.log" 2>&1 || { cat "$tmp/consumer.log"; fail "building the CMake consumer"; }
# Consumer 2: cc $(pkg-config --cflags --libs kvcached).
flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs kvcached) || fail "pkg-config kvcached"
echo "pkg-config: $flags"
# shellcheck disable=SC2086  # the flags are words
"$cc" -Wall -Werror -o "$tmp/pc-consumer" "$src/tests/packaging/consumer/consumer.c" $flags ||
  fail "building with pkg-config flags"

for exe in "$tmp/cmake-consumer/consumer" "$tmp/pc-consumer"; do
  resolved=$(ldd "$exe" | awk '/libkvcached_shim.so/ {print $3}')
  [ "$resolved" = "$prefix/lib/kvcached/libkvcached_shim.so" ] ||
    fail "$exe resolves libkvcached_shim.so to '$resolved', not the installed $prefix/lib/kvcached"
  env -u LD_PRELOAD "$exe" || fail "$exe without a driver"
  if [ -f "$fake" ]; then
    env -u LD_PRELOAD KVCACHED_CUDA_DRIVER="$fake" KVCACHED_IPC_NAME="$ipc" FAKECUDA_TOTAL_MB=1024 \
      "$exe" || fail "$exe on the fake driver"
  fi
done
echo "consumers: ok (CMake package and pkg-config)"
