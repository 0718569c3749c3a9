// The trust model (docs/ledger.md "Trust model") exercised with two real uids: the test runs as
// root and forks children that become uid 65534 (the squatter) or uid 65533 (a second normal
// user). Every test needs root; without it each is skipped (ctest reports SKIP).
#include <fcntl.h>
#include <fmt/core.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_budget_factory.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_snapshot.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

using testing::AsUser;
using testing::ScopedSegmentName;

constexpr std::uint64_t kPage = 2ULL << 20;
constexpr uid_t kSquatter = 65534;  // nobody
constexpr uid_t kVictim = 65533;    // a second unprivileged user (no passwd entry needed)
constexpr gid_t kSharedGid = 65534;

#define REQUIRE_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as two other users"

CreateParams Params(std::uint32_t mode = 0600, std::string group = {}) {
  CreateParams p;
  p.gpu_total = 100 * kPage;
  p.budget = 50 * kPage;
  p.gpu_uuid = "GPU-trust";
  p.mode = mode;
  p.group = std::move(group);
  return p;
}

bool Has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

Config EngineConfig(const std::string& segment_name, const std::string& group = {}) {
  Config c;
  c.ipc_name = segment_name.substr(kNamePrefix.size());
  c.gpu_utilization = 0.5;
  c.label = "victim";
  c.shm_group = group;
  return c;
}

// The squatter plants a perfectly valid segment, owner-only, at the name the victim will use.
void Squat(const std::string& name, std::uint32_t mode = 0600, const std::string& group = {}) {
  const int rc = AsUser(kSquatter, kSharedGid, {kSharedGid}, [&] {
    return Segment::OpenOrCreate(name, Params(mode, group)).ok() ? 0 : 1;
  });
  ASSERT_EQ(rc, 0) << "uid 65534 could not create the squatted segment";
  struct stat st {};
  ASSERT_EQ(::stat(SegmentPath(name).c_str(), &st), 0);
  ASSERT_EQ(st.st_uid, kSquatter);
}

TEST(LedgerTrust, AttachRefusesASegmentOwnedByAnotherUser) {
  REQUIRE_ROOT();
  ScopedSegmentName name("squat");
  Squat(name.name());
  // Root bypasses file permissions, so only the trust check stands between a root engine and a
  // budget (and limits, and a view of its pids) controlled by uid 65534.
  auto seg = Segment::OpenOrCreate(name.name(), Params());
  ASSERT_FALSE(seg.ok()) << "a root engine attached to a segment created by uid 65534";
  const std::string msg = seg.status().message();
  EXPECT_TRUE(Has(msg, "uid 65534")) << msg;
  EXPECT_TRUE(Has(msg, name.path())) << msg;
  EXPECT_TRUE(Has(msg, "KVCACHED_IPC_NAME")) << msg;
  EXPECT_TRUE(Has(msg, "kvctl delete")) << msg;
  // kvctl may still read it (list, watch): reading gives nothing away to the squatter.
  EXPECT_TRUE(Segment::Open(name.name(), Segment::Access::kReadOnly).ok());

  // The same for a second unprivileged user who can write it through a shared group: without
  // KVCACHED_SHM_GROUP naming that group, it is not trusted either.
  ScopedSegmentName grouped("squatgrp");
  const group* g = ::getgrgid(kSharedGid);
  if (g == nullptr) GTEST_SKIP() << "no group 65534 on this system";
  Squat(grouped.name(), 0660, g->gr_name);
  const int rc = AsUser(kVictim, kVictim, {kSharedGid}, [&] {
    auto rw = Segment::OpenOrCreate(grouped.name(), Params());
    if (rw.ok()) return 1;
    if (!Has(rw.status().message(), "uid 65534")) {
      std::fprintf(stderr, "%s\n", rw.status().message().c_str());
      return 2;
    }
    return 0;
  });
  EXPECT_EQ(rc, 0) << "uid 65533 attached to uid 65534's group segment without opting in";
}

TEST(LedgerTrust, OperatorGroupSegmentIsSharedByItsMembers) {
  REQUIRE_ROOT();
  const group* g = ::getgrgid(kSharedGid);
  if (g == nullptr) GTEST_SKIP() << "no group 65534 on this system";
  const std::string group_name = g->gr_name;
  ScopedSegmentName name("opgroup");
  Squat(name.name(), 0660, group_name);  // uid 65534, a member, created it for the group
  const int rc = AsUser(kVictim, kVictim, {kSharedGid}, [&] {
    auto seg = Segment::OpenOrCreate(name.name(), Params(0660, group_name));
    if (!seg.ok()) {
      std::fprintf(stderr, "%s\n", seg.status().message().c_str());
      return 1;
    }
    auto b = LedgerBudget::Attach(std::shared_ptr<Segment>(std::move(seg).value()), "member");
    return b.ok() && b.value()->TryCharge(kPage) ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "a member of KVCACHED_SHM_GROUP could not share the group's segment";
}

TEST(LedgerTrust, WorldWritableSegmentIsRefusedWhoeverOwnsIt) {
  REQUIRE_ROOT();
  ScopedSegmentName name("ww");
  ASSERT_TRUE(Segment::OpenOrCreate(name.name(), Params(0600)).ok());
  ASSERT_EQ(::chmod(name.path().c_str(), 0666), 0);
  auto seg = Segment::Open(name.name(), Segment::Access::kReadWrite);
  ASSERT_FALSE(seg.ok()) << "an engine attached to a world-writable segment";
  EXPECT_TRUE(Has(seg.status().message(), "world-writable")) << seg.status().message();
  EXPECT_TRUE(Segment::Open(name.name(), Segment::Access::kOperator).ok()) << "kvctl limit may";
}

TEST(LedgerTrust, SymlinksAndNonRegularFilesAreRefusedWithoutHanging) {
  ScopedSegmentName target("linktarget");
  ASSERT_TRUE(Segment::OpenOrCreate(target.name(), Params()).ok());
  ScopedSegmentName link("link");
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0);
  auto seg = Segment::Open(link.name(), Segment::Access::kReadWrite);
  ASSERT_FALSE(seg.ok());
  EXPECT_TRUE(Has(seg.status().message(), "symbolic link")) << seg.status().message();
  EXPECT_FALSE(Segment::OpenOrCreate(link.name(), Params()).ok());

  ScopedSegmentName fifo("fifo");
  ASSERT_EQ(::mkfifo(fifo.path().c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  seg = Segment::Open(fifo.name(), Segment::Access::kReadOnly);  // would block without O_NONBLOCK
  ASSERT_FALSE(seg.ok());
  EXPECT_TRUE(Has(seg.status().message(), "not a regular file")) << seg.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(LedgerTrust, DefaultNameIsPerUserUnlessSharedOnPurpose) {
  const DeviceIdentity dev{0, "GPU-1a2b", 100 * kPage};
  Config c;
  EXPECT_EQ(DefaultSegmentName(c, dev), fmt::format("kvcached_u{}_gpu_GPU-1a2b", ::geteuid()));
  c.shm_group = "kvcached";
  EXPECT_EQ(DefaultSegmentName(c, dev), "kvcached_gpu_GPU-1a2b");
  c.shm_group.clear();
  c.ipc_name = "team_a";
  EXPECT_EQ(DefaultSegmentName(c, dev), "kvcached_team_a");
  if (::geteuid() != 0) return;
  // Two users never compute the same default name, so neither can create the other's first.
  const int rc = AsUser(kSquatter, kSharedGid, {}, [&] {
    return DefaultSegmentName(Config{}, dev) == "kvcached_u65534_gpu_GPU-1a2b" ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

TEST(LedgerTrust, EngineFallsBackToALocalBudgetOnAForeignOrUnreadableSegment) {
  REQUIRE_ROOT();
  ScopedSegmentName foreign("fallforeign");
  Squat(foreign.name());
  auto budget = MakeBudgetFactory()(EngineConfig(foreign.name()), {0, "GPU-trust", 100 * kPage});
  ASSERT_TRUE(budget.ok()) << budget.status().message();
  EXPECT_EQ(dynamic_cast<LedgerBudget*>(budget.value().get()), nullptr) << "attached anyway";
  EXPECT_TRUE(budget.value()->TryCharge(kPage)) << "no KV cache after a squatted segment";
  EXPECT_EQ(budget.value()->View().limit, 50 * kPage);
  // Nothing of ours went into the squatter's segment.
  auto seg = Segment::Open(foreign.name(), Segment::Access::kReadOnly);
  ASSERT_TRUE(seg.ok());
  EXPECT_TRUE(TakeSnapshot(*seg.value()).slots.empty());

  // Unreadable for the engine's user (a root-owned 0600 segment, engine as uid 65533).
  ScopedSegmentName closed("fallclosed");
  ASSERT_TRUE(Segment::OpenOrCreate(closed.name(), Params(0600)).ok());
  const int rc = AsUser(kVictim, kVictim, {}, [&] {
    auto b = MakeBudgetFactory()(EngineConfig(closed.name()), {1, "GPU-trust", 100 * kPage});
    if (!b.ok()) return 1;
    return b.value()->TryCharge(kPage) ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "an engine facing an unreadable segment lost its KV cache";
}

TEST(LedgerTrust, KvctlLimitOnAnotherUsersProcessIsPermissionDenied) {
  REQUIRE_ROOT();
  const group* g = ::getgrgid(kSharedGid);
  if (g == nullptr) GTEST_SKIP() << "no group 65534 on this system";
  // uid 65534 must be able to run kvctl.
  const testing::KvctlCopyForOtherUsers kvctl_copy("trust");
  const std::string& kvctl = kvctl_copy.path();

  // A group segment (root's, shared with group 65534) with a root engine in it: uid 65534 may
  // write the file, but must not cap root's engine.
  ScopedSegmentName name("limitperm");
  ASSERT_TRUE(Segment::OpenOrCreate(name.name(), Params(0660, g->gr_name)).ok());
  testing::Holder holder(name.name(), "root-engine", {"--charge", std::to_string(4 * kPage)});
  ASSERT_TRUE(holder.ready());
  const std::string pid = std::to_string(holder.pid());
  auto r =
      testing::Run({kvctl, "limit", pid, "0"}, {}, std::chrono::seconds(20), kSquatter, kSharedGid);
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.err, "permission denied")) << r.err;
  EXPECT_TRUE(Has(r.err, "uid 0")) << r.err;
  EXPECT_EQ(holder.Send("charge " + std::to_string(kPage)), "ok") << "the limit was applied";

  // A segment it cannot even read: still "permission denied" naming the owner, not "no match".
  ScopedSegmentName closed("limitclosed");
  testing::Holder hidden(closed.name(), "hidden-engine");
  ASSERT_TRUE(hidden.ready());
  r = testing::Run({kvctl, "limit", std::to_string(hidden.pid()), "1G"}, {},
                   std::chrono::seconds(20), kSquatter, kSquatter);
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.err, "permission denied")) << r.err;
  EXPECT_TRUE(Has(r.err, "uid 0")) << r.err;
  EXPECT_FALSE(Has(r.err, "no live process matches")) << r.err;

  // `list --json` of a segment it cannot read keeps every documented field, with the error.
  r = testing::Run({kvctl, "list", "--json"}, {}, std::chrono::seconds(20), kSquatter, kSquatter);
  ASSERT_EQ(r.rc, 0) << r.err;
  bool seen = false;
  const auto listed = nlohmann::json::parse(r.out);
  for (const auto& s : listed.at("segments")) {
    if (s.at("name") != closed.name()) continue;
    seen = true;
    EXPECT_EQ(s.at("status"), "unreadable");
    EXPECT_TRUE(Has(s.at("error").get<std::string>(), "permission denied"));
    for (const char* key : {"gpu_uuid", "budget_bytes", "used_bytes", "free_bytes",
                            "live_processes", "dead_processes", "slots", "processes"}) {
      EXPECT_TRUE(s.contains(key)) << key << " missing: " << s.dump();
    }
  }
  EXPECT_TRUE(seen) << r.out << r.err;

  // The segment's owner (root) may.
  r = testing::Run({kvctl, "limit", pid, "1G"}, {}, std::chrono::seconds(20));
  EXPECT_EQ(r.rc, 0) << r.err;
}

// `kvctl share` follows `kvctl limit`'s rule: uid 65534 may write the group segment, but may not
// change the share of root's engine; root (the segment's owner) may.
TEST(LedgerTrust, KvctlShareOnAnotherUsersProcessIsPermissionDenied) {
  REQUIRE_ROOT();
  const group* g = ::getgrgid(kSharedGid);
  if (g == nullptr) GTEST_SKIP() << "no group 65534 on this system";
  // uid 65534 must be able to run kvctl.
  const testing::KvctlCopyForOtherUsers kvctl_copy("trust_share");
  const std::string& kvctl = kvctl_copy.path();

  ScopedSegmentName name("shareperm");
  ASSERT_TRUE(Segment::OpenOrCreate(name.name(), Params(0660, g->gr_name)).ok());
  testing::Holder holder(name.name(), "root-engine", {"--charge", std::to_string(4 * kPage)});
  ASSERT_TRUE(holder.ready());
  const std::string pid = std::to_string(holder.pid());
  auto r = testing::Run({kvctl, "share", pid, "--weight", "1000"}, {}, std::chrono::seconds(20),
                        kSquatter, kSharedGid);
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.err, "permission denied")) << r.err;
  EXPECT_TRUE(Has(r.err, "uid 0")) << r.err;
  EXPECT_TRUE(Has(r.err, "its share")) << r.err;
  auto seg = Segment::Open(name.name(), Segment::Access::kReadOnly);
  ASSERT_TRUE(seg.ok());
  EXPECT_EQ(Load(seg.value()->slot(holder.slot()).share_weight), kDefaultWeightMilli)
      << "the weight was changed";

  r = testing::Run({kvctl, "share", pid, "--weight", "3"}, {}, std::chrono::seconds(20));
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(Load(seg.value()->slot(holder.slot()).share_weight), 3000U);
}

}  // namespace
}  // namespace kvcached::ledger
