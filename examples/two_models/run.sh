#!/usr/bin/env bash
# Two models on one GPU sharing one KV budget: the same bursty trace with the kvcached shim
# (elastic KV, memory flows to the busy model) and without it (each engine a static half).
# Run on the GPU machine from the repo root:   examples/two_models/run.sh
# Writes two_models.png, two_models.md (table), summary.json and logs to $OUT/two_models
# (or examples/two_models/out). About 4-5 minutes; hard limit TWO_MODELS_TIMEOUT_S (540 s).
# Knobs: KVCACHED_SHIM_LIB (default build-gpu/lib/libkvcached_shim.so), KVCACHED_KVCTL
# (build-gpu/bin/kvctl), TWO_MODELS_BUDGET (1G), TWO_MODELS_PHASE_S (25), TWO_MODELS_RATE_HI (30),
# TWO_MODELS_RATE_LO (1), TWO_MODELS_DRAIN_S (20), KVCACHED_SANITY_CHECK=1 (check every step).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec timeout --kill-after=10 "${TWO_MODELS_TIMEOUT_S:-540}" python3 examples/two_models/driver.py "$@"
