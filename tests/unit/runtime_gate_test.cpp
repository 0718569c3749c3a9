// RuntimeGate (hooks/runtime_gate.h): the start race has one winner, and retiring the Runtime at
// exit never lets a concurrent call see anything but "active" or "retired".
#include "hooks/runtime_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace kvcached::hooks {
namespace {

// The gate never dereferences the Runtime: any distinct address stands for one.
Runtime* FakeRuntime() {
  static int object = 0;
  return reinterpret_cast<Runtime*>(&object);
}

TEST(RuntimeGate, OneThreadStartsAndEveryoneThenBorrows) {
  RuntimeGate gate;
  RuntimeGate::State state = RuntimeGate::kActive;
  EXPECT_EQ(gate.Enter(&state), nullptr);
  EXPECT_EQ(state, RuntimeGate::kNotStarted);
  std::atomic<int> winners{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { winners += gate.BeginStart() ? 1 : 0; });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(winners.load(), 1);
  EXPECT_EQ(gate.Enter(&state), nullptr);
  EXPECT_EQ(state, RuntimeGate::kStarting);
  gate.FinishStart(FakeRuntime());
  EXPECT_EQ(gate.Enter(&state), FakeRuntime());
  EXPECT_EQ(gate.borrowers(), 1U);
  gate.Leave();
  EXPECT_EQ(gate.borrowers(), 0U);
}

TEST(RuntimeGate, AFailedStartPassesEverythingThrough) {
  RuntimeGate gate;
  ASSERT_TRUE(gate.BeginStart());
  gate.FinishStart(nullptr);
  RuntimeGate::State state = RuntimeGate::kActive;
  EXPECT_EQ(gate.Enter(&state), nullptr);
  EXPECT_EQ(state, RuntimeGate::kPassThrough);
  EXPECT_EQ(gate.Retire(), nullptr);
}

TEST(RuntimeGate, RetireHandsTheRuntimeOverOnlyWhenNobodyIsInside) {
  RuntimeGate gate;
  ASSERT_TRUE(gate.BeginStart());
  gate.FinishStart(FakeRuntime());
  ASSERT_EQ(gate.Enter(nullptr), FakeRuntime());
  EXPECT_EQ(gate.Retire(), nullptr);  // a borrower is inside
  EXPECT_EQ(gate.state(), RuntimeGate::kActive);
  gate.Leave();
  EXPECT_EQ(gate.Retire(), FakeRuntime());
  RuntimeGate::State state = RuntimeGate::kActive;
  EXPECT_EQ(gate.Enter(&state), nullptr);
  EXPECT_EQ(state, RuntimeGate::kPassThrough);
  EXPECT_EQ(gate.Retire(), nullptr);  // only once
}

// The exit handler's attempt to retire while another thread is inside must be invisible to
// every other thread: none of their calls may pass through (uncounted) meanwhile.
TEST(RuntimeGate, AFailedRetireIsInvisibleToConcurrentCalls) {
  RuntimeGate gate;
  ASSERT_TRUE(gate.BeginStart());
  gate.FinishStart(FakeRuntime());
  ASSERT_EQ(gate.Enter(nullptr), FakeRuntime());  // a long call: retiring must fail throughout
  std::atomic<bool> stop{false};
  std::atomic<long> passed_through{0};
  std::atomic<long> retired{0};
  std::thread exiting([&] {
    while (!stop.load(std::memory_order_relaxed)) retired += gate.Retire() != nullptr ? 1 : 0;
  });
  std::vector<std::thread> callers;
  for (int t = 0; t < 2; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 300000; ++i) {
        if (gate.Enter(nullptr) == nullptr) {
          ++passed_through;
        } else {
          gate.Leave();
        }
      }
    });
  }
  for (auto& c : callers) c.join();
  stop = true;
  exiting.join();
  EXPECT_EQ(retired.load(), 0);
  EXPECT_EQ(passed_through.load(), 0) << "calls passed through while the exit handler tried";
  gate.Leave();
}

TEST(RuntimeGate, AForkChildStartsAfresh) {
  RuntimeGate gate;
  ASSERT_TRUE(gate.BeginStart());
  gate.FinishStart(FakeRuntime());
  ASSERT_EQ(gate.Enter(nullptr), FakeRuntime());  // the parent's borrower, gone in the child
  gate.ResetAfterFork();
  EXPECT_EQ(gate.state(), RuntimeGate::kNotStarted);
  EXPECT_EQ(gate.borrowers(), 0U);
  EXPECT_TRUE(gate.BeginStart());
}

}  // namespace
}  // namespace kvcached::hooks
