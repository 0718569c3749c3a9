// Shared by the core's unit tests: a Runtime on the fake driver with a quiet, deterministic
// configuration (no map-ahead, no pre-allocation, no trim unless a test asks) and a budget the
// test can steer.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/budget/local_budget.h"
#include "core/config/config.h"
#include "core/runtime/runtime.h"
#include "tests/support/child_process.h"
#include "tests/support/fake_driver.h"

namespace kvcached::testing {

inline constexpr std::uint64_t kMiB = 1ULL << 20;
inline constexpr std::uint64_t kPage = 2 * kMiB;

// A LocalBudget whose pressure signal a test can raise.
class TestBudget final : public Budget {
 public:
  explicit TestBudget(std::uint64_t limit) : local_(limit) {}
  bool TryCharge(std::uint64_t b) override { return local_.TryCharge(b); }
  [[nodiscard]] std::uint64_t Headroom() const override { return local_.Headroom(); }
  void Uncharge(std::uint64_t b) override { local_.Uncharge(b); }
  void MoveToInUse(std::uint64_t b) override { local_.MoveToInUse(b); }
  void MoveToReserved(std::uint64_t b) override { local_.MoveToReserved(b); }
  void AddOther(std::int64_t d) override { local_.AddOther(d); }
  void RequestPressure(std::uint64_t b) override { pressure_requests_ += b; }
  bool TakePressureSignal() override { return pressure_.exchange(false); }
  void Heartbeat() override { ++heartbeats_; }
  void SetLabel(const std::string& label) override { label_ = label; }
  [[nodiscard]] BudgetView View() const override { return local_.View(); }

  void SetLimit(std::uint64_t bytes) { local_.SetLimit(bytes); }
  void RaisePressure() { pressure_ = true; }
  [[nodiscard]] std::uint64_t charged() const { return View().all_charged; }

  std::atomic<std::uint64_t> pressure_requests_{0};
  std::atomic<std::uint64_t> heartbeats_{0};
  std::string label_;

 private:
  LocalBudget local_;
  std::atomic<bool> pressure_{false};
};

// Quiet defaults: nothing happens in the background unless a test turns it on.
inline Config QuietConfig() {
  Config c;
  c.cuda_driver = DriverPath();
  c.map_ahead_pages = 0;
  c.map_ahead_burst_pages = 0;  // demand-following map-ahead: tests that want it turn it on
  c.page_prealloc = false;
  c.min_reserved_pages = 0;
  c.max_reserved_pages = 0;
  c.trim_delay_ms = 60000;
  // One-page zero aliases: the driver-call sequences and budgets these tests count are those of
  // one alias per page. Multi-page aliases (the default) are covered by zero_chunk_test.cpp and
  // the integrity tests.
  c.zero_chunk_mb = 2;
  return c;
}

struct TestRuntime {
  std::unique_ptr<Runtime> rt;
  TestBudget* budget = nullptr;  // device 0's budget, owned by rt (valid once device 0 is used)
};

// A runtime whose devices get TestBudgets of `limit` bytes.
inline TestRuntime MakeRuntime(const Config& config, std::uint64_t limit = 1ULL << 40) {
  TestRuntime t;
  auto budget_slot = std::make_shared<TestBudget*>(nullptr);
  auto rt = Runtime::Create(
      config, nullptr,
      [limit, budget_slot](const Config&,
                           const DeviceIdentity& id) -> Result<std::unique_ptr<Budget>> {
        auto b = std::make_unique<TestBudget>(limit);
        if (id.ordinal == 0) *budget_slot = b.get();
        return std::unique_ptr<Budget>(std::move(b));
      });
  EXPECT_TRUE(rt.ok()) << rt.status().message();
  if (!rt.ok()) return t;
  t.rt = std::move(rt).value();
  // Device 0's state (and so its budget) is created by its first use; a test that needs the
  // budget earlier calls Stats/BudgetMemInfo. Make the pointer reachable after that.
  (void)t.rt->BudgetMemInfo(0);
  t.budget = *budget_slot;
  return t;
}

// Polls pred every millisecond until it holds or the timeout passes.
inline bool WaitFor(const std::function<bool()>& pred,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

inline PageState StateOf(Runtime& rt, std::uint64_t addr) {
  auto st = rt.PageStateAt(addr);
  EXPECT_TRUE(st.ok()) << st.status().message();
  return st.ok() ? st.value() : PageState::kZero;
}

inline Status AcquireOne(Runtime& rt, std::uint64_t addr, std::uint64_t length) {
  ByteRange r{addr, length};
  return rt.Acquire({&r, 1});
}

inline Status ReleaseOne(Runtime& rt, std::uint64_t addr, std::uint64_t length) {
  ByteRange r{addr, length};
  return rt.Release({&r, 1});
}

inline DeviceStats StatsOf(Runtime& rt, int device = 0) {
  auto s = rt.Stats(device);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? s.value() : DeviceStats{};
}

// Calls of every virtual-memory driver function so far (a warm acquire must add none).
inline std::uint64_t VmmCalls() {
  std::uint64_t n = 0;
  for (const char* fn :
       {"cuMemCreate", "cuMemRelease", "cuMemMap", "cuMemUnmap", "cuMemSetAccess",
        "cuMemAddressReserve", "cuMemAddressFree", "cuCtxGetCurrent", "cuCtxSetCurrent"}) {
    n += CallCount(fn);
  }
  return n;
}

// A failed Status whose message names the driver call that failed and its CUresult.
inline void ExpectNames(const Status& st, const std::string& call) {
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(call + " failed: CUDA_ERROR_"), std::string::npos)
      << "expected a message naming " << call << ", got: " << st.message();
}

// A test on the fake driver that ends with nothing leaked: faults cleared, the runtime (t_, made
// by the test or a derived SetUp) destroyed, and the fake's counts back where they started.
class LeakCheckedRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KVCACHED_REQUIRE_FAKE_DRIVER();
    before_ = Counts();
  }
  void TearDown() override {
    if (!IsFakeDriver()) return;
    ClearFaults();
    t_.rt.reset();
    EXPECT_TRUE(NoLeaksSince(before_));
  }
  Runtime& rt() { return *t_.rt; }
  // A lazy region of `size` bytes on device 0 (0 if creation failed, which fails the test).
  std::uint64_t Lazy(std::uint64_t size) {
    auto base = rt().CreateRegion(0, size, RegionKind::kLazy);
    EXPECT_TRUE(base.ok()) << base.status().message();
    return base.ok() ? base.value() : 0;
  }
  FakeCounts before_;
  TestRuntime t_;
};

// True when one byte of every page of [base, base + pages * kPage) can be read (in a forked
// child): a page without a usable mapping faults (SIGSEGV on the fake driver, as on the GPU).
inline bool AllReadable(std::uint64_t base, std::uint64_t pages) {
  return !DiesOfSegv([base, pages] {
    for (std::uint64_t p = 0; p < pages; ++p) {
      (void)*reinterpret_cast<volatile unsigned char*>(base + p * kPage);
    }
  });
}

}  // namespace kvcached::testing
