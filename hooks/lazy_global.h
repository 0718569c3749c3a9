// LazyGlobal<T>: a process-wide object built on first use and never destroyed.
//
// A preloaded library must not run constructors at load time, and must not destroy shared state
// at exit while other threads may still call into it. A LazyGlobal is constant-initialised (no
// load-time code, no atexit registration) and builds T on first use. ResetAfterFork() builds a
// fresh T over the old one without destroying it: in a fork child the old object may be mid-
// update by a thread that no longer exists, so it is abandoned, not cleaned up.
#pragma once

#include <sched.h>

#include <array>
#include <atomic>
#include <new>

namespace kvcached::hooks {

template <class T>
class LazyGlobal {
 public:
  constexpr LazyGlobal() = default;
  LazyGlobal(const LazyGlobal&) = delete;
  LazyGlobal& operator=(const LazyGlobal&) = delete;
  LazyGlobal(LazyGlobal&&) = delete;
  LazyGlobal& operator=(LazyGlobal&&) = delete;
  ~LazyGlobal() = default;  // trivial: T is never destroyed, and no atexit entry is made

  T& Get() {
    if (state_.load(std::memory_order_acquire) == kReady) return *Ptr();
    int expected = kEmpty;
    if (state_.compare_exchange_strong(expected, kBuilding, std::memory_order_acq_rel)) {
      ::new (static_cast<void*>(storage_.data())) T();
      state_.store(kReady, std::memory_order_release);
    } else {
      // T's constructor takes no lock and calls nothing that could wait on us.
      while (state_.load(std::memory_order_acquire) != kReady) sched_yield();
    }
    return *Ptr();
  }

  // Fork child only (single-threaded at that point).
  void ResetAfterFork() {
    if (state_.load(std::memory_order_relaxed) == kEmpty) return;
    ::new (static_cast<void*>(storage_.data())) T();
    state_.store(kReady, std::memory_order_release);
  }

 private:
  static constexpr int kEmpty = 0;
  static constexpr int kBuilding = 1;
  static constexpr int kReady = 2;
  T* Ptr() { return std::launder(reinterpret_cast<T*>(storage_.data())); }

  alignas(T) std::array<unsigned char, sizeof(T)> storage_ = {};
  std::atomic<int> state_{kEmpty};
};

}  // namespace kvcached::hooks
