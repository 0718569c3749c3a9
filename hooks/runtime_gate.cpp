#include "hooks/runtime_gate.h"

namespace kvcached::hooks {

Runtime* RuntimeGate::Enter(State* state) noexcept {
  std::uint64_t word = word_.load(std::memory_order_acquire);
  for (;;) {
    const auto current = static_cast<State>(word & kStateMask);
    if (current != kActive) {
      if (state != nullptr) *state = current;
      return nullptr;
    }
    if (word_.compare_exchange_weak(word, word + kBorrower, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      if (state != nullptr) *state = kActive;
      return runtime_.load(std::memory_order_acquire);
    }
  }
}

void RuntimeGate::Leave() noexcept {
  word_.fetch_sub(kBorrower, std::memory_order_acq_rel);
}

bool RuntimeGate::BeginStart() noexcept {
  std::uint64_t expected = kNotStarted;
  return word_.compare_exchange_strong(expected, kStarting, std::memory_order_acq_rel);
}

void RuntimeGate::FinishStart(Runtime* runtime) noexcept {
  runtime_.store(runtime, std::memory_order_release);
  // Nobody borrows while starting, so the word is exactly kStarting.
  word_.store(runtime != nullptr ? kActive : kPassThrough, std::memory_order_release);
}

Runtime* RuntimeGate::Retire() noexcept {
  std::uint64_t expected = kActive;  // active, no borrower
  if (!word_.compare_exchange_strong(expected, kPassThrough, std::memory_order_acq_rel)) {
    return nullptr;
  }
  return runtime_.exchange(nullptr, std::memory_order_acq_rel);
}

void RuntimeGate::ResetAfterFork() noexcept {
  runtime_.store(nullptr, std::memory_order_relaxed);
  word_.store(kNotStarted, std::memory_order_release);
}

RuntimeGate::State RuntimeGate::state() const noexcept {
  return static_cast<State>(word_.load(std::memory_order_acquire) & kStateMask);
}

std::uint64_t RuntimeGate::borrowers() const noexcept {
  return word_.load(std::memory_order_acquire) / kBorrower;
}

}  // namespace kvcached::hooks
