#include "core/ledger/ledger_fault_guard.h"

#include <atomic>
#include <csignal>
#include <mutex>

namespace kvcached::ledger {
namespace {

// Initial-exec TLS: reading it in a signal handler never allocates (the shim is preloaded, so
// its TLS is static).
__attribute__((tls_model("initial-exec"))) thread_local FaultGuardFrame* t_frame = nullptr;

struct sigaction g_previous {};  // written once, before our handler is installed

void OnSigbus(int sig, siginfo_t* info, void* context) {
  FaultGuardFrame* frame = t_frame;
  if (frame != nullptr && info != nullptr && info->si_addr >= frame->begin &&
      info->si_addr < frame->end) {
    // SA_NODEFER keeps SIGBUS unblocked, so the jump needs no signal mask restore.
    siglongjmp(&frame->env[0], 1);
  }
  // Not ours: behave as if we were not installed.
  const struct sigaction prev = g_previous;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
    prev.sa_handler(sig);
    return;
  }
  // Default action: restore it; a hardware fault re-executes and dies, a sent signal is re-sent.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (info == nullptr || info->si_code <= 0) ::raise(sig);
}

}  // namespace

namespace fault_guard_detail {
FaultGuardFrame* Current() {
  return t_frame;
}
void SetCurrent(FaultGuardFrame* frame) {
  // The handler runs on this thread: a compiler barrier is all the ordering it needs.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_frame = frame;
  std::atomic_signal_fence(std::memory_order_seq_cst);
}
}  // namespace fault_guard_detail

void InstallFaultGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction ours {};
    ours.sa_sigaction = &OnSigbus;
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART;
    ::sigemptyset(&ours.sa_mask);
    if (::sigaction(SIGBUS, nullptr, &g_previous) != 0) return;
    ::sigaction(SIGBUS, &ours, nullptr);
  });
}

}  // namespace kvcached::ledger
