// Lazy start, fork and exit handling: how the hooks and the C API reach the process's Runtime.
//
// Nothing happens when the library is loaded; the first interposed CUDA call (or C API call)
// reads the configuration and creates the Runtime (RuntimeGate: kNotStarted -> kStarting ->
// kActive, or kPassThrough when disabled, misconfigured or failed). Threads that lose the race,
// and calls re-entering from inside the start, do not wait: they pass their call through
// unchanged. Waiting could deadlock -- the starting thread dlopens the driver and needs the
// loader lock, which a thread calling cudaMalloc from a library constructor holds -- and a
// pass-through is always correct. Only the C API waits (WaitForRuntime).
#include "hooks/runtime_access.h"

#include <pthread.h>
#include <sched.h>

#include <array>
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
#include "hooks/runtime_gate.h"

namespace kvcached::hooks {
namespace {

// All constant-initialised: the library runs no code for them at load time.
constinit RuntimeGate g_gate;
constinit std::atomic<bool> g_handlers_registered{false};
// Written once by the starting thread before the gate leaves kStarting.
std::array<char, 512> g_reason = {};
thread_local bool t_starting = false;

void SetReason(const std::string& reason) noexcept {
  std::snprintf(g_reason.data(), g_reason.size(), "%s", reason.c_str());
}

// In a fork child only the forking thread exists: the parent's Runtime (its worker thread, its
// locks, possibly held mid-update) is abandoned -- deliberately leaked -- and the child's first
// CUDA call starts afresh. A child that execs never runs any of this again.
void AfterForkInChild() {
  g_reason[0] = '\0';
  t_starting = false;
  ResetPassthroughsAfterFork();
  ResetRegionCountAfterFork();
  g_gate.ResetAfterFork();
}

// At exit, the Runtime is destroyed only when that is both safe and useful: no other thread is
// inside it, and no region is left (the engine freed everything). Otherwise it is left to the
// process exit: the driver reclaims the memory, and the shared ledger reclaims a dead process's
// slot; tearing down live regions would only slow the exit.
void DestroyAtExit() {
  // With regions left, the hooks stay active: a late static destructor may still free one.
  if (LiveRegions() != 0) return;
  // One step: either nobody is inside and later calls pass through, or nothing changes.
  Runtime* runtime = g_gate.Retire();
  if (runtime == nullptr) return;
  SetReason("the process is exiting");
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
      Runtime::Create(std::move(config).value(), RealDlsym(), ledger::MakeBudgetFactory());
  if (!created.ok()) {
    SetReason(created.status().message());
    KVC_LOG_ERROR("{}; kvcached is disabled for this process (CUDA calls pass through unchanged)",
                  created.status().message());
    return nullptr;
  }
  Runtime* runtime = std::move(created).value().release();  // owned through g_gate
  if (!label.empty()) runtime->SetLabel(label);
  KVC_LOG_DEBUG("kvcached started (page size {} MiB)", runtime->config().page_size_mb);
  return runtime;
}

void Start() noexcept {
  if (!g_gate.BeginStart()) return;
  t_starting = true;
  Runtime* runtime = nullptr;
  try {
    runtime = CreateRuntime();
  } catch (...) {
    // Out of host memory while starting, most likely: stay out of the way.
    SetReason("kvcached could not start (internal error); CUDA calls pass through unchanged");
  }
  RegisterHandlersOnce();
  t_starting = false;
  g_gate.FinishStart(runtime);
}

}  // namespace

RuntimeRef AcquireRuntime() noexcept {
  for (;;) {
    RuntimeGate::State state = RuntimeGate::kNotStarted;
    if (Runtime* runtime = g_gate.Enter(&state)) return RuntimeRef(runtime);
    if (state != RuntimeGate::kNotStarted) return {};
    Start();  // no-op if another thread won the race; then look once more
  }
}

void ReleaseRuntimeRef() noexcept {
  g_gate.Leave();
}

bool SubstitutionAllowed() noexcept {
  if (g_gate.state() == RuntimeGate::kNotStarted) Start();
  return g_gate.state() != RuntimeGate::kPassThrough;
}

RuntimeRef WaitForRuntime() noexcept {
  for (;;) {
    RuntimeRef ref = AcquireRuntime();
    if (ref) return ref;
    if (t_starting || g_gate.state() != RuntimeGate::kStarting) return {};
    sched_yield();
  }
}

const char* PassThroughReason() noexcept {
  return g_gate.state() == RuntimeGate::kPassThrough ? g_reason.data() : "";
}

}  // namespace kvcached::hooks
