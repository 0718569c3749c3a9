// Unit tests of `kvctl metrics` below the HTTP server: the exposition text, --listen parsing, the
// bind diagnosis, and the activity counters that engines publish in their ledger slots.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <sstream>

#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_snapshot.h"
#include "tests/ledger/test_util.h"
#include "tools/kvctl/metrics_scan.h"
#include "tools/kvctl/metrics_server.h"
#include "tools/kvctl/metrics_text.h"

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

constexpr std::uint64_t kGiB = 1ULL << 30;

ledger::SlotSnapshot Slot(std::uint32_t index, std::uint64_t pid, std::string label) {
  ledger::SlotSnapshot s;
  s.index = index;
  s.state = ledger::SlotState::kLive;
  s.pid = pid;
  s.label = std::move(label);
  return s;
}

// One valid segment with a live process (limit 2 GiB, activity) and a dead one (no limit, no
// heartbeat), and one corrupt segment.
std::vector<SegmentEntry> Sample() {
  SegmentEntry ok;
  ok.name = "kvcached_gpu_A";
  ledger::SegmentSnapshot snap;
  snap.gpu_uuid = "GPU-aaaa";
  snap.gpu_total = 16 * kGiB;
  snap.budget = 8 * kGiB;
  snap.slot_count = 64;
  snap.pressure_seq = 7;
  auto a = Slot(0, 101, "vllm \"a\"\\x");
  a.limit = 2 * kGiB;
  a.in_use = 1 * kGiB;
  a.reserved = 512ULL << 20;
  a.charged = a.in_use + a.reserved;
  a.peak = 3 * kGiB / 2;
  a.other = 4096;
  a.pages_mapped = 11;
  a.pages_unmapped = 5;
  a.sync_maps = 3;
  a.budget_refusals = 2;
  auto b = Slot(3, 202, "sglang");
  b.dead = true;
  b.charged = b.reserved = 1 * kGiB;
  snap.slots = {a, b};
  snap.in_use = a.in_use;
  snap.reserved = a.reserved + b.reserved;
  snap.charged = a.charged + b.charged;
  snap.live = 1;
  snap.dead = 1;
  ok.snapshot = snap;
  SegmentEntry bad;
  bad.name = "kvcached_gpu_B";
  bad.status = SegmentStatus::kCorrupt;
  bad.error = "bad magic";
  return {ok, bad};
}

// Sample lines by "name{labels}" -> value; also checks that every family's HELP and TYPE come
// once, before its samples.
std::map<std::string, std::string> ParseExposition(const std::string& text) {
  std::map<std::string, std::string> samples;
  std::set<std::string> typed;
  std::set<std::string> helped;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("# HELP ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(helped.insert(name).second) << "second HELP for " << name;
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      std::istringstream t(line.substr(7));
      std::string name;
      std::string type;
      t >> name >> type;
      EXPECT_TRUE(type == "gauge" || type == "counter") << line;
      EXPECT_TRUE(helped.count(name)) << "TYPE before HELP for " << name;
      EXPECT_TRUE(typed.insert(name).second) << "second TYPE for " << name;
      if (type == "counter") {
        EXPECT_TRUE(name.ends_with("_total")) << name;
      }
      continue;
    }
    const auto space = line.rfind(' ');
    EXPECT_NE(space, std::string::npos) << line;
    const std::string key = line.substr(0, space);
    const std::string name = key.substr(0, key.find('{'));
    EXPECT_TRUE(typed.count(name)) << "sample before its TYPE: " << line;
    EXPECT_TRUE(samples.emplace(key, line.substr(space + 1)).second) << "duplicate " << key;
  }
  return samples;
}

TEST(MetricsText, EscapeLabelValueEscapesBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeLabelValue("plain-name_1.2"), "plain-name_1.2");
}

TEST(MetricsText, EscapeLabelValueReplacesControlAndNonAsciiBytes) {
  EXPECT_EQ(EscapeLabelValue(std::string("a\tb\x7f\xc3\xa9", 6)), "a?b???");
}

TEST(MetricsText, EveryFamilyHasHelpAndTypeOnceBeforeItsSamples) {
  const std::string text = RenderMetrics(Sample());
  ParseExposition(text);
  for (const auto& name : MetricFamilyNames()) {
    EXPECT_NE(text.find("# TYPE " + name + " "), std::string::npos) << name;
    EXPECT_TRUE(name.starts_with("kvcached_")) << name;
  }
}

TEST(MetricsText, EmptyHostStillDescribesEveryFamily) {
  const auto samples = ParseExposition(RenderMetrics({}));
  EXPECT_TRUE(samples.empty());
}

TEST(MetricsText, SegmentValuesMatchTheSnapshot) {
  const auto m = ParseExposition(RenderMetrics(Sample()));
  const std::string seg = R"({segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa"})";
  EXPECT_EQ(m.at("kvcached_segment_budget_bytes" + seg), std::to_string(8 * kGiB));
  EXPECT_EQ(m.at("kvcached_segment_gpu_memory_bytes" + seg), std::to_string(16 * kGiB));
  EXPECT_EQ(m.at("kvcached_segment_used_bytes" + seg), std::to_string(kGiB));
  EXPECT_EQ(m.at("kvcached_segment_reserved_bytes" + seg), std::to_string(kGiB + (512 << 20)));
  EXPECT_EQ(m.at("kvcached_segment_free_bytes" + seg),
            std::to_string(8 * kGiB - 2 * kGiB - (512 << 20)));
  EXPECT_EQ(m.at("kvcached_segment_pressure_requests_total" + seg), "7");
  EXPECT_EQ(m.at("kvcached_segment_slots" + seg), "64");
  EXPECT_EQ(
      m.at(
          R"(kvcached_segment_processes{segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",state="live"})"),
      "1");
  EXPECT_EQ(
      m.at(
          R"(kvcached_segment_processes{segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",state="dead"})"),
      "1");
  EXPECT_EQ(
      m.at(R"(kvcached_segment_status{segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",status="ok"})"),
      "1");
}

TEST(MetricsText, ShareValuesMatchTheSnapshot) {
  auto entries = Sample();
  auto& a = entries[0].snapshot->slots[0];
  a.weight_milli = 2500;
  a.share_min = kGiB;
  a.fair_share = 3 * kGiB;
  a.deficit = kGiB / 2;
  a.share_given = 4096;
  a.share_preempted = 9;
  const auto m = ParseExposition(RenderMetrics(entries));
  const std::string l =
      R"({segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",slot="0",pid="101",label="vllm \"a\"\\x"})";
  EXPECT_EQ(m.at("kvcached_process_share_weight" + l), "2.5");
  EXPECT_EQ(m.at("kvcached_process_share_min_bytes" + l), std::to_string(kGiB));
  EXPECT_EQ(m.at("kvcached_process_fair_share_bytes" + l), std::to_string(3 * kGiB));
  EXPECT_EQ(m.at("kvcached_process_share_deficit_bytes" + l), std::to_string(kGiB / 2));
  EXPECT_EQ(m.at("kvcached_process_share_given_bytes_total" + l), "4096");
  EXPECT_EQ(m.at("kvcached_process_share_preemptions_total" + l), "9");
}

TEST(MetricsText, EngineHookCountersAppearOnceReportedAndSecondsAreExact) {
  auto entries = Sample();
  auto& a = entries[0].snapshot->slots[0];
  a.engine_reported = true;
  a.engine_steps = 1200;
  a.engine_hook_ns = 18'446'744'073'709'551'615ULL;  // the largest total: no rounding
  a.engine_hook_c_calls = 3600;
  const auto m = ParseExposition(RenderMetrics(entries));
  const std::string l =
      R"({segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",slot="0",pid="101",label="vllm \"a\"\\x"})";
  EXPECT_EQ(m.at("kvcached_process_engine_steps_total" + l), "1200");
  EXPECT_EQ(m.at("kvcached_process_engine_hook_seconds_total" + l), "18446744073.709551615");
  EXPECT_EQ(m.at("kvcached_process_engine_hook_c_calls_total" + l), "3600");
  // The dead process never reported: no series for it (unknown, not 0).
  for (const auto& [key, value] : m) {
    if (key.starts_with("kvcached_process_engine_")) {
      EXPECT_NE(key.find(R"(pid="101")"), std::string::npos) << key;
    }
  }
  a.engine_hook_ns = 2'500'000;
  EXPECT_EQ(
      ParseExposition(RenderMetrics(entries)).at("kvcached_process_engine_hook_seconds_total" + l),
      "0.002500000");
}

TEST(MetricsText, ProcessValuesCarryEscapedLabelsAndTheEffectiveLimit) {
  const auto m = ParseExposition(RenderMetrics(Sample()));
  const std::string a =
      R"({segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",slot="0",pid="101",label="vllm \"a\"\\x"})";
  const std::string b =
      R"({segment="kvcached_gpu_A",gpu_uuid="GPU-aaaa",slot="3",pid="202",label="sglang"})";
  EXPECT_EQ(m.at("kvcached_process_limit_bytes" + a), std::to_string(2 * kGiB));
  EXPECT_EQ(m.at("kvcached_process_limit_bytes" + b), std::to_string(8 * kGiB));  // the budget
  EXPECT_EQ(m.at("kvcached_process_in_use_bytes" + a), std::to_string(kGiB));
  EXPECT_EQ(m.at("kvcached_process_reserved_bytes" + a), std::to_string(512 << 20));
  EXPECT_EQ(m.at("kvcached_process_peak_bytes" + a), std::to_string(3 * kGiB / 2));
  EXPECT_EQ(m.at("kvcached_process_other_bytes" + a), "4096");
  EXPECT_EQ(m.at("kvcached_process_pages_mapped_total" + a), "11");
  EXPECT_EQ(m.at("kvcached_process_pages_unmapped_total" + a), "5");
  EXPECT_EQ(m.at("kvcached_process_sync_maps_total" + a), "3");
  EXPECT_EQ(m.at("kvcached_process_budget_refusals_total" + a), "2");
  EXPECT_EQ(m.at("kvcached_process_alive" + a), "1");
  EXPECT_EQ(m.at("kvcached_process_alive" + b), "0");
  // No heartbeat recorded: the age is unknown, so the sample is left out.
  EXPECT_EQ(m.count("kvcached_process_heartbeat_age_seconds" + b), 0U);
}

TEST(MetricsText, UnusableSegmentShowsOnlyItsStatus) {
  const auto m = ParseExposition(RenderMetrics(Sample()));
  EXPECT_EQ(m.at(R"(kvcached_segment_status{segment="kvcached_gpu_B",status="corrupt"})"), "1");
  for (const auto& [key, value] : m) {
    if (key.find("kvcached_gpu_B") != std::string::npos) {
      EXPECT_TRUE(key.starts_with("kvcached_segment_status{")) << key;
    }
  }
}

TEST(ListenAddress, ParsesAddressesHostNamesAndBracketedIpv6) {
  std::string error;
  auto a = ParseListen("127.0.0.1:9400", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9400);
  a = ParseListen("[::1]:0", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
  EXPECT_EQ(FormatListen(*a), "[::1]:0");
  a = ParseListen("localhost:65535", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(FormatListen(*a), "localhost:65535");
  a = ParseListen(kDefaultMetricsListen, error);
  ASSERT_TRUE(a) << error;
}

TEST(ListenAddress, BadValuesAreRefusedWithTheValueAndAnExample) {
  for (const char* bad : {"9400", "127.0.0.1:", ":9400", "127.0.0.1:65536", "127.0.0.1:94x0",
                          "127.0.0.1:-1", "::1:9400", "[::1]9400", "[::1", "[]:9400", ""}) {
    std::string error;
    EXPECT_FALSE(ParseListen(bad, error)) << bad;
    EXPECT_NE(error.find(std::string("'") + bad + "'"), std::string::npos) << error;
    EXPECT_NE(error.find("127.0.0.1:9400"), std::string::npos) << error;
  }
}

TEST(ListenAddress, DiagnoseBindSaysAPortIsInUse) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const ListenAddress busy{"127.0.0.1", ntohs(addr.sin_port)};
  EXPECT_NE(DiagnoseBind(busy).find("already in use"), std::string::npos) << DiagnoseBind(busy);
  ::close(fd);
  EXPECT_EQ(DiagnoseBind(ListenAddress{"127.0.0.1", 0}), "");
  EXPECT_NE(DiagnoseBind(ListenAddress{"no-such-host.invalid", 9400}).find("cannot resolve"),
            std::string::npos);
}

// A file in /dev/shm whose creator died before writing the header: Segment::Open gives it 1 s to
// appear, which would exceed Prometheus' scrape timeout; the scrape reports it at once.
TEST(MetricsScan, AnAbandonedUnfinishedSegmentIsReportedWithoutWaiting) {
  ledger::testing::ScopedSegmentName name("metrics_unfinished");
  const int fd = ::open(name.path().c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  const timespec old[2] = {{::time(nullptr) - 60, 0}, {::time(nullptr) - 60, 0}};
  ASSERT_EQ(::futimens(fd, old), 0);
  ::close(fd);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<SegmentEntry> entries = ScanForMetrics();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  bool found = false;
  for (const auto& e : entries) {
    if (e.name != name.name()) continue;
    found = true;
    EXPECT_EQ(e.status, SegmentStatus::kCorrupt);
    EXPECT_NE(e.error.find("never initialised"), std::string::npos) << e.error;
    EXPECT_NE(e.error.find("kvctl delete " + name.name()), std::string::npos) << e.error;
  }
  EXPECT_TRUE(found);
}

TEST(MetricsScan, AFreshUnfinishedSegmentIsLeftOutForNow) {
  ledger::testing::ScopedSegmentName name("metrics_creating");
  const int fd = ::open(name.path().c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  const auto start = std::chrono::steady_clock::now();
  for (const auto& e : ScanForMetrics()) EXPECT_NE(e.name, name.name());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  const auto unfinished = UnfinishedSegment(name.name());
  ASSERT_TRUE(unfinished);
  EXPECT_TRUE(unfinished->name.empty());
}

// A 16 GiB GPU's segment with an 8 GiB budget (null, and a test failure, when it cannot be made).
std::shared_ptr<ledger::Segment> OpenSegment(const std::string& name) {
  ledger::CreateParams params;
  params.gpu_total = 16 * kGiB;
  params.budget = 8 * kGiB;
  params.gpu_uuid = "GPU-metrics-unit";
  auto seg = ledger::Segment::OpenOrCreate(name, params);
  EXPECT_TRUE(seg.ok()) << seg.status().message();
  if (!seg.ok()) return nullptr;
  return std::shared_ptr<ledger::Segment>(std::move(seg).value());
}

// The counters an engine's pool thread publishes reach kvctl's snapshot, and a slot taken by the
// next process starts from zero.
TEST(LedgerActivity, PublishedCountersAreReadBackAndClearedForTheNextOwner) {
  ledger::testing::ScopedSegmentName name("metrics_activity");
  const auto shared = OpenSegment(name.name());
  ASSERT_TRUE(shared);
  {
    auto budget = ledger::LedgerBudget::Attach(shared, "engine");
    ASSERT_TRUE(budget.ok()) << budget.status().message();
    budget.value()->PublishActivity({11, 5, 3, 2});
    const auto snap = ledger::TakeSnapshot(*shared);
    ASSERT_EQ(snap.slots.size(), 1U);
    EXPECT_EQ(snap.slots[0].pages_mapped, 11U);
    EXPECT_EQ(snap.slots[0].pages_unmapped, 5U);
    EXPECT_EQ(snap.slots[0].sync_maps, 3U);
    EXPECT_EQ(snap.slots[0].budget_refusals, 2U);
    const auto m = ParseExposition(RenderMetrics({Inspect(name.name())}));
    bool found = false;
    for (const auto& [key, value] : m) {
      if (key.starts_with("kvcached_process_pages_mapped_total{segment=\"" + name.name())) {
        EXPECT_EQ(value, "11");
        found = true;
      }
    }
    EXPECT_TRUE(found);
  }
  auto next = ledger::LedgerBudget::Attach(shared, "next");
  ASSERT_TRUE(next.ok());
  const auto snap = ledger::TakeSnapshot(*shared);
  ASSERT_EQ(snap.slots.size(), 1U);
  EXPECT_EQ(snap.slots[0].pages_mapped + snap.slots[0].pages_unmapped + snap.slots[0].sync_maps +
                snap.slots[0].budget_refusals,
            0U);
}

// The engine hook's totals reach kvctl's JSON (null until reported) and the exposition.
TEST(LedgerEngineSteps, ReportedTotalsReachJsonAndMetrics) {
  ledger::testing::ScopedSegmentName name("metrics_engine_steps");
  const auto shared = OpenSegment(name.name());
  ASSERT_TRUE(shared);
  auto budget = ledger::LedgerBudget::Attach(shared, "engine");
  ASSERT_TRUE(budget.ok()) << budget.status().message();
  auto process = [&] { return SegmentJson(Inspect(name.name()), true).at("processes").at(0); };
  EXPECT_TRUE(process().at("engine_steps").is_null());
  EXPECT_TRUE(process().at("engine_hook_ns").is_null());
  EXPECT_TRUE(process().at("engine_hook_c_calls").is_null());
  budget.value()->ReportEngineSteps({40, 1'000'000, 120});
  EXPECT_EQ(process().at("engine_steps"), 40U);
  EXPECT_EQ(process().at("engine_hook_ns"), 1'000'000U);
  EXPECT_EQ(process().at("engine_hook_c_calls"), 120U);
  const auto m = ParseExposition(RenderMetrics({Inspect(name.name())}));
  int found = 0;
  for (const auto& [key, value] : m) {
    if (key.starts_with("kvcached_process_engine_steps_total{segment=\"" + name.name())) {
      EXPECT_EQ(value, "40");
      ++found;
    }
    if (key.starts_with("kvcached_process_engine_hook_seconds_total{segment=\"" + name.name())) {
      EXPECT_EQ(value, "0.001000000");
      ++found;
    }
  }
  EXPECT_EQ(found, 2);
}

}  // namespace
}  // namespace kvctl
