// kvctl end to end: every command and its error paths, run as the built binary against segments
// held by ledger_worker processes; kvtop is driven in a detached tmux session.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/ledger/ledger_segment.h"
#include "tests/ledger/kvctl_run.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger::testing {
namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;
constexpr std::uint64_t kGiB = 1ULL << 30;

nlohmann::json ProcessEntry(const nlohmann::json& segment, pid_t pid) {
  for (const auto& p : segment.at("processes")) {
    if (p.at("pid") == pid) return p;
  }
  return nullptr;
}

// The fields docs/kvctl.md promises for every segment of `list --json`, whatever its state.
void ExpectEveryDocumentedField(const nlohmann::json& s) {
  for (const char* key : {"name", "path", "status", "error", "owner_uid", "group_gid", "mode",
                          "gpu_uuid", "gpu_total_bytes", "budget_bytes", "used_bytes",
                          "reserved_bytes", "charged_bytes", "free_bytes", "live_processes",
                          "dead_processes", "slots", "pressure_requests", "processes"}) {
    EXPECT_TRUE(s.contains(key)) << key << " missing in " << s.dump();
  }
}

void WriteGarbageSegment(const std::string& name) {
  const int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  const std::string junk(20000, 'Q');
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
}

class KvctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alpha_label_ = "alpha-" + std::to_string(::getpid());
    beta_label_ = "beta-" + std::to_string(::getpid());
    alpha_ =
        std::make_unique<Holder>(seg_.name(), alpha_label_,
                                 std::vector<std::string>{"--charge", std::to_string(kGiB),
                                                          "--in-use", std::to_string(512 * kMiB),
                                                          "--other", std::to_string(256 * kMiB)});
    beta_ = std::make_unique<Holder>(
        seg_.name(), beta_label_, std::vector<std::string>{"--charge", std::to_string(512 * kMiB)});
    ASSERT_TRUE(alpha_->ready() && beta_->ready());
  }

  ScopedSegmentName seg_{"kvctl"};  // 8 GiB budget of 16 GiB (ledger_worker defaults)
  std::string alpha_label_, beta_label_;
  std::unique_ptr<Holder> alpha_, beta_;
};

TEST(KvctlCli, VersionHelpAndUsageErrors) {
  RunResult r = Kvctl({"--version"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_TRUE(Has(r.out, "kvctl 0.")) << r.out;
  r = Kvctl({"--help"});
  EXPECT_EQ(r.rc, 0);
  for (const char* cmd : {"list", "watch", "kvtop", "limit", "delete", "doctor"}) {
    EXPECT_TRUE(Has(r.out, cmd)) << cmd;
    const RunResult help = Kvctl({cmd, "--help"});
    EXPECT_EQ(help.rc, 0) << cmd;
    EXPECT_TRUE(Has(help.out, "Usage")) << cmd << ": " << help.out;
  }
  r = Kvctl({});
  EXPECT_EQ(r.rc, 2);
  EXPECT_FALSE(r.err.empty());
  r = Kvctl({"frobnicate"});
  EXPECT_EQ(r.rc, 2);
  r = Kvctl({"list", "--bogus"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(Has(r.err, "--bogus")) << r.err;
  r = Kvctl({"limit", "123"});
  EXPECT_EQ(r.rc, 2) << "SIZE missing";
}

TEST_F(KvctlTest, ListShowsBudgetUseAndEveryProcess) {
  const nlohmann::json s = ListEntry(seg_.name());
  ASSERT_FALSE(s.is_null());
  EXPECT_EQ(s.at("status"), "ok");
  EXPECT_EQ(s.at("budget_bytes"), 8 * kGiB);
  EXPECT_EQ(s.at("gpu_total_bytes"), 16 * kGiB);
  EXPECT_EQ(s.at("gpu_uuid"), "GPU-test");
  EXPECT_EQ(s.at("used_bytes"), 512 * kMiB);
  EXPECT_EQ(s.at("reserved_bytes"), 1024 * kMiB);
  EXPECT_EQ(s.at("free_bytes"), 8 * kGiB - 1536 * kMiB);
  EXPECT_EQ(s.at("live_processes"), 2);
  EXPECT_EQ(s.at("dead_processes"), 0);
  EXPECT_EQ(s.at("mode"), "0600");
  const auto a = ProcessEntry(s, alpha_->pid());
  ASSERT_FALSE(a.is_null());
  EXPECT_EQ(a.at("label"), alpha_label_);
  EXPECT_EQ(a.at("state"), "live");
  EXPECT_EQ(a.at("in_use_bytes"), 512 * kMiB);
  EXPECT_EQ(a.at("reserved_bytes"), 512 * kMiB);
  EXPECT_EQ(a.at("other_bytes"), 256 * kMiB);
  EXPECT_TRUE(a.at("limit_bytes").is_null());
  EXPECT_LT(a.at("heartbeat_age_s").get<double>(), 5.0);
  EXPECT_FALSE(ProcessEntry(s, beta_->pid()).is_null());

  const RunResult r = Kvctl({"list"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_TRUE(Has(r.out, seg_.name())) << r.out;
  EXPECT_TRUE(Has(r.out, "8 GiB")) << r.out;
  EXPECT_TRUE(Has(r.out, "512 MiB")) << r.out;
}

TEST_F(KvctlTest, StaleAndCorruptSegmentsAreShownAsSuch) {
  ScopedSegmentName stale("kvctlstale");
  {
    Holder ghost(stale.name(), "ghost", {"--charge", std::to_string(kGiB)});
    ASSERT_TRUE(ghost.ready());
    ghost.Kill(SIGKILL);
  }
  nlohmann::json s = ListEntry(stale.name());
  ASSERT_FALSE(s.is_null());
  EXPECT_EQ(s.at("status"), "stale");
  EXPECT_EQ(s.at("dead_processes"), 1);
  EXPECT_EQ(s.at("live_processes"), 0);
  EXPECT_EQ(s.at("processes")[0].at("state"), "dead");

  ScopedSegmentName corrupt("kvctlcorrupt");
  WriteGarbageSegment(corrupt.name());
  s = ListEntry(corrupt.name());
  ASSERT_FALSE(s.is_null());
  EXPECT_EQ(s.at("status"), "corrupt");
  EXPECT_TRUE(Has(s.at("error").get<std::string>(), corrupt.path()));
  EXPECT_TRUE(Has(s.at("error").get<std::string>(), "kvctl delete"));
  ExpectEveryDocumentedField(s);

  const RunResult r = Kvctl({"list"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_TRUE(Has(r.out, "stale")) << r.out;
  EXPECT_TRUE(Has(r.out, "corrupt")) << r.out;
  EXPECT_TRUE(Has(r.out, "kvctl delete " + stale.name())) << r.out;
}

TEST_F(KvctlTest, WatchRefreshesAndReportsErrors) {
  RunResult r = Kvctl({"watch", seg_.name(), "--count", "2", "--interval", "0.1"});
  EXPECT_EQ(r.rc, 0) << r.err;
  std::size_t seen = 0;
  for (std::size_t at = r.out.find(alpha_label_); at != std::string::npos;
       at = r.out.find(alpha_label_, at + 1)) {
    ++seen;
  }
  EXPECT_EQ(seen, 2U) << r.out;
  for (const char* col :
       {"PID", "LABEL", "LIMIT", "IN-USE", "RESERVED", "PEAK", "OTHER", "HEARTBEAT"}) {
    EXPECT_TRUE(Has(r.out, col)) << col;
  }
  r = Kvctl({"watch", "/dev/shm/" + seg_.name(), "--json", "--count", "3", "--interval", "0.05"});
  EXPECT_EQ(r.rc, 0) << r.err;
  std::istringstream lines(r.out);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("processes").size(), 2U);
  }
  EXPECT_EQ(n, 3);

  r = Kvctl({"watch", "kvcached_test_missing_" + std::to_string(::getpid()), "--count", "1"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, "no ledger segment")) << r.err;
  r = Kvctl({"watch", "../etc/passwd", "--count", "1"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(Has(r.err, "not a kvcached segment name")) << r.err;
  r = Kvctl({"watch", seg_.name(), "--interval", "0"});
  EXPECT_EQ(r.rc, 2);
}

TEST_F(KvctlTest, LimitSetsClampsRemovesAndTakesEffect) {
  const std::string pid = std::to_string(alpha_->pid());
  RunResult r = Kvctl({"limit", pid, "1G"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "limit set to 1 GiB")) << r.out;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes"), kGiB);
  EXPECT_EQ(alpha_->Send("charge " + std::to_string(2 * kMiB)), "refused") << "at its limit";

  r = Kvctl({"limit", pid, "none"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "limit removed")) << r.out;
  EXPECT_TRUE(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes").is_null());
  EXPECT_EQ(alpha_->Send("charge " + std::to_string(2 * kMiB)), "ok") << "a raise needs no restart";

  r = Kvctl({"limit", pid, "0.5"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes"), 4 * kGiB);
  r = Kvctl({"limit", pid, "25%"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes"), 2 * kGiB);
  r = Kvctl({"limit", pid, "100G", "--segment", seg_.name()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "clamped to the budget")) << r.out;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes"), 8 * kGiB);

  r = Kvctl({"limit", beta_label_, "256MiB"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "holds 512 MiB now")) << r.out;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), beta_->pid()).at("limit_bytes"), 256 * kMiB);

  r = Kvctl({"limit", seg_.name(), "3G"});  // every process of the segment
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto s = ListEntry(seg_.name());
  EXPECT_EQ(ProcessEntry(s, alpha_->pid()).at("limit_bytes"), 3 * kGiB);
  EXPECT_EQ(ProcessEntry(s, beta_->pid()).at("limit_bytes"), 3 * kGiB);

  for (const char* bad : {"abc", "1.5", "150%", "-1G", ""}) {
    r = Kvctl({"limit", pid, bad});
    EXPECT_EQ(r.rc, 2) << bad;
    EXPECT_TRUE(Has(r.err, "bad size")) << bad << ": " << r.err;
  }
  // 2^64-1 is the ledger's "no limit" word: as a number it must be refused, not remove the limit.
  r = Kvctl({"limit", pid, "1G"});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* huge : {"18446744073709551615", "18446744073709551614", "1152921504606846977"}) {
    r = Kvctl({"limit", pid, huge});
    EXPECT_EQ(r.rc, 2) << huge << ": " << r.out;
    EXPECT_TRUE(Has(r.err, "out of range")) << huge << ": " << r.err;
    EXPECT_TRUE(Has(r.err, "none")) << r.err;
  }
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes"), kGiB)
      << "an out-of-range value changed the limit";
  r = Kvctl({"limit", pid, "unlimited"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("limit_bytes").is_null());

  r = Kvctl({"limit", "99999999", "1G"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, "no live process")) << r.err;
  r = Kvctl({"limit", "no-such-label-" + pid, "1G"});
  EXPECT_EQ(r.rc, 1);
  r = Kvctl({"limit", pid, "1G", "--segment", "kvcached_test_missing_" + pid});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, "no ledger segment")) << r.err;
}

TEST_F(KvctlTest, ShareSetsWeightAndMinimumLiveAndListShowsThem) {
  const std::string pid = std::to_string(alpha_->pid());
  RunResult r = Kvctl({"share", pid, "--weight", "2.5"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "weight 2.5, guaranteed minimum 0 B")) << r.out;
  auto a = ProcessEntry(ListEntry(seg_.name()), alpha_->pid());
  EXPECT_EQ(a.at("weight"), 2.5);
  EXPECT_EQ(a.at("share_min_bytes"), 0);

  r = Kvctl({"share", pid, "--min", "1G"});  // the weight stays
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "weight 2.5, guaranteed minimum 1 GiB")) << r.out;
  r = Kvctl({"share", beta_label_, "--min", "25%", "--weight", "0.5"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto s = ListEntry(seg_.name());
  EXPECT_EQ(ProcessEntry(s, beta_->pid()).at("share_min_bytes"), 2 * kGiB);
  EXPECT_EQ(ProcessEntry(s, beta_->pid()).at("weight"), 0.5);
  r = Kvctl({"share", pid, "--min", "100G"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "clamped to the budget")) << r.out;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("share_min_bytes"), 8 * kGiB);
  r = Kvctl({"share", seg_.name(), "--weight", "1", "--min", "none"});
  ASSERT_EQ(r.rc, 0) << r.err;
  s = ListEntry(seg_.name());
  for (pid_t p : {alpha_->pid(), beta_->pid()}) {
    const auto e = ProcessEntry(s, p);
    EXPECT_EQ(e.at("weight"), 1.0);
    EXPECT_EQ(e.at("share_min_bytes"), 0);
    EXPECT_EQ(e.at("deficit_bytes"), 0);
    EXPECT_EQ(e.at("starved"), false);
  }
  // Nobody is refused: each one may claim what the other does not hold (alpha 1 GiB, beta 512 MiB
  // of 8 GiB).
  EXPECT_EQ(ProcessEntry(s, alpha_->pid()).at("fair_share_bytes"), 8 * kGiB - 512 * kMiB);
  EXPECT_EQ(ProcessEntry(s, beta_->pid()).at("fair_share_bytes"), 7 * kGiB);
  r = Kvctl({"list"});
  ASSERT_EQ(r.rc, 0);
  EXPECT_TRUE(Has(r.out, "FAIR SHARE")) << r.out;
  EXPECT_TRUE(Has(r.out, alpha_label_)) << r.out;

  // Bad input: one line naming the thing and the fix; nothing changes.
  for (const char* bad : {"0", "1001", "-1", "abc", "1e3", "", "."}) {
    r = Kvctl({"share", pid, "--weight", bad});
    EXPECT_EQ(r.rc, 2) << bad;
    EXPECT_TRUE(Has(r.err, "bad weight")) << bad << ": " << r.err;
    EXPECT_TRUE(Has(r.err, "0.001 to 1000")) << r.err;
  }
  r = Kvctl({"share", pid, "--min", "lots"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(Has(r.err, "--min: bad size")) << r.err;
  r = Kvctl({"share", pid});
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(Has(r.err, "--weight")) << r.err;
  EXPECT_EQ(ProcessEntry(ListEntry(seg_.name()), alpha_->pid()).at("weight"), 1.0);
  r = Kvctl({"share", "99999999", "--weight", "2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, "no live process")) << r.err;
}

TEST_F(KvctlTest, DeleteRefusesLiveSegmentsAndAnythingElse) {
  RunResult r = Kvctl({"delete", seg_.name()});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, std::to_string(alpha_->pid()))) << r.err;
  EXPECT_TRUE(Has(r.err, "--force")) << r.err;
  struct stat st {};
  EXPECT_EQ(::stat(seg_.path().c_str(), &st), 0) << "still there";

  for (const char* outside : {"/etc/passwd", "/dev/shm/../../etc/passwd", "kvcached_../x", "a/b"}) {
    r = Kvctl({"delete", "--force", outside});
    EXPECT_EQ(r.rc, 2) << outside;
  }
  EXPECT_EQ(::stat("/etc/passwd", &st), 0);
  r = Kvctl({"delete", "kvcached_test_missing_" + std::to_string(::getpid())});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, "no segment")) << r.err;

  // Idle (every process gone): deleted without --force, given as a /dev/shm path.
  alpha_->Kill(SIGTERM);
  beta_->Kill(SIGTERM);
  EXPECT_EQ(ListEntry(seg_.name()).at("live_processes"), 0);
  r = Kvctl({"delete", seg_.path()});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "deleted " + seg_.path())) << r.out;
  EXPECT_NE(::stat(seg_.path().c_str(), &st), 0);

  ScopedSegmentName forced("kvctlforce");
  Holder holder(forced.name(), "victim");
  ASSERT_TRUE(holder.ready());
  r = Kvctl({"delete", "--force", forced.name().substr(9)});  // without the kvcached_ prefix
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "forced")) << r.out;

  ScopedSegmentName corrupt("kvctlcorrupt2");
  WriteGarbageSegment(corrupt.name());
  r = Kvctl({"delete", corrupt.name()});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "corrupt")) << r.out;
}

nlohmann::json DoctorCheck(const nlohmann::json& doctor, const std::string& name,
                           const std::string& mentioning = {}) {
  for (const auto& c : doctor.at("checks")) {
    if (c.at("check") == name && Has(c.at("detail").get<std::string>(), mentioning)) return c;
  }
  return nullptr;
}

TEST_F(KvctlTest, DoctorReportsEachProblemWithItsFix) {
  RunResult r =
      Kvctl({"doctor", "--json"}, {"KVCACHED_CUDA_DRIVER=/nonexistent/libcuda.so.1",
                                   "KVCACHED_SHIM_PATH=/nonexistent/libkvcached_shim.so"});
  EXPECT_EQ(r.rc, 1);
  nlohmann::json d = nlohmann::json::parse(r.out);
  EXPECT_EQ(d.at("ok"), false);
  auto c = DoctorCheck(d, "driver");
  ASSERT_FALSE(c.is_null());
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "/nonexistent/libcuda.so.1"));
  EXPECT_TRUE(Has(c.at("detail"), "KVCACHED_CUDA_DRIVER"));
  c = DoctorCheck(d, "shim");
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "KVCACHED_SHIM_PATH"));
  c = DoctorCheck(d, "shm");
  EXPECT_EQ(c.at("status"), "ok");
  EXPECT_TRUE(Has(c.at("detail"), "free"));
  c = DoctorCheck(d, "segments", seg_.name());
  ASSERT_FALSE(c.is_null()) << r.out;
  EXPECT_EQ(c.at("status"), "ok");
  c = DoctorCheck(d, "permissions", seg_.name());
  ASSERT_FALSE(c.is_null());
  EXPECT_EQ(c.at("status"), "ok");
  EXPECT_TRUE(Has(c.at("detail"), "0600"));

  // A bad variable, a world-writable segment, a corrupt one and a shim that is not a library.
  ASSERT_EQ(::chmod(seg_.path().c_str(), 0666), 0);
  ScopedSegmentName corrupt("kvctldoctor");
  WriteGarbageSegment(corrupt.name());
  r = Kvctl({"doctor", "--json"},
            {"KVCACHED_GPU_UTILIZATION=7", "KVCACHED_SHIM_PATH=/etc/hostname"});
  EXPECT_EQ(r.rc, 1);
  d = nlohmann::json::parse(r.out);
  c = DoctorCheck(d, "config");
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "KVCACHED_GPU_UTILIZATION")) << c;
  c = DoctorCheck(d, "permissions", seg_.name());
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "world-writable"));
  c = DoctorCheck(d, "segments", corrupt.name());
  ASSERT_FALSE(c.is_null());
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "kvctl delete"));
  c = DoctorCheck(d, "shim");
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "does not load"));

  // The segment an engine would attach to (here through KVCACHED_IPC_NAME) is corrupt: the
  // engine would run on a process-local budget, and doctor says so.
  r = Kvctl({"doctor", "--json"}, {"KVCACHED_IPC_NAME=" + corrupt.name().substr(9)});
  d = nlohmann::json::parse(r.out);
  EXPECT_EQ(r.rc, 1);
  c = DoctorCheck(d, "ledger", corrupt.path());
  ASSERT_FALSE(c.is_null()) << r.out;
  EXPECT_EQ(c.at("status"), "fail");
  EXPECT_TRUE(Has(c.at("detail"), "process-local budget")) << c;
  r = Kvctl({"doctor", "--json"}, {"KVCACHED_IPC_NAME=" + seg_.name().substr(9)});
  d = nlohmann::json::parse(r.out);
  c = DoctorCheck(d, "ledger", seg_.path());
  ASSERT_FALSE(c.is_null()) << r.out;
  EXPECT_EQ(c.at("status"), "fail") << "world-writable (chmod above): engines refuse it";

  r = Kvctl({"doctor"}, {"KVCACHED_CUDA_DRIVER=/nonexistent/libcuda.so.1"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.out, "[FAIL] driver")) << r.out;

  const std::string fake = FakeDriverPath();
  if (!fake.empty() && ::access(fake.c_str(), R_OK) == 0) {
    r = Kvctl({"doctor", "--json"}, {"KVCACHED_CUDA_DRIVER=" + fake});
    d = nlohmann::json::parse(r.out);
    EXPECT_EQ(DoctorCheck(d, "driver").at("status"), "ok") << r.out;
    EXPECT_EQ(DoctorCheck(d, "vmm").at("status"), "ok") << r.out;
    EXPECT_TRUE(Has(DoctorCheck(d, "vmm").at("detail"), "VMM supported")) << r.out;
  }
}

// Issue 12, defect 7: a mistyped command or a junk number gets one line naming it (never "A
// subcommand is required" or a C-formatted float range), and --count 0 is refused, not "forever".
TEST(KvctlCli, UnknownCommandsAndJunkNumbersGetOneLineNamingThem) {
  RunResult r = Kvctl({"bogus"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(Has(r.err, "unknown command 'bogus'")) << r.err;
  EXPECT_TRUE(Has(r.err, "list, watch, kvtop, limit, delete, doctor")) << r.err;
  r = Kvctl({});
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(Has(r.err, "a command is required: list, watch")) << r.err;
  EXPECT_EQ(Kvctl({"help"}).rc, 0);

  const std::string seg = "kvcached_test_never_" + std::to_string(::getpid());
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"watch", seg, "--interval", "abc"},
       "--interval: 'abc' is not a number of seconds (0.05..3600)"},
      {{"watch", seg, "--interval", "-1"}, "--interval: '-1' is not a number of seconds"},
      {{"watch", seg, "--interval", "1e9"}, "--interval: '1e9' is not a number of seconds"},
      {{"watch", seg, "--interval", "nan"}, "--interval: 'nan' is not a number of seconds"},
      {{"watch", seg, "--interval", "0"}, "--interval: 0 seconds is out of range (0.05..3600)"},
      {{"watch", seg, "--interval", "7200"}, "--interval: 7200 seconds is out of range"},
      {{"watch", seg, "--count", "0"}, "--count: 0 is out of range (1..1000000000)"},
      {{"watch", seg, "--count", "-3"}, "--count: '-3' is not a whole number"},
      {{"watch", seg, "--count", "2x"}, "--count: '2x' is not a whole number"},
      {{"watch", seg, "--count", "99999999999999999999"}, "--count: 99999999999999999999 is out"},
      {{"kvtop", "--interval", "abc"}, "--interval: 'abc' is not a number of seconds (0.1..60)"},
      {{"kvtop", "--interval", "0.01"}, "--interval: 0.01 seconds is out of range (0.1..60)"},
      // The largest size is how the ledger stores "no limit": refused, not a silent removal.
      {{"limit", "123", "18446744073709551615"},
       "out of range (at most 1 EiB; any limit above the budget is clamped to it). To remove a "
       "limit"},
      {{"limit", "123", "-5"}, "bad size '-5': not a size"},
      {{"limit", "123", "1e3"}, "bad size '1e3': not a size"},
      {{"limit", "123", "-50%"}, "bad size '-50%'"},
  };
  for (const Case& c : cases) {
    r = Kvctl(c.args);
    EXPECT_EQ(r.rc, 2) << c.args.back() << ": " << r.err;
    EXPECT_TRUE(Has(r.err, c.message)) << "expected '" << c.message << "', got: " << r.err;
    EXPECT_FALSE(Has(r.err, "[0.05 - 3600]")) << r.err;  // CLI11's range text
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// Issue 12, defects 5 and 6: doctor runs the engine's own checks -- the config loader (a page size
// that is not a power of two, a group that does not exist, a budget below the minimum), each
// GPU's budget (BudgetForDevice) and the misspelled-variable finder.
TEST(KvctlDoctor, ReportsSettingsThatWouldBreakAllocationAndMisspelledVariables) {
  RunResult r = Kvctl({"doctor", "--json"},
                      {"KVCACHED_PAGE_SIZE_MB=6",
                       "KVCACHED_BUGDET=1G",                             // not-a-variable
                       "kvcached_log_level=info", "ENABLE_KVCACHE=0"});  // not-a-variable
  nlohmann::json d = nlohmann::json::parse(r.out);
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(DoctorCheck(d, "config", "KVCACHED_PAGE_SIZE_MB=\"6\": must be a power of two")
                .value("status", ""),
            "fail")
      << r.out;
  for (const char* hint :
       {"KVCACHED_BUGDET is not a kvcached variable and is ignored; did you "  // not-a-variable
        "mean KVCACHED_BUDGET?",
        "did you mean KVCACHED_LOG_LEVEL? (names are case-sensitive)",
        "ENABLE_KVCACHE is not a kvcached variable"}) {  // not-a-variable
    EXPECT_EQ(DoctorCheck(d, "variables", hint).value("status", ""), "warn") << hint << r.out;
  }

  for (const std::string& bad : {std::string("KVCACHED_SHM_GROUP=kvcached-no-such-group"),
                                 std::string("KVCACHED_BUDGET=3M")}) {
    r = Kvctl({"doctor", "--json"}, {bad});
    d = nlohmann::json::parse(r.out);
    const auto c = DoctorCheck(d, "config");
    EXPECT_EQ(c.value("status", ""), "fail") << bad << ": " << r.out;
    EXPECT_TRUE(Has(c.value("detail", ""), bad.substr(0, bad.find('=')))) << c;
    EXPECT_TRUE(DoctorCheck(d, "variables", "").value("status", "") == "ok") << r.out;
  }

  const std::string fake = FakeDriverPath();
  if (fake.empty() || ::access(fake.c_str(), R_OK) != 0) GTEST_SKIP() << "no fake driver";
  // The fake GPU has 8 GiB: 0.000001 of it is 8 KiB, below the 18 MiB minimum.
  r = Kvctl({"doctor", "--json"},
            {"KVCACHED_CUDA_DRIVER=" + fake, "KVCACHED_GPU_UTILIZATION=0.000001"});
  d = nlohmann::json::parse(r.out);
  EXPECT_EQ(r.rc, 1);
  auto c = DoctorCheck(d, "budget", "KVCACHED_GPU_UTILIZATION=1e-06 gives GPU 0");
  EXPECT_EQ(c.value("status", ""), "fail") << r.out;
  EXPECT_TRUE(Has(c.value("detail", ""), "below the minimum of 18 MiB")) << c;
  r = Kvctl({"doctor", "--json"}, {"KVCACHED_CUDA_DRIVER=" + fake, "KVCACHED_BUDGET=100T"});
  d = nlohmann::json::parse(r.out);
  c = DoctorCheck(d, "budget", "KVCACHED_BUDGET=100 TiB is more than GPU 0's");
  EXPECT_EQ(c.value("status", ""), "warn") << r.out;
  r = Kvctl({"doctor", "--json"}, {"KVCACHED_CUDA_DRIVER=" + fake});
  d = nlohmann::json::parse(r.out);
  EXPECT_EQ(DoctorCheck(d, "budget", "GPU 0: budget").value("status", ""), "ok") << r.out;
}

// tmux with a private server; every call waits for it to finish.
RunResult Tmux(const std::string& socket, std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/tmux", "-L", socket, "-f", "/dev/null"});
  return Run(args, {}, std::chrono::seconds(10));
}

TEST_F(KvctlTest, KvtopShowsLiveNumbersAndQuitsOnQ) {
  if (::access("/usr/bin/tmux", X_OK) != 0) GTEST_SKIP() << "tmux is not installed";
  const std::string socket = "kvctl_test_" + std::to_string(::getpid());
  RunResult r = Tmux(socket, {"new-session", "-d", "-s", "kvtop", "-x", "200", "-y", "120",
                              std::string(KvctlPath()) + " kvtop --interval 0.2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto screen_with = [&](const std::vector<std::string>& parts) {
    std::string screen;
    for (int i = 0; i < 100; ++i) {
      screen = Tmux(socket, {"capture-pane", "-p", "-t", "kvtop"}).out;
      bool all = true;
      for (const auto& p : parts) all = all && Has(screen, p);
      if (all) return std::make_pair(true, screen);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return std::make_pair(false, screen);
  };
  auto [shown, screen] =
      screen_with({"kvctl kvtop", seg_.name(), alpha_label_, beta_label_, "8 GiB"});
  EXPECT_TRUE(shown) << screen;
  // A new process appears with its numbers without restarting kvtop.
  const std::string gamma_label = "gamma-" + std::to_string(::getpid());
  Holder gamma(seg_.name(), gamma_label, {"--charge", std::to_string(3 * kGiB)});
  ASSERT_TRUE(gamma.ready());
  std::tie(shown, screen) = screen_with({gamma_label, "3 GiB", "[#", "+"});
  EXPECT_TRUE(shown) << screen;

  Tmux(socket, {"send-keys", "-t", "kvtop", "q"});
  bool ended = false;
  for (int i = 0; i < 50 && !ended; ++i) {
    ended = Tmux(socket, {"has-session", "-t", "kvtop"}).rc != 0;
    if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(ended) << "kvtop did not quit on q";
  Tmux(socket, {"kill-server"});

  r = Kvctl({"kvtop"});  // stdin/stdout are not a terminal here
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(Has(r.err, "needs a terminal")) << r.err;
}

}  // namespace
}  // namespace kvcached::ledger::testing
