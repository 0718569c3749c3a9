// Permissions: a segment is created owner-only (0600) whatever the umask; another uid can neither
// write nor read it, change limits or delete it; KVCACHED_SHM_MODE/GROUP open it to a group.
// The checks switch to uid 65534 (nobody), so they need root; otherwise they are skipped.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_budget_factory.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_segment.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

using testing::ScopedSegmentName;

constexpr std::uint64_t kPage = 2ULL << 20;
constexpr int kNobody = 65534;

CreateParams Params(std::uint32_t mode = 0600, std::string group = {}) {
  CreateParams p;
  p.gpu_total = 100 * kPage;
  p.budget = 50 * kPage;
  p.gpu_uuid = "GPU-perm";
  p.mode = mode;
  p.group = std::move(group);
  return p;
}

// Runs `fn` in a child that has become uid 65534 with only group `gid`; returns its exit code.
template <class F>
int AsNobody(gid_t gid, F fn) {
  return testing::AsUser(kNobody, gid, {}, fn);
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(LedgerPermissions, OwnerOnlySegmentIsClosedToAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as uid 65534";
  ScopedSegmentName name("perm");
  const mode_t old = ::umask(0);  // a permissive umask must not widen the segment
  auto seg = Segment::OpenOrCreate(name.name(), Params());
  ::umask(old);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600U);
  EXPECT_EQ(st.st_uid, 0U);

  const int rc = AsNobody(kNobody, [&]() -> int {
    auto rw = Segment::Open(name.name(), Segment::Access::kReadWrite);
    if (rw.ok()) return 1;
    const std::string msg = rw.status().message();
    if (!Contains(msg, "permission denied") || !Contains(msg, name.path()) ||
        !Contains(msg, "KVCACHED_SHM_GROUP")) {
      std::fprintf(stderr, "unexpected message: %s\n", msg.c_str());
      return 2;
    }
    if (Segment::Open(name.name(), Segment::Access::kReadOnly).ok()) return 3;
    if (::open(name.path().c_str(), O_RDWR) >= 0 || errno != EACCES) return 4;
    Config config;
    config.ipc_name = name.name().substr(kNamePrefix.size());
    // The engine keeps a KV cache of its own (a process-local budget), and never the segment.
    auto budget = MakeBudgetFactory()(config, DeviceIdentity{0, "GPU-perm", 100 * kPage});
    if (!budget.ok() || dynamic_cast<LedgerBudget*>(budget.value().get()) != nullptr) return 5;
    Status removed = Segment::Remove(name.name());
    if (removed.ok() || !Contains(removed.message(), "permission denied")) return 6;
    return 0;
  });
  EXPECT_EQ(rc, 0) << "uid 65534 could use a root-owned 0600 segment (step " << rc << ")";
  EXPECT_EQ(::stat(name.path().c_str(), &st), 0) << "still there";
}

TEST(LedgerPermissions, GroupModeOpensItToThatGroupOnly) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as uid 65534";
  const group* g = ::getgrgid(kNobody);
  if (g == nullptr) GTEST_SKIP() << "no group 65534 on this system";
  const std::string group_name = g->gr_name;
  ScopedSegmentName name("group");
  auto seg = Segment::OpenOrCreate(name.name(), Params(0660, group_name));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660U);
  EXPECT_EQ(st.st_gid, static_cast<gid_t>(kNobody));

  const int member = AsNobody(kNobody, [&]() -> int {
    auto rw = Segment::Open(name.name(), Segment::Access::kReadWrite);
    if (!rw.ok()) return 1;
    auto b = LedgerBudget::Attach(std::shared_ptr<Segment>(std::move(rw).value()), "member");
    return b.ok() && b.value()->TryCharge(kPage) ? 0 : 2;
  });
  EXPECT_EQ(member, 0) << "a member of the segment's group could not use it";
  const int outsider = AsNobody(12345, [&]() -> int {
    return Segment::Open(name.name(), Segment::Access::kReadWrite).ok() ? 1 : 0;
  });
  EXPECT_EQ(outsider, 0) << "a user outside the group opened a 0660 segment";
}

TEST(LedgerPermissions, WorldWritableSegmentOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as uid 65534";
  ScopedSegmentName name("planted");
  // What a hostile user could plant before the engines start: a valid, world-writable segment.
  auto seg = Segment::OpenOrCreate(name.name(), Params(0666));
  ASSERT_TRUE(seg.ok()) << seg.status().message();
  const int rc = AsNobody(kNobody, [&]() -> int {
    auto rw = Segment::Open(name.name(), Segment::Access::kReadWrite);
    if (rw.ok()) return 1;
    const std::string msg = rw.status().message();
    if (!Contains(msg, "world-writable") || !Contains(msg, "kvctl delete")) {
      std::fprintf(stderr, "unexpected message: %s\n", msg.c_str());
      return 2;
    }
    // Reading it (kvctl list) is still allowed.
    return Segment::Open(name.name(), Segment::Access::kReadOnly).ok() ? 0 : 3;
  });
  EXPECT_EQ(rc, 0) << "step " << rc;
  // Not even its owner's engines attach (anyone may have rewritten it); kvctl limit may write it.
  EXPECT_FALSE(Segment::Open(name.name(), Segment::Access::kReadWrite).ok());
  EXPECT_TRUE(Segment::Open(name.name(), Segment::Access::kOperator).ok());
}

TEST(LedgerPermissions, UnknownGroupIsReportedAndLeavesNothingBehind) {
  ScopedSegmentName name("nogroup");
  auto seg = Segment::OpenOrCreate(name.name(), Params(0660, "kvcached-no-such-group"));
  ASSERT_FALSE(seg.ok());
  EXPECT_TRUE(Contains(seg.status().message(), "KVCACHED_SHM_GROUP=kvcached-no-such-group"))
      << seg.status().message();
  struct stat st {};
  EXPECT_NE(::stat(name.path().c_str(), &st), 0) << "the half-made segment was left in /dev/shm";
}

TEST(LedgerPermissions, KvctlAsAnotherUserCannotChangeLimitsOrDelete) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as uid 65534";
  // uid 65534 must be able to run kvctl.
  const testing::KvctlCopyForOtherUsers kvctl_copy("perm");
  const std::string& kvctl = kvctl_copy.path();

  ScopedSegmentName name("kvctlperm");
  testing::Holder holder(name.name(), "root-engine", {"--charge", std::to_string(4 * kPage)});
  ASSERT_TRUE(holder.ready());
  const auto limit = testing::Run({kvctl, "limit", std::to_string(holder.pid()), "1G"}, {},
                                  std::chrono::seconds(20), kNobody, kNobody);
  // As nobody the segment cannot even be read: permission denied, naming the owner.
  EXPECT_EQ(limit.rc, 1) << limit.out << limit.err;
  EXPECT_TRUE(Contains(limit.err, "permission denied")) << limit.err;
  EXPECT_TRUE(Contains(limit.err, "uid 0")) << limit.err;
  const auto del = testing::Run({kvctl, "delete", "--force", name.name()}, {},
                                std::chrono::seconds(20), kNobody, kNobody);
  EXPECT_EQ(del.rc, 1) << del.out << del.err;
  EXPECT_TRUE(Contains(del.err, "permission denied")) << del.err;
  EXPECT_TRUE(Contains(del.err, name.path())) << del.err;
  const auto list = testing::Run({kvctl, "list"}, {}, std::chrono::seconds(20), kNobody, kNobody);
  EXPECT_EQ(list.rc, 0) << list.err;
  EXPECT_TRUE(Contains(list.out, name.name())) << list.out;
  EXPECT_TRUE(Contains(list.out, "unreadable")) << list.out;
  EXPECT_TRUE(Contains(list.out, "permission denied")) << list.out;
  struct stat st {};
  EXPECT_EQ(::stat(name.path().c_str(), &st), 0);
  // The segment still works for its owner.
  EXPECT_EQ(holder.Send("charge " + std::to_string(kPage)), "ok");
}

}  // namespace
}  // namespace kvcached::ledger
