#include "tests/ledger/churn_harness.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_slots.h"
#include "core/ledger/ledger_snapshot.h"
#include "tests/ledger/test_util.h"

extern char** environ;

namespace kvcached::ledger::testing {

ChurnHarness::ChurnHarness(HarnessConfig config) : config_(std::move(config)) {}

ChurnHarness::~ChurnHarness() {
  for (const auto& [pid, live] : live_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  if (stats_ != nullptr) ::munmap(stats_, stats_bytes_);
  if (!stats_path_.empty()) ::unlink(stats_path_.c_str());
  (void)Segment::Remove(config_.segment);
}

WorkerRow& ChurnHarness::Row(std::size_t i) {
  return reinterpret_cast<WorkerRow*>(static_cast<char*>(stats_) + sizeof(StatsHeader))[i];
}
StatsHeader& ChurnHarness::Header() {
  return *static_cast<StatsHeader*>(stats_);
}

std::uint64_t ChurnHarness::LimitOf(int worker) const {
  // A quarter of the workers run under a limit below what they try to hold.
  if (worker % 4 != 1) return kNoLimit;
  return (config_.max_pages / 2 + static_cast<std::uint64_t>(worker % 3)) * config_.page;
}

std::string ChurnHarness::Start() {
  (void)Segment::Remove(config_.segment);
  CreateParams params;
  params.gpu_total = config_.total_pages * config_.page;
  params.budget = config_.budget_pages * config_.page;
  params.gpu_uuid = "GPU-churn";
  auto seg = Segment::OpenOrCreate(config_.segment, params);
  if (!seg.ok()) return seg.status().message();
  segment_ = std::move(seg).value();

  stats_path_ = fmt::format("/tmp/kvcached_churn_{}.stats", ::getpid());
  const int fd = ::open(stats_path_.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot create " + stats_path_;
  stats_bytes_ = StatsBytes(config_.max_rows);
  if (::ftruncate(fd, static_cast<off_t>(stats_bytes_)) != 0) return "cannot size stats file";
  stats_ = ::mmap(nullptr, stats_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (stats_ == MAP_FAILED) {
    stats_ = nullptr;
    return "cannot map stats file";
  }
  for (int w = 0; w < config_.workers; ++w) {
    if (Spawn(w) <= 0) return "cannot spawn a worker";
  }
  // Wait until every worker is attached (so that the first checks see them).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    bool all = true;
    for (const auto& [pid, live] : live_) {
      all = all && Word(Row(live.row).state).load() == kRunning;
    }
    if (all) return {};
    if (std::chrono::steady_clock::now() > deadline) return "workers did not start within 20 s";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

pid_t ChurnHarness::Spawn(int worker) {
  if (rows_used_ >= config_.max_rows) return -1;
  const std::size_t row = rows_used_++;
  std::vector<std::string> args = {WorkerPath(),  "churn",
                                   "--segment",   config_.segment,
                                   "--label",     fmt::format("w{}", worker),
                                   "--stats",     stats_path_,
                                   "--row",       std::to_string(row),
                                   "--page",      std::to_string(config_.page),
                                   "--max-pages", std::to_string(config_.max_pages),
                                   "--seed",      std::to_string(row * 7919 + 1),
                                   "--jitter"};
  if (LimitOf(worker) != kNoLimit) {
    args.push_back("--limit");
    args.push_back(std::to_string(LimitOf(worker)));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  live_[pid] = {worker, row};
  ++totals_.spawns;
  return pid;
}

std::vector<std::string> ChurnHarness::Sample() {
  std::vector<std::string> problems;
  ++totals_.samples;
  const std::uint64_t budget = segment_->budget();
  for (std::uint32_t i = 0; i < segment_->slot_count(); ++i) {
    const LedgerSlot& s = segment_->slot(i);
    const std::uint64_t limit = Load(s.limit);
    const std::uint64_t charged = Load(s.charged);
    // `limit` is written once before the worker's first page and `charged` only grows through
    // admissions that check it, so this holds at every instant.
    if (charged > budget)
      problems.push_back(fmt::format("slot {} charged {} > budget", i, charged));
    if (limit != kNoLimit && charged > limit) {
      problems.push_back(fmt::format("slot {} charged {} > its limit {}", i, charged, limit));
    }
  }
  return problems;
}

std::vector<std::string> ChurnHarness::FreezeAndCheck() {
  std::vector<std::string> problems;
  ++totals_.freezes;
  std::vector<pid_t> stopped;
  for (const auto& [pid, live] : live_) {
    if (::kill(pid, SIGSTOP) == 0) stopped.push_back(pid);
  }
  for (pid_t pid : stopped) {
    int status = 0;
    if (::waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
      problems.push_back(fmt::format("worker {} did not stop (status {:#x})", pid, status));
    }
  }
  // Nothing writes the segment now (dead owners write nothing): this is one instant of it.
  const SegmentSnapshot snap = TakeSnapshot(*segment_);
  totals_.max_sum_charged = std::max(totals_.max_sum_charged, snap.charged);
  if (snap.charged > snap.budget) {
    problems.push_back(
        fmt::format("sum of charged {} exceeds the budget {}", snap.charged, snap.budget));
  }
  for (const auto& s : snap.slots) {
    const auto it = live_.find(static_cast<pid_t>(s.pid));
    if (it == live_.end()) {
      if (!s.dead)
        problems.push_back(
            fmt::format("slot {} belongs to pid {}, neither a worker nor dead", s.index, s.pid));
      continue;
    }
    WorkerRow& row = Row(it->second.row);
    const std::uint64_t lo = Word(row.lo).load();
    const std::uint64_t hi = Word(row.hi).load();
    if (s.charged < lo || s.charged > hi) {
      problems.push_back(
          fmt::format("worker {} (slot {}): ledger says {} bytes, its own books {}..{}", s.pid,
                      s.index, s.charged, lo, hi));
    }
    if (s.in_use > s.charged) {
      problems.push_back(
          fmt::format("slot {}: in_use {} > charged {}", s.index, s.in_use, s.charged));
    }
    if (s.limit != kNoLimit && s.charged > s.limit) {
      problems.push_back(
          fmt::format("slot {}: charged {} > limit {}", s.index, s.charged, s.limit));
    }
  }
  for (pid_t pid : stopped) ::kill(pid, SIGCONT);
  return problems;
}

void ChurnHarness::KillOne(std::mt19937_64& rng) {
  if (live_.empty()) return;
  auto it = live_.begin();
  std::advance(it, static_cast<long>(rng() % live_.size()));
  const pid_t pid = it->first;
  const int worker = it->second.worker;
  // Stop it first so that its part of the shadow account can be taken out while it still holds
  // its pages (the shadow must never exceed the ledger's true sum).
  ::kill(pid, SIGSTOP);
  int status = 0;
  ::waitpid(pid, &status, WUNTRACED);
  WorkerRow& row = Row(it->second.row);
  Word(Header().shadow_total).fetch_sub(Word(row.shadow).exchange(0));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);  // reaped at once: the zombie would count as dead anyway
  live_.erase(it);
  ++totals_.kills;
  Spawn(worker);
}

std::vector<std::string> ChurnHarness::Finish() {
  std::vector<std::string> problems;
  Word(Header().stop).store(1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    bool parked = true;
    for (const auto& [pid, live] : live_)
      parked = parked && Word(Row(live.row).state).load() == kParked;
    if (parked) break;
    if (std::chrono::steady_clock::now() > deadline) {
      problems.push_back("workers did not park within 20 s");
      return problems;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Reclaim what the killed workers left behind, as any engine would on its next refusal.
  const int reclaimed = ReclaimDeadSlots(*segment_, CurrentProcess());
  const SegmentSnapshot snap = TakeSnapshot(*segment_);
  std::uint64_t held = 0;
  for (const auto& [pid, live] : live_) held += Word(Row(live.row).held).load();
  std::printf(
      "after reclamation (%d dead slots reclaimed now): ledger accounts %llu bytes in %zu "
      "slots, the %zu live workers hold %llu bytes\n",
      reclaimed, static_cast<unsigned long long>(snap.charged), snap.slots.size(), live_.size(),
      static_cast<unsigned long long>(held));
  if (snap.charged != held) {
    problems.push_back(
        fmt::format("ledger accounts {} bytes, live workers hold {}", snap.charged, held));
  }
  if (snap.tentative != 0)
    problems.push_back(fmt::format("{} tentative bytes left", snap.tentative));
  for (const auto& s : snap.slots) {
    const auto it = live_.find(static_cast<pid_t>(s.pid));
    if (it == live_.end() || s.dead) {
      problems.push_back(
          fmt::format("slot {} (pid {}) is not a live worker after reclamation", s.index, s.pid));
      continue;
    }
    const std::uint64_t h = Word(Row(it->second.row).held).load();
    if (s.charged != h)
      problems.push_back(fmt::format("worker {}: ledger {} != held {}", s.pid, s.charged, h));
  }
  if (snap.slots.size() != live_.size()) {
    problems.push_back(
        fmt::format("{} slots for {} live workers", snap.slots.size(), live_.size()));
  }
  totals_.overcommits = Word(Header().overcommits).load();
  totals_.max_shadow = Word(Header().max_shadow).load();
  totals_.ops = 0;
  for (std::size_t r = 0; r < rows_used_; ++r) {
    WorkerRow& row = Row(r);
    totals_.ops += Word(row.ops).load();
    totals_.charges += Word(row.charges).load();
    totals_.refusals += Word(row.refusals).load();
    totals_.pressure_signals += Word(row.pressure_signals).load();
    totals_.total_latency_ns += Word(row.total_latency_ns).load();
    totals_.max_latency_ns = std::max(totals_.max_latency_ns, Word(row.max_latency_ns).load());
  }

  Word(Header().exit_now).store(1);
  for (const auto& [pid, live] : live_) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      problems.push_back(fmt::format("worker {} ended with status {:#x}", pid, status));
    }
  }
  live_.clear();
  const SegmentSnapshot end = TakeSnapshot(*segment_);
  if (!end.slots.empty() || end.charged != 0 || end.tentative != 0) {
    problems.push_back(
        fmt::format("at the end {} slots still hold {} bytes", end.slots.size(), end.charged));
  }
  return problems;
}

RunTotals ChurnHarness::Totals() const {
  return totals_;
}

}  // namespace kvcached::ledger::testing
