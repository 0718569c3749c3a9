#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repo root, with a payload made here by prepare.sh. Each step fits
# one device call (< 10 min) and prints a short table last; table.tsv, log.txt, multi.png and an
# archive of every log and JSON go to $OUT (working files stay in /tmp/vllm-proofs).
#
#   device.sh recv                           keep the carried part (.gpu-payload/vllm-V/pN), one a call
#   device.sh recv install [STEP...]         with the last part: unpack all, then run the STEPs
#   device.sh STEP...                        steps, on a machine where install ran
# Steps (issue 10's proofs):
#   serve        1 + 8: `LD_PRELOAD=libkvcached_shim.so vllm serve` with no other setting starts and
#                serves; backed KV (kvctl) idle and under load vs the full KV size; time to ready with
#                and without the shim, alternating, START_PAIRS pairs (default 2)
#   identity     2 (+3, 4): greedy token ids of vllm.LLM, with and without the shim, for each entry of
#                MATRIX (runner:mode:kv, default all 8 of v2|v1 x eager|graphs x bf16|fp8), plus
#                `budget` (KVCACHED_BUDGET far below demand) and `sanity` (KVCACHED_SANITY_CHECK=1)
#   throughput   5 (TP_MODEL=small|8b, TP_REQUESTS, TP_SHIM_ENV, TP_REPEAT=0): one plain and one shimmed `vllm serve` side by side, loads alternating, PAIRS
#                pairs (default 5), CUDA graphs on; median ratio; the ledger sampled meanwhile gives
#                the shimmed engine's hook time and C calls per step (step_stats.py)
#   sanity       4 under `vllm serve`: KVCACHED_SANITY_CHECK=1 over a 256-request load; the summary
#                lines in the server's log (periodic, idle, shutdown) must say 0 violations
#   multi        6 + 7: two then three shimmed servers under one KVCACHED_BUDGET, started in two
#                orders, loads in turn (ledger sampled, plotted); kill -9 of one under load
# Knobs: VLLM_PAYLOAD (payload folder), OUT, PARALLEL (identity runs at once, default 6),
# IDENTITY_EXTRAS=0 (identity without the budget and sanity runs), KV_BYTES (identity KV size, default 4 GiB), START_PAIRS, PAIRS,
# MULTI_BUDGET (default 3G), MULTI_UTIL (each multi server's --gpu-memory-utilization of that budget, 0.9), BUDGET_TINY (default 64M), LOAD_PCT (request count of every serving
# load, percent of the default; 100), DEADLINE_S (560). Elsewhere than the GPU machine (dryrun.sh):
# KV_DIR (the shim's lib/ and bin/, default /tmp/kv), VLLM_SITE (what goes on PYTHONPATH, default
# /tmp/vllm-site), VLLM_PROOFS (working files, default /tmp/vllm-proofs), VLLM_PROOF_MODEL.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
here=scripts/gpu/vllm
payload=${VLLM_PAYLOAD:-$(find .gpu-payload -maxdepth 1 -name 'vllm-*' -type d 2>/dev/null | sort | tail -1)}
site=${VLLM_SITE:-/tmp/vllm-site}
kv=${KV_DIR:-/tmp/kv}
out=${VLLM_PROOFS:-/tmp/vllm-proofs}  # working files; what comes back is copied to $OUT at the end
model=${VLLM_PROOF_MODEL:-/tmp/vllm-proof-model}
shim=$kv/lib/libkvcached_shim.so
kvctl=$kv/bin/kvctl
py=python3
export PYTHONPATH=$site HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
  PYTHONUNBUFFERED=1 VLLM_PROOF_MODEL=$model
# The V2 model runner's sampler imports flashinfer (not carried) unless this is 0.
export VLLM_USE_FLASHINFER_SAMPLER=0
# This machine's rule: NVLink multicast stays off.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
table=$out/table.tsv  # proof, check, value, verdict: printed at the end of every step

note() { echo "[device.sh +${SECONDS}s] $*" | tee -a "$out/log.txt"; }
row() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$table"; }
print_table() {
  # A device call brings back at most 8 files: the table, the log, the plot, the rest in one archive.
  if [ -n "${OUT:-}" ]; then
    cp "$table" "$out/log.txt" "$OUT/" 2>/dev/null
    [ -f "$out/multi.png" ] && cp "$out/multi.png" "$OUT/"
    tar -C "$out" -czf "$OUT/details-$(date +%H%M%S).tar.gz" --exclude='*.tar.gz' . 2>/dev/null
  fi
  echo "== results"
  column -t -s $'\t' "$table" 2>/dev/null || cat "$table"
}
# requests N: a load's request count, LOAD_PCT percent of N (at least 1).
requests() { local n=$(($1 * ${LOAD_PCT:-100} / 100)); echo $((n > 0 ? n : 1)); }

chunks=/tmp/vllm-chunks  # the parts received so far (kept while the machine stays warm)

recv() {  # keeps whatever parts this call carried
  local found=0 d
  mkdir -p "$chunks"
  for d in "$payload"/p[0-9]*; do
    [ -f "$d/MANIFEST" ] || continue
    cp "$d"/* "$chunks/" && found=$((found + 1))
  done
  [ "$found" -gt 0 ] || { echo "device.sh: no part under $payload: carry one (.gpu-payload/vllm-V/pN)" >&2; exit 2; }
  {
    date -u +"date %Y-%m-%dT%H:%M:%SZ"; nvidia-smi -L
    nvidia-smi --query-gpu=driver_version,memory.total,memory.used --format=csv,noheader
    $py -V; $py -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
    # The host CPU: a small model's steps are bound by vLLM's CPU work, so hosts differ there.
    echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
  } >"$out/env.txt" 2>&1
  [ -n "${OUT:-}" ] && cp "$out/env.txt" "$OUT/"
  local have want
  have=$(find "$chunks" -name 'site.tar.xz.*' | wc -l)
  want=$(sed -n 's/^parts=//p' "$chunks/MANIFEST")
  note "parts received: $have of $want ($(head -1 "$chunks/MANIFEST")); the next call within 30 s of this one"
}

install() {
  local have want
  have=$(find "$chunks" -name 'site.tar.xz.*' 2>/dev/null | wc -l)
  want=$(sed -n 's/^parts=//p' "$chunks/MANIFEST" 2>/dev/null)
  if [ -z "$want" ] || [ "$have" != "$want" ]; then
    echo "device.sh: $have of ${want:-?} parts here (the machine was given back between calls?): recv each part again" >&2
    exit 3
  fi
  cat "$chunks"/site.tar.xz.* | xz -dc | tar -x -C "$site" || exit 2
  mkdir -p "$kv"
  if [ -f "$chunks/kv.tar.xz" ]; then
    xz -dc "$chunks/kv.tar.xz" | tar -x -C "$kv" || exit 2
  elif [ -f build-gpu/lib/libkvcached_shim.so ]; then
    cp -r build-gpu/lib build-gpu/bin "$kv/"
  fi
  [ -f "$shim" ] || { echo "device.sh: no shim in the payload nor build-gpu/" >&2; exit 2; }
  rm -rf "$chunks"
  write_model
  note "installed: $($py -c 'import vllm; print("vllm", vllm.__version__)' 2>&1 | tail -1); site $(du -sh "$site" | cut -f1)"
}

# llama_config DIR HIDDEN INTERMEDIATE LAYERS HEADS KV_HEADS HEAD_DIM ROPE_THETA: a Llama's
# config.json (random weights: vLLM's --load-format dummy).
llama_config() {
  mkdir -p "$1"
  cat >"$1/config.json" <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": $2,
 "intermediate_size": $3, "num_hidden_layers": $4, "num_attention_heads": $5, "num_key_value_heads": $6,
 "head_dim": $7, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
 "rope_theta": $8, "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 1,
 "eos_token_id": 2, "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false}
JSON
}
write_model() {  # a random-weight Llama: 8 layers, 4 KV heads x 64 -> 8 KiB per token in bf16
  llama_config "$model" 1024 2816 8 16 4 64 10000.0
  # TP_MODEL=8b (throughput only): the shape of an 8B Llama (32 layers, 4096 wide, 8 KV heads of
  # 128), random weights too: its steps are bound by the GPU, as a served model's are, where the
  # small one's are bound by vLLM's own CPU work (the hook's share of a step is largest there).
  llama_config "$model-8b" 4096 14336 32 32 8 128 500000.0
}
KV_BYTES_PER_TOKEN=$((8 * 2 * 4 * 64 * 2))
serve_model=$model  # what serve_start serves (step_throughput may switch it: TP_MODEL)

# serve_start NAME PORT SHIM(0|1) [ENV...] [-- VLLM ARGS...]: starts `vllm serve` in its own session.
serve_start() {
  local name=$1 port=$2 use_shim=$3; shift 3
  local envs=() args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  args=("$@")
  [ "$use_shim" = 1 ] && envs+=("LD_PRELOAD=$shim")
  setsid env "${envs[@]}" $py -m vllm.entrypoints.cli.main serve "$serve_model" --load-format dummy \
    --skip-tokenizer-init --seed 0 --max-model-len 4096 --port "$port" "${args[@]}" \
    >"$out/$name.log" 2>&1 </dev/null &
  echo $!
}
serve_stop() {  # serve_stop PID [SIGNAL]
  kill -"${2:-INT}" -- "-$1" 2>/dev/null
  for _ in $(seq 1 20); do kill -0 "$1" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$1" 2>/dev/null
  # And the rest of its session (serve_start's setsid): in the fourth session the 8B throughput
  # server's EngineCore was still in the ledger minutes after its group was killed.
  pkill -KILL -s "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
# ledger_bytes LABEL_PREFIX FIELD: the engine's bytes in the ledger now. Every segment counts, or
# only kvcached_$KVCACHED_IPC_NAME where that is set (a dry run on a machine where other tests run).
ledger_bytes() {
  "$kvctl" list --json 2>/dev/null | $py -c "
import json, os, sys
d = json.load(sys.stdin)
ipc = os.environ.get('KVCACHED_IPC_NAME')
segs = [s for s in d.get('segments', []) if not ipc or s.get('name') == 'kvcached_' + ipc]
# Live processes only: slots of engines that died (earlier steps' segments) still list charges.
print(sum(p.get('$2') or 0 for s in segs for p in s.get('processes', [])
          if p.get('state', 'live') == 'live' and (p.get('label') or '').startswith('$1')))"
}
full_kv_bytes() {  # from vLLM's log line "GPU KV cache size: N tokens"
  local tokens
  tokens=$(grep -oE 'GPU KV cache size: [0-9,]+ tokens' "$1" | tail -1 | grep -oE '[0-9,]+' | tr -d ,)
  echo $(( ${tokens:-0} * KV_BYTES_PER_TOKEN ))
}

step_serve() {  # proofs 1 and 8
  local pairs=${START_PAIRS:-2} base_times=() shim_times=()
  for k in $(seq 1 "$pairs"); do
    for use_shim in $((k % 2)) $(((k + 1) % 2)); do
      local name kind=base t0=$SECONDS pid ready
      [ "$use_shim" = 1 ] && kind=shim
      name=serve-$k-$kind
      pid=$(serve_start "$name" 8100 "$use_shim" -- --gpu-memory-utilization 0.5)
      ready=$($py "$here/client.py" wait 8100 300 "$pid") || { note "$name: not ready in 300 s"; tail -30 "$out/$name.log"; serve_stop "$pid"; row 8 "$name ready" "no" FAIL; continue; }
      note "$name: ready after ${ready}s (wall $((SECONDS - t0)) s)"
      if [ "$use_shim" = 1 ]; then shim_times+=("$ready"); else base_times+=("$ready"); fi
      if [ "$use_shim" = 1 ] && [ "$k" = 1 ]; then
        local full idle busy loadres
        full=$(full_kv_bytes "$out/$name.log")
        idle=$(ledger_bytes "" charged_bytes)
        $py "$here/client.py" load 8100 "$(requests 256)" 64 512 128 >"$out/serve-load.json" &
        local lp=$! peak=0 now
        while kill -0 $lp 2>/dev/null; do now=$(ledger_bytes "" charged_bytes); [ "${now:-0}" -gt "$peak" ] && peak=$now; sleep 0.5; done
        loadres=$(cat "$out/serve-load.json")
        busy=$peak
        note "proof 1: full KV $((full >> 20)) MiB, backed idle $((idle >> 20)) MiB, peak under load $((busy >> 20)) MiB; load $loadres"
        "$kvctl" list >"$out/serve-kvctl.txt" 2>&1
        local errors; errors=$($py -c "import json; print(json.load(open('$out/serve-load.json'))['errors'])" 2>/dev/null || echo "?")
        row 1 "serves $(requests 256) requests, errors" "$errors" "$([ "$errors" = 0 ] && echo PASS || echo FAIL)"
        row 1 "backed idle / full KV" "$((idle >> 20)) / $((full >> 20)) MiB" "$([ "$full" -gt 0 ] && [ "$idle" -lt $((full / 4)) ] && echo PASS || echo FAIL)"
        row 1 "backed peak under load" "$((busy >> 20)) MiB" info
      fi
      serve_stop "$pid"
    done
  done
  local verdict
  verdict=$($py -c "
import statistics, sys
b = [float(x) for x in '${base_times[*]}'.split()]; s = [float(x) for x in '${shim_times[*]}'.split()]
if not b or not s: print('- FAIL'); sys.exit()
if statistics.median(b) <= 0: print(f'{statistics.median(b):.1f}s/{statistics.median(s):.1f}s FAIL'); sys.exit()  # no ratio
r = statistics.median(s) / statistics.median(b)
print(f'{statistics.median(b):.1f}s/{statistics.median(s):.1f}s={r:.3f}', 'PASS' if r <= 1.05 else 'FAIL')")
  row 8 "ready base/shim (median of $pairs)" "${verdict% *}" "${verdict##* }"
}

# live_pids PID...: those still running (children of this shell).
live_pids() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && echo "$p"; done; }

# identity_run NAME SHIM(0|1) RUNNER FLAGS ENV...: one vllm.LLM process
identity_run() {
  local name=$1 use_shim=$2 runner=$3 flags=$4; shift 4
  local envs=("$@")
  [ "$runner" = v1 ] && envs+=(VLLM_USE_V2_MODEL_RUNNER=0)
  [ "$runner" = v2 ] && envs+=(VLLM_USE_V2_MODEL_RUNNER=1)
  [ "$use_shim" = 1 ] && envs+=("LD_PRELOAD=$shim" "KVCACHED_LABEL=$name" "KVCACHED_IPC_NAME=proof_$name")
  # shellcheck disable=SC2086  # flags are words
  timeout 420 env "${envs[@]}" $py "$here/client.py" offline "$out/$name.json" $flags >"$out/$name.log" 2>&1
}
step_identity() {  # proofs 2, 3, 4
  local matrix=${MATRIX:-v2:eager:bf16 v2:graphs:bf16 v2:eager:fp8 v2:graphs:fp8 v1:eager:bf16 v1:graphs:bf16 v1:eager:fp8 v1:graphs:fp8}
  local jobs=() entry
  for entry in $matrix; do
    IFS=: read -r runner mode kvd <<<"$entry"
    local flags="--gpu-util 0.1 --kv-bytes ${KV_BYTES:-4294967296}"
    [ "$mode" = eager ] && flags+=" --eager"
    [ "$kvd" = fp8 ] && flags+=" --fp8"
    jobs+=("id-$runner-$mode-$kvd-base|0|$runner|$flags|" "id-$runner-$mode-$kvd-shim|1|$runner|$flags|")
  done
  # 3: a budget far below demand (64 prompts x ~1000 tokens x 8 KiB ~ 500 MiB wanted); 4: sanity.
  if [ "${IDENTITY_EXTRAS:-1}" = 1 ]; then
    jobs+=("id-budget-shim|1|v2|--gpu-util 0.1 --kv-bytes ${KV_BYTES:-4294967296} --eager|KVCACHED_BUDGET=${BUDGET_TINY:-64M}"
           "id-sanity-shim|1|v2|--gpu-util 0.1 --kv-bytes ${KV_BYTES:-4294967296} --eager|KVCACHED_SANITY_CHECK=1")
  fi
  # Waits name the runs' own pids: a bare `wait` would also wait for the watchdog (the whole call).
  local running=() job
  for job in "${jobs[@]}"; do
    IFS='|' read -r name use_shim runner flags env1 <<<"$job"
    ( identity_run "$name" "$use_shim" "$runner" "$flags" ${env1:+"$env1"}; echo $? >"$out/$name.rc" ) &
    running+=($!)
    if [ "${#running[@]}" -ge "${PARALLEL:-6}" ]; then wait -n "${running[@]}"; mapfile -t running < <(live_pids "${running[@]}"); fi
  done
  wait "${running[@]}"
  for entry in $matrix; do
    IFS=: read -r runner mode kvd <<<"$entry"
    local a=$out/id-$runner-$mode-$kvd-base.json b=$out/id-$runner-$mode-$kvd-shim.json cmp
    cmp=$($py "$here/client.py" compare "$a" "$b" 2>/dev/null) || cmp='{"all_identical": false, "identical": "run failed"}'
    row 2 "$runner $mode $kvd: identical/64" "$(echo "$cmp" | $py -c 'import json,sys; d=json.load(sys.stdin); print(d["identical"])')" \
      "$(echo "$cmp" | grep -q '"all_identical": true' && echo PASS || echo FAIL)"
  done
  [ "${IDENTITY_EXTRAS:-1}" = 1 ] || return 0
  local cmp
  cmp=$($py "$here/client.py" compare "$out/id-v2-eager-bf16-base.json" "$out/id-budget-shim.json" 2>/dev/null) || cmp='{"identical": "run failed"}'
  row 3 "budget ${BUDGET_TINY:-64M}: identical/64 (v2 eager bf16)" "$(echo "$cmp" | $py -c 'import json,sys; print(json.load(sys.stdin)["identical"])')" \
    "$(echo "$cmp" | grep -q '"all_identical": true' && echo PASS || echo FAIL)"
  # vLLM's offline engine logs no preemptions: the time the budget run took to generate, against
  # the same run without a budget, shows that requests waited for memory.
  row 3 "budget: generate s, budget / no budget" "$($py -c "
import json
def gen(n):
    try:
        return json.load(open('$out/' + n + '.json'))['generate_s']
    except (OSError, ValueError, KeyError):
        return None
b, f = gen('id-budget-shim'), gen('id-v2-eager-bf16-shim')
print(f'{b:.2f} / {f:.2f}' if b is not None and f is not None else 'run failed')")" info
  local violations
  violations=$(grep -oE '[0-9]+ violations' "$out/id-sanity-shim.log" | tail -1 | cut -d' ' -f1)
  row 4 "sanity check violations" "${violations:-no report}" "$([ "${violations:-x}" = 0 ] && echo PASS || echo FAIL)"
}

step_probe() {  # diagnosis: PROBES="name|runner|flags|ENV=V ENV=V;..." offline runs at once, debug logs
  local probes=${PROBES:-} job name runner flags envs
  [ -n "$probes" ] || { row probe "PROBES" "empty" FAIL; return; }
  IFS=';' read -r -a jobs <<<"$probes"
  local pids=()
  for job in "${jobs[@]}"; do
    IFS='|' read -r name runner flags envs <<<"$job"
    # shellcheck disable=SC2086  # envs and flags are words
    ( identity_run "probe-$name" 1 "$runner" "$flags" KVCACHED_LOG_LEVEL=debug $envs; echo $? >"$out/probe-$name.rc" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  for job in "${jobs[@]}"; do
    IFS='|' read -r name _ <<<"$job"
    local log=$out/probe-$name.log
    row probe "$name rc" "$(cat "$out/probe-$name.rc" 2>/dev/null)" info
    row probe "$name kvcached lines" "$(grep -c 'kvcached' "$log")" info
    row probe "$name first error" "$(grep -m1 -oE '(Error|error)[^|]{0,120}' "$log" | head -1)" info
  done
}

step_throughput() {  # proof 5
  # Not `shim`: a local of that name would hide the library path from serve_start (unset: set -u).
  local base shim_pid ratios=() n_load=${TP_REQUESTS:-1024}
  # The client names the served model in every request: the 8B shape is served under its own path.
  local VLLM_PROOF_MODEL=${VLLM_PROOF_MODEL:-$model}; export VLLM_PROOF_MODEL
  if [ "${TP_MODEL:-small}" = 8b ]; then serve_model=$model-8b; VLLM_PROOF_MODEL=$serve_model; n_load=${TP_REQUESTS:-512}; fi
  row 5 "model, requests a load" "${TP_MODEL:-small}, $(requests "$n_load")" info
  base=$(serve_start tp-base 8200 0 -- --gpu-memory-utilization 0.35)
  # One after the other: plain vLLM sizes its cache from the device's free memory while profiling,
  # so a neighbour starting beside it shrinks its cache (on an H100 the 8B shape got -1.59 GiB).
  if ! $py "$here/client.py" wait 8200 400 "$base" >/dev/null; then
    note "throughput: plain server not ready"; row 5 "servers ready" no FAIL; serve_stop "$base"; serve_model=$model; return
  fi
  # TP_SHIM_ENV: more settings of the shimmed server (words VAR=value), to compare a knob.
  local tp_env=()
  read -ra tp_env <<<"${TP_SHIM_ENV:-}"
  [ "${#tp_env[@]}" -gt 0 ] && row 5 "shimmed server's extra settings" "${tp_env[*]}" info
  # KVCACHED_LOG_LEVEL=info: the hook's cost line at each idle (vLLM's signal shutdown may kill
  # the EngineCore before Scheduler.shutdown logs it); the shim logs nothing per step at info.
  shim_pid=$(serve_start tp-shim 8201 1 KVCACHED_LABEL=tp-shim KVCACHED_LOG_LEVEL=info "${tp_env[@]}" -- --gpu-memory-utilization 0.35)
  if ! $py "$here/client.py" wait 8201 400 "$shim_pid" >/dev/null; then
    note "throughput: shimmed server not ready"; row 5 "servers ready" no FAIL; serve_stop "$base"; serve_stop "$shim_pid"; serve_model=$model; return
  fi
  # Warm-up; a server that answers it with errors (a wrong model name: HTTP 404) ends the step.
  local port warm
  for port in 8200 8201; do
    # The measured loads' shape (128 at once, 512-token prompts): plain vLLM's first load of the
    # third session ran about 20% slower than its later ones after a warm-up of 64 at once.
    warm=$($py "$here/client.py" load "$port" "$(requests 256)" 128 512 128)
    if ! $py -c 'import json,sys; sys.exit(json.loads(sys.argv[1])["errors"] != 0)' "$warm" 2>/dev/null; then
      note "throughput: warm-up on $port failed: $warm"; row 5 "warm-up served" no FAIL
      serve_stop "$base"; serve_stop "$shim_pid"; serve_model=$model; return
    fi
  done
  # Proof 5's per-step costs: the shim engine's cumulative totals, read from outside through kvctl.
  local steps=$out/throughput-ledger.jsonl sampler t0
  : >"$steps"  # a run before this one (same /tmp) left its engines' samples there
  $py "$here/ledger_samples.py" record "$kvctl" "$steps" 0.5 &
  sampler=$!
  t0=$(date +%s.%N)
  for k in $(seq 1 "${PAIRS:-5}"); do
    local order=(8200 8201) r=() port
    [ $((k % 2)) = 0 ] && order=(8201 8200)
    for port in "${order[@]}"; do
      # Prompt set k: new prompts every pair (as vLLM's benchmark draws random ones), the same
      # for both servers of a pair. 1024 requests a load (about 13 s on the H200): the first
      # run's 6 s loads of 512 scattered by +-5% between pairs.
      r[port - 8200]=$($py "$here/client.py" load "$port" "$(requests "$n_load")" 128 512 128 "$k" | tee -a "$out/throughput.jsonl" |
        $py -c 'import json,sys; print(json.load(sys.stdin)["tok_per_s"])')
    done
    ratios+=("$($py -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]))" "${r[1]}" "${r[0]}" 2>/dev/null)")
    note "throughput pair $k: base ${r[0]} shim ${r[1]} tok/s"
  done
  local t1; t1=$(date +%s.%N)
  # Info: set 1 again, prompts both servers have seen (prefix-cache hits where the cache kept
  # them; the shim's default gives an idle engine's prefix cache back, docs/vllm.md).
  # TP_REPEAT=0 skips it (about half a minute of device time).
  local rep=() port
  if [ "${TP_REPEAT:-1}" != 0 ]; then
    for port in 8200 8201; do
      rep[port - 8200]=$($py "$here/client.py" load "$port" "$(requests "$n_load")" 128 512 128 1 | tee -a "$out/throughput-repeat.jsonl" |
        $py -c 'import json,sys; print(json.load(sys.stdin)["tok_per_s"])')
    done
    row 5 "repeated prompts (set 1 again): base / shim tok/s" "${rep[0]} / ${rep[1]}" info
  fi
  sleep 1; kill "$sampler" 2>/dev/null
  serve_stop "$base"; serve_stop "$shim_pid"
  serve_model=$model
  # The hook's own account (at the last idle or at shutdown): its time per step by phase, and
  # vLLM's schedule() time.
  row 5 "hook's cost line, last (tp-shim log)" "$(grep -oE 'hook [0-9.]+ us/step over.*' "$out/tp-shim.log" | tail -1)" info
  local med
  # One ratio a word: ${ratios[*]// /,} would edit each element, not the spaces between them.
  # A pair whose load failed left an empty ratio: counted out, and no ratio at all is a FAIL.
  med=$($py -c "
import statistics, sys
r = [float(x) for x in sys.argv[1:] if x]
print(f'{statistics.median(r):.3f}' if r else 'none')" "${ratios[@]}")
  row 5 "shim/base tok/s, median of ${PAIRS:-5} pairs" "$med" "$($py -c "print('PASS' if '$med' != 'none' and float('$med') >= 0.99 else 'FAIL')")"
  local costs
  if costs=$($py "$here/step_stats.py" "$steps" --label tp-shim --from "$t0" --to "$t1" --json); then
    echo "$costs" >"$out/throughput-step-costs.json"
    # Four info rows from one read of the JSON, for the engine of this run: the one with windows
    # (an earlier tp-shim may be in the samples). The last says whether the pool's map-ahead kept
    # up: the pages the engine's own thread swapped in, of all it mapped.
    $py - "$out/throughput-step-costs.json" >>"$table" <<'PY'
import json, sys
e = max(json.load(open(sys.argv[1]))["engines"], key=lambda e: e["windows"])
rows = [
    ("hook us/step: median of windows / whole run (kvctl)", f"{e['hook_us_per_step_median']} / {e['hook_us_per_step_run']}"),
    ("hook C calls/step: median / whole run (kvctl)", f"{e['c_calls_per_step_median']} / {e['c_calls_per_step_run']}"),
    ("hook ms while the cache grew / whole run (steps, MiB backed)",
     f"{e['growth_hook_ms']} / {e['hook_ms_run']} ({e['growth_steps']} steps, {e['growth_mib']} MiB)"),
    ("pages mapped on the scheduler's thread / all (kvctl)", f"{e.get('sync_maps')} / {e.get('pages_mapped')}"),
]
for name, value in rows:
    print(f"5\t{name}\t{value}\tinfo")
PY
  else
    row 5 "hook time and C calls per step" "not in kvctl list --json (shim without kvcached_report_engine_steps?)" FAIL
  fi
}

step_sanity() {  # proof 4 under `vllm serve`
  local pid log=$out/sanity-serve.log
  pid=$(serve_start sanity-serve 8400 1 KVCACHED_SANITY_CHECK=1 KVCACHED_LABEL=sanity-serve -- --gpu-memory-utilization 0.3)
  if ! $py "$here/client.py" wait 8400 400 "$pid" >/dev/null; then
    note "sanity: server not ready"; tail -30 "$log"; row 4 "sanity server ready" no FAIL; serve_stop "$pid"; return
  fi
  $py "$here/client.py" load 8400 "$(requests 256)" 64 512 128 >"$out/sanity-load.json"
  sleep 2  # idle: the engine logs the summary of the run
  serve_stop "$pid"  # SIGINT: Scheduler.shutdown logs the last one
  local summary checks violations lines
  summary=$(grep -E 'kvcached sanity \[' "$log" | tail -1)
  note "sanity: $summary"
  checks=$(echo "$summary" | grep -oE '[0-9]+ checks' | cut -d' ' -f1)
  violations=$(echo "$summary" | grep -oE '[0-9]+ violations' | cut -d' ' -f1)
  lines=$(grep -c 'sanity violation' "$log")
  row 4 "serve, $(requests 256) requests: load" "$(cat "$out/sanity-load.json")" info
  row 4 "serve: sanity checks (last summary)" "${checks:-no summary}" "$([ "${checks:-0}" -gt 100 ] && echo PASS || echo FAIL)"
  row 4 "serve: violations (summary; lines)" "${violations:-?}; $lines" "$([ "${violations:-x}" = 0 ] && [ "$lines" = 0 ] && echo PASS || echo FAIL)"
}

port_of() { case $1 in a) echo 8300 ;; b) echo 8301 ;; *) echo 8302 ;; esac; }
step_multi() {  # proofs 6 and 7
  local samples=$out/ledger.jsonl events=$out/events.tsv order pids=() k
  : >"$samples"; : >"$events"
  $py "$here/ledger_samples.py" record "$kvctl" "$samples" 0.1 &
  local sampler=$!
  ev() { printf '%s\t%s\n' "$(date +%s.%N)" "$1" >>"$events"; note "$1"; }
  # One budget smaller than two loads at once (each ~1.7 GiB at 128 requests of ~1750 tokens):
  # memory must move between the engines, and after the kill the others take the victim's.
  # Each engine sizes its cache from the shim's process-local view, whose total is the budget:
  # at --gpu-memory-utilization 0.3 of 3G each cache held 0.33 GiB, so no load ever pressed the
  # budget (2026-12-05, third run). At 0.9 each cache can take most of the budget alone.
  local common=("KVCACHED_BUDGET=${MULTI_BUDGET:-3G}" KVCACHED_IPC_NAME=proof_multi) util=${MULTI_UTIL:-0.9}
  for order in "a b" "b a"; do  # two engines, both start orders
    pids=()
    for k in $order; do
      pids+=("$(serve_start "multi-${order// /}-$k" "$(port_of "$k")" 1 "${common[@]}" "KVCACHED_LABEL=vllm-$k" -- --gpu-memory-utilization "$util")")
      ev "start vllm-$k"
      $py "$here/client.py" wait "$(port_of "$k")" 300 "${pids[-1]}" >/dev/null || { row 6 "order $order: vllm-$k ready" no FAIL; }
    done
    local ok_before; ok_before=$(grep -c '"errors": 0' "$out/multi-load.jsonl")
    for k in a b; do ev "load vllm-$k"; $py "$here/client.py" load "$(port_of "$k")" "$(requests 256)" 64 1500 128 >>"$out/multi-load.jsonl"; done
    row 6 "order $order: loads served without error, of 2" "$(($(grep -c '"errors": 0' "$out/multi-load.jsonl") - ok_before))" info
    if [ "$order" = "b a" ]; then  # a third engine joins
      pids+=("$(serve_start multi-c 8302 1 "${common[@]}" KVCACHED_LABEL=vllm-c -- --gpu-memory-utilization "$util")")
      ev "start vllm-c"
      if $py "$here/client.py" wait 8302 300 "${pids[-1]}" >/dev/null; then row 6 "third engine started next to two" yes PASS; else row 6 "third engine started next to two" no FAIL; fi
      for k in c a; do ev "load vllm-$k"; $py "$here/client.py" load "$(port_of "$k")" "$(requests 256)" 64 1500 128 >>"$out/multi-load.jsonl"; done
      # 7: kill -9 of vllm-a's EngineCore while it is loaded; vllm-b and vllm-c ask for memory.
      local loads=()
      $py "$here/client.py" load 8300 "$(requests 512)" 128 1500 256 >/dev/null 2>&1 &
      loads+=($!)
      # vllm-b asks for more than its share until well after the kill (twice vllm-a's load).
      $py "$here/client.py" load 8301 "$(requests 1024)" 128 1500 256 >>"$out/multi-load.jsonl" 2>&1 &
      loads+=($!)
      sleep 8
      local victim kill_t freed=None gained=None
      # The vllm-a process holding the most (its EngineCore: the API server process carries the same
      # label if it loads the shim too), from the samples read as step_stats.py reads them (the
      # recorder may be writing the last line right now).
      victim=$($py -c "
import sys
sys.path.insert(0, '$here')
import ledger_samples
rows = ledger_samples.samples('$samples')
procs = [p for p in (rows[-1]['procs'] if rows else []) if p['label'] == 'vllm-a']
print(max(procs, key=lambda p: p['charged'])['pid'] if procs else '')")
      if [ -n "$victim" ]; then
        kill_t=$(date +%s.%N); kill -9 "$victim"; ev "kill -9 vllm-a ($victim)"
        sleep 5
        local kill_json; kill_json=$($py "$here/ledger_samples.py" freed "$samples" "$victim" "$kill_t")
        echo "$kill_json" >"$out/multi-kill.json"
        freed=$(echo "$kill_json" | $py -c 'import json,sys; print(json.load(sys.stdin)["freed_after_s"])')
        gained=$(echo "$kill_json" | $py -c 'import json,sys; print(json.load(sys.stdin)["others_gained_after_s"])')
      else
        note "multi: no vllm-a in the last ledger sample; nothing killed"
      fi
      row 7 "vllm-a's charge left the ledger after (s)" "${freed:-None}" "$($py -c "print('PASS' if '$freed' not in ('None', '') and float('$freed') <= 1.0 else 'FAIL')")"
      row 7 "vllm-b and vllm-c held more than before the kill after (s)" "${gained:-None}" "$($py -c "print('PASS' if '$gained' not in ('None', '') and float('$gained') <= 1.0 else 'FAIL')")"
      wait "${loads[@]}"  # not a bare wait: the sampler and the watchdog are children too
    fi
    for pid in "${pids[@]}"; do serve_stop "$pid"; done
    ev "stopped order $order"
  done
  kill "$sampler" 2>/dev/null
  if $py "$here/ledger_samples.py" plot "$samples" "$events" "$out/multi.png" kvcached_proof_multi 2>"$out/plot.err"; then
    row 6 "plot" "$out/multi.png" info
  else
    row 6 "plot" "none: $(tail -1 "$out/plot.err")" info
  fi
  row 6 "loads served without error" "$(grep -c '"errors": 0' "$out/multi-load.jsonl")/$(grep -c '"n"' "$out/multi-load.jsonl")" info
}

[ $# -gt 0 ] || { sed -n '/^set -uo/q; 2,$p' "$0"; exit 1; }
for arg in "$@"; do  # every word checked before anything is received, installed or run
  case $arg in recv | install | serve | identity | throughput | sanity | multi | probe) ;; *)
    echo "device.sh: unknown step '$arg' (recv, install, serve, identity, throughput, sanity, multi)" >&2; exit 1 ;;
  esac
done
mkdir -p "$out" "$site"
: >"$table"
while [ $# -gt 0 ]; do
  case $1 in
    recv) recv; shift ;;
    install) install; shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || exit 0
[ -f "$shim" ] || { echo "device.sh: nothing installed at $kv: run recv and install first" >&2; exit 3; }
write_model
# A call that outruns its limit is killed with nothing brought back: at DEADLINE_S (default 560 s,
# under the 600 s a call may run) the table and logs so far go to $OUT, whatever is still running.
# Its sleep is killed with it (the TERM trap): a sleep left behind would keep the call's output
# open until the deadline, so every call would last DEADLINE_S.
( sleep "${DEADLINE_S:-560}" & nap=$!
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  wait "$nap" || exit 0
  note "deadline ${DEADLINE_S:-560}s reached; results so far follow"
  row - "deadline reached during" "$*" FAIL; print_table ) &
watchdog=$!
for step in "$@"; do
  case $step in
    serve) step_serve ;;
    identity) step_identity ;;
    throughput) step_throughput ;;
    sanity) step_sanity ;;
    multi) step_multi ;;
    probe) step_probe ;;
    *) echo "device.sh: unknown step $step" >&2; exit 1 ;;
  esac
done
kill "$watchdog" 2>/dev/null
print_table
