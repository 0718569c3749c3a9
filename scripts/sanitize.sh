#!/usr/bin/env bash
# Sanitizer runs of the core: the tests labelled "unit" (tests/unit, the quick tests/ledger ones,
# tests/fakecuda, tests/gpu on the fake driver) built with AddressSanitizer + UndefinedBehavior-
# Sanitizer into build-asan/ and with ThreadSanitizer into build-tsan/ (-O1, ccache), run with
# ctest. Every report fails its test (-fno-sanitize-recover=all, halt_on_error=1). The preload
# tests are left out: the shim is preloaded into uninstrumented programs, which an instrumented
# library cannot be. Prints one line per sanitizer; exits non-zero if any test failed.
#
#   scripts/sanitize.sh [address] [thread]    (default: both)
# SANITIZE_JOBS (default: nproc) sets the build and test parallelism; extra ctest arguments can
# be given in SANITIZE_CTEST_ARGS (e.g. "-R runtime").
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
jobs="${SANITIZE_JOBS:-$(nproc)}"
launcher=()
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# Fatal on the first report; LSan runs with ASan. Whoever set these already keeps their own.
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:strict_init_order=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"

summary=()
rc=0
for sanitizer in "${sanitizers[@]}"; do
  case "$sanitizer" in
    address) dir=build-asan ;;
    thread) dir=build-tsan ;;
    *) echo "sanitize.sh: unknown sanitizer '$sanitizer' (use address or thread)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  cmake -S . -B "$dir" -DKVCACHED_SANITIZE="$sanitizer" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DKVCACHED_BUILD_BENCH=OFF -DKVCACHED_GPU=OFF "${launcher[@]}" >/dev/null
  if ! cmake --build "$dir" --target sanitizer_tests -j"$jobs" >"$dir/sanitize-build.log" 2>&1; then
    tail -40 "$dir/sanitize-build.log" >&2
    summary+=("sanitize: $sanitizer: BUILD FAILED (see $dir/sanitize-build.log)")
    rc=1
    continue
  fi
  built=$(date +%s)
  set +e
  # The sanitizer runtimes intercept dlopen and call the real one from their own library, so a
  # library's $ORIGIN RUNPATH no longer applies to its dlopen calls: the fake libcudart finds the
  # fake driver through LD_LIBRARY_PATH here, and the one test of that RUNPATH lookup itself runs
  # only in the plain build.
  # ledger_fuzz_test's million-image run takes minutes instrumented and asserts a 50 ms bound per
  # validation that instrumentation breaks; its segment-in-/dev/shm part runs on its own below.
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH="$PWD/$dir/fakecuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    ctest --test-dir "$dir" -L '^unit$' \
    -E '^(ledger_fuzz_test|fakecuda.FakeRuntimeParent.RuntimeReachesTheDriverThroughCuGetProcAddress)$' \
    -j"$jobs" --timeout 600 --output-on-failure ${SANITIZE_CTEST_ARGS:-} \
    >"$dir/sanitize-ctest.log" 2>&1
  test_rc=$?
  if [ -z "${SANITIZE_CTEST_ARGS:-}" ]; then
    KVCACHED_LOG_LEVEL=error "$dir/bin/ledger_fuzz_test" \
      --gtest_filter='LedgerFuzz.MutatedSegmentsInShm*' >>"$dir/sanitize-ctest.log" 2>&1 || test_rc=1
  fi
  set -e
  end=$(date +%s)
  result=$(grep -E '^[0-9]+% tests passed' "$dir/sanitize-ctest.log" | tail -1)
  if [ "$test_rc" -ne 0 ]; then
    sed -n '/The following tests FAILED/,$p' "$dir/sanitize-ctest.log" >&2
    # The failed assertions themselves (the log stays in the build folder CI throws away).
    grep -E -A4 ': Failure$' "$dir/sanitize-ctest.log" | head -60 >&2 || true
    grep -E '^(==[0-9]+==ERROR|SUMMARY: |WARNING: ThreadSanitizer)|runtime error:' \
      "$dir/sanitize-ctest.log" | sort | uniq -c | head -20 >&2 || true
    rc=1
  fi
  summary+=("sanitize: $sanitizer: ${result:-no tests ran} (build $((built - start)) s, tests $((end - built)) s; log $dir/sanitize-ctest.log)")
done
printf '%s\n' "${summary[@]}"
exit "$rc"
