// ledger_worker: a process that draws from a ledger segment, for the ledger and kvctl tests.
//   ledger_worker hold  --segment NAME --label L [--charge B --in-use B --other B] [create opts]
//       attaches, charges, prints "ready <pid> <slot>", then obeys stdin lines
//       ("charge N" -> "ok"/"refused", "uncharge N" -> "ok", "view" -> numbers, "busy N" -> N
//       charge/release rounds of one page -> "ok <admitted>", "local" -> "local"/"shared")
//       until EOF/SIGTERM.
//   ledger_worker churn --segment NAME --stats FILE --row I --page B --max-pages N [--limit B]
//       acquires and releases random page counts until the stats file says stop (see
//       worker_stats.h), measuring every ledger call.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <thread>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_segment.h"
#include "tests/ledger/worker_stats.h"

namespace ledger = kvcached::ledger;
using kvcached::ledger::testing::StatsHeader;
using kvcached::ledger::testing::Word;
using kvcached::ledger::testing::WorkerRow;

namespace {

std::uint64_t NowNs() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

struct Options {
  std::string segment;
  std::string label = "worker";
  std::uint64_t total = 16ULL << 30;
  std::uint64_t budget = 8ULL << 30;
  std::string uuid = "GPU-test";
  std::uint32_t mode = 0600;
  std::uint64_t charge = 0, in_use = 0, other = 0;
  std::string stats;
  std::size_t row = 0;
  std::uint64_t page = 2ULL << 20;
  std::uint64_t max_pages = 16;
  std::uint64_t limit = ledger::kNoLimit;
  std::uint64_t seed = 0;
  bool jitter = false;
};

kvcached::Result<std::unique_ptr<ledger::LedgerBudget>> AttachTo(const Options& o) {
  ledger::CreateParams params;
  params.gpu_total = o.total;
  params.budget = o.budget;
  params.gpu_uuid = o.uuid;
  params.mode = o.mode;
  auto seg = ledger::Segment::OpenOrCreate(o.segment, params);
  if (!seg.ok()) return seg.status();
  return ledger::LedgerBudget::Attach(std::shared_ptr<ledger::Segment>(std::move(seg).value()),
                                      o.label);
}

volatile sig_atomic_t g_term = 0;

int Hold(const Options& o) {
  auto attached = AttachTo(o);
  if (!attached.ok()) {
    std::fprintf(stderr, "ledger_worker: %s\n", attached.status().message().c_str());
    return 2;
  }
  auto& budget = *attached.value();
  if (o.charge > 0 && !budget.TryCharge(o.charge)) {
    std::fprintf(stderr, "ledger_worker: could not charge %llu bytes\n",
                 static_cast<unsigned long long>(o.charge));
    return 3;
  }
  budget.MoveToInUse(o.in_use);
  budget.AddOther(static_cast<std::int64_t>(o.other));
  std::printf("ready %d %u\n", static_cast<int>(::getpid()), budget.slot_index());
  std::fflush(stdout);
  std::thread beat([&] {
    while (g_term == 0) {
      budget.Heartbeat();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::string line;
  while (g_term == 0 && std::getline(std::cin, line)) {
    const auto space = line.find(' ');
    const std::string cmd = line.substr(0, space);
    const std::uint64_t n = space == std::string::npos ? 0 : std::stoull(line.substr(space + 1));
    if (cmd == "charge") {
      std::printf("%s\n", budget.TryCharge(n) ? "ok" : "refused");
    } else if (cmd == "uncharge") {
      budget.Uncharge(n);
      std::printf("ok\n");
    } else if (cmd == "busy") {
      // n rounds of charge + release of one page: ledger traffic while a test breaks the segment.
      std::uint64_t admitted = 0;
      for (std::uint64_t i = 0; i < n; ++i) {
        if (budget.TryCharge(o.page)) {
          ++admitted;
          budget.MoveToInUse(o.page);
          budget.MoveToReserved(o.page);
          budget.Uncharge(o.page);
        }
        if (i % 64 == 0) budget.Heartbeat();
      }
      std::printf("ok %llu\n", static_cast<unsigned long long>(admitted));
    } else if (cmd == "local") {
      std::printf("%s\n", budget.local() ? "local" : "shared");
    } else if (cmd == "pressure") {
      budget.RequestPressure(n);
      std::printf("ok\n");
    } else if (cmd == "signal") {
      std::printf("%s\n", budget.TakePressureSignal() ? "yes" : "no");
    } else if (cmd == "view") {
      const auto v = budget.View();
      std::printf(
          "limit %llu budget %llu in_use %llu reserved %llu all %llu\n",
          static_cast<unsigned long long>(v.limit), static_cast<unsigned long long>(v.budget),
          static_cast<unsigned long long>(v.in_use), static_cast<unsigned long long>(v.reserved),
          static_cast<unsigned long long>(v.all_charged));
    } else {
      std::printf("unknown\n");
    }
    std::fflush(stdout);
  }
  g_term = 1;
  beat.join();
  return 0;
}

int Churn(const Options& o) {
  const int fd = ::open(o.stats.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return 4;
  const std::size_t bytes = kvcached::ledger::testing::StatsBytes(o.row + 1);
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return 5;
  auto& header = *static_cast<StatsHeader*>(map);
  auto& row = reinterpret_cast<WorkerRow*>(static_cast<char*>(map) + sizeof(StatsHeader))[o.row];

  auto attached = AttachTo(o);
  if (!attached.ok()) {
    std::fprintf(stderr, "ledger_worker: %s\n", attached.status().message().c_str());
    return 2;
  }
  auto& budget = *attached.value();
  if (o.jitter) {
    // Sleep inside a quarter of the admissions' race windows (between check and commit).
    ledger::SetAdmissionHookForTesting([](const ledger::LedgerBudget&) {
      thread_local std::minstd_rand r(static_cast<unsigned>(::getpid()));
      if (r() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(r() % 200));
    });
  }
  ledger::Segment& seg = const_cast<ledger::Segment&>(budget.segment());
  if (o.limit != ledger::kNoLimit)
    ledger::Atomic(seg.slot(budget.slot_index()).limit).store(o.limit);
  Word(row.pid).store(static_cast<std::uint64_t>(::getpid()));
  Word(row.slot).store(budget.slot_index());
  Word(row.limit).store(o.limit);
  Word(row.state).store(kvcached::ledger::testing::kRunning);

  std::mt19937_64 rng(o.seed ^ (static_cast<std::uint64_t>(::getpid()) << 20) ^ NowNs());
  std::uint64_t held = 0;
  std::uint64_t ops = 0;
  auto timed = [&](auto&& fn) {
    const std::uint64_t t0 = NowNs();
    auto r = fn();
    const std::uint64_t dt = NowNs() - t0;
    Word(row.total_latency_ns).fetch_add(dt, std::memory_order_relaxed);
    if (dt > Word(row.max_latency_ns).load(std::memory_order_relaxed)) {
      Word(row.max_latency_ns).store(dt, std::memory_order_relaxed);
    }
    Word(row.ops).store(++ops, std::memory_order_relaxed);
    return r;
  };
  const std::uint64_t budget_bytes = seg.budget();
  auto shadow_add = [&](std::uint64_t b) {
    // Own part first, total second (and the reverse when lowering): a worker stopped in between
    // leaves the total lower than the truth, never higher (see worker_stats.h).
    Word(row.shadow).fetch_add(b);
    const std::uint64_t now = Word(header.shadow_total).fetch_add(b) + b;
    if (now > budget_bytes) Word(header.overcommits).fetch_add(1);
    std::uint64_t seen = Word(header.max_shadow).load();
    while (now > seen && !Word(header.max_shadow).compare_exchange_weak(seen, now)) {
    }
  };
  auto release = [&](std::uint64_t b) {
    Word(header.shadow_total).fetch_sub(b);
    Word(row.shadow).fetch_sub(b);
    timed([&] {
      budget.MoveToReserved(b);
      return 0;
    });
    Word(row.lo).store(held - b);
    timed([&] {
      budget.Uncharge(b);
      return 0;
    });
    held -= b;
    Word(row.held).store(held);
    Word(row.hi).store(held);
  };
  const std::uint64_t held_pages_max = o.max_pages;
  while (Word(header.stop).load() == 0) {
    const std::uint64_t pages = held / o.page;
    if (pages == 0 || (rng() % 100 < 55 && pages < held_pages_max)) {
      const std::uint64_t b = (1 + rng() % 4) * o.page;
      Word(row.hi).store(held + b);
      const bool ok = timed([&] { return budget.TryCharge(b); });
      if (ok) {
        shadow_add(b);
        held += b;
        Word(row.held).store(held);
        Word(row.lo).store(held);
        Word(row.charges).fetch_add(1, std::memory_order_relaxed);
        timed([&] {
          budget.MoveToInUse(b);
          return 0;
        });
      } else {
        Word(row.hi).store(held);
        Word(row.refusals).fetch_add(1, std::memory_order_relaxed);
        timed([&] {
          budget.RequestPressure(b);
          return 0;
        });
      }
    } else {
      release((1 + rng() % pages) * o.page);
    }
    if (budget.TakePressureSignal()) {
      Word(row.pressure_signals).fetch_add(1, std::memory_order_relaxed);
      if (held >= o.page && rng() % 2 == 0) release(o.page);  // give some back, like a trim
    }
    if (ops % 64 == 0) budget.Heartbeat();
    if (rng() % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
  }
  Word(row.state).store(kvcached::ledger::testing::kParked);
  while (Word(header.exit_now).load() == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (held > 0) release(held);
  Word(row.state).store(kvcached::ledger::testing::kDone);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ledger test worker"};
  Options o;
  app.require_subcommand(1);
  auto common = [&](CLI::App* c) {
    c->add_option("--segment", o.segment)->required();
    c->add_option("--label", o.label);
    c->add_option("--total", o.total);
    c->add_option("--budget", o.budget);
    c->add_option("--uuid", o.uuid);
    c->add_option("--mode", o.mode);
  };
  auto* hold = app.add_subcommand("hold");
  common(hold);
  hold->add_option("--charge", o.charge);
  hold->add_option("--in-use", o.in_use);
  hold->add_option("--other", o.other);
  hold->add_option("--page", o.page);
  auto* churn = app.add_subcommand("churn");
  common(churn);
  churn->add_option("--stats", o.stats)->required();
  churn->add_option("--row", o.row)->required();
  churn->add_option("--page", o.page);
  churn->add_option("--max-pages", o.max_pages);
  churn->add_option("--limit", o.limit);
  churn->add_option("--seed", o.seed);
  churn->add_flag("--jitter", o.jitter);
  CLI11_PARSE(app, argc, argv);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_term = 1; };
  ::sigaction(SIGTERM, &sa, nullptr);
  return hold->parsed() ? Hold(o) : Churn(o);
}
