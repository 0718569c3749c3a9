// kvctl and the segments that are not plain valid ledgers: one being created (never waited for),
// one of another layout version (named as such, with the fix, in list, watch, doctor and
// metrics), and the scope of `kvctl doctor` (this user's and its engines' segments by default,
// --all, --segment).
#include <fcntl.h>
#include <fmt/core.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_segment.h"
#include "tests/ledger/kvctl_run.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger::testing {
namespace {

// Doctor checks named `check` whose detail mentions `part`.
std::vector<nlohmann::json> DoctorChecks(const nlohmann::json& doctor, const std::string& check,
                                         const std::string& part) {
  std::vector<nlohmann::json> out;
  for (const auto& c : doctor.at("checks")) {
    if (c.at("check") == check && Has(c.at("detail").get<std::string>(), part)) out.push_back(c);
  }
  return out;
}

void CreateSegment(const std::string& name) {
  CreateParams p;
  p.gpu_total = 16ULL << 30;
  p.budget = 8ULL << 30;
  p.gpu_uuid = "GPU-kvctl-segments";
  auto seg = Segment::OpenOrCreate(name, p);
  ASSERT_TRUE(seg.ok()) << seg.status().message();
}

// A real segment whose header says layout `version`: what a kvcached of another release made.
void CreateSegmentOfVersion(const std::string& name, std::uint32_t version) {
  CreateSegment(name);
  const int fd = ::open(("/dev/shm/" + name).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, &version, sizeof(version), offsetof(SegmentHeader, version)),
            static_cast<ssize_t>(sizeof(version)));
  ::close(fd);
}

void CreateEmptyFile(const std::string& path, bool old) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  if (old) {
    const timespec times[2] = {{::time(nullptr) - 60, 0}, {::time(nullptr) - 60, 0}};
    ASSERT_EQ(::futimens(fd, times), 0);
  }
  ::close(fd);
}

// A segment whose creator is at it (no header yet) is shown as such at once: list, watch and kvtop
// used to give each one a second to finish (Segment::Open's wait).
TEST(KvctlSegments, ListAndWatchNeverWaitForASegmentBeingCreated) {
  ScopedSegmentName a("creating_a"), b("creating_b"), c("creating_c"), dead("creating_dead");
  for (const auto* s : {&a, &b, &c}) CreateEmptyFile(s->path(), false);
  CreateEmptyFile(dead.path(), true);
  const auto start = std::chrono::steady_clock::now();
  const RunResult r = Kvctl({"list", "--json"});
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_LT(took, std::chrono::milliseconds(900)) << "waited for the unfinished segments";
  const auto listed = nlohmann::json::parse(r.out);
  int seen = 0;
  for (const auto& s : listed.at("segments")) {
    if (s.at("name") == a.name()) {
      ++seen;
      EXPECT_EQ(s.at("status"), "creating") << s;
      EXPECT_TRUE(Has(s.at("error"), "being created")) << s;
    }
    if (s.at("name") == dead.name()) {
      ++seen;
      EXPECT_EQ(s.at("status"), "corrupt") << s;
      EXPECT_TRUE(Has(s.at("error"), "never initialised")) << s;
      EXPECT_TRUE(Has(s.at("error"), "kvctl delete " + dead.name())) << s;
    }
  }
  EXPECT_EQ(seen, 2) << r.out;
  const RunResult table = Kvctl({"list"});
  EXPECT_TRUE(Has(table.out, "being created")) << table.out;
  const auto watch_start = std::chrono::steady_clock::now();
  const RunResult w = Kvctl({"watch", a.name(), "--count", "1"});
  EXPECT_LT(std::chrono::steady_clock::now() - watch_start, std::chrono::milliseconds(900));
  EXPECT_EQ(w.rc, 0) << w.err;
  EXPECT_TRUE(Has(w.out, "is being created")) << w.out;
}

TEST(KvctlSegments, ASegmentOfAnotherLayoutVersionIsNamedWithTheFixNotCalledCorrupt) {
  ScopedSegmentName older("layout_older");
  CreateSegmentOfVersion(older.name(), kLayoutVersion - 1);
  const std::string want =
      fmt::format("layout {}; this kvctl reads {}", kLayoutVersion - 1, kLayoutVersion);
  const nlohmann::json s = ListEntry(older.name());
  ASSERT_FALSE(s.is_null());
  EXPECT_EQ(s.at("status"), "other_version") << s;
  EXPECT_EQ(s.at("layout_version"), kLayoutVersion - 1) << s;
  EXPECT_TRUE(Has(s.at("error"), want)) << s;
  EXPECT_TRUE(Has(s.at("error"), "kvctl delete " + older.name())) << s;
  EXPECT_TRUE(s.at("processes").empty());

  const RunResult table = Kvctl({"list"});
  EXPECT_EQ(table.rc, 0);
  const auto at = table.out.find(older.name());
  ASSERT_NE(at, std::string::npos) << table.out;
  const std::string row = table.out.substr(at, table.out.find('\n', at) - at);
  EXPECT_TRUE(Has(row, fmt::format("other version (layout {})", kLayoutVersion - 1))) << row;
  EXPECT_FALSE(Has(row, "corrupt")) << row;

  const RunResult w = Kvctl({"watch", older.name(), "--count", "1"});
  EXPECT_EQ(w.rc, 1);
  EXPECT_TRUE(Has(w.err, want)) << w.err;

  // doctor: a warning naming the version for the segment, and a failure for engines that would
  // attach to it (they would run with a process-local budget).
  RunResult r = Kvctl({"doctor", "--json", "--segment", older.name()});
  const nlohmann::json d = nlohmann::json::parse(r.out);
  const auto seg_checks = DoctorChecks(d, "segments", older.path());
  ASSERT_EQ(seg_checks.size(), 1U) << r.out;
  EXPECT_EQ(seg_checks[0].at("status"), "warn");
  EXPECT_TRUE(Has(seg_checks[0].at("detail"), want)) << seg_checks[0];
  const auto ledger_checks = DoctorChecks(d, "ledger", older.path());
  ASSERT_EQ(ledger_checks.size(), 1U) << r.out;
  EXPECT_EQ(ledger_checks[0].at("status"), "fail");
  EXPECT_TRUE(Has(ledger_checks[0].at("detail"), "made by another kvcached version"))
      << ledger_checks[0];

  // metrics: a status label and the version, no crash.
  r = Kvctl({"metrics", "--once"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "kvcached_segment_status{segment=\"" + older.name() +
                             "\",status=\"other_version\"} 1"))
      << r.out;
  EXPECT_TRUE(Has(r.out, fmt::format("kvcached_segment_layout_version{{segment=\"{}\"}} {}",
                                     older.name(), kLayoutVersion - 1)))
      << r.out;
}

// kvctl doctor judges this user's segments and those its engines would attach to; other users'
// (and anything else) only with --all, or one by one with --segment.
TEST(KvctlSegments, DoctorJudgesThisUsersSegmentsByDefaultEveryOneWithAll) {
  ScopedSegmentName mine("doctor_mine"), other("doctor_other");
  CreateSegment(mine.name());
  CreateSegment(other.name());
  const bool root = ::geteuid() == 0;
  if (root) {
    ASSERT_EQ(::chown(other.path().c_str(), 65534, 65534), 0);  // nobody's
  }
  RunResult r = Kvctl({"doctor", "--json"});
  nlohmann::json d = nlohmann::json::parse(r.out);
  EXPECT_EQ(DoctorChecks(d, "segments", mine.name()).size(), 1U) << r.out;
  EXPECT_EQ(DoctorChecks(d, "permissions", mine.path()).size(), 1U) << r.out;
  if (root) {
    EXPECT_TRUE(DoctorChecks(d, "segments", other.name()).empty()) << r.out;
    EXPECT_TRUE(DoctorChecks(d, "permissions", other.path()).empty()) << r.out;
    const auto skipped = DoctorChecks(d, "segments", "not judged");
    ASSERT_EQ(skipped.size(), 1U) << r.out;
    EXPECT_TRUE(Has(skipped[0].at("detail"), "kvctl doctor --all")) << skipped[0];
  }

  r = Kvctl({"doctor", "--json", "--all"});
  d = nlohmann::json::parse(r.out);
  EXPECT_EQ(DoctorChecks(d, "segments", mine.name()).size(), 1U) << r.out;
  EXPECT_EQ(DoctorChecks(d, "segments", other.name()).size(), 1U) << r.out;
  EXPECT_TRUE(DoctorChecks(d, "segments", "not judged").empty()) << r.out;

  r = Kvctl({"doctor", "--json", "--segment", other.name()});
  d = nlohmann::json::parse(r.out);
  EXPECT_EQ(DoctorChecks(d, "segments", other.name()).size(), 1U) << r.out;
  EXPECT_TRUE(DoctorChecks(d, "segments", mine.name()).empty()) << r.out;
  EXPECT_EQ(DoctorChecks(d, "ledger", other.path()).size(), 1U) << r.out;

  r = Kvctl({"doctor", "--json", "--segment", "kvcached_test_no_such_segment_here"});
  EXPECT_EQ(r.rc, 1);
  d = nlohmann::json::parse(r.out);
  const auto missing = DoctorChecks(d, "segments", "no segment");
  ASSERT_EQ(missing.size(), 1U) << r.out;
  EXPECT_EQ(missing[0].at("status"), "fail");

  r = Kvctl({"doctor", "--all", "--segment", mine.name()});
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  r = Kvctl({"doctor", "--segment", "../etc/passwd"});
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
}

}  // namespace
}  // namespace kvcached::ledger::testing
