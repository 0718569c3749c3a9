// The one options table: every environment variable the project reads, with its type, who reads
// it, its default and accepted values. The single source for the "accepted" text of error
// messages, for docs/configuration.md, for the unknown-variable warning and for `kvctl doctor`;
// tests/unit/options_table_test.cpp compares it with the source tree and the docs.
#include <string_view>
#include <vector>

#include "core/config/config.h"

namespace kvcached {

const std::vector<ConfigVarDoc>& ConfigVariables() {
  using T = VarType;
  using S = VarScope;
  // The shim's loader reads the kShim entries in this order (the first bad one is reported).
  static const std::vector<ConfigVarDoc> kVariables = {
      {"ENABLE_KVCACHED", T::kBool, S::kShim, "true", "true/false, 1/0, yes/no, on/off (any case)",
       "Master switch; false makes the shim a pure pass-through to the CUDA libraries."},
      {"KVCACHED_AUTOPATCH", T::kBool, S::kShim, "true",
       "true/false, 1/0, yes/no, on/off (any case)",
       "Load the engine hook into Python engines at interpreter start."},
      {"KVCACHED_IPC_NAME", T::kText, S::kShim,
       "unset, meaning one segment per GPU named from its UUID",
       "a name of up to 64 characters from [A-Za-z0-9_.-] (other characters become '_', leading "
       "dots are dropped)",
       "Name of the shared budget segment in /dev/shm; engines with the same name share one "
       "budget."},
      {"KVCACHED_GPU_UTILIZATION", T::kDecimal, S::kShim, "0.95",
       "a decimal number greater than 0 and at most 1, e.g. 0.9, whose share of the GPU reaches "
       "the minimum budget (see KVCACHED_BUDGET)",
       "Fraction of the GPU's memory that all engines on it may draw together (the shared "
       "budget)."},
      {"KVCACHED_BUDGET", T::kSize, S::kShim,
       "unset, meaning KVCACHED_GPU_UTILIZATION x GPU memory",
       "a size such as 40G, 512MiB, 1.5GiB or 1073741824 (bytes; binary units, 1K = 1024) of at "
       "least the minimum (KVCACHED_MIN_RESERVED_PAGES + 4 pages: 18 MiB with the defaults); above "
       "the GPU's memory it means the whole GPU (warned once)",
       "The shared budget in bytes; overrides KVCACHED_GPU_UTILIZATION."},
      {"KVCACHED_PAGE_SIZE_MB", T::kInteger, S::kShim, "2",
       "a power of two number of MiB from 2 to 1024 (2, 4, 8, 16, ... 1024): reservations are "
       "aligned to the page size, and that alignment must be a power of two",
       "Size of one physical page; larger pages map faster, smaller pages return memory more "
       "finely."},
      {"KVCACHED_ZERO_CHUNK_MB", T::kInteger, S::kShim,
       "unset, meaning 8 with 2 MiB pages, twice the page size with 4 to 32 MiB pages, one page "
       "with larger pages",
       "an even number of MiB from 2 to 1024; values below the page size mean one page (always "
       "one page with KVCACHED_SANITY_CHECK on)",
       "Largest zero alias: unbacked pages are aliased to the zero memory in aligned chunks of up "
       "to this size, so a burst unmaps one alias per chunk instead of one per page (each unmap "
       "costs ~20 us). The zero memory held per GPU is about twice this size, counted outside the "
       "budget."},
      {"KVCACHED_PAGE_PREALLOC_ENABLED", T::kBool, S::kShim, "true",
       "true/false, 1/0, yes/no, on/off (any case)",
       "Keep a pool of created physical pages ready so that backing new blocks needs no "
       "cuMemCreate."},
      {"KVCACHED_MIN_RESERVED_PAGES", T::kInteger, S::kShim, "5",
       "an integer from 0 to 65536, at most KVCACHED_MAX_RESERVED_PAGES",
       "Pages the pool refills to when it runs low (counted in the budget as reserved)."},
      {"KVCACHED_MAX_RESERVED_PAGES", T::kInteger, S::kShim, "10",
       "an integer from 1 to 65536, at least KVCACHED_MIN_RESERVED_PAGES",
       "Most pages the pool keeps; released pages beyond it go back to the driver."},
      {"KVCACHED_MAP_AHEAD_PAGES", T::kInteger, S::kShim, "2", "an integer from 0 to 1024",
       "Pages kept mapped ahead of demand in each lazy region, so that backing blocks makes no "
       "driver call."},
      {"KVCACHED_MAP_AHEAD_BURST_PAGES", T::kInteger, S::kShim, "64",
       "an integer from 0 to 65536 (0 or at most KVCACHED_MAP_AHEAD_PAGES: off)",
       "Most pages map-ahead keeps in a lazy region while the engine's demand grows: the reserve "
       "follows the pages acquired in about the last 100 ms, so a burst's pages are mapped on the "
       "pool's thread, not the engine's."},
      {"KVCACHED_TRIM_DELAY_MS", T::kInteger, S::kShim, "200",
       "an integer number of milliseconds from 0 to 60000",
       "How long a freed page stays mapped before it is unmapped, in case the engine reuses it."},
      {"KVCACHED_LOG_LEVEL", T::kChoice, S::kShim, "warn",
       "one of trace, debug, info, warn (or warning), error, critical, off (any case)",
       "Least severe message that is logged."},
      {"KVCACHED_LOG_FILE", T::kPath, S::kShim, "unset, meaning stderr",
       "a file path (lines are appended)",
       "Where log lines go; falls back to stderr with a warning if the file cannot be opened."},
      {"KVCACHED_SANITY_CHECK", T::kBool, S::kShim, "false",
       "true/false, 1/0, yes/no, on/off (any case)",
       "Extra consistency checks of page states and block ranges (slower; for debugging)."},
      {"KVCACHED_CONTIGUOUS_LAYOUT", T::kBool, S::kShim, "false",
       "true/false, 1/0, yes/no, on/off (any case)",
       "Accepted for compatibility and ignored: the engine's own per-layer KV layout is kept."},
      {"KVCACHED_CUDA_DRIVER", T::kPath, S::kShim, "libcuda.so.1",
       "a library name or path that dlopen accepts", "The CUDA driver library to load."},
      {"KVCACHED_CAPTURE_MIN_MB", T::kInteger, S::kShim, "0",
       "an integer number of MiB from 0 to 1048576 (0 = off)",
       "Allocations at or above this size outside a KV window become fully backed regions, so "
       "they count in the budget."},
      {"KVCACHED_VIRTUAL_MEMINFO", T::kChoice, S::kShim, "false",
       "process, shared or real (any case), or a boolean: true/false, 1/0, yes/no, on/off "
       "(true = process, false = real)",
       "What cudaMemGetInfo/cuMemGetInfo report: process = this process's budget as if it had "
       "the GPU to itself; shared = its budget, free = what the shared budget still grants it; "
       "real = the driver's values."},
      {"KVCACHED_LABEL", T::kText, S::kShim, "unset",
       "up to 63 printable ASCII characters (longer values are cut, other characters become "
       "'_')",
       "Name shown for this process by kvctl."},
      {"KVCACHED_SHM_MODE", T::kMode, S::kShim, "0600",
       "an octal mode such as 0600, 0640 or 0660 that includes owner read/write (0600), has no "
       "bits beyond 0777 and is not writable by others",
       "Permissions of a newly created budget segment."},
      {"KVCACHED_SHM_GROUP", T::kText, S::kShim, "unset, meaning the creator's group",
       "the name of an existing group (getent group), up to 64 characters from [A-Za-z0-9_.-]",
       "Group that owns a newly created budget segment, for engines running as different "
       "users."},
      {"KVCACHED_SHARE_WEIGHT", T::kDecimal, S::kShim, "1",
       "a decimal number from 0.001 to 1000, e.g. 2 or 0.5",
       "This engine's weight when engines on one GPU compete for the budget: fair shares are "
       "proportional to the weights (docs/sharing.md); `kvctl share` changes it live."},
      {"KVCACHED_SHARE_MIN", T::kSize, S::kShim, "0",
       "a size such as 8G or 512MiB (at most the budget; more is cut)",
       "Memory guaranteed to this engine under contention: engines above their share give it "
       "back when this engine asks for it."},
      {"KVCACHED_SHARE_PREEMPT_MS", T::kInteger, S::kShim, "500",
       "an integer number of milliseconds from 0 to 60000",
       "How long an engine below its fair share may be refused before engines above their "
       "share preempt their newest requests to give it memory."},
      {"KVCACHED_PYTHON_DIR", T::kPath, S::kPythonBoot,
       "unset, meaning kvcached_python/ beside the shim library",
       "a folder holding kvcached_boot/ and kvcached_hook/",
       "Where the shim finds the engine hook's Python packages it puts on PYTHONPATH."},
      // The Python engine hook (hooks/python/kvcached_hook/_env.py): a bad value is reported
      // once and the default used.
      {"KVCACHED_HOOK_PREFIX_CACHE", T::kChoice, S::kEngineHook, "elastic", "elastic or keep",
       "elastic: reuse the engine's cached prefix blocks in backed pages before backing new "
       "pages; keep: the engine's own block order (cached blocks dropped only when the budget "
       "refuses a page)."},
      {"KVCACHED_HOOK_IDLE_TRIM_S", T::kDecimal, S::kEngineHook, "1.0",
       "a number of seconds from 0 to 86400 (0: at once), or off (also false/no)",
       "After this many idle seconds the engine's cached blocks are dropped so that their pages "
       "go back to the budget; when another process is refused memory, cached blocks unused for "
       "this long go back too (vLLM)."},
      {"KVCACHED_HOOK_RELEASE_DELAY_STEPS", T::kInteger, S::kEngineHook, "2",
       "an integer from 0 to 1000",
       "Pages that became empty are given back after this many engine steps (2 or more keeps "
       "pages an in-flight asynchronous batch may still touch)."},
      {"KVCACHED_HOOK_PREDICT", T::kBool, S::kEngineHook, "true",
       "true/false, 1/0, yes/no, on/off (any case)",
       "Back the pages a step will need in one call before the step is scheduled."},
      {"KVCACHED_HOOK_SHARE_ASK_MS", T::kDecimal, S::kEngineHook, "20",
       "a number of milliseconds from 0 to 1000 (0: every step)",
       "While the sharing policy's answer is ok, a vLLM engine asks it again only after this "
       "long, not every step (the question costs microseconds of the scheduler's time); an "
       "answer other than ok is asked every step. Another engine's starvation reaches it at "
       "most this much later."},
      {"KVCACHED_HOOK_REFUSED_RETRY_MS", T::kDecimal, S::kEngineHook, "20",
       "a number of milliseconds from 0 to 1000 (0: every step)",
       "After the budget refused an engine's pages, the engine asks again only after this long, "
       "once it has given pages back itself, or as soon as the budget has room for the pages "
       "again (a cheap query), not every step (a refused ask costs tens of microseconds of the "
       "scheduler's time); meanwhile it behaves as refused. The retry time bounds how long a "
       "starved engine's refusal record goes unrenewed."},
      {"KVCACHED_HOOK_SHARE_HOLD_MS", T::kDecimal, S::kEngineHook, "5000",
       "a number of milliseconds from 0 to 600000 (0: off)",
       "How long memory that moved between vLLM engines stays where it went (the sharing "
       "policy): after giving to a starved engine, an engine acquires no page beyond what it kept "
       "for this long (each give starts it again). So the receiver's next request finds its "
       "memory instead of starving again and making the giver preempt once more."},
      {"KVCACHED_HOOK_START_WAIT_S", T::kDecimal, S::kEngineHook, "60",
       "a number of seconds from 0 to 86400",
       "At start the cache's padding pages must be backed; while other engines hold the whole "
       "budget this waits (asking them to give back) up to this long before failing."},
      {"KVCACHED_HOOK_VLLM_TP", T::kBool, S::kEngineHook, "false",
       "true/false, 1/0, yes/no, on/off (any case)",
       "vLLM with tensor parallelism > 1: make the workers' KV caches elastic too (experimental: "
       "acquires reach every rank through collective_rpc, all or nothing; docs/vllm.md)."},
      {"KVCACHED_HOOK_SANITY_EVERY", T::kInteger, S::kEngineHook, "1",
       "an integer from 1 to 1000000",
       "With KVCACHED_SANITY_CHECK on, the vLLM adapter checks every this many engine steps "
       "(1: every step; larger values make the check cheaper on big caches)."},
      {"KVCACHED_SHIM_PATH", T::kPath, S::kTools,
       "unset, meaning the shim in LD_PRELOAD (engine hook) or ../lib beside kvctl (doctor)",
       "a path to libkvcached_shim.so",
       "The shim library the engine hook's C API binding and `kvctl doctor` load."},
      // The project's own tests and scripts (never read by the shim; known so that they are not
      // reported as misspellings).
      {"KVCACHED_TEST_CHILD", T::kBool, S::kDevelopment, "unset", "set to 1 by the test harness",
       "Marks a test's child process (tests/support)."},
      {"KVCACHED_TEST_SHIM", T::kPath, S::kDevelopment, "unset (set by ctest)",
       "a path to the built shim", "The shim the Python tests load."},
      {"KVCACHED_TEST_KVCTL", T::kPath, S::kDevelopment, "unset (set by ctest)",
       "a path to the built kvctl", "The kvctl the Python tests run to read what the shim shows."},
      {"KVCACHED_TEST_VLLM_VERSION", T::kText, S::kDevelopment, "unset (set by ctest)",
       "a vLLM version such as 0.24.0", "The vLLM version a Python engine test expects."},
      {"KVCACHED_TEST_SANITY_BUDGET", T::kSize, S::kDevelopment, "384M", "a size",
       "Budget of the GPU sanity-check test (tests/gpu/python)."},
      {"KVCACHED_TEST_WAIT_BUDGET", T::kSize, S::kDevelopment, "160M", "a size",
       "Budget of the GPU test that makes requests wait (tests/gpu/python)."},
      {"KVCACHED_TEST_TPUT_PAIRS", T::kInteger, S::kDevelopment, "6", "an integer",
       "Measurement pairs of the GPU throughput test."},
      {"KVCACHED_TEST_TPUT_RATIO", T::kDecimal, S::kDevelopment, "0.98", "a decimal number",
       "Least throughput ratio (shim / plain) the GPU throughput test accepts."},
      {"KVCACHED_GPU_TEST_CYCLES", T::kInteger, S::kDevelopment,
       "1000 (5000 in the CUDA kernels' test)", "a positive integer",
       "Length of the GPU churn tests."},
      {"KVCACHED_GPU_TEST_SEED", T::kInteger, S::kDevelopment, "random", "a positive integer",
       "Seed of the GPU churn tests (repeats a run)."},
      {"KVCACHED_GPU_PY_BUDGET_S", T::kDecimal, S::kDevelopment, "570", "seconds",
       "Time budget of the Python GPU tests (tests/gpu/python/run_all.py)."},
      {"KVCACHED_BUILD_DIR", T::kPath, S::kDevelopment, "build-gpu", "a build folder",
       "Build folder the Python GPU tests take the shim and kvctl from."},
      {"KVCACHED_GPU_BUILD_DIR", T::kPath, S::kDevelopment, "build-gpu", "a folder",
       "Packed GPU build of scripts/gpu/build-for-gpu.sh and run-suite.sh."},
      {"KVCACHED_GPU_OBJ_DIR", T::kPath, S::kDevelopment, "build-gpu-obj", "a folder",
       "Object folder of scripts/gpu/build-for-gpu.sh."},
      {"KVCACHED_GPU_EXTRA_TARGETS", T::kText, S::kDevelopment, "unset",
       "CMake target names separated by spaces",
       "Extra targets scripts/gpu/build-for-gpu.sh packs."},
      {"KVCACHED_SUITE_FILTER", T::kText, S::kDevelopment, "unset, meaning every program",
       "a bash regular expression", "Programs scripts/gpu/run-suite.sh runs."},
      {"KVCACHED_SUITE_SKIP_BENCH", T::kBool, S::kDevelopment, "unset", "any non-empty value",
       "scripts/gpu/run-suite.sh skips the benchmarks."},
      {"KVCACHED_SUITE_SKIP_TESTS", T::kBool, S::kDevelopment, "unset", "any non-empty value",
       "scripts/gpu/run-suite.sh skips the tests."},
      {"KVCACHED_PYENV_ROOT", T::kPath, S::kDevelopment, "~/.cache/kvcached-shim", "a folder",
       "Where scripts/python-env.sh keeps the reused Python test environments."},
      {"KVCACHED_SHIM_LIB", T::kPath, S::kDevelopment, "build-gpu/lib/libkvcached_shim.so",
       "a path to the shim", "The shim the GPU Python tests and examples/two_models use."},
      {"KVCACHED_KVCTL", T::kPath, S::kDevelopment, "build-gpu/bin/kvctl", "a path to kvctl",
       "The kvctl the GPU Python tests and examples/two_models use."},
  };
  return kVariables;
}

const ConfigVarDoc* FindConfigVariable(std::string_view name) {
  for (const ConfigVarDoc& doc : ConfigVariables()) {
    if (name == doc.name) return &doc;
  }
  return nullptr;
}

const char* VarTypeName(VarType type) {
  switch (type) {
    case VarType::kBool:
      return "bool";
    case VarType::kInteger:
      return "integer";
    case VarType::kDecimal:
      return "decimal";
    case VarType::kSize:
      return "size";
    case VarType::kText:
      return "text";
    case VarType::kPath:
      return "path";
    case VarType::kMode:
      return "octal mode";
    case VarType::kChoice:
      return "choice";
  }
  return "?";
}

const char* VarScopeName(VarScope scope) {
  switch (scope) {
    case VarScope::kShim:
      return "shim";
    case VarScope::kPythonBoot:
      return "shim (Python start-up)";
    case VarScope::kEngineHook:
      return "engine hook";
    case VarScope::kTools:
      return "engine hook, kvctl";
    case VarScope::kDevelopment:
      return "tests and scripts";
  }
  return "?";
}

}  // namespace kvcached
