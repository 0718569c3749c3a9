// Unit tests of the ledger: names, process identity, validation, creation, admission, limits,
// pressure, reclamation of dead owners, fork safety and the budget factory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_budget_factory.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "core/ledger/ledger_snapshot.h"
#include "core/ledger/ledger_validate.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

using testing::ScopedSegmentName;

constexpr std::uint64_t kPage = 2ULL << 20;

CreateParams Params(std::uint64_t budget_pages, std::uint64_t total_pages = 100) {
  CreateParams p;
  p.gpu_total = total_pages * kPage;
  p.budget = budget_pages * kPage;
  p.gpu_uuid = "GPU-unit-test";
  return p;
}

std::shared_ptr<Segment> Create(const std::string& name, const CreateParams& p) {
  auto seg = Segment::OpenOrCreate(name, p);
  EXPECT_TRUE(seg.ok()) << seg.status().message();
  return seg.ok() ? std::shared_ptr<Segment>(std::move(seg).value()) : nullptr;
}

std::unique_ptr<LedgerBudget> AttachOrDie(std::shared_ptr<Segment> seg, const std::string& label) {
  auto b = LedgerBudget::Attach(std::move(seg), label);
  EXPECT_TRUE(b.ok()) << b.status().message();
  return b.ok() ? std::move(b).value() : nullptr;
}

TEST(LedgerNames, DerivedFromIpcNameOrUuid) {
  EXPECT_EQ(SegmentNameFor("", "GPU-1a2b", 0), "kvcached_gpu_GPU-1a2b");
  EXPECT_EQ(SegmentNameFor("shared_cache", "GPU-1a2b", 0), "kvcached_shared_cache");
  EXPECT_EQ(SegmentNameFor("", "", 3), "kvcached_gpu_dev3");
  const std::string hostile = SegmentNameFor("../../etc/passwd", "GPU-x", 0);
  EXPECT_EQ(hostile.find('/'), std::string::npos) << hostile;
  EXPECT_TRUE(IsSegmentName(hostile)) << hostile;
}

TEST(LedgerNames, NormalizeAcceptsOnlySegmentNames) {
  EXPECT_EQ(NormalizeSegmentName("x").value(), "kvcached_x");
  EXPECT_EQ(NormalizeSegmentName("kvcached_x").value(), "kvcached_x");
  EXPECT_EQ(NormalizeSegmentName("/dev/shm/kvcached_x").value(), "kvcached_x");
  for (const char* bad : {"/etc/passwd", "../x", "a/b", "kvcached_a b", "", "/dev/shm/",
                          "/dev/shm/../etc/passwd", "x\n"}) {
    auto r = NormalizeSegmentName(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_FALSE(r.status().message().empty());
    }
  }
}

TEST(LedgerProcess, ParsesStatWithHostileComm) {
  auto st = ParseProcessStat("123 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20");
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->start_ticks, 777U);
  EXPECT_FALSE(ParseProcessStat("123 (a) S 1 2").has_value());
  EXPECT_FALSE(ParseProcessStat("garbage").has_value());
  const ProcessIdentity me = CurrentProcess();
  EXPECT_EQ(me.pid, static_cast<std::uint64_t>(::getpid()));
  EXPECT_GT(me.start_ticks, 0U);
  // Cross-check against a plain split of our own stat line (our comm has no spaces).
  std::ifstream stat_file("/proc/self/stat");
  std::vector<std::string> fields;
  for (std::string f; stat_file >> f;) fields.push_back(f);
  ASSERT_GT(fields.size(), 22U);
  EXPECT_EQ(me.start_ticks, std::stoull(fields[21]));
}

TEST(LedgerProcess, LivenessUsesPidAndStartTime) {
  const ProcessIdentity me = CurrentProcess();
  const std::uint64_t now = BoottimeNs();
  EXPECT_FALSE(OwnerIsDead(PackOwner(SlotState::kLive, me.pid, me.start_ticks), me.pidns, now,
                           me.pidns, now));
  // Same pid, other start time: the pid was reused, the owner is gone.
  EXPECT_TRUE(OwnerIsDead(PackOwner(SlotState::kLive, me.pid, me.start_ticks + 1), me.pidns, now,
                          me.pidns, now));
  // Another pid namespace: only a stale heartbeat counts.
  EXPECT_FALSE(OwnerIsDead(PackOwner(SlotState::kLive, 1, 1), me.pidns + 1, now, me.pidns, now));
  EXPECT_TRUE(OwnerIsDead(PackOwner(SlotState::kLive, 1, 1), me.pidns + 1, 1, me.pidns,
                          kForeignStaleNs + 10));
  // A zombie has lost its memory.
  const pid_t child = ::fork();
  if (child == 0) _exit(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto st = ReadProcessStat(child);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(OwnerIsDead(PackOwner(SlotState::kLive, child, st->start_ticks), me.pidns, now,
                          me.pidns, now));
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(OwnerIsDead(PackOwner(SlotState::kLive, child, st->start_ticks), me.pidns, now,
                          me.pidns, now));
}

// A valid segment image with two live slots, for the validator tests.
std::vector<std::byte> ValidImage() {
  std::vector<std::byte> bytes(SegmentBytes(4));
  auto& h = *reinterpret_cast<SegmentHeader*>(bytes.data());
  h.magic = kMagic;
  h.version = kLayoutVersion;
  h.header_size = sizeof(SegmentHeader);
  h.slot_count = 4;
  h.slot_size = sizeof(LedgerSlot);
  h.gpu_total = 100 * kPage;
  h.budget = 50 * kPage;
  std::strcpy(h.gpu_uuid.data(), "GPU-x");
  auto* slots = reinterpret_cast<LedgerSlot*>(bytes.data() + sizeof(SegmentHeader));
  for (int i = 0; i < 2; ++i) {
    slots[i].owner = PackOwner(SlotState::kLive, 100 + i, 5);
    slots[i].charged = 4 * kPage;
    slots[i].in_use = 2 * kPage;
    slots[i].limit = kNoLimit;
    std::strcpy(slots[i].label.data(), "engine");
  }
  return bytes;
}

TEST(LedgerValidate, AcceptsValidAndNamesFileAndFixOnEveryRefusal) {
  const std::string path = "/dev/shm/kvcached_v";
  auto ok = ValidateSegment(ValidImage(), path);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok.value().slot_count, 4U);
  EXPECT_EQ(ok.value().budget, 50 * kPage);
  EXPECT_EQ(ok.value().gpu_uuid, "GPU-x");

  struct Case {
    const char* what;
    void (*mutate)(std::vector<std::byte>&);
    const char* expect;
  };
  auto H = [](std::vector<std::byte>& b) -> SegmentHeader& {
    return *reinterpret_cast<SegmentHeader*>(b.data());
  };
  static auto S = [](std::vector<std::byte>& b, int i) -> LedgerSlot& {
    return reinterpret_cast<LedgerSlot*>(b.data() + sizeof(SegmentHeader))[i];
  };
  (void)H;
  const Case cases[] = {
      {"truncated", [](auto& b) { b.resize(100); }, "smaller than"},
      {"magic 0", [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->magic = 0; },
       "never initialised"},
      {"foreign", [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->magic = 42; },
       "not a kvcached ledger"},
      {"version", [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->version = 9; },
       "layout version"},
      {"slot size", [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->slot_size = 8; },
       "sizes"},
      {"no slots", [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->slot_count = 0; },
       "slot count"},
      {"too many slots",
       [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->slot_count = 5; }, "slots need"},
      {"budget > total",
       [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->budget = 101 * kPage; }, "budget"},
      {"budget 0", [](auto& b) { reinterpret_cast<SegmentHeader*>(b.data())->budget = 0; },
       "budget"},
      {"uuid",
       [](auto& b) {
         std::memset(reinterpret_cast<SegmentHeader*>(b.data())->gpu_uuid.data(), 'a', kUuidBytes);
       },
       "UUID"},
      {"label", [](auto& b) { std::memset(S(b, 1).label.data(), 'a', kLabelBytes); }, "label"},
      {"counter", [](auto& b) { S(b, 0).charged = 101 * kPage; }, "exceeds the GPU total"},
      {"limit", [](auto& b) { S(b, 0).limit = 51 * kPage; }, "limit"},
      {"free with counters", [](auto& b) { S(b, 3).charged = kPage; }, "free but holds"},
      {"state", [](auto& b) { S(b, 0).owner = PackOwner(SlotState::kInvalid, 1, 1); },
       "invalid state"},
      {"pid 0", [](auto& b) { S(b, 0).owner = PackOwner(SlotState::kLive, 0, 1); }, "pid 0"},
  };
  for (const auto& c : cases) {
    auto bytes = ValidImage();
    c.mutate(bytes);
    auto r = ValidateSegment(bytes, path);
    ASSERT_FALSE(r.ok()) << c.what;
    const std::string msg = r.status().message();
    EXPECT_NE(msg.find(path), std::string::npos) << c.what << ": " << msg;
    EXPECT_NE(msg.find("kvctl delete kvcached_v"), std::string::npos) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
  }
}

TEST(LedgerSegment, CreatedOwnerOnlyWhateverTheUmaskAndReopenedWithCreatorsBudget) {
  ScopedSegmentName name("create");
  const mode_t old = ::umask(0);
  bool created = false;
  auto seg = Segment::OpenOrCreate(name.name(), Params(10), &created);
  ::umask(old);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  EXPECT_TRUE(created);
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600U);
  EXPECT_EQ(st.st_size, static_cast<off_t>(SegmentBytes(kDefaultSlotCount)));

  auto again = Segment::OpenOrCreate(name.name(), Params(20), &created);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_FALSE(created);
  EXPECT_EQ(again.value()->budget(), 10 * kPage) << "the creator's budget wins";
  EXPECT_EQ(again.value()->gpu_uuid(), "GPU-unit-test");
  EXPECT_EQ(again.value()->slot_count(), kDefaultSlotCount);
}

TEST(LedgerSegment, ConcurrentCreatorsAgreeOnOneSegment) {
  ScopedSegmentName name("race");
  constexpr int kProcs = 8;
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < kProcs; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      char c;
      ::close(go[1]);
      if (::read(go[0], &c, 1) != 0) _exit(1);  // released when the pipe closes
      bool created = false;
      auto seg = Segment::OpenOrCreate(name.name(), Params(10 + i), &created);
      if (!seg.ok()) _exit(2);
      auto b = LedgerBudget::Attach(std::shared_ptr<Segment>(std::move(seg).value()), "racer");
      if (!b.ok() || !b.value()->TryCharge(kPage)) _exit(3);
      _exit(created ? 10 : 11);
    }
    kids.push_back(pid);
  }
  ::close(go[0]);
  ::close(go[1]);
  int creators = 0;
  for (pid_t k : kids) {
    int status = 0;
    ::waitpid(k, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    const int rc = WEXITSTATUS(status);
    ASSERT_TRUE(rc == 10 || rc == 11) << "child exit " << rc;
    creators += rc == 10 ? 1 : 0;
  }
  EXPECT_EQ(creators, 1);
  auto seg = Segment::Open(name.name(), Segment::Access::kReadOnly);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  // Every child exited without releasing (_exit): their slots are dead and hold one page each.
  const SegmentSnapshot snap = TakeSnapshot(*seg.value());
  EXPECT_EQ(snap.dead, static_cast<std::uint32_t>(kProcs));
  EXPECT_EQ(snap.charged, kProcs * kPage);
}

TEST(LedgerSegment, NeverInitialisedOrTruncatedSegmentIsRefusedQuicklyWithTheFix) {
  ScopedSegmentName name("uninit");
  const int fd = ::shm_open(("/" + name.name()).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  for (const off_t size : {off_t{0}, static_cast<off_t>(SegmentBytes(4))}) {
    ASSERT_EQ(::ftruncate(fd, size), 0);
    const auto t0 = std::chrono::steady_clock::now();
    auto seg = Segment::Open(name.name(), Segment::Access::kReadWrite);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_FALSE(seg.ok());
    EXPECT_NE(seg.status().message().find(name.path()), std::string::npos)
        << seg.status().message();
    EXPECT_NE(seg.status().message().find("kvctl delete"), std::string::npos);
    EXPECT_GE(secs, 0.9) << "waits for a creator that may still be initialising";
    EXPECT_LT(secs, 3.0) << "but not forever";
  }
  ::close(fd);
}

TEST(LedgerBudgetTest, AdmitsUpToTheBudgetAcrossProcessesSlots) {
  ScopedSegmentName name("admit");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  auto a = AttachOrDie(seg, "a");
  auto b = AttachOrDie(seg, "b");
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->slot_index(), b->slot_index());
  EXPECT_TRUE(a->TryCharge(6 * kPage));
  EXPECT_FALSE(b->TryCharge(5 * kPage));
  EXPECT_TRUE(b->TryCharge(4 * kPage));
  EXPECT_FALSE(a->TryCharge(kPage));
  EXPECT_EQ(a->View().all_charged, 10 * kPage);
  a->Uncharge(2 * kPage);
  EXPECT_TRUE(b->TryCharge(2 * kPage));
  EXPECT_FALSE(b->TryCharge(11 * kPage)) << "more than the whole budget";
  EXPECT_TRUE(a->TryCharge(0));

  a->MoveToInUse(3 * kPage);
  BudgetView v = a->View();
  EXPECT_EQ(v.budget, 10 * kPage);
  EXPECT_EQ(v.limit, 10 * kPage);
  EXPECT_EQ(v.in_use, 3 * kPage);
  EXPECT_EQ(v.reserved, 1 * kPage);
  EXPECT_EQ(v.peak, 6 * kPage);
  a->MoveToReserved(3 * kPage);
  a->Uncharge(100 * kPage);  // an accounting bug must not wrap the shared counter
  EXPECT_EQ(Load(seg->slot(a->slot_index()).charged), 0U);
  a->AddOther(5 * static_cast<std::int64_t>(kPage));
  a->AddOther(-2 * static_cast<std::int64_t>(kPage));
  EXPECT_EQ(a->View().others, 3 * kPage);
  a->AddOther(-100 * static_cast<std::int64_t>(kPage));
  EXPECT_EQ(a->View().others, 0U);

  a->SetLabel(std::string("vllm\x1b[2J-") + std::string(100, 'x'));
  const std::string label = ReadLabel(seg->slot(a->slot_index()));
  EXPECT_EQ(label.size(), kLabelBytes - 1);
  EXPECT_EQ(label.substr(0, 10), "vllm?[2J-x");
  const std::uint32_t slot = a->slot_index();
  a.reset();
  EXPECT_EQ(Load(seg->slot(slot).owner), 0U) << "destruction frees the slot";
}

// The heart of the admission proof, made deterministic: A has checked the ledger and is about to
// commit; B's admission in that window must see A's tentative bytes and refuse.
std::atomic<int> g_stage{0};
std::atomic<const LedgerBudget*> g_paused{nullptr};

TEST(LedgerBudgetTest, AdmissionInTheOthersRaceWindowSeesItsTentativeBytes) {
  ScopedSegmentName name("window");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  auto a = AttachOrDie(seg, "a");
  auto b = AttachOrDie(seg, "b");
  ASSERT_TRUE(a && b);
  g_paused = a.get();
  g_stage = 0;
  SetAdmissionHookForTesting([](const LedgerBudget& who) {
    if (&who != g_paused.load()) return;
    g_stage = 1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (g_stage.load() != 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  });
  bool a_ok = false;
  std::thread ta([&] { a_ok = a->TryCharge(6 * kPage); });
  while (g_stage.load() != 1) std::this_thread::yield();
  const bool b_ok = b->TryCharge(6 * kPage);
  g_stage = 2;
  ta.join();
  SetAdmissionHookForTesting(nullptr);
  EXPECT_TRUE(a_ok);
  EXPECT_FALSE(b_ok) << "B admitted while A's bytes were in flight: the budget is over-committed";
  EXPECT_EQ(TakeSnapshot(*seg).charged, 6 * kPage);
  EXPECT_TRUE(b->TryCharge(4 * kPage));
}

TEST(LedgerBudgetTest, LimitTakesEffectAtTheNextAdmissionAndIsClamped) {
  ScopedSegmentName name("limit");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  auto a = AttachOrDie(seg, "a");
  ASSERT_TRUE(a);
  const std::uint64_t owner = Load(seg->slot(a->slot_index()).owner);
  auto set = SetSlotLimit(*seg, a->slot_index(), owner, 3 * kPage);
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_TRUE(a->TryCharge(2 * kPage));
  EXPECT_FALSE(a->TryCharge(2 * kPage));
  EXPECT_EQ(a->View().limit, 3 * kPage);
  ASSERT_TRUE(SetSlotLimit(*seg, a->slot_index(), owner, kNoLimit).ok());
  EXPECT_TRUE(a->TryCharge(2 * kPage)) << "a raised limit needs no polling";
  EXPECT_EQ(SetSlotLimit(*seg, a->slot_index(), owner, 1000 * kPage).value(), 10 * kPage);
  EXPECT_FALSE(SetSlotLimit(*seg, a->slot_index(), owner + 1, kPage).ok()) << "wrong owner";
  ASSERT_TRUE(SetSlotLimit(*seg, a->slot_index(), owner, 0).ok());
  EXPECT_FALSE(a->TryCharge(kPage));
}

TEST(LedgerBudgetTest, PressureSignalsOtherProcessesOnce) {
  ScopedSegmentName name("pressure");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  auto a = AttachOrDie(seg, "a");
  auto b = AttachOrDie(seg, "b");
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(b->TakePressureSignal());
  a->RequestPressure(3 * kPage);
  EXPECT_FALSE(a->TakePressureSignal()) << "its own request";
  EXPECT_TRUE(b->TakePressureSignal());
  EXPECT_FALSE(b->TakePressureSignal()) << "once per request";
  EXPECT_EQ(Load(seg->header().pressure_bytes), 3 * kPage);
  a->RequestPressure(kPage);
  b->RequestPressure(kPage);
  EXPECT_TRUE(a->TakePressureSignal());
  EXPECT_TRUE(b->TakePressureSignal());
}

TEST(LedgerBudgetTest, DeadProcessesBudgetReturnsWhenNeeded) {
  ScopedSegmentName name("dead");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  const pid_t child = ::fork();
  if (child == 0) {
    auto s = Segment::Open(name.name(), Segment::Access::kReadWrite);
    if (!s.ok()) _exit(2);
    auto b = LedgerBudget::Attach(std::shared_ptr<Segment>(std::move(s).value()), "victim");
    if (!b.ok() || !b.value()->TryCharge(6 * kPage)) _exit(3);
    // Mid-admission when killed: bytes left in `tentative` as well.
    auto& seg_rw = const_cast<Segment&>(b.value()->segment());
    Atomic(seg_rw.slot(b.value()->slot_index()).tentative).fetch_add(kPage);
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  SegmentSnapshot snap = TakeSnapshot(*seg);
  ASSERT_EQ(snap.dead, 1U);
  EXPECT_EQ(snap.charged, 6 * kPage);

  auto a = AttachOrDie(seg, "survivor");
  ASSERT_TRUE(a);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(a->TryCharge(8 * kPage)) << "the dead slot is reclaimed on refusal";
  // At once, not after a heartbeat timeout (seconds); the bound leaves room for a loaded machine.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  snap = TakeSnapshot(*seg);
  EXPECT_EQ(snap.dead, 0U);
  EXPECT_EQ(snap.charged, 8 * kPage);
  EXPECT_EQ(snap.tentative, 0U);
}

TEST(LedgerBudgetTest, ReclaimsPidReuseAndDeadReclaimersButNotTheLiving) {
  ScopedSegmentName name("reuse");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  const ProcessIdentity me = CurrentProcess();
  auto plant = [&](std::uint32_t i, std::uint64_t owner) {
    Atomic(seg->slot(i).owner).store(owner);
    Atomic(seg->slot(i).charged).store(kPage);
    Atomic(seg->slot(i).pidns).store(me.pidns);
  };
  plant(10, PackOwner(SlotState::kLive, me.pid, me.start_ticks + 7));          // reused pid
  plant(11, PackOwner(SlotState::kReclaiming, 4194000, 12345));                // dead reclaimer
  plant(12, PackOwner(SlotState::kLive, 1, ReadProcessStat(1)->start_ticks));  // pid 1 lives
  const ProcessIdentity other{me.pid + 1, 0, me.pidns};
  EXPECT_EQ(ReclaimDeadSlots(*seg, other), 2);
  EXPECT_EQ(Load(seg->slot(10).owner), 0U);
  EXPECT_EQ(Load(seg->slot(10).charged), 0U);
  EXPECT_EQ(Load(seg->slot(11).owner), 0U);
  EXPECT_NE(Load(seg->slot(12).owner), 0U);
  auto ok = ValidateSegment(seg->Copy(), seg->path());
  EXPECT_TRUE(ok.ok()) << ok.status().message();
}

TEST(LedgerBudgetTest, ForkChildCannotTouchTheParentsSlot) {
  ScopedSegmentName name("fork");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  auto a = AttachOrDie(seg, "parent");
  ASSERT_TRUE(a && a->TryCharge(2 * kPage));
  const pid_t child = ::fork();
  if (child == 0) {
    const bool charged = a->TryCharge(kPage);
    a->Uncharge(2 * kPage);
    a->MoveToInUse(kPage);
    a.release();  // NOLINT: the parent's object; never destroy it here
    _exit(charged ? 1 : 0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(Load(seg->slot(a->slot_index()).charged), 2 * kPage);
  EXPECT_EQ(Load(seg->slot(a->slot_index()).in_use), 0U);
}

TEST(LedgerBudgetTest, ReattachesWhenItsSlotWasTakenAway) {
  ScopedSegmentName name("reattach");
  auto seg = Create(name.name(), Params(10));
  ASSERT_TRUE(seg);
  auto a = AttachOrDie(seg, "stalled");
  ASSERT_TRUE(a && a->TryCharge(3 * kPage));
  a->MoveToInUse(kPage);
  const std::uint32_t old = a->slot_index();
  // What a reclaimer in another pid namespace does to a slot whose heartbeat is stale.
  Atomic(seg->slot(old).charged).store(0);
  Atomic(seg->slot(old).in_use).store(0);
  Atomic(seg->slot(old).owner).store(0);
  // ...and another process takes the freed slot.
  const std::uint64_t squatter = PackOwner(SlotState::kLive, 1, ReadProcessStat(1)->start_ticks);
  Atomic(seg->slot(old).owner).store(squatter);
  EXPECT_FALSE(a->TryCharge(kPage)) << "never writes a slot it does not own";
  a->Heartbeat();
  EXPECT_NE(a->slot_index(), old);
  EXPECT_EQ(Load(seg->slot(a->slot_index()).charged), 3 * kPage);
  EXPECT_EQ(Load(seg->slot(a->slot_index()).in_use), kPage);
  EXPECT_TRUE(a->TryCharge(kPage));
  EXPECT_EQ(Load(seg->slot(old).charged), 0U) << "the squatter's slot was not touched";
  EXPECT_EQ(Load(seg->slot(old).owner), squatter);
  Atomic(seg->slot(old).owner).store(0);
}

Config TestConfig(const std::string& ipc) {
  Config c;
  c.ipc_name = ipc;
  c.gpu_utilization = 0.5;
  c.label = "factory-test";
  return c;
}

TEST(LedgerFactory, AttachesAndSharesOneBudgetPerGpu) {
  ScopedSegmentName name("factory");
  const std::string ipc = name.name().substr(kNamePrefix.size());
  const DeviceIdentity dev{0, "GPU-factory", 100 * kPage};
  BudgetFactory factory = MakeBudgetFactory();
  auto one = factory(TestConfig(ipc), dev);
  ASSERT_TRUE(one.ok()) << one.status().message();
  Config other = TestConfig(ipc);
  other.budget_bytes = 90 * kPage;  // ignored: the creator set the budget
  auto two = factory(other, dev);
  ASSERT_TRUE(two.ok()) << two.status().message();
  EXPECT_EQ(one.value()->View().budget, 50 * kPage);
  EXPECT_EQ(two.value()->View().budget, 50 * kPage);
  EXPECT_TRUE(one.value()->TryCharge(30 * kPage));
  EXPECT_FALSE(two.value()->TryCharge(30 * kPage));
  auto seg = Segment::Open(name.name(), Segment::Access::kReadOnly);
  ASSERT_TRUE(seg.ok());
  const SegmentSnapshot snap = TakeSnapshot(*seg.value());
  ASSERT_EQ(snap.slots.size(), 2U);
  EXPECT_EQ(snap.slots[0].label, "factory-test");
}

TEST(LedgerFactory, SecondGpuUnderOneIpcNameGetsItsOwnSegment) {
  ScopedSegmentName name("tp");
  const std::string ipc = name.name().substr(kNamePrefix.size());
  const std::string second = name.name() + "_GPU-22222222";
  auto f = MakeBudgetFactory();
  auto g0 = f(TestConfig(ipc), DeviceIdentity{0, "GPU-11111111-aaaa", 100 * kPage});
  auto g1 = f(TestConfig(ipc), DeviceIdentity{1, "GPU-22222222-bbbb", 100 * kPage});
  ASSERT_TRUE(g0.ok()) << g0.status().message();
  ASSERT_TRUE(g1.ok()) << g1.status().message();
  EXPECT_TRUE(g0.value()->TryCharge(50 * kPage));
  EXPECT_TRUE(g1.value()->TryCharge(50 * kPage)) << "separate budgets per GPU";
  struct stat st {};
  EXPECT_EQ(::stat(("/dev/shm/" + second).c_str(), &st), 0);
  (void)Segment::Remove(second);
}

TEST(LedgerFactory, CorruptSegmentFallsBackToALocalBudgetAndDoctorNamesTheFileAndTheFix) {
  ScopedSegmentName name("corrupt");
  const int fd = ::shm_open(("/" + name.name()).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  std::vector<char> junk(SegmentBytes(kDefaultSlotCount), 'Z');
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  auto f = MakeBudgetFactory();
  const std::string ipc = name.name().substr(kNamePrefix.size());
  auto b = f(TestConfig(ipc), DeviceIdentity{0, "GPU-c", 100 * kPage});
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(dynamic_cast<LedgerBudget*>(b.value().get()), nullptr);
  EXPECT_TRUE(b.value()->TryCharge(kPage));
  const Status diagnosis = DiagnoseSegment(name.name(), "");
  ASSERT_FALSE(diagnosis.ok());
  const std::string msg = diagnosis.message();
  EXPECT_NE(msg.find(name.path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("kvctl delete " + name.name()), std::string::npos) << msg;
  EXPECT_NE(msg.find("KVCACHED_IPC_NAME"), std::string::npos) << msg;
}

TEST(LedgerFactory, RefusesAZeroBudgetAndClampsToTheTotal) {
  Config c;
  c.budget_bytes = 1000 * kPage;
  EXPECT_EQ(BudgetBytesFor(c, 100 * kPage).value(), 100 * kPage);
  c.budget_bytes.reset();
  c.gpu_utilization = 0.25;
  EXPECT_EQ(BudgetBytesFor(c, 100 * kPage).value(), 25 * kPage);
  EXPECT_FALSE(BudgetBytesFor(c, 0).ok());
  c.budget_bytes = 0;
  EXPECT_FALSE(BudgetBytesFor(c, 100 * kPage).ok());
}

}  // namespace
}  // namespace kvcached::ledger
