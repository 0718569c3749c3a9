// The Runtime facade: lazy start, device state, the region registry, all-or-nothing batched
// acquires, budget views and labels.
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "core/runtime/device_state.h"
#include "tests/support/child_process.h"
#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

using namespace kvcached::testing;  // NOLINT(google-build-using-namespace)

int ThreadCount() {
  int n = 0;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  while (dirent* e = readdir(dir)) n += e->d_name[0] != '.' ? 1 : 0;
  closedir(dir);
  return n;
}

using RuntimeTest = LeakCheckedRuntimeTest;

TEST_F(RuntimeTest, NoThreadAndNoDeviceWorkUntilADeviceIsUsed) {
  // ThreadSanitizer starts a thread of its own with the process's first thread: have that happen
  // before counting, so that only the runtime's threads are counted.
  std::thread([] {}).join();
  int threads = ThreadCount();
  ASSERT_GT(threads, 0);
  std::uint64_t retains = CallCount("cuDevicePrimaryCtxRetain");
  std::uint64_t creates = CallCount("cuMemCreate");
  auto created = Runtime::Create(QuietConfig());
  ASSERT_TRUE(created.ok()) << created.status().message();
  std::unique_ptr<Runtime> runtime = std::move(created).value();
  EXPECT_EQ(ThreadCount(), threads);
  EXPECT_EQ(CallCount("cuDevicePrimaryCtxRetain"), retains);
  // Queries that need no device state do not create it.
  EXPECT_FALSE(runtime->IsRegionBase(0x1000));
  EXPECT_EQ(runtime->RegionDevice(0x1000), -1);
  EXPECT_TRUE(runtime->Trim(0).ok());
  auto stats = runtime->Stats(0);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats.value().budget_limit_bytes, 0U);
  EXPECT_EQ(CallCount("cuDevicePrimaryCtxRetain"), retains);
  EXPECT_EQ(ThreadCount(), threads);

  // Device state: context and budget, still no thread and no physical memory.
  ASSERT_TRUE(runtime->BudgetMemInfo(0).ok());
  EXPECT_EQ(CallCount("cuDevicePrimaryCtxRetain"), retains + 1);
  EXPECT_EQ(CallCount("cuMemCreate"), creates);
  EXPECT_EQ(ThreadCount(), threads);

  // The first lazy region starts the one background thread.
  auto base = runtime->CreateRegion(0, kPage, RegionKind::kLazy);
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(ThreadCount(), threads + 1);
  ASSERT_TRUE(runtime->CreateRegion(0, kPage, RegionKind::kLazy).ok());
  EXPECT_EQ(ThreadCount(), threads + 1);
  runtime.reset();
  EXPECT_EQ(ThreadCount(), threads);
}

TEST_F(RuntimeTest, DefaultBudgetIsUtilizationTimesTotalMemoryOrTheExplicitBudget) {
  Config c = QuietConfig();
  c.gpu_utilization = 0.5;
  auto a = Runtime::Create(c);
  ASSERT_TRUE(a.ok());
  auto info = a.value()->BudgetMemInfo(0);
  ASSERT_TRUE(info.ok()) << info.status().message();
  int dev_total_mb = 8192;
  if (const char* env = std::getenv("FAKECUDA_TOTAL_MB")) dev_total_mb = std::atoi(env);
  EXPECT_EQ(info.value().second, static_cast<std::uint64_t>(dev_total_mb) * kMiB / 2);
  EXPECT_EQ(info.value().first, info.value().second);

  c.budget_bytes = 64 * kMiB;
  auto b = Runtime::Create(c);
  ASSERT_TRUE(b.ok());
  info = b.value()->BudgetMemInfo(0);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info.value().second, 64 * kMiB);
}

TEST_F(RuntimeTest, BudgetFactoryGetsTheDeviceIdentity) {
  DeviceIdentity seen;
  auto rt = Runtime::Create(
      QuietConfig(), nullptr,
      [&seen](const Config&, const DeviceIdentity& id) -> Result<std::unique_ptr<Budget>> {
        seen = id;
        return std::unique_ptr<Budget>(std::make_unique<LocalBudget>(1));
      });
  ASSERT_TRUE(rt.ok());
  ASSERT_TRUE(rt.value()->BudgetMemInfo(0).ok());
  EXPECT_EQ(seen.ordinal, 0);
  EXPECT_TRUE(std::regex_match(
      seen.uuid, std::regex("GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")))
      << seen.uuid;
  EXPECT_GT(seen.total_bytes, 0U);

  auto failing =
      Runtime::Create(QuietConfig(), nullptr,
                      [](const Config&, const DeviceIdentity&) -> Result<std::unique_ptr<Budget>> {
                        return Status(Errc::kInvalid, "ledger is corrupt");
                      });
  ASSERT_TRUE(failing.ok());
  auto region = failing.value()->CreateRegion(0, kPage, RegionKind::kLazy);
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().message(), "ledger is corrupt");
}

TEST(GpuUuidTest, FormatsLikeNvidiaSmi) {
  CUuuid u{};
  for (int i = 0; i < 16; ++i) u.bytes[i] = static_cast<char>(0xa0 + i);
  EXPECT_EQ(FormatGpuUuid(u), "GPU-a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
}

TEST_F(RuntimeTest, RegistryFindsRegionsByAnyInteriorAddress) {
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t a = Lazy(3 * kPage);
  std::uint64_t b = Lazy(kPage);
  ASSERT_NE(a, b);
  EXPECT_TRUE(rt().IsRegionBase(a));
  EXPECT_FALSE(rt().IsRegionBase(a + 1));
  EXPECT_EQ(rt().RegionDevice(a + 3 * kPage - 1), 0);
  EXPECT_EQ(rt().RegionDevice(a + 3 * kPage), b == a + 3 * kPage ? 0 : -1);
  EXPECT_EQ(rt().Info(a + kPage + 5).value().base, a);
  EXPECT_EQ(rt().Info(b).value().size, kPage);
  EXPECT_EQ(rt().PageStateAt(a - 1).status().code(), Errc::kNotFound);
  EXPECT_EQ(StatsOf(rt()).regions, 2U);
  EXPECT_EQ(StatsOf(rt()).reserved_va_bytes, 4 * kPage);
  ASSERT_TRUE(rt().DestroyRegion(a).ok());
  EXPECT_FALSE(rt().IsRegionBase(a));
  EXPECT_EQ(rt().DestroyRegion(a + kPage).code(), Errc::kNotFound);
  EXPECT_EQ(StatsOf(rt()).regions, 1U);
}

TEST_F(RuntimeTest, BadCreateArguments) {
  t_ = MakeRuntime(QuietConfig());
  EXPECT_EQ(rt().CreateRegion(0, 0, RegionKind::kLazy).status().code(), Errc::kInvalid);
  auto bad = rt().CreateRegion(7, kPage, RegionKind::kLazy);
  EXPECT_EQ(bad.status().code(), Errc::kInvalid);
  EXPECT_NE(bad.status().message().find("GPU 7 does not exist"), std::string::npos);
  EXPECT_EQ(rt().CreateRegion(0, kPage, static_cast<RegionKind>(9)).status().code(),
            Errc::kInvalid);
  EXPECT_EQ(rt().Stats(-1).status().code(), Errc::kInvalid);
}

TEST_F(RuntimeTest, PageSizeMustBeAMultipleOfTheGranularity) {
  Config c = QuietConfig();
  c.page_size_mb = 3;
  t_ = MakeRuntime(c);
  auto r = rt().CreateRegion(0, kPage, RegionKind::kLazy);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("KVCACHED_PAGE_SIZE_MB=3"), std::string::npos)
      << r.status().message();
}

TEST_F(RuntimeTest, LargerPagesAreUsedThroughout) {
  Config c = QuietConfig();
  c.page_size_mb = 8;
  t_ = MakeRuntime(c);
  std::uint64_t base = Lazy(20 * kMiB);
  auto info = rt().Info(base).value();
  EXPECT_EQ(info.page_size, 8 * kMiB);
  EXPECT_EQ(info.pages, 3U);
  ASSERT_TRUE(AcquireOne(rt(), base + 9 * kMiB, 1).ok());
  EXPECT_EQ(StateOf(rt(), base + 8 * kMiB), PageState::kInUse);
  EXPECT_EQ(StateOf(rt(), base + 16 * kMiB), PageState::kZero);
  EXPECT_EQ(t_.budget->View().in_use, 8 * kMiB);
  EXPECT_EQ(t_.budget->charged(), 8 * kMiB);
  EXPECT_EQ(t_.budget->View().others, 8 * kMiB);  // the zero page is one page of 8 MiB
}

TEST_F(RuntimeTest, BatchedAcquireIsAllOrNothingAcrossRegions) {
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t a = Lazy(4 * kPage);
  std::uint64_t b = Lazy(4 * kPage);
  std::uint64_t charged = t_.budget->charged();

  // The last range is bad: the ranges before it must be undone, pages back to ZERO.
  ByteRange bad[] = {{a, kPage}, {b + kPage, 2 * kPage}, {b + 3 * kPage, 2 * kPage}};
  Status st = rt().Acquire(bad);
  EXPECT_EQ(st.code(), Errc::kInvalid);
  for (int p = 0; p < 4; ++p) {
    EXPECT_EQ(StateOf(rt(), a + p * kPage), PageState::kZero);
    EXPECT_EQ(StateOf(rt(), b + p * kPage), PageState::kZero);
  }
  EXPECT_EQ(t_.budget->charged(), charged);
  EXPECT_EQ(t_.budget->View().in_use, 0U);

  // An unknown address in the middle: same.
  ByteRange unknown[] = {{a, kPage}, {0x10, 1}, {b, 1}};
  EXPECT_EQ(rt().Acquire(unknown).code(), Errc::kNotFound);
  EXPECT_EQ(StateOf(rt(), a), PageState::kZero);

  // Already-held pages keep their references through a failed batch.
  ASSERT_TRUE(AcquireOne(rt(), a, 1).ok());
  ByteRange overlap[] = {{a, 2}, {b + 3 * kPage, 2 * kPage}};
  EXPECT_FALSE(rt().Acquire(overlap).ok());
  EXPECT_EQ(StateOf(rt(), a), PageState::kInUse);
  ASSERT_TRUE(ReleaseOne(rt(), a, 1).ok());
  EXPECT_EQ(StateOf(rt(), a), PageState::kMappedFree);

  ByteRange good[] = {{a + kPage, 10}, {b + 2 * kPage, kPage + 1}};
  ASSERT_TRUE(rt().Acquire(good).ok());
  EXPECT_EQ(StateOf(rt(), a + kPage), PageState::kInUse);
  EXPECT_EQ(StateOf(rt(), b + 2 * kPage), PageState::kInUse);
  EXPECT_EQ(StateOf(rt(), b + 3 * kPage), PageState::kInUse);
  ASSERT_TRUE(rt().Release(good).ok());
  EXPECT_EQ(StateOf(rt(), b + 3 * kPage), PageState::kMappedFree);
}

TEST_F(RuntimeTest, BatchedAcquireRollsBackWhenTheBudgetRefusesALaterRange) {
  t_ = MakeRuntime(QuietConfig(), 3 * kPage);
  std::uint64_t a = Lazy(4 * kPage);
  std::uint64_t b = Lazy(4 * kPage);
  ByteRange ranges[] = {{a, 2 * kPage}, {b, 2 * kPage}};
  Status st = rt().Acquire(ranges);
  EXPECT_EQ(st.code(), Errc::kNoMemory);
  EXPECT_EQ(StateOf(rt(), a), PageState::kZero);
  EXPECT_EQ(StateOf(rt(), a + kPage), PageState::kZero);
  EXPECT_EQ(StateOf(rt(), b), PageState::kZero);
  EXPECT_EQ(t_.budget->View().in_use, 0U);
  // Within the budget the same batch shape works.
  ByteRange fits[] = {{a, 2 * kPage}, {b, kPage}};
  EXPECT_TRUE(rt().Acquire(fits).ok());
}

TEST_F(RuntimeTest, BudgetMemInfoAndPassthroughAccounting) {
  t_ = MakeRuntime(QuietConfig(), 64 * kMiB);
  auto info = rt().BudgetMemInfo(0).value();
  EXPECT_EQ(info.second, 64 * kMiB);
  EXPECT_EQ(info.first, 64 * kMiB);
  std::uint64_t base = Lazy(8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 2 * kPage).ok());
  rt().NotePassthrough(0, 10 * kMiB);
  info = rt().BudgetMemInfo(0).value();
  EXPECT_EQ(info.first, 64 * kMiB - 3 * kPage - 10 * kMiB);  // zero page + 2 pages + 10 MiB
  EXPECT_EQ(StatsOf(rt()).passthrough_bytes, 10 * kMiB);
  EXPECT_EQ(t_.budget->View().others, 10 * kMiB + kPage);  // and the zero page, unbudgeted
  rt().NotePassthrough(0, -4 * static_cast<std::int64_t>(kMiB));
  EXPECT_EQ(StatsOf(rt()).passthrough_bytes, 6 * kMiB);
}

// A runtime whose device budgets are counted as they are made (device 0's kept in *budget).
TestRuntime RuntimeCountingBudgets(std::atomic<int>* made) {
  TestRuntime t;
  auto slot = std::make_shared<TestBudget*>(nullptr);
  auto rt = Runtime::Create(
      QuietConfig(), nullptr,
      [made, slot](const Config&, const DeviceIdentity& id) -> Result<std::unique_ptr<Budget>> {
        made->fetch_add(1);
        auto b = std::make_unique<TestBudget>(1ULL << 40);
        if (id.ordinal == 0) *slot = b.get();
        return std::unique_ptr<Budget>(std::move(b));
      });
  EXPECT_TRUE(rt.ok());
  if (rt.ok()) t.rt = std::move(rt).value();
  t.budget = nullptr;
  return t;
}

TEST_F(RuntimeTest, PassthroughBeforeTheDeviceIsUsedClaimsNoBudgetAndReachesItLater) {
  std::atomic<int> made{0};
  t_ = RuntimeCountingBudgets(&made);
  const std::uint64_t retains = CallCount("cuDevicePrimaryCtxRetain");
  // The engine's own cudaMalloc/cudaFree: no device state, no budget (no ledger slot), no driver.
  rt().NotePassthrough(0, 10 * kMiB);
  rt().NotePassthrough(0, -3 * static_cast<std::int64_t>(kMiB));
  EXPECT_EQ(made.load(), 0);
  EXPECT_EQ(CallCount("cuDevicePrimaryCtxRetain"), retains);
  EXPECT_EQ(StatsOf(rt()).passthrough_bytes, 7 * kMiB);
  // The first region creates the state; the bytes noted so far reach its budget then.
  ASSERT_NE(Lazy(4 * kPage), 0U);
  EXPECT_EQ(made.load(), 1);
  auto stats = rt().Stats(0).value();
  EXPECT_EQ(stats.passthrough_bytes, 7 * kMiB);
  const auto info = rt().BudgetMemInfo(0).value();
  EXPECT_EQ(info.second - info.first, 7 * kMiB + kPage);  // pass-through + zero page
  rt().NotePassthrough(0, -7 * static_cast<std::int64_t>(kMiB));
  EXPECT_EQ(StatsOf(rt()).passthrough_bytes, 0U);
  const auto after = rt().BudgetMemInfo(0).value();
  EXPECT_EQ(after.second - after.first, kPage);
}

TEST_F(RuntimeTest, PassthroughNotedWhileTheDeviceStartsIsCountedExactlyOnce) {
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> made{0};
    t_ = RuntimeCountingBudgets(&made);
    std::atomic<bool> go{false};
    std::vector<std::thread> engines;
    for (int t = 0; t < 4; ++t) {
      engines.emplace_back([&] {
        while (!go.load()) {
        }
        for (int i = 0; i < 2000; ++i) {
          rt().NotePassthrough(0, 4096);
          rt().NotePassthrough(0, -4096);
        }
        rt().NotePassthrough(0, 4096);  // one allocation left per thread
      });
    }
    go = true;
    const auto info = rt().BudgetMemInfo(0);  // creates the device state among the notes
    ASSERT_TRUE(info.ok());
    for (auto& e : engines) e.join();
    const auto settled = rt().BudgetMemInfo(0).value();
    EXPECT_EQ(settled.second - settled.first, 4U * 4096U) << "round " << round;
    EXPECT_EQ(StatsOf(rt()).passthrough_bytes, 4U * 4096U);
    t_.rt.reset();
  }
}

// Runtime::BudgetHeadroom (kvcached_budget_headroom_get): what an engine refused a while ago
// asks every step to learn whether memory came back.
TEST_F(RuntimeTest, HeadroomIsTheWholeBudgetWhileNothingIsHeld) {
  t_ = MakeRuntime(QuietConfig(), 64 * kMiB);
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 64 * kMiB);
  (void)Lazy(8 * kPage);  // its zero page is outside the budget
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 64 * kMiB);
}

TEST_F(RuntimeTest, HeadroomDropsByWhatIsAcquiredAndCountsPagesKeptMappedAsRoom) {
  t_ = MakeRuntime(QuietConfig(), 64 * kMiB);
  const std::uint64_t base = Lazy(8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 3 * kPage).ok());
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 64 * kMiB - 3 * kPage);
  // A released page stays mapped (the trim waits): still charged, yet an acquire takes it before
  // it is refused, so it is room.
  ASSERT_TRUE(ReleaseOne(rt(), base, kPage).ok());
  ASSERT_EQ(StateOf(rt(), base), PageState::kMappedFree);
  ASSERT_EQ(t_.budget->View().reserved, kPage);
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 64 * kMiB - 2 * kPage);
}

TEST_F(RuntimeTest, HeadroomIsZeroOnAFullBudgetAndAskingRecordsNoRefusal) {
  t_ = MakeRuntime(QuietConfig(), 8 * kPage);
  const std::uint64_t base = Lazy(16 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 8 * kPage).ok());
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 0U);
  EXPECT_FALSE(AcquireOne(rt(), base + 8 * kPage, kPage).ok()) << "the budget disagrees";
  const std::uint64_t refusals = StatsOf(rt()).budget_refusals;
  const std::uint64_t pressure = t_.budget->pressure_requests_.load();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(rt().BudgetHeadroom(0).value(), 0U);
  EXPECT_EQ(StatsOf(rt()).budget_refusals, refusals);
  EXPECT_EQ(t_.budget->pressure_requests_.load(), pressure);
}

TEST_F(RuntimeTest, HeadroomOfADeviceNotUsedYetIsZeroAndAttachesNoBudget) {
  std::atomic<int> made{0};
  t_ = RuntimeCountingBudgets(&made);
  auto headroom = rt().BudgetHeadroom(0);
  ASSERT_TRUE(headroom.ok()) << headroom.status().message();
  EXPECT_EQ(headroom.value(), 0U);
  EXPECT_EQ(made.load(), 0) << "a query attached a budget";
  EXPECT_EQ(rt().BudgetHeadroom(-1).status().code(), Errc::kInvalid);
}

// Unlinks a ledger segment's name when the test ends (tests leave nothing in /dev/shm).
class SegmentNameRemovedAtEnd {
 public:
  explicit SegmentNameRemovedAtEnd(std::string name) : name_(std::move(name)) {}
  ~SegmentNameRemovedAtEnd() { (void)ledger::Segment::Remove(name_); }
  SegmentNameRemovedAtEnd(const SegmentNameRemovedAtEnd&) = delete;
  SegmentNameRemovedAtEnd& operator=(const SegmentNameRemovedAtEnd&) = delete;
  SegmentNameRemovedAtEnd(SegmentNameRemovedAtEnd&&) = delete;
  SegmentNameRemovedAtEnd& operator=(SegmentNameRemovedAtEnd&&) = delete;
  [[nodiscard]] const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// Another process on the GPU budget is a second slot of the ledger segment that the runtime's
// budget uses (as the ledger tests have it): what it holds is no room, what it frees is.
TEST_F(RuntimeTest, HeadroomCountsWhatAnotherProcessHoldsAndWhatItFrees) {
  const SegmentNameRemovedAtEnd segment_name("kvcached_test_headroom_" +
                                             std::to_string(::getpid()));
  ledger::CreateParams params;
  params.gpu_total = 64 * kPage;
  params.budget = 16 * kPage;
  params.gpu_uuid = "GPU-headroom-test";
  auto created = ledger::Segment::OpenOrCreate(segment_name.name(), params);
  ASSERT_TRUE(created.ok()) << created.status().message();
  std::shared_ptr<ledger::Segment> segment(std::move(created).value());
  auto other = ledger::LedgerBudget::Attach(segment, "other");
  ASSERT_TRUE(other.ok()) << other.status().message();
  auto mine = std::make_shared<ledger::LedgerBudget*>(nullptr);
  auto rt_made = Runtime::Create(
      QuietConfig(), nullptr,
      [segment, mine](const Config&, const DeviceIdentity&) -> Result<std::unique_ptr<Budget>> {
        auto attached = ledger::LedgerBudget::Attach(segment, "engine");
        if (!attached.ok()) return attached.status();
        *mine = attached.value().get();
        return std::unique_ptr<Budget>(std::move(attached).value());
      });
  ASSERT_TRUE(rt_made.ok()) << rt_made.status().message();
  t_.rt = std::move(rt_made).value();
  const std::uint64_t base = Lazy(16 * kPage);
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 16 * kPage);
  ASSERT_TRUE(other.value()->TryCharge(10 * kPage));
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 6 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 6 * kPage).ok());
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 0U);
  other.value()->Uncharge(4 * kPage);
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 4 * kPage);
  // kvctl limit below what it holds, while the GPU budget has room: 0, not a wrapped count.
  ASSERT_NE(*mine, nullptr);
  const std::uint32_t slot = (*mine)->slot_index();
  const std::uint64_t owner = ledger::Load(segment->slot(slot).owner);
  ASSERT_TRUE(ledger::SetSlotLimit(*segment, slot, owner, 2 * kPage).ok());
  EXPECT_EQ(rt().BudgetHeadroom(0).value(), 0U);
  ASSERT_TRUE(ReleaseOne(rt(), base, 6 * kPage).ok());
  t_.rt.reset();  // its slot goes before the segment's name
}

TEST_F(RuntimeTest, ProcessMemInfoCountsWhatTheEngineAllocatedAndNothingElse) {
  t_ = MakeRuntime(QuietConfig(), 64 * kMiB);
  auto fresh = rt().ProcessMemInfo(0).value();
  EXPECT_EQ(fresh.second, 64 * kMiB);
  EXPECT_EQ(fresh.first, 64 * kMiB);
  // A region counts at its full size from its creation, as a real allocation would; backing
  // its pages (and the zero page, the reserve) changes nothing.
  std::uint64_t base = Lazy(8 * kPage);
  const auto with_region = rt().ProcessMemInfo(0).value();
  EXPECT_EQ(with_region.first, 64 * kMiB - 8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 3 * kPage).ok());
  EXPECT_EQ(rt().ProcessMemInfo(0).value(), with_region);
  ASSERT_TRUE(rt().Trim(0).ok());
  EXPECT_EQ(rt().ProcessMemInfo(0).value(), with_region);
  // Pass-through allocations count; another process's charges on the budget do not.
  rt().NotePassthrough(0, 4 * kMiB);
  EXPECT_EQ(rt().ProcessMemInfo(0).value().first, 64 * kMiB - 8 * kPage - 4 * kMiB);
  rt().NotePassthrough(0, -4 * static_cast<std::int64_t>(kMiB));
  ASSERT_TRUE(ReleaseOne(rt(), base, 3 * kPage).ok());
  ASSERT_TRUE(rt().DestroyRegion(base).ok());
  EXPECT_EQ(rt().ProcessMemInfo(0).value(), fresh);
  // The limit is the total (kvctl limit changes it).
  t_.budget->SetLimit(32 * kMiB);
  EXPECT_EQ(rt().ProcessMemInfo(0).value().second, 32 * kMiB);
}

TEST_F(RuntimeTest, LabelReachesTheBudget) {
  t_ = MakeRuntime(QuietConfig());
  rt().SetLabel("vllm-a");
  EXPECT_EQ(t_.budget->label_, "vllm-a");
}

// Needs two fake devices, which the fake reads when it loads: runs as a child process.
TEST(RuntimeMultiDeviceTest, DevicesAreIndependentAndGetTheLabelLater) {
  if (!InChild()) {
    ChildResult r = RunSelf("RuntimeMultiDeviceTest.*", {{"FAKECUDA_DEVICES", "2"}});
    EXPECT_TRUE(r.ExitedWith(0)) << r.Describe() << "\n" << r.output;
    return;
  }
  std::vector<std::string> uuids(2);
  std::vector<TestBudget*> budgets(2, nullptr);
  auto created = Runtime::Create(
      QuietConfig(), nullptr,
      [&](const Config&, const DeviceIdentity& id) -> Result<std::unique_ptr<Budget>> {
        auto b = std::make_unique<TestBudget>(1ULL << 40);
        uuids[id.ordinal] = id.uuid;
        budgets[id.ordinal] = b.get();
        return std::unique_ptr<Budget>(std::move(b));
      });
  ASSERT_TRUE(created.ok());
  auto& rt = *created.value();
  rt.SetLabel("engine-x");  // before device 1 exists
  auto a = rt.CreateRegion(0, kPage, RegionKind::kLazy);
  auto b = rt.CreateRegion(1, 2 * kPage, RegionKind::kLazy);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(uuids[0], uuids[1]);  // distinct UUIDs
  ASSERT_NE(budgets[1], nullptr);
  EXPECT_EQ(budgets[0]->label_, "engine-x");
  EXPECT_EQ(budgets[1]->label_, "engine-x");
  EXPECT_EQ(rt.RegionDevice(b.value()), 1);
  ASSERT_TRUE(AcquireOne(rt, b.value(), 1).ok());
  EXPECT_EQ(StatsOf(rt, 1).in_use_bytes, kPage);
  EXPECT_EQ(StatsOf(rt, 0).in_use_bytes, 0U);
  EXPECT_EQ(StatsOf(rt, 1).regions, 1U);
}

}  // namespace
}  // namespace kvcached
