// The engine hook's step totals in the ledger slot (kvcached_report_engine_steps): stored as
// reported (the last report wins), read back by the snapshot, kept across a re-registration,
// cleared for the next owner, and validated (a free slot holding them is refused).
#include <gtest/gtest.h>

#include <cstring>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_snapshot.h"
#include "core/ledger/ledger_validate.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

using testing::ScopedSegmentName;

constexpr std::uint64_t kPage = 2ULL << 20;

std::shared_ptr<Segment> Create(const std::string& name) {
  CreateParams p;
  p.gpu_total = 100 * kPage;
  p.budget = 10 * kPage;
  p.gpu_uuid = "GPU-engine-steps";
  auto seg = Segment::OpenOrCreate(name, p);
  EXPECT_TRUE(seg.ok()) << seg.status().message();
  return seg.ok() ? std::shared_ptr<Segment>(std::move(seg).value()) : nullptr;
}

const SlotSnapshot* Find(const SegmentSnapshot& snap, std::uint32_t index) {
  for (const auto& s : snap.slots) {
    if (s.index == index) return &s;
  }
  return nullptr;
}

TEST(LedgerEngineSteps, UnreportedUntilTheFirstReportThenTheLastReportWins) {
  ScopedSegmentName name("engine_steps");
  auto seg = Create(name.name());
  ASSERT_TRUE(seg);
  auto b = LedgerBudget::Attach(seg, "engine");
  ASSERT_TRUE(b.ok()) << b.status().message();
  const std::uint32_t slot = b.value()->slot_index();
  {
    const SegmentSnapshot snap = TakeSnapshot(*seg);
    const SlotSnapshot* s = Find(snap, slot);
    ASSERT_NE(s, nullptr);
    EXPECT_FALSE(s->engine_reported);
  }
  b.value()->ReportEngineSteps({100, 5'000'000, 300});
  b.value()->ReportEngineSteps({250, 9'000'000, 700});
  {
    const SegmentSnapshot snap = TakeSnapshot(*seg);
    const SlotSnapshot* s = Find(snap, slot);
    ASSERT_NE(s, nullptr);
    EXPECT_TRUE(s->engine_reported);
    EXPECT_EQ(s->engine_steps, 250U);  // totals, not increments
    EXPECT_EQ(s->engine_hook_ns, 9'000'000U);
    EXPECT_EQ(s->engine_hook_c_calls, 700U);
  }
  // A smaller total (a restarted counter) is stored as given.
  b.value()->ReportEngineSteps({3, 10, 0});
  const SegmentSnapshot snap = TakeSnapshot(*seg);
  const SlotSnapshot* s = Find(snap, slot);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->engine_steps, 3U);
  EXPECT_EQ(s->engine_hook_ns, 10U);
  EXPECT_EQ(s->engine_hook_c_calls, 0U);
  EXPECT_TRUE(ValidateSegment(seg->Copy(), seg->path()).ok());
}

TEST(LedgerEngineSteps, ClearedWhenTheSlotIsReleasedAndForTheNextOwner) {
  ScopedSegmentName name("engine_steps_next");
  auto seg = Create(name.name());
  ASSERT_TRUE(seg);
  std::uint32_t first = 0;
  {
    auto b = LedgerBudget::Attach(seg, "first");
    ASSERT_TRUE(b.ok());
    first = b.value()->slot_index();
    b.value()->ReportEngineSteps({7, 8, 9});
  }
  const LedgerSlot& freed = seg->slot(first);
  EXPECT_EQ(Load(freed.engine_steps) + Load(freed.engine_hook_ns) + Load(freed.engine_hook_c_calls),
            0U);
  // Even a slot left with totals (a writer of an older build) starts from zero for its next owner.
  Atomic(seg->slot(first).engine_steps).store(5);
  auto next = LedgerBudget::Attach(seg, "next");
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next.value()->slot_index(), first);
  const SegmentSnapshot snap = TakeSnapshot(*seg);
  const SlotSnapshot* s = Find(snap, first);
  ASSERT_NE(s, nullptr);
  EXPECT_FALSE(s->engine_reported);
}

TEST(LedgerEngineSteps, KeptWhenTheProcessReRegistersInANewSlot) {
  ScopedSegmentName name("engine_steps_reattach");
  auto seg = Create(name.name());
  ASSERT_TRUE(seg);
  auto a = LedgerBudget::Attach(seg, "stalled");
  ASSERT_TRUE(a.ok());
  a.value()->ReportEngineSteps({42, 4200, 84});
  const std::uint32_t old = a.value()->slot_index();
  // What a reclaimer in another pid namespace does to a slot whose heartbeat is stale, and
  // another process taking the freed slot.
  Atomic(seg->slot(old).engine_steps).store(0);
  Atomic(seg->slot(old).engine_hook_ns).store(0);
  Atomic(seg->slot(old).engine_hook_c_calls).store(0);
  Atomic(seg->slot(old).owner).store(0);
  const std::uint64_t squatter = PackOwner(SlotState::kLive, 1, ReadProcessStat(1)->start_ticks);
  Atomic(seg->slot(old).owner).store(squatter);
  a.value()->ReportEngineSteps({43, 4300, 86});  // lost: kept, never written into the squatter's
  EXPECT_EQ(Load(seg->slot(old).engine_steps), 0U);
  a.value()->Heartbeat();
  const std::uint32_t now = a.value()->slot_index();
  ASSERT_NE(now, old);
  EXPECT_EQ(Load(seg->slot(now).engine_steps), 43U);
  EXPECT_EQ(Load(seg->slot(now).engine_hook_ns), 4300U);
  EXPECT_EQ(Load(seg->slot(now).engine_hook_c_calls), 86U);
  Atomic(seg->slot(old).owner).store(0);
}

TEST(LedgerEngineSteps, AFreeSlotHoldingThemIsRefusedWithTheFix) {
  ScopedSegmentName name("engine_steps_validate");
  auto seg = Create(name.name());
  ASSERT_TRUE(seg);
  std::vector<std::byte> bytes = seg->Copy();
  auto* slots = reinterpret_cast<LedgerSlot*>(bytes.data() + sizeof(SegmentHeader));
  ASSERT_TRUE(ValidateSegment(bytes, seg->path()).ok());
  for (int field = 0; field < 3; ++field) {
    std::vector<std::byte> bad = bytes;
    auto* s = reinterpret_cast<LedgerSlot*>(bad.data() + sizeof(SegmentHeader));
    (field == 0   ? s[1].engine_steps
     : field == 1 ? s[1].engine_hook_ns
                  : s[1].engine_hook_c_calls) = 1;
    auto r = ValidateSegment(bad, seg->path());
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_NE(r.status().message().find("slot 1: it is free but holds engine step statistics"),
              std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find("kvctl delete"), std::string::npos);
  }
  // A live slot may hold any totals (statistics only).
  slots[0].owner = PackOwner(SlotState::kLive, 100, 5);
  slots[0].limit = kNoLimit;
  slots[0].engine_steps = ~std::uint64_t{0};
  slots[0].engine_hook_ns = ~std::uint64_t{0};
  EXPECT_TRUE(ValidateSegment(bytes, seg->path()).ok());
}

}  // namespace
}  // namespace kvcached::ledger
