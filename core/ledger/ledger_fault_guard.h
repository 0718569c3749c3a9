// A SIGBUS guard scoped to the ledger's own accesses of a mapped segment.
//
// Why a signal guard: a segment is a file in /dev/shm, and anyone allowed to write it (its owner,
// its group, root) can shrink it (`truncate -s 0`) while engines have it mapped. The next load or
// store on a page past the new end raises SIGBUS, and no check can close that window: an fstat
// before each access races with the truncation, tmpfs files cannot be sealed after creation, and
// the atomics that make the ledger lock-free need the shared mapping itself. So every access the
// ledger makes to a mapping runs inside Guarded(): a SIGBUS whose fault address lies in that
// mapping, raised on this thread while inside the guard, returns false from Guarded() instead of
// killing the process; the caller then stops using the segment (process-local budget). Any other
// SIGBUS goes to the handler that was installed before ours (or the default action), unchanged.
//
// Cost: one sigsetjmp without a signal mask (no system call) and two thread-local stores per
// guarded call. Callers must keep only trivially destructible objects alive inside the guarded
// function (a longjmp skips destructors).
#pragma once

#include <csetjmp>
#include <cstddef>

namespace kvcached::ledger {

struct FaultGuardFrame {
  sigjmp_buf env;
  const void* begin;
  const void* end;
  FaultGuardFrame* outer;
};

namespace fault_guard_detail {
FaultGuardFrame* Current();
void SetCurrent(FaultGuardFrame* frame);
}  // namespace fault_guard_detail

// Installs the process-wide SIGBUS handler (once; later calls do nothing). The handler found
// there is chained. A handler installed later by someone else that does not chain to ours
// disables the guard (the process then dies of such a SIGBUS, as it would without kvcached); it
// is not re-installed over it, since two handlers chaining to each other could loop.
void InstallFaultGuard();

// Runs fn(); false when a SIGBUS hit [begin, begin + size) during it (fn was cut short).
template <class F>
[[nodiscard]] bool Guarded(const void* begin, std::size_t size, F&& fn) {
  // Not zeroed: sigsetjmp fills env (200 bytes) before anything reads it, on every guarded call.
  FaultGuardFrame frame;  // NOLINT(cppcoreguidelines-pro-type-member-init)
  frame.begin = begin;
  frame.end = static_cast<const char*>(begin) + size;
  frame.outer = fault_guard_detail::Current();
  if (sigsetjmp(&frame.env[0], 0) != 0) {
    fault_guard_detail::SetCurrent(frame.outer);
    return false;
  }
  fault_guard_detail::SetCurrent(&frame);
  fn();
  fault_guard_detail::SetCurrent(frame.outer);
  return true;
}

}  // namespace kvcached::ledger
