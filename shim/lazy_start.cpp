// Lazy start, fork and exit handling of the shim.
//
// State machine (one atomic, no lock):
//   kNotStarted --first call, CAS winner--> kStarting --> kActive (Runtime created)
//                                                    \--> kPassThrough (disabled, bad config,
//                                                          failed start)
// Threads that lose the race, and calls re-entering from inside the start, do not wait: they
// pass their call through unchanged. Waiting could deadlock -- the starting thread dlopens the
// driver and needs the loader lock, which a thread calling cudaMalloc from a library constructor
// holds -- and a pass-through is always correct. Only the C API waits (WaitForRuntime).
//
// Every borrower of the Runtime is counted (g_in_flight), so that the exit handler destroys the
// Runtime only when no other thread is inside it.
#include "shim/lazy_start.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/config/config.h"
#include "core/config/unknown_variables.h"
#include "core/ledger/ledger_budget_factory.h"
#include "core/log/log.h"
#include "core/runtime/runtime.h"
#include "hooks/passthrough_table.h"
#include "hooks/real_dlsym.h"
#include "hooks/region_ops.h"

namespace kvcached::shim {
namespace {

enum State : int { kNotStarted = 0, kStarting = 1, kActive = 2, kPassThrough = 3 };

// All constant-initialised: the library runs no code for them at load time.
constinit std::atomic<int> g_state{kNotStarted};
constinit std::atomic<Runtime*> g_runtime{nullptr};  // owned; see DestroyAtExit
constinit std::atomic<long> g_in_flight{0};
constinit std::atomic<bool> g_handlers_registered{false};
// Written once by the starting thread before g_state leaves kStarting.
char g_reason[512] = {};
thread_local bool t_starting = false;

void SetReason(const std::string& reason) noexcept {
  std::snprintf(g_reason, sizeof(g_reason), "%s", reason.c_str());
}

// In a fork child only the forking thread exists: the parent's Runtime (its worker thread, its
// locks, possibly held mid-update) is abandoned -- deliberately leaked -- and the child's first
// CUDA call starts afresh. A child that execs never runs any of this again.
void AfterForkInChild() {
  g_runtime.store(nullptr, std::memory_order_relaxed);
  g_in_flight.store(0, std::memory_order_relaxed);
  g_reason[0] = '\0';
  t_starting = false;
  hooks::ResetPassthroughsAfterFork();
  hooks::ResetRegionCountAfterFork();
  g_state.store(kNotStarted, std::memory_order_release);
}

// At exit, the Runtime is destroyed only when that is both safe and useful: no other thread is
// inside it, and no region is left (the engine freed everything). Otherwise it is left to the
// process exit: the driver reclaims the memory, and the shared ledger reclaims a dead process's
// slot; tearing down live regions would only slow the exit.
void DestroyAtExit() {
  Runtime* runtime = g_runtime.load(std::memory_order_acquire);
  if (runtime == nullptr || g_state.load(std::memory_order_seq_cst) != kActive) return;
  // With regions left, the hooks stay active: a late static destructor may still free one.
  if (hooks::LiveRegions() != 0) return;
  g_state.store(kPassThrough, std::memory_order_seq_cst);  // later calls pass through
  if (g_in_flight.load(std::memory_order_seq_cst) != 0) {
    g_state.store(kActive, std::memory_order_seq_cst);  // someone is inside: leave it running
    return;
  }
  SetReason("the process is exiting");
  g_runtime.store(nullptr, std::memory_order_release);
  const std::unique_ptr<Runtime> owned(runtime);
}

void RegisterHandlersOnce() {
  // Inherited by fork children, so registered once per process tree.
  if (g_handlers_registered.exchange(true)) return;
  pthread_atfork(nullptr, nullptr, &AfterForkInChild);
  std::atexit(&DestroyAtExit);
}

// Misspelled variables are ignored by every reader: say so once per process, at the lazy start
// (never at load time, when the program may not even use CUDA).
void WarnUnknownVariables() {
  for (const UnknownVariable& unknown : FindUnknownVariables(EnvironmentNames())) {
    KVC_LOG_WARN("{}", DescribeUnknown(unknown));
  }
}

// Reads the configuration and creates the Runtime; null = pass-through (reason set).
Runtime* CreateRuntime() {
  Result<Config> config = LoadConfigFromEnvironment();
  if (config.ok()) log::Configure(config.value());
  if (!config.ok() || config.value().enabled) WarnUnknownVariables();
  if (!config.ok()) {
    // One line, naming the variable (the config loader's message does), and no abort.
    SetReason(config.status().message());
    KVC_LOG_ERROR("{}; kvcached is disabled for this process (CUDA calls pass through unchanged)",
                  config.status().message());
    return nullptr;
  }
  if (!config.value().enabled) {
    SetReason("kvcached is disabled (ENABLE_KVCACHED=false)");
    KVC_LOG_DEBUG("ENABLE_KVCACHED=false: every CUDA call passes through unchanged");
    return nullptr;
  }
  const std::string label = config.value().label;
  Result<std::unique_ptr<Runtime>> created =
      Runtime::Create(std::move(config).value(), hooks::RealDlsym(), ledger::MakeBudgetFactory());
  if (!created.ok()) {
    SetReason(created.status().message());
    KVC_LOG_ERROR("{}; kvcached is disabled for this process (CUDA calls pass through unchanged)",
                  created.status().message());
    return nullptr;
  }
  Runtime* runtime = std::move(created).value().release();  // owned through g_runtime
  if (!label.empty()) runtime->SetLabel(label);
  KVC_LOG_DEBUG("kvcached started (page size {} MiB)", runtime->config().page_size_mb);
  return runtime;
}

void Start() noexcept {
  int expected = kNotStarted;
  if (!g_state.compare_exchange_strong(expected, kStarting, std::memory_order_acq_rel)) return;
  t_starting = true;
  Runtime* runtime = nullptr;
  try {
    runtime = CreateRuntime();
  } catch (...) {
    // Out of host memory while starting, most likely: stay out of the way.
    SetReason("kvcached could not start (internal error); CUDA calls pass through unchanged");
  }
  RegisterHandlersOnce();
  g_runtime.store(runtime, std::memory_order_release);
  t_starting = false;
  g_state.store(runtime != nullptr ? kActive : kPassThrough, std::memory_order_seq_cst);
}

}  // namespace

hooks::RuntimeRef WaitForRuntime() {
  for (;;) {
    hooks::RuntimeRef ref = hooks::AcquireRuntime();
    if (ref) return ref;
    if (t_starting || g_state.load(std::memory_order_acquire) != kStarting) return {};
    sched_yield();
  }
}

const char* PassThroughReason() {
  return g_state.load(std::memory_order_acquire) == kPassThrough ? g_reason : "";
}

}  // namespace kvcached::shim

namespace kvcached::hooks {

RuntimeRef AcquireRuntime() noexcept {
  using shim::g_in_flight;
  using shim::g_state;
  for (;;) {
    // Count first, then look: against DestroyAtExit's "flip state, then read the count", one of
    // the two always sees the other (both sequentially consistent).
    g_in_flight.fetch_add(1, std::memory_order_seq_cst);
    const int state = g_state.load(std::memory_order_seq_cst);
    if (state == shim::kActive) return RuntimeRef(shim::g_runtime.load(std::memory_order_acquire));
    g_in_flight.fetch_sub(1, std::memory_order_release);
    if (state != shim::kNotStarted) return {};
    shim::Start();  // no-op if another thread won the race; then loop once more
  }
}

void ReleaseRuntimeRef() noexcept {
  shim::g_in_flight.fetch_sub(1, std::memory_order_release);
}

bool SubstitutionAllowed() noexcept {
  int state = shim::g_state.load(std::memory_order_acquire);
  if (state == shim::kNotStarted) {
    shim::Start();
    state = shim::g_state.load(std::memory_order_acquire);
  }
  return state != shim::kPassThrough;
}

}  // namespace kvcached::hooks
