#!/usr/bin/env bash
# Run HERE (network to PyPI, no GPU): builds the payload that device.sh installs on the offline GPU
# machine (python3 3.12, torch 2.11.0+cu130 in its image), for one vLLM release:
#
#   VLLM_VERSION=0.26.0 scripts/gpu/vllm/prepare.sh        (0.24.0, 0.25.x, 0.26.0)
#
# Output in .gpu-payload/vllm-$VLLM_VERSION/ (git-ignored): p1/, p2/, ... each under 60 MB, because
# one device call carries at most 64 MiB. Together they hold site.tar.xz (vLLM and the wheels the
# image lacks, from deps.py), cut into pieces, and in the last part kv.tar.xz (the shim's GPU build:
# lib/libkvcached_shim.so, lib/kvcached_python, bin/kvctl), deps.txt and MANIFEST.
# Knobs: PAYLOAD (output folder), KV_BUILD (the shim build to pack; default build-gpu, made by
# scripts/gpu/build-for-gpu.sh), PYTHON (a python with pip >= 22.2; default python3.12 or python3),
# XZ_THREADS (default 2), PART_LIMIT_MB (default 60), REFRESH_DEPS=1 (resolve the wheels again).
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=scripts/gpu/vllm
version=${VLLM_VERSION:-0.26.0}
case $version in
  0.24.* | 0.25.* | 0.26.*) ;;
  *) echo "prepare: vLLM $version is not one the hook supports (0.24.x-0.26.x, the releases pinned to torch 2.11)" >&2
     exit 1 ;;
esac
out=${PAYLOAD:-.gpu-payload/vllm-$version}
kv_build=${KV_BUILD:-build-gpu}
limit_mb=${PART_LIMIT_MB:-60}
threads=${XZ_THREADS:-2}
py=${PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 python3; do
    if "$cand" -m pip --version >/dev/null 2>&1; then py=$cand; break; fi
  done
fi
[ -n "$py" ] || { echo "prepare: no python with pip found; set PYTHON" >&2; exit 1; }
dl=.gpu-payload/dl  # vLLM wheels, kept between runs (300 MB each)
mkdir -p "$out" "$dl"

# The GPU machine's tags (deps.py downloads with the same list).
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for tag in 2_39 2_35 2_34 2_31 2_28 2_27 2_26 2_24 2_17 2_5; do plat+=(--platform "manylinux_${tag}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

echo "== vLLM $version wheel"
wheel=$(find "$dl" -maxdepth 1 -name "vllm-$version-*.whl" | head -1)
if [ -z "$wheel" ]; then
  "$py" -m pip download -q --no-deps "${plat[@]}" -d "$dl" "vllm==$version"
  wheel=$(find "$dl" -maxdepth 1 -name "vllm-$version-*.whl" | head -1)
fi

echo "== dependencies from the wheels' metadata (deps.py)"
if [ -f "$out/whl/deps.txt" ] && [ -z "${REFRESH_DEPS:-}" ]; then
  echo "reusing $out/whl ($(wc -l <"$out/whl/deps.txt") wheels; REFRESH_DEPS=1 resolves again)"
else
  rm -rf "$out/whl"
  "$py" "$here/deps.py" --pip "$py -m pip" "$wheel" "$out/whl"
fi

echo "== install into $out/site (no dependencies resolved again, no bytecode)"
rm -rf "$out/site"
"$py" -m pip install -q --no-deps --no-compile "${plat[@]}" --target "$out/site" "$out"/whl/*.whl "$wheel"

echo "== strip what a dense model on Hopper never loads"
# Each import below is optional in vLLM 0.24-0.26 (try/except, contextlib.suppress, lazy import or
# find_spec); MB uncompressed in 0.26.0. FA3 stays: Hopper's default attention backend, and vLLM's
# flash-attn package refuses to import with neither FA2 nor FA3.
strip_paths=(
  vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so  # 304 (FA2: pre-Hopper GPUs)
  vllm/_moe_C_stable_libtorch.abi3.so vllm/_moe_C.abi3.so  # 47 (MoE kernels; dense models only)
  vllm/vllm-rs                              # 42 (only with VLLM_USE_RUST_FRONTEND=1)
  vllm/third_party/deep_gemm vllm/third_party/fmha_sm100  # 65 (FP8 GEMM / Blackwell attention, lazy)
  vllm/_flashmla_C.abi3.so vllm/_flashmla_extension_C.abi3.so  # MLA models only
  vllm/_qutlass_C.abi3.so vllm/_rust_tool_parser.abi3.so       # FP4 quantisation; tool parsing
  mistral_common/data pycountry/locales bin  # tokenizer files and translations nothing here reads
  xgrammar/lib                              # 65 (a static library for C++ builds; 0.24's xgrammar)
)
for p in "${strip_paths[@]}"; do rm -rf "${out:?}/site/$p"; done
find "$out/site" -name __pycache__ -type d -prune -exec rm -rf {} +
mkdir -p "$out/site/mistral_common/data"
echo "site: $(du -sh "$out/site" | cut -f1)"

echo "== pack (xz -9, $threads threads; a few minutes)"
# One stream (vLLM, its dependencies, the shim), cut into parts under the limit: one device call
# carries one part. The shim's build rides in the stream so that every part is plain bytes.
rm -rf "$out"/p[0-9]* "$out/stream"
mkdir -p "$out/stream/site"
if [ -f "$kv_build/lib/libkvcached_shim.so" ]; then
  mkdir -p "$out/stream/kv/lib" "$out/stream/kv/bin"
  cp "$kv_build/lib/libkvcached_shim.so" "$out/stream/kv/lib/"
  cp -r "$kv_build/lib/kvcached_python" "$out/stream/kv/lib/"
  cp "$kv_build/bin/kvctl" "$out/stream/kv/bin/"
else
  echo "prepare: no shim at $kv_build/lib/libkvcached_shim.so (run scripts/gpu/build-for-gpu.sh, or set KV_BUILD);" \
    "device.sh then takes build-gpu/ if it was carried" >&2
fi
tar -C "$out/site" -cf - . | xz -9 -T"$threads" >"$out/stream/site.tar.xz"
[ -d "$out/stream/kv" ] && tar -C "$out/stream/kv" -cf - . | xz -9 -T"$threads" >"$out/stream/kv.tar.xz"
rm -rf "$out/stream/site" "$out/stream/kv"
# Part files: site.tar.xz cut into pieces, kv.tar.xz whole in the last part (it is small).
part_bytes=$((limit_mb * 1000 * 1000 - 12 * 1000 * 1000))  # room for kv.tar.xz and the lists
split -b "$part_bytes" -d -a 2 "$out/stream/site.tar.xz" "$out/stream/site.tar.xz."
n=0
for piece in "$out"/stream/site.tar.xz.[0-9]*; do
  n=$((n + 1))
  mkdir -p "$out/p$n"
  mv "$piece" "$out/p$n/"
done
[ -f "$out/stream/kv.tar.xz" ] && mv "$out/stream/kv.tar.xz" "$out/p$n/"
cp "$out/whl/deps.txt" "$out/p$n/deps.txt"
for i in $(seq 1 "$n"); do printf 'vllm==%s\nparts=%s\n' "$version" "$n" >"$out/p$i/MANIFEST"; done
rm -rf "$out/stream"
status=0
for i in $(seq 1 "$n"); do
  bytes=$(du -cb "$out/p$i"/* | tail -1 | cut -f1)
  echo "p$i: $((bytes / 1024 / 1024)) MiB ($bytes bytes)"
  if [ "$bytes" -ge $((limit_mb * 1000 * 1000)) ]; then
    echo "prepare: p$i is over $limit_mb MB" >&2
    status=1
  fi
done
[ $status = 0 ] || exit 1
echo "prepare: done: $n parts. On the GPU machine (scripts/gpu/vllm/README.md), calls back to back:"
for i in $(seq 1 "$n"); do
  if [ "$i" -lt "$n" ]; then step=recv; else step="recv install serve"; fi
  echo "  carry $out/p$i: VLLM_PAYLOAD=$out scripts/gpu/vllm/device.sh $step"
done
