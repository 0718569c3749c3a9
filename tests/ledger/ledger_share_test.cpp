// Shares in the ledger (docs/sharing.md): the words stored in each slot, validated, reset with
// the slot (also after kill -9), the starvation episode a refusal opens, and the verdict each
// engine reads; on the real ledger (several LedgerBudgets of this process, each its own slot).
#include "core/ledger/ledger_share.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "core/ledger/ledger_snapshot.h"
#include "core/ledger/ledger_validate.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

using testing::ScopedSegmentName;

constexpr std::uint64_t kPage = 2ULL << 20U;
constexpr std::uint64_t kMs = 1000ULL * 1000;

CreateParams Params(std::uint64_t budget_pages) {
  CreateParams p;
  p.gpu_total = 200 * kPage;
  p.budget = budget_pages * kPage;
  p.gpu_uuid = "GPU-share-test";
  return p;
}

std::shared_ptr<Segment> Create(const std::string& name, std::uint64_t budget_pages) {
  auto seg = Segment::OpenOrCreate(name, Params(budget_pages));
  EXPECT_TRUE(seg.ok()) << seg.status().message();
  return seg.ok() ? std::shared_ptr<Segment>(std::move(seg).value()) : nullptr;
}

std::unique_ptr<LedgerBudget> Attach(std::shared_ptr<Segment> seg, const std::string& label,
                                     double weight = 1.0, std::uint64_t min = 0,
                                     std::uint64_t preempt_ns = 500 * kMs) {
  auto b = LedgerBudget::Attach(std::move(seg), label);
  EXPECT_TRUE(b.ok()) << b.status().message();
  if (!b.ok()) return nullptr;
  b.value()->ConfigureShare(static_cast<std::uint64_t>(weight * 1000), min, kPage, preempt_ns);
  return std::move(b).value();
}

// Charges `pages` one page at a time as engine data, as the page pool does for KV pages (a
// refusal is noted as the engine's); returns how many were admitted.
std::uint64_t Take(LedgerBudget& b, std::uint64_t pages, std::uint64_t step = kPage) {
  std::uint64_t got = 0;
  for (; got < pages; got += step / kPage) {
    if (!b.TryCharge(step)) {
      b.NoteRefused(step);
      break;
    }
    b.MoveToInUse(step);
  }
  return got;
}

void Give(LedgerBudget& b, std::uint64_t pages) {
  b.MoveToReserved(pages * kPage);
  b.Uncharge(pages * kPage);
}

TEST(LedgerShare, WeightAndMinimumAreStoredInTheSlotAndShownInSnapshots) {
  ScopedSegmentName name("share_words");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a", 2.5, 10 * kPage);
  auto b = Attach(seg, "b");
  const LedgerSlot& s = seg->slot(a->slot_index());
  EXPECT_EQ(Load(s.share_weight), 2500U);
  EXPECT_EQ(Load(s.share_min), 10 * kPage);
  EXPECT_EQ(Load(seg->slot(b->slot_index()).share_weight), 1000U);
  const SegmentSnapshot snap = TakeSnapshot(*seg);
  ASSERT_EQ(snap.slots.size(), 2U);
  EXPECT_EQ(snap.slots[0].weight_milli, 2500U);
  EXPECT_EQ(snap.slots[0].share_min, 10 * kPage);
  EXPECT_TRUE(ValidateSegment(seg->Copy(), seg->path()).ok());
}

TEST(LedgerShare, SetSlotShareClampsTheMinimumAndRefusesBadWeights) {
  ScopedSegmentName name("share_set");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a");
  const std::uint64_t owner = Load(seg->slot(a->slot_index()).owner);
  auto stored = SetSlotShare(*seg, a->slot_index(), owner, 3000, 500 * kPage);
  ASSERT_TRUE(stored.ok()) << stored.status().message();
  EXPECT_EQ(stored.value().weight_milli, 3000U);
  EXPECT_EQ(stored.value().min_bytes, 100 * kPage) << "clamped to the budget";
  for (std::uint64_t bad : {std::uint64_t{0}, kMaxWeightMilli + 1}) {
    auto r = SetSlotShare(*seg, a->slot_index(), owner, bad, std::nullopt);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("outside 0.001..1000"), std::string::npos)
        << r.status().message();
  }
  EXPECT_EQ(Load(seg->slot(a->slot_index()).share_weight), 3000U) << "a refusal changed it";
  auto gone = SetSlotShare(*seg, a->slot_index(), owner + 1, 2000, std::nullopt);
  EXPECT_EQ(gone.status().code(), Errc::kNotFound);
}

// A two-slot image: slot 0 live, slot 1 free.
std::vector<std::byte> Image() {
  std::vector<std::byte> bytes(SegmentBytes(2));
  auto& h = *reinterpret_cast<SegmentHeader*>(bytes.data());
  h.magic = kMagic;
  h.version = kLayoutVersion;
  h.header_size = sizeof(SegmentHeader);
  h.slot_count = 2;
  h.slot_size = sizeof(LedgerSlot);
  h.gpu_total = 200 * kPage;
  h.budget = 100 * kPage;
  std::strcpy(h.gpu_uuid.data(), "GPU-x");
  auto* slots = reinterpret_cast<LedgerSlot*>(bytes.data() + sizeof(SegmentHeader));
  slots[0].owner = PackOwner(SlotState::kLive, 100, 5);
  slots[0].share_weight = 1000;
  return bytes;
}

LedgerSlot* Slots(std::vector<std::byte>& bytes) {
  return reinterpret_cast<LedgerSlot*>(bytes.data() + sizeof(SegmentHeader));
}

TEST(LedgerShare, ValidatorChecksTheShareWords) {
  auto bytes = Image();
  EXPECT_TRUE(ValidateSegment(bytes, "/dev/shm/x").ok());
  Slots(bytes)[0].share_weight = 0;  // a slot being claimed
  EXPECT_TRUE(ValidateSegment(bytes, "/dev/shm/x").ok());
  Slots(bytes)[0].share_weight = kMaxWeightMilli;
  EXPECT_TRUE(ValidateSegment(bytes, "/dev/shm/x").ok());

  Slots(bytes)[0].share_weight = kMaxWeightMilli + 1;
  auto r = ValidateSegment(bytes, "/dev/shm/x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("share weight"), std::string::npos) << r.status().message();

  bytes = Image();
  Slots(bytes)[0].share_min = 100 * kPage + 1;
  r = ValidateSegment(bytes, "/dev/shm/x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("guaranteed minimum"), std::string::npos);

  bytes = Image();
  Slots(bytes)[0].share_unit = 200 * kPage;  // the GPU total: accepted
  EXPECT_TRUE(ValidateSegment(bytes, "/dev/shm/x").ok());
  Slots(bytes)[0].share_unit = 200 * kPage + 1;
  r = ValidateSegment(bytes, "/dev/shm/x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("share unit"), std::string::npos) << r.status().message();

  // Words only the owner writes must be zero in a free slot.
  for (int word = 0; word < 5; ++word) {
    bytes = Image();
    LedgerSlot& free = Slots(bytes)[1];
    std::uint64_t* words[] = {&free.starved_since_ns, &free.starved_last_ns, &free.share_preempted,
                              &free.share_given, &free.share_unit};
    *words[word] = 1;
    r = ValidateSegment(bytes, "/dev/shm/x");
    ASSERT_FALSE(r.ok()) << word;
    EXPECT_NE(r.status().message().find("free but holds a share"), std::string::npos);
  }
  // Weight and minimum may be left by a `kvctl share` that raced with the owner's exit (as a
  // limit may): accepted within bounds, refused beyond them.
  bytes = Image();
  Slots(bytes)[1].share_weight = 2000;
  Slots(bytes)[1].share_min = kPage;
  EXPECT_TRUE(ValidateSegment(bytes, "/dev/shm/x").ok());
  Slots(bytes)[1].share_weight = kMaxWeightMilli + 1;
  EXPECT_FALSE(ValidateSegment(bytes, "/dev/shm/x").ok());
}

TEST(LedgerShare, ReleasedSlotsHoldNoShare) {
  ScopedSegmentName name("share_release");
  auto seg = Create(name.name(), 100);
  std::uint32_t index = 0;
  {
    auto a = Attach(seg, "a", 4, 50 * kPage);
    index = a->slot_index();
  }
  const LedgerSlot& s = seg->slot(index);
  EXPECT_EQ(Load(s.share_weight), 0U);
  EXPECT_EQ(Load(s.share_min), 0U);
  EXPECT_EQ(Load(s.share_unit), 0U);
  EXPECT_TRUE(ValidateSegment(seg->Copy(), seg->path()).ok());
}

TEST(LedgerShare, SlotOfAKilledEngineIsReclaimedWithItsShareAndEpisode) {
  ScopedSegmentName name("share_kill");
  auto seg = Create(name.name(), 10);
  testing::Holder holder(name.name(), "victim", {"--charge", std::to_string(10 * kPage)});
  ASSERT_TRUE(holder.ready());
  LedgerSlot& s = seg->slot(holder.slot());
  // Set as kvctl share would, plus a starvation episode as the engine would have written it.
  ASSERT_TRUE(SetSlotShare(*seg, holder.slot(), Load(s.owner), 3000, 4 * kPage).ok());
  Atomic(s.starved_since_ns).store(BoottimeNs());
  Atomic(s.starved_last_ns).store(BoottimeNs());
  holder.Kill(SIGKILL);
  auto me = Attach(seg, "reclaimer");
  EXPECT_GE(me->ReclaimDead(), 1);
  EXPECT_EQ(Load(s.owner), 0U);
  EXPECT_EQ(Load(s.share_weight), 0U);
  EXPECT_EQ(Load(s.share_min), 0U);
  EXPECT_EQ(Load(s.starved_since_ns), 0U);
  EXPECT_TRUE(ValidateSegment(seg->Copy(), seg->path()).ok());
}

TEST(LedgerShare, RefusalBelowItsShareOpensOneEpisodeAndAboveItOpensNone) {
  ScopedSegmentName name("share_episode");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a");
  auto b = Attach(seg, "b");
  ASSERT_EQ(Take(*a, 100), 100U);
  ASSERT_EQ(Take(*b, 1), 0U);  // refused with nothing: below its share of 50
  const LedgerSlot& sb = seg->slot(b->slot_index());
  const std::uint64_t first = Load(sb.starved_since_ns);
  ASSERT_NE(first, 0U);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(Take(*b, 1), 0U);
  EXPECT_EQ(Load(sb.starved_since_ns), first) << "the bound counts from the first refusal";
  EXPECT_GT(Load(sb.starved_last_ns), first);
  // A, refused at 100 pages (above its share once B is starved), opens nothing.
  ASSERT_EQ(Take(*a, 1), 0U);
  EXPECT_EQ(Load(seg->slot(a->slot_index()).starved_since_ns), 0U);
}

TEST(LedgerShare, TheEngineAboveItsShareIsAskedAndEscalatesAfterTheBound) {
  ScopedSegmentName name("share_verdict");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a", 1, 0, 30 * kMs);
  auto b = Attach(seg, "b", 1, 0, 30 * kMs);
  ASSERT_EQ(Take(*a, 100), 100U);
  EXPECT_EQ(a->Share().action, ShareAction::kOk) << "nobody starved yet";
  // B asks for 4 pages: A is asked for those 4, not for B's whole deficit of 50.
  ASSERT_EQ(Take(*b, 4, 4 * kPage), 0U);
  ShareVerdict v = a->Share();
  EXPECT_EQ(v.action, ShareAction::kGiveCached);
  EXPECT_EQ(v.give_bytes, 4 * kPage);
  EXPECT_EQ(v.others_deficit, 4 * kPage);
  EXPECT_EQ(v.fair_share, 50 * kPage);
  EXPECT_EQ(v.starved_pid, ::getpid());
  // Once A gave them (free, not taken yet), A is asked nothing more for that request.
  Give(*a, 4);
  EXPECT_EQ(a->Share().action, ShareAction::kStopAdmitting);
  EXPECT_EQ(a->Share().give_bytes, 0U);
  ASSERT_EQ(Take(*a, 4), 4U);  // (as if A took them back: pages freed for B are not A's)
  // B asks for 60: A gives B's deficit, 50, no more.
  ASSERT_EQ(Take(*b, 60, 60 * kPage), 0U);
  v = a->Share();
  EXPECT_EQ(v.give_bytes, 50 * kPage);
  EXPECT_EQ(b->Share().action, ShareAction::kOk) << "the starved engine gives nothing";
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  ASSERT_EQ(Take(*b, 60, 60 * kPage), 0U);  // still refused: the episode goes on
  EXPECT_EQ(a->Share().action, ShareAction::kPreempt);
  // A gives; B takes its share; nobody is asked any more.
  Give(*a, 50);
  a->ReportShare(50 * kPage, 3);
  EXPECT_EQ(Take(*b, 50), 50U);
  EXPECT_EQ(a->Share().action, ShareAction::kOk);
  EXPECT_EQ(b->Share().action, ShareAction::kOk);
  const SegmentSnapshot snap = TakeSnapshot(*seg);
  for (const auto& s : snap.slots) {
    if (s.index != a->slot_index()) continue;
    EXPECT_EQ(s.share_given, 50 * kPage);
    EXPECT_EQ(s.share_preempted, 3U);
    EXPECT_EQ(s.fair_share, 50 * kPage);
  }
}

TEST(LedgerShare, ARefusedSetUpReservationOpensNoEpisode) {
  // A process that starts while the budget is full: a set-up reservation (pages mapped ahead)
  // is refused, but it has not asked for KV memory yet. Only a refusal the pool
  // notes as the engine's (NoteRefused) opens the episode; the preemption bound starts there.
  ScopedSegmentName name("share_setup");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a");
  auto b = Attach(seg, "b");
  ASSERT_EQ(Take(*a, 100), 100U);
  ASSERT_FALSE(b->TryCharge(2 * kPage));  // map-ahead
  const LedgerSlot& sb = seg->slot(b->slot_index());
  EXPECT_EQ(Load(sb.starved_since_ns), 0U);
  EXPECT_EQ(a->Share().action, ShareAction::kOk) << "nobody asked for KV memory yet";
  ASSERT_EQ(Take(*b, 1), 0U);  // its first KV page
  EXPECT_NE(Load(sb.starved_since_ns), 0U);
  EXPECT_EQ(a->Share().action, ShareAction::kGiveCached);
  // Refused by its own limit (kvctl limit): no engine giving would help, no episode.
  auto c = Attach(seg, "c");
  Atomic(seg->slot(c->slot_index()).limit).store(0);
  ASSERT_FALSE(c->TryCharge(kPage));
  c->NoteRefused(kPage);
  EXPECT_EQ(Load(seg->slot(c->slot_index()).starved_since_ns), 0U);
}

TEST(LedgerShare, EachEnginesUnitIsPublishedAndTheEpisodeEndsInWholeUnits) {
  // 32 pages. A takes and gives 2 pages at a time (a vLLM engine: K and V) and holds 7 pages
  // outside its units (say, pages of a tensor that is not KV); B takes one page at a time and
  // holds 7 too.
  ScopedSegmentName name("share_units");
  auto seg = Create(name.name(), 32);
  auto a = Attach(seg, "a", 1, 0, 0);
  auto b = Attach(seg, "b", 1, 0, 0);
  EXPECT_EQ(Load(seg->slot(a->slot_index()).share_unit), kPage) << "the page until published";
  ASSERT_TRUE(a->SetShareUnit(2 * kPage).ok());
  EXPECT_EQ(Load(seg->slot(a->slot_index()).share_unit), 2 * kPage);
  const Status too_big = a->SetShareUnit(33 * kPage);
  EXPECT_EQ(too_big.code(), Errc::kInvalid);
  EXPECT_NE(too_big.message().find("exceeds the GPU budget"), std::string::npos);
  ASSERT_TRUE(a->TryCharge(7 * kPage));
  ASSERT_TRUE(b->TryCharge(7 * kPage));
  ASSERT_EQ(Take(*a, 18, 2 * kPage), 18U);
  ASSERT_EQ(Take(*b, 8, 8 * kPage), 0U);  // B asks for 8 pages at once and is refused: starved
  // A's odd page (outside its units) stays A's; the other 31 pages: 16 for A (whole units), 15
  // for B.
  ShareVerdict v = a->Share();
  EXPECT_EQ(v.fair_share, 17 * kPage);
  EXPECT_EQ(v.action, ShareAction::kPreempt);
  EXPECT_EQ(v.give_bytes, 8 * kPage);
  // A gives 4 units, B takes 8 pages: both at their shares, exactly.
  Give(*a, 8);
  ASSERT_EQ(Take(*b, 8), 8U);
  EXPECT_EQ(a->Share().action, ShareAction::kOk) << "the episode ended";
  EXPECT_EQ(b->Share().action, ShareAction::kOk);
  ASSERT_EQ(Take(*b, 1), 0U);  // at its share now: refused without starving
  EXPECT_EQ(Load(seg->slot(b->slot_index()).starved_since_ns), 0U);
  EXPECT_EQ(a->Share().action, ShareAction::kOk);
  // kvctl computes the same shares from the published units.
  for (const auto& s : TakeSnapshot(*seg).slots) {
    if (s.index == a->slot_index()) {
      EXPECT_EQ(s.share_unit, 2 * kPage);
      EXPECT_EQ(s.fair_share, 17 * kPage);
    }
  }
}

TEST(LedgerShare, AGrantedRequestStopsTheGivingAndARefusalSoonAfterKeepsTheBound) {
  // B, starved, is granted what it asked for (the page pool notes it): A is asked nothing more
  // at once, not for the ledger's freshness window. B refused again soon after: the same
  // episode, its bound still counted from the first refusal, so A is told to preempt at once.
  ScopedSegmentName name("share_served");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a", 1, 0, 30 * kMs);
  auto b = Attach(seg, "b", 1, 0, 30 * kMs);
  ASSERT_EQ(Take(*a, 100), 100U);
  ASSERT_EQ(Take(*b, 1), 0U);
  const LedgerSlot& sb = seg->slot(b->slot_index());
  const std::uint64_t first = Load(sb.starved_since_ns);
  ASSERT_NE(first, 0U);
  EXPECT_EQ(a->Share().action, ShareAction::kGiveCached);
  Give(*a, 2);  // A frees two pages; B takes one and is served
  ASSERT_EQ(Take(*b, 1), 1U);
  b->NoteServed();
  EXPECT_EQ(a->Share().action, ShareAction::kOk) << "B has what it asked for: nobody gives more";
  for (const auto& slot : TakeSnapshot(*seg).slots) {
    if (slot.index == b->slot_index()) {
      EXPECT_EQ(slot.starved_since_ns, 0U) << "kvctl: not starved";
    }
  }
  b->NoteServed();  // a second grant changes nothing
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  ASSERT_EQ(Take(*a, 1), 1U);  // A takes the free page back
  ASSERT_EQ(Take(*b, 1), 0U);  // B asks again: refused
  EXPECT_EQ(Load(sb.starved_since_ns), first) << "the same episode";
  EXPECT_EQ(a->Share().action, ShareAction::kPreempt) << "the bound ran on while B was served";
  // A grant long ago ends the episode: a refusal then opens a new one.
  b->NoteServed();
  Atomic(seg->slot(b->slot_index()).starved_last_ns)
      .store((BoottimeNs() - kStarvedFreshNs - 10 * kMs) | kServedBit);
  ASSERT_EQ(Take(*b, 1), 0U);
  EXPECT_GT(Load(sb.starved_since_ns), first) << "a new episode";
  EXPECT_NE(a->Share().action, ShareAction::kPreempt) << "its bound starts again";
}

TEST(LedgerShare, WhatAStarvedEngineAsksForIsItsLargestRefusedRequestSinceItsLastGrant) {
  // A vLLM step asks for all it could admit, then for one request at a time: the step's worth is
  // what it lacks, not the last small request.
  ScopedSegmentName name("share_want");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a");
  auto b = Attach(seg, "b");
  ASSERT_EQ(Take(*a, 100), 100U);
  ASSERT_EQ(Take(*b, 6, 6 * kPage), 0U);
  ASSERT_EQ(Take(*b, 1), 0U);
  EXPECT_EQ(a->Share().give_bytes, 6 * kPage);
  Give(*a, 6);
  ASSERT_EQ(Take(*b, 1), 1U);  // granted: what it asked before no longer counts
  b->NoteServed();
  ASSERT_EQ(Take(*a, 5), 5U);  // (the rest taken back)
  ASSERT_EQ(Take(*b, 2, 2 * kPage), 0U);
  EXPECT_EQ(a->Share().give_bytes, 2 * kPage);
}

TEST(LedgerShare, AStaleEpisodeStarvesNobody) {
  ScopedSegmentName name("share_stale");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a");
  auto b = Attach(seg, "b");
  ASSERT_EQ(Take(*a, 100), 100U);
  ASSERT_EQ(Take(*b, 1), 0U);
  LedgerSlot& sb = seg->slot(b->slot_index());
  // B stopped asking more than a second ago (as if): A is left alone.
  Atomic(sb.starved_last_ns).store(BoottimeNs() - kStarvedFreshNs - 10 * kMs);
  Atomic(sb.starved_since_ns).store(BoottimeNs() - kStarvedFreshNs - 20 * kMs);
  EXPECT_EQ(a->Share().action, ShareAction::kOk);
}

// The engines' per-step question (kvcached_share_action_get): the verdict's action, read with
// one pass over the slots while no other engine is starved, the full verdict otherwise.
TEST(LedgerShare, TheStepActionIsTheVerdictsActionAndSkipsTheArithmeticWhileNobodyElseStarves) {
  ScopedSegmentName name("share_action");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a", 1, 0, 30 * kMs);
  auto b = Attach(seg, "b", 1, 0, 30 * kMs);
  auto same = [&](const char* when) {
    EXPECT_EQ(a->ShareActionNow(), a->Share().action) << when;
    EXPECT_EQ(b->ShareActionNow(), b->Share().action) << when;
  };
  ASSERT_EQ(Take(*a, 100), 100U);
  EXPECT_FALSE(OthersStarved(*seg, a->slot_index(), BoottimeNs()));
  same("nobody starved");
  ASSERT_EQ(Take(*b, 4, 4 * kPage), 0U);  // B refused below its share: A is asked
  EXPECT_TRUE(OthersStarved(*seg, a->slot_index(), BoottimeNs()));
  EXPECT_FALSE(OthersStarved(*seg, b->slot_index(), BoottimeNs()))
      << "its own episode is not another's";
  EXPECT_EQ(a->ShareActionNow(), ShareAction::kGiveCached);
  same("B starved");
  Give(*a, 4);
  EXPECT_EQ(a->ShareActionNow(), ShareAction::kStopAdmitting);
  same("given, not taken yet");
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  ASSERT_EQ(Take(*b, 60, 60 * kPage), 0U);
  EXPECT_EQ(a->ShareActionNow(), ShareAction::kPreempt);
  same("past the bound");
  ASSERT_EQ(Take(*b, 4), 4U);  // granted (the page pool notes it): B is served, nobody starved now
  b->NoteServed();
  EXPECT_FALSE(OthersStarved(*seg, a->slot_index(), BoottimeNs()));
  same("B served");
  LedgerSlot& sb = seg->slot(b->slot_index());  // a stale episode starves nobody either
  Atomic(sb.starved_last_ns).store(BoottimeNs() - kStarvedFreshNs - 10 * kMs);
  Atomic(sb.starved_since_ns).store(BoottimeNs() - kStarvedFreshNs - 20 * kMs);
  EXPECT_EQ(a->ShareActionNow(), ShareAction::kOk);
  same("stale");
}

// The header's starved_mask: an engine's per-step question reads one word while nobody starves.
TEST(LedgerShare, TheStarvedMaskNamesTheStarvingSlotAndClearsWhenItsEpisodeEnds) {
  ScopedSegmentName name("share_mask");
  auto seg = Create(name.name(), 100);
  auto a = Attach(seg, "a");
  auto b = Attach(seg, "b");
  auto mask = [&] { return Load(seg->header().starved_mask); };
  const std::uint64_t b_bit = std::uint64_t{1} << b->slot_index();
  ASSERT_EQ(Take(*a, 100), 100U);
  EXPECT_EQ(mask(), 0U) << "nobody refused yet";
  ASSERT_EQ(Take(*b, 4, 4 * kPage), 0U);  // refused below its share: starving
  EXPECT_EQ(mask(), b_bit);
  EXPECT_TRUE(OthersStarved(*seg, a->slot_index(), BoottimeNs()));
  EXPECT_FALSE(OthersStarved(*seg, b->slot_index(), BoottimeNs()))
      << "its own bit is not another's";
  Give(*a, 4);
  ASSERT_EQ(Take(*b, 4), 4U);
  b->NoteServed();
  EXPECT_EQ(mask(), 0U) << "served: the episode is over";
  EXPECT_FALSE(OthersStarved(*seg, a->slot_index(), BoottimeNs()));
  ASSERT_EQ(Take(*b, 4, 4 * kPage), 0U);  // starving again
  EXPECT_EQ(mask(), b_bit);
  b.reset();  // its slot freed (a process that exits, or one reclaimed as dead)
  EXPECT_EQ(mask(), 0U);
  // A stale bit (a slot freed by an older path) costs a look at the slot, never a wrong answer.
  Atomic(seg->header().starved_mask).store(std::uint64_t{1} << 40);
  EXPECT_FALSE(OthersStarved(*seg, a->slot_index(), BoottimeNs()));
}

TEST(LedgerShare, WithMoreThan64SlotsAClearedBitComesBackForAnotherStarvingSlotOfIt) {
  ScopedSegmentName name("share_mask_wide");
  CreateParams p = Params(100);
  p.slot_count = 70;
  auto made = Segment::OpenOrCreate(name.name(), p);
  ASSERT_TRUE(made.ok()) << made.status().message();
  Segment& seg = *made.value();
  const std::uint64_t now = BoottimeNs();
  // Slots 1 and 65 share bit 1; slot 65 starving (a live owner, a fresh refusal).
  LedgerSlot& s65 = seg.slot(65);
  Atomic(s65.owner).store(PackOwner(SlotState::kLive, static_cast<std::uint64_t>(::getpid()), 1));
  SetStarvedBit(seg, 65);
  Atomic(s65.starved_since_ns).store(now);
  Atomic(s65.starved_last_ns).store(now);
  SetStarvedBit(seg, 1);
  ClearStarvedBit(seg, 1);  // slot 1's episode ends: the bit stays for slot 65
  EXPECT_EQ(Load(seg.header().starved_mask), std::uint64_t{1} << 1U);
  EXPECT_TRUE(OthersStarved(seg, 1, now)) << "slot 65, found through slot 1's bit";
  EXPECT_TRUE(OthersStarved(seg, 0, now));
  EXPECT_FALSE(OthersStarved(seg, 65, now)) << "its own episode";
  Atomic(s65.starved_since_ns).store(0);
  ClearStarvedBit(seg, 65);
  EXPECT_EQ(Load(seg.header().starved_mask), 0U);
  Atomic(s65.owner).store(0);
}

}  // namespace
}  // namespace kvcached::ledger
