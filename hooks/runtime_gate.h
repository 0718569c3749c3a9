// RuntimeGate: the lock-free state machine through which every hook borrows the process's
// Runtime, and which decides when the Runtime may be destroyed.
//
//   kNotStarted --BeginStart (one winner)--> kStarting --FinishStart--> kActive | kPassThrough
//   kActive --Retire (only while no borrower is inside)--> kPassThrough
//
// The state and the number of borrowers share one atomic word, so "nobody is inside, stop
// handing the Runtime out" is one compare-and-swap: a borrower arriving at any moment either
// gets the Runtime (and Retire fails) or finds the gate retired. No borrower ever sees an
// in-between state and passes its call through unaccounted. Constant-initialised: no code runs
// at load time.
#pragma once

#include <atomic>
#include <cstdint>

namespace kvcached {
class Runtime;
}

namespace kvcached::hooks {

class RuntimeGate {
 public:
  enum State : std::uint64_t { kNotStarted = 0, kStarting = 1, kActive = 2, kPassThrough = 3 };

  constexpr RuntimeGate() = default;
  RuntimeGate(const RuntimeGate&) = delete;
  RuntimeGate& operator=(const RuntimeGate&) = delete;
  RuntimeGate(RuntimeGate&&) = delete;
  RuntimeGate& operator=(RuntimeGate&&) = delete;
  ~RuntimeGate() = default;

  // While active: counts one borrower and returns the Runtime (the caller must Leave()). Else
  // returns null, counts nothing, and tells the state.
  Runtime* Enter(State* state) noexcept;
  void Leave() noexcept;

  // kNotStarted -> kStarting; true for the one caller that must start the Runtime.
  bool BeginStart() noexcept;
  // kStarting -> kActive with `runtime`, or kPassThrough when it is null.
  void FinishStart(Runtime* runtime) noexcept;
  // kActive with no borrower -> kPassThrough, returning the Runtime for the caller to destroy.
  // Null, and nothing changed, when a borrower is inside or the gate is not active.
  Runtime* Retire() noexcept;
  // A fork child: back to kNotStarted (the parent's Runtime is abandoned, not destroyed).
  void ResetAfterFork() noexcept;

  [[nodiscard]] State state() const noexcept;
  [[nodiscard]] std::uint64_t borrowers() const noexcept;

 private:
  static constexpr std::uint64_t kStateMask = 3;
  static constexpr std::uint64_t kBorrower = 4;  // one borrower, above the two state bits

  std::atomic<std::uint64_t> word_{kNotStarted};
  std::atomic<Runtime*> runtime_{nullptr};
};

}  // namespace kvcached::hooks
