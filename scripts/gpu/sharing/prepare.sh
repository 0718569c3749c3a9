#!/usr/bin/env bash
# Run HERE (network to PyPI, no GPU): the payload of the sharing benchmark's kvcached setting, the
# peer project built from its PyPI source on the GPU machine. Writes .gpu-payload/kvcached/
# (git-ignored): the kvcached sdist, the wheel of its one runtime dependency the GPU image lacks
# (posix_ipc; numpy and wrapt are in the image), and MANIFEST (versions, sha256). About 0.4 MB:
# it rides along with the last vLLM part (scripts/gpu/sharing/README.md).
#
#   scripts/gpu/sharing/prepare.sh             newest kvcached on PyPI (0.1.6 on 2026-12-05)
#   PEER_VERSION=0.1.5 scripts/gpu/sharing/prepare.sh
#
# vLLM 0.24.0 (the release kvcached is compared on) comes from scripts/gpu/vllm/prepare.sh:
#   scripts/gpu/build-for-gpu.sh && VLLM_VERSION=0.24.0 scripts/gpu/vllm/prepare.sh
# Knobs: PYTHON (a python with pip and torch: pip reads kvcached's metadata by running its
# setup.py, which imports torch; default the test environment's python, else python3).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=.gpu-payload/kvcached
py=${PYTHON:-}
if [ -z "$py" ]; then
  for cand in "$HOME"/.cache/kvcached-shim/pyenv-*/bin/python python3; do
    if "$cand" -c 'import torch, pip' >/dev/null 2>&1; then py=$cand; break; fi
  done
fi
[ -n "$py" ] || { echo "prepare: no python with pip and torch (kvcached's setup.py imports torch); set PYTHON" >&2; exit 1; }
version=${PEER_VERSION:-}  # the peer's release (not a KVCACHED_* name: those are this shim's)
if [ -z "$version" ]; then
  version=$("$py" -m pip index versions kvcached 2>/dev/null | sed -n 's/^kvcached (\(.*\))$/\1/p')
  [ -n "$version" ] || { echo "prepare: could not read kvcached's newest version from PyPI; set PEER_VERSION" >&2; exit 1; }
fi
rm -rf "$out"
mkdir -p "$out"
echo "== kvcached $version: source distribution"
"$py" -m pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$out" "kvcached==$version"
sdist=$(find "$out" -maxdepth 1 -name "kvcached-$version.tar.gz" | head -1)
[ -n "$sdist" ] || { echo "prepare: pip saved no kvcached-$version.tar.gz" >&2; exit 1; }
echo "== its runtime dependencies the GPU image lacks"
# Requires-Dist of the sdist's PKG-INFO; the image's packages: scripts/gpu/vllm/image-packages.txt.
deps=$(tar -xOzf "$sdist" "kvcached-$version/PKG-INFO" | grep '^Requires-Dist:' | grep -v 'extra ==' |
  sed 's/^Requires-Dist: \([A-Za-z0-9_.-]*\).*/\1/')
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for tag in 2_39 2_35 2_34 2_31 2_28 2_27 2_17 2_5; do plat+=(--platform "manylinux_${tag}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for dep in $deps; do
  norm=$(echo "$dep" | tr 'A-Z_.' 'a-z--')
  if grep -qiE "^$norm(==|\$)" scripts/gpu/vllm/image-packages.txt; then
    echo "$dep: in the GPU image"
  else
    echo "$dep: carried as a wheel"
    "$py" -m pip download -q --no-deps "${plat[@]}" -d "$out" "$dep"
  fi
done
{
  echo "kvcached==$version"
  (cd "$out" && sha256sum -- *.tar.gz *.whl 2>/dev/null)
} >"$out/MANIFEST"
cat "$out/MANIFEST"
echo "prepare: $(du -sh "$out" | cut -f1) in $out; carry it with the last vLLM part (scripts/gpu/sharing/README.md)"
