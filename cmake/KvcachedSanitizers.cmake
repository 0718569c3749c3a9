# Sanitizer builds of the core and its tests (scripts/sanitize.sh drives them):
#   -DKVCACHED_SANITIZE=address  AddressSanitizer + UndefinedBehaviorSanitizer
#   -DKVCACHED_SANITIZE=thread   ThreadSanitizer
# Every report is fatal (-fno-sanitize-recover=all; sanitize.sh sets halt_on_error for the run), so
# a test that triggers one fails. The preloaded shim is not a sanitizer target: an instrumented
# library cannot be preloaded into an uninstrumented host, so the preload tests stay out.
set(KVCACHED_SANITIZE "" CACHE STRING "Sanitizer build: empty, address (ASan+UBSan) or thread (TSan)")
if(KVCACHED_SANITIZE STREQUAL "address")
  set(kvcached_sanitize_flags -fsanitize=address,undefined -fno-sanitize-recover=all
      -fno-omit-frame-pointer)
elseif(KVCACHED_SANITIZE STREQUAL "thread")
  set(kvcached_sanitize_flags -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT KVCACHED_SANITIZE STREQUAL "")
  message(FATAL_ERROR "KVCACHED_SANITIZE must be empty, address or thread (got '${KVCACHED_SANITIZE}')")
endif()
if(kvcached_sanitize_flags)
  add_compile_options(${kvcached_sanitize_flags})
  add_link_options(${kvcached_sanitize_flags})
endif()

# sanitizer_tests: every target the sanitizer runs need (the tests labelled "unit" of tests/unit,
# tests/ledger, tests/fakecuda, tests/gpu's fake-driver builds and tests/metrics, and what they run: the fakes,
# kvctl, the ledger worker), without the shim, the preload programs, the benchmarks, the examples
# and the long multi-process ledger runs. Called from the top-level CMakeLists.txt after tests/.
function(kvcached_add_sanitizer_tests_target)
  add_custom_target(sanitizer_tests)
  foreach(dir tests/unit tests/ledger tests/fakecuda tests/gpu tools/kvctl)
    if(NOT IS_DIRECTORY ${PROJECT_SOURCE_DIR}/${dir})
      continue()
    endif()
    get_property(targets DIRECTORY ${PROJECT_SOURCE_DIR}/${dir} PROPERTY BUILDSYSTEM_TARGETS)
    list(FILTER targets EXCLUDE REGEX "^(ledger_contention_test|ledger_chaos_test|ledger_validate_fuzzer|kvcached_gpu_test_support|gpu_.*_test)$")
    if(targets)
      add_dependencies(sanitizer_tests ${targets})
    endif()
  endforeach()
  # tests/metrics' unit test carries the "unit" label too (the exporter's text and counters);
  # the rest of that folder runs the shim and a real Prometheus, outside the sanitizer runs.
  if(TARGET metrics_unit_test)
    add_dependencies(sanitizer_tests metrics_unit_test)
  endif()
endfunction()
