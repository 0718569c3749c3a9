#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repo root: the sharing benchmark (issue 11) in device calls of at
# most ~9 minutes, each doing what fits and leaving the rest for the next call (resumable; see
# scripts/gpu/sharing/README.md for the call plan).
#
#   device.sh recv                      keep the carried vLLM part (vLLM 0.24.0: p1, then p2)
#   device.sh recv install [kvcached]   with the last part (and .gpu-payload/kvcached): unpack
#                                       vLLM and the shim, build kvcached from its source
#   device.sh run SETTING [SETTING...]  the benchmark for each setting (static, shim, kvcached),
#                                       until CALL_LIMIT_S; call it again to go on
#   (steps combine: device.sh recv install kvcached run static)
#
# Every call ends by summarizing all runs so far (tables and plots, with the image's matplotlib)
# and putting in $OUT: summary.md, sharing-*.png, log.txt and results.tar.gz (every run JSON, the
# engine logs, the kvcached build log). Working state lives in /tmp/vllm-sharing and /tmp/vllm-site,
# /tmp/kv, /tmp/kvcached-site: it lasts while the machine stays warm (30 s after a call).
# Knobs: CALL_LIMIT_S (540), SHARING_STATE (/tmp/vllm-sharing), TRACES (a_then_b,symmetric,alternating), REPEATS (3), VLLM_PAYLOAD
# (.gpu-payload/vllm-0.24.0), and the driver's BENCH_* variables (examples/vllm_sharing/driver.py).
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
start=$SECONDS
limit=${CALL_LIMIT_S:-540}
state=${SHARING_STATE:-/tmp/vllm-sharing}
results=$state/results
work=$state/work
mkdir -p "$results" "$work"
export VLLM_PAYLOAD=${VLLM_PAYLOAD:-.gpu-payload/vllm-0.24.0}
export PYTHONPATH=/tmp/vllm-site${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
export VLLM_USE_FLASHINFER_SAMPLER=0  # flashinfer is not carried (scripts/gpu/vllm/README.md)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # this machine's rule
export KVCACHED_SHIM_LIB=${KVCACHED_SHIM_LIB:-/tmp/kv/lib/libkvcached_shim.so} KVCACHED_KVCTL=${KVCACHED_KVCTL:-/tmp/kv/bin/kvctl}
export BENCH_KVCACHED_SITE=${BENCH_KVCACHED_SITE:-/tmp/kvcached-site}

note() { echo "[sharing +$((SECONDS - start))s] $*" | tee -a "$state/log.txt"; }

pack() {
  if ! compgen -G "$results/*.json" >/dev/null; then
    note "no run yet: nothing to summarize"  # a recv/install call
  elif ! python3 examples/vllm_sharing/summarize.py "$results" --out "$state/summary" >"$state/summary.log" 2>&1; then
    note "summarize failed: $(tail -3 "$state/summary.log")"
  fi
  [ -n "${OUT:-}" ] || return 0
  cp "$state/log.txt" "$OUT/" 2>/dev/null
  cp "$state/summary"/summary.md "$state/summary"/sharing-*.png "$OUT/" 2>/dev/null
  # Everything but the generated models and the peer's boot folder (results, logs, state).
  tar -C "$state" -czf "$OUT/results.tar.gz" --exclude=work/models --exclude=work/kvcached-boot results work 2>/dev/null
  note "packed: $(cd "$OUT" && echo *)"
}
trap pack EXIT

build_kvcached() {
  local log=$work/kvcached-build.log src=.gpu-payload/kvcached
  if [ ! -f "$src/MANIFEST" ]; then
    echo "no $src/MANIFEST: carry .gpu-payload/kvcached (made by scripts/gpu/sharing/prepare.sh)" >"$log"
    note "kvcached: payload not carried; the kvcached setting will record why"
    return 0
  fi
  rm -rf /tmp/kvcached-site
  {
    echo "\$ $(head -1 "$src/MANIFEST") from source against $(python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>&1)"
    date -u
    # --no-build-isolation: build against the image's torch (nothing can be fetched here);
    # TORCH_CUDA_ARCH_LIST: the H200 only, to keep the compile short.
    TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16} python3 -m pip install --no-deps --no-build-isolation \
      --no-index --no-cache-dir --target /tmp/kvcached-site -v "$src"/*.whl "$src"/kvcached-*.tar.gz
    echo "exit $?"
  } >"$log" 2>&1
  note "kvcached build: $(tail -1 "$log") (log: work/kvcached-build.log)"
}

run_setting() {
  local setting=$1 left rc
  left=$((limit - (SECONDS - start) - 40))  # room for the summary and the archive
  if [ "$left" -lt 90 ]; then note "$setting: ${left}s left in this call; call again"; return 3; fi
  note "$setting: driver with a ${left}s deadline"
  python3 examples/vllm_sharing/driver.py --setting "$setting" --traces "${TRACES:-a_then_b,symmetric,alternating}" \
    --repeats "${REPEATS:-3}" --results "$results" --work "$work" --deadline-s "$left" --keep-engines \
    2>&1 | tee -a "$state/log.txt"
  rc=${PIPESTATUS[0]}
  note "$setting: driver exit $rc$([ "$rc" = 3 ] && echo ' (more runs left: call again)')"
  return "$rc"
}

[ $# -gt 0 ] || { sed -n '2,21p' "$0"; exit 1; }
vllm_steps=()
while [ $# -gt 0 ]; do
  case $1 in
    recv | install) vllm_steps+=("$1"); shift ;;
    *) break ;;
  esac
done
if [ ${#vllm_steps[@]} -gt 0 ]; then
  bash scripts/gpu/vllm/device.sh "${vllm_steps[@]}" 2>&1 | tee -a "$state/log.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { note "vLLM payload step failed"; exit 2; }
fi
while [ $# -gt 0 ]; do
  case $1 in
    kvcached) build_kvcached; shift ;;
    run)
      shift
      while [ $# -gt 0 ]; do
        [ -f "$KVCACHED_SHIM_LIB" ] || { note "no shim at $KVCACHED_SHIM_LIB: run recv/install first"; exit 3; }
        run_setting "$1" || { [ $? = 3 ] && exit 0; }
        shift
      done
      ;;
    *) echo "device.sh: unknown step $1" >&2; exit 1 ;;
  esac
done
