#!/usr/bin/env bash
# One command for the tests: installs what is missing (Debian packages; torch, transformers and
# vLLM into a reused virtual environment), builds, and runs every test this machine can run. GPU
# tests report SKIP where there is no GPU; an engine test that should run on the CPU (label
# cpu_engine) and skipped fails the run; then the sources are linted (scripts/lint.sh:
# clang-format, clang-tidy) and the unit tests run again under sanitizers (scripts/sanitize.sh).
# Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
test_python=$(scripts/python-env.sh)
scripts/build.sh -DKVCACHED_TEST_PYTHON="$test_python"
log=build/ctest.log
set +e
ctest --test-dir build --output-on-failure --timeout 900 -j"$(nproc)" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# clang-format and clang-tidy over the sources, on build/'s compile_commands.json (zero findings
# required).
echo
echo "== lint (scripts/lint.sh)"
scripts/lint.sh || rc=1
# The core, ledger and unit tests again under AddressSanitizer+UBSan and ThreadSanitizer (the
# tests labelled unit; zero reports required): build-asan/, build-tsan/.
echo
echo "== sanitizers (scripts/sanitize.sh)"
scripts/sanitize.sh || rc=1
echo
echo "== engine tests on the CPU (torch/transformers/vLLM, $("$test_python" -c 'import torch, transformers, vllm; print(f"torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__} pinned")'))"
grep -h '^\[engine-tests\]' build/Testing/Temporary/LastTest.log | grep -v '  skipped' | sed 's/^\[engine-tests\] /  /' || true
must_run=$(ctest --test-dir build -N -L cpu_engine | sed -n 's/^ *Test *#[0-9]*: //p')
skipped=$(sed -n '/did not run/,$p' "$log" | grep -oE '(python_[A-Za-z0-9_]+)' | sort -u || true)
bad=$(comm -12 <(echo "$must_run" | sort) <(echo "$skipped" | sort) | grep . || true)
if [ -n "$bad" ]; then
  echo "test.sh: these engine tests must run on this machine but skipped (their output says why):" >&2
  echo "$bad" | sed 's/^/  /' >&2
  rc=1
fi
echo "  $(echo "$must_run" | grep -c .) engine test runs registered, $(echo "$bad" | grep -c .) skipped"
# ctest's own summary last, for whoever reads the end of the log.
grep -E '^[0-9]+% tests passed' "$log" | tail -1
exit "$rc"
