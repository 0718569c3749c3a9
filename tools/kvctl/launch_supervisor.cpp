#include "tools/kvctl/launch_supervisor.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "tools/kvctl/format.h"
#include "tools/kvctl/launch_child.h"
#include "tools/kvctl/launch_ledger.h"
#include "tools/kvctl/launch_plan.h"

namespace kvctl {
namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

enum class State { kWaiting, kStarting, kReady, kBackoff, kExited, kFailed };

const char* StateName(State s) {
  switch (s) {
    case State::kWaiting:
      return "waiting";
    case State::kStarting:
      return "starting";
    case State::kReady:
      return "ready";
    case State::kBackoff:
      return "back-off";
    case State::kExited:
      return "exited";
    case State::kFailed:
      return "failed";
  }
  return "?";
}

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_ = -1;
};

struct Engine {
  const EngineSpec* spec = nullptr;
  std::vector<std::string> env;
  State state = State::kWaiting;
  pid_t pid = -1;        // the running process (and its group), -1 when none
  pid_t old_group = -1;  // the group of the previous run while members of it linger
  Fd out;
  Fd log;
  LineSplitter lines;
  bool ever_ready = false;
  bool timed_out = false;
  int restarts = 0;     // total
  int consecutive = 0;  // failures in a row, for back-off and max_restarts
  int last_status = 0;  // exit status, or -signal
  TimePoint started;
  TimePoint ready_at;
  TimePoint next_start;
  TimePoint next_probe;
  std::string limit_error;  // last error applying the limit (printed once)
};

class Supervisor {
 public:
  Supervisor(const LaunchSpec& spec, const std::string& shim, std::ostream& out)
      : spec_(spec), out_(out) {
    const char* inherited = std::getenv("LD_PRELOAD");
    std::vector<std::string> base;
    for (char** e = environ; *e != nullptr; ++e) base.emplace_back(*e);
    for (const auto& e : spec.engines) {
      Engine eng;
      eng.spec = &e;
      eng.env = MergeEnv(base, EngineEnv(spec, e, shim, inherited != nullptr ? inherited : ""));
      engines_.push_back(std::move(eng));
    }
  }

  int Run() {
    sigset_t mask;
    sigemptyset(&mask);
    for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGHUP}) sigaddset(&mask, sig);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    Fd signals(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (signals.get() < 0) {
      Say(fmt::format("signalfd: {}", std::strerror(errno)));
      return 1;
    }
    // Orphans of the engines (a worker whose parent died) become our children, so that they
    // are reaped and stopped with everything else.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    for (auto& e : engines_) OpenLog(e);

    TimePoint next_status = Clock::now() + spec_.status_interval;
    TimePoint next_limits = Clock::now();
    while (true) {
      const TimePoint now = Clock::now();
      if (!stopping_) {
        StartDue(now);
        ProbeReadiness(now);
        if (now >= next_limits) {
          ApplyLimits();
          next_limits = now + std::chrono::milliseconds(500);
        }
        if (spec_.status_interval.count() > 0 && now >= next_status) {
          PrintSummary();
          next_status = now + spec_.status_interval;
        }
      } else if (!killed_ && now >= stop_deadline_) {
        KillEverything();
      }
      if (Finished()) break;

      std::vector<pollfd> fds{{signals.get(), POLLIN, 0}};
      std::vector<Engine*> owners{nullptr};
      for (auto& e : engines_) {
        if (e.out.get() >= 0) {
          fds.push_back({e.out.get(), POLLIN, 0});
          owners.push_back(&e);
        }
      }
      const int timeout = stopping_ ? 100 : 200;
      const int n = ::poll(fds.data(), fds.size(), timeout);
      if (n < 0 && errno != EINTR) {
        Say(fmt::format("poll: {}", std::strerror(errno)));
        break;
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) Drain(*owners[i]);
      }
      if (fds[0].revents != 0) HandleSignals(signals.get());
    }
    PrintSummary();
    if (stopping_ && !ended_on_their_own_) {
      Say(killed_ ? "stopped (some processes needed SIGKILL after the grace period)"
                  : "stopped: every engine ended within the grace period");
      return killed_ ? 1 : 0;
    }
    bool clean = true;
    for (const auto& e : engines_) clean = clean && e.state == State::kExited && e.last_status == 0;
    Say(clean ? "every engine ended with status 0" : "done: some engines failed (see above)");
    return clean ? 0 : 1;
  }

 private:
  void Say(const std::string& text) {
    out_ << "[kvctl] " << text << '\n';
    out_.flush();
  }
  void Say(const Engine& e, const std::string& text) { Say(e.spec->label + ": " + text); }

  void OpenLog(Engine& e) {
    if (e.spec->log_file.empty()) return;
    e.log = Fd(::open(e.spec->log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (e.log.get() < 0) {
      Say(e, fmt::format("cannot open log file {}: {} (output goes to the terminal only)",
                         e.spec->log_file, std::strerror(errno)));
    }
  }

  // An engine waits for every engine listed before it on the same GPU to have been ready once
  // (or to have ended), so its start-up memory check sees what they hold.
  [[nodiscard]] bool MayStart(std::size_t i) const {
    for (std::size_t j = 0; j < i; ++j) {
      const Engine& o = engines_[j];
      if (o.spec->gpu != engines_[i].spec->gpu) continue;
      if (!o.ever_ready && o.state != State::kExited && o.state != State::kFailed) return false;
    }
    return true;
  }

  void StartDue(TimePoint now) {
    for (std::size_t i = 0; i < engines_.size(); ++i) {
      Engine& e = engines_[i];
      if (e.state == State::kWaiting && MayStart(i)) {
        Start(e, now);
      } else if (e.state == State::kBackoff && now >= e.next_start) {
        if (GroupAlive(e.old_group))
          SignalGroup(e.old_group, SIGKILL);  // leftovers of the last run
        Start(e, now);
      }
    }
  }

  void Start(Engine& e, TimePoint now) {
    if (e.out.get() >= 0) Drain(e);
    FlushPartial(e);
    e.out.Reset();
    auto spawned = SpawnEngine(e.spec->argv, e.env, e.spec->workdir);
    if (!spawned.ok()) {
      Say(e, spawned.status().message());
      e.state = State::kFailed;
      e.last_status = 127;
      return;
    }
    e.pid = spawned.value().pid;
    e.out = Fd(spawned.value().out_fd);
    e.started = now;
    e.next_probe = now;
    e.timed_out = false;
    e.limit_error.clear();
    if (e.spec->ready.any()) {
      e.state = State::kStarting;
      Say(e, fmt::format("started, pid {}{}", e.pid,
                         e.restarts > 0 ? fmt::format(" (restart {})", e.restarts) : ""));
    } else {
      Say(e, fmt::format("started, pid {} (no readiness check: counted as ready){}", e.pid,
                         e.restarts > 0 ? fmt::format(" (restart {})", e.restarts) : ""));
      MarkReady(e, now);
    }
  }

  void MarkReady(Engine& e, TimePoint now) {
    e.state = State::kReady;
    e.ever_ready = true;
    e.ready_at = now;
    const auto ms = std::chrono::duration_cast<Millis>(now - e.started).count();
    if (e.spec->ready.any())
      Say(e, fmt::format("ready after {:.1f}s", static_cast<double>(ms) / 1000.0));
  }

  void ProbeReadiness(TimePoint now) {
    for (auto& e : engines_) {
      if (e.state != State::kStarting) continue;
      if (now - e.started > e.spec->ready.timeout) {
        if (!e.timed_out) {
          e.timed_out = true;
          Say(e, fmt::format("not ready after {}s: stopping it (a failure for `restart:`)",
                             static_cast<double>(e.spec->ready.timeout.count()) / 1000.0));
          SignalGroup(e.pid, SIGTERM);
          e.next_probe = now + spec_.grace;  // then SIGKILL, below
        } else if (now >= e.next_probe) {
          SignalGroup(e.pid, SIGKILL);
          e.next_probe = now + std::chrono::hours(1);
        }
        continue;
      }
      if (e.spec->ready.port && now >= e.next_probe) {
        e.next_probe = now + std::chrono::milliseconds(250);
        if (PortAccepts(e.spec->ready.host, *e.spec->ready.port, 100)) MarkReady(e, Clock::now());
      }
    }
  }

  [[nodiscard]] std::vector<pid_t> RunningPids() const {
    std::vector<pid_t> pids;
    for (const auto& e : engines_) {
      if (e.pid > 0) pids.push_back(e.pid);
    }
    return pids;
  }

  void ApplyLimits() {
    bool any = false;
    for (const auto& e : engines_) any = any || (!e.spec->limit.empty() && e.pid > 0);
    if (!any) return;
    const LedgerScan scan = LedgerScan::Take(RunningPids());
    for (auto& e : engines_) {
      if (e.spec->limit.empty() || e.pid <= 0) continue;
      for (const auto& p : scan.Of(e.pid)) {
        auto done = EnforceLimit(p, e.spec->limit);
        if (!done.ok()) {
          if (done.status().message() != e.limit_error) {
            e.limit_error = done.status().message();
            Say(e, "cannot apply limit: " + e.limit_error);
          }
        } else if (!done.value().empty()) {
          Say(e, done.value());
        }
      }
    }
  }

  void Drain(Engine& e) {
    std::array<char, 16384> buf{};
    while (e.out.get() >= 0) {
      const ssize_t n = ::read(e.out.get(), buf.data(), buf.size());
      if (n > 0) {
        std::vector<std::string> lines;
        e.lines.Feed(buf.data(), static_cast<std::size_t>(n), lines);
        for (const auto& l : lines) Line(e, l);
        continue;
      }
      if (n < 0 && (errno == EINTR)) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      FlushPartial(e);  // end of stream: every writer of the pipe is gone
      e.out.Reset();
    }
  }

  void FlushPartial(Engine& e) {
    std::string rest;
    if (e.lines.Flush(rest)) Line(e, rest);
  }

  void Line(Engine& e, const std::string& line) {
    out_ << '[' << e.spec->label << "] " << line << '\n';
    out_.flush();
    if (e.log.get() >= 0) {
      const std::string raw = line + "\n";
      [[maybe_unused]] const ssize_t written = ::write(e.log.get(), raw.data(), raw.size());
    }
    if (e.state == State::kStarting && e.spec->ready.log_regex &&
        std::regex_search(line, *e.spec->ready.log_regex)) {
      MarkReady(e, Clock::now());
    }
  }

  void HandleSignals(int fd) {
    signalfd_siginfo info{};
    while (::read(fd, &info, sizeof(info)) == sizeof(info)) {
      const int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGCHLD) {
        Reap();
      } else if (!stopping_) {
        Say(
            fmt::format("{}: stopping every engine (grace period {:.1f}s; send it again to "
                        "kill at once)",
                        sig == SIGINT    ? "SIGINT"
                        : sig == SIGTERM ? "SIGTERM"
                                         : "SIGHUP",
                        static_cast<double>(spec_.grace.count()) / 1000.0));
        stopping_ = true;
        stop_deadline_ = Clock::now() + spec_.grace;
        const int forward = sig == SIGHUP ? SIGTERM : sig;
        for (auto& e : engines_) {
          if (e.pid > 0) SignalGroup(e.pid, forward);
          if (e.state == State::kWaiting || e.state == State::kBackoff) e.state = State::kExited;
        }
      } else if (!killed_) {
        Say("second signal: killing every engine now");
        KillEverything();
      }
    }
    Reap();  // SIGCHLDs merge; a pass costs one waitpid
  }

  void KillEverything() {
    killed_ = true;
    for (auto& e : engines_) {
      if (e.pid > 0) SignalGroup(e.pid, SIGKILL);
      if (e.old_group > 0) SignalGroup(e.old_group, SIGKILL);
    }
    for (pid_t child : OwnChildren()) ::kill(child, SIGKILL);  // adopted orphans
  }

  void Reap() {
    int status = 0;
    pid_t pid = 0;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (auto& e : engines_) {
        if (e.pid == pid) Exited(e, status);
      }
    }
  }

  void Exited(Engine& e, int status) {
    const TimePoint now = Clock::now();
    e.last_status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    const std::string how = WIFEXITED(status)
                                ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                : fmt::format("killed by signal {} ({})", WTERMSIG(status),
                                              strsignal(WTERMSIG(status)));
    e.old_group = e.pid;
    e.pid = -1;
    // Its workers are of no use without it: ask them to go (SIGKILL before any restart).
    if (GroupAlive(e.old_group)) SignalGroup(e.old_group, SIGTERM);
    const bool failed = e.last_status != 0 || e.timed_out;
    if (stopping_) {
      e.state = State::kExited;
      Say(e, how);
      return;
    }
    // A run that stayed ready longer than the longest back-off ends the streak of failures.
    if (e.ever_ready && e.state == State::kReady && now - e.ready_at >= e.spec->backoff_max) {
      e.consecutive = 0;
    }
    const RestartPolicy policy = e.spec->restart;
    const bool restart =
        policy == RestartPolicy::kAlways || (policy == RestartPolicy::kOnFailure && failed);
    if (!restart) {
      e.state = failed ? State::kFailed : State::kExited;
      Say(e, how + (failed && policy == RestartPolicy::kNever ? " (restart: never)" : ""));
      return;
    }
    if (e.consecutive >= e.spec->max_restarts) {
      e.state = State::kFailed;
      Say(e, fmt::format("{}; giving up after {} restart(s) in a row (max_restarts)", how,
                         e.consecutive));
      return;
    }
    const auto delay =
        std::min<std::int64_t>(e.spec->backoff_max.count(), e.spec->backoff_initial.count()
                                                                << std::min(e.consecutive, 30));
    ++e.consecutive;
    ++e.restarts;
    e.state = State::kBackoff;
    e.next_start = now + Millis(delay);
    Say(e, fmt::format("{}; restarting in {:.1f}s (restart {}, back-off doubling to {:.1f}s)", how,
                       static_cast<double>(delay) / 1000.0, e.restarts,
                       static_cast<double>(e.spec->backoff_max.count()) / 1000.0));
  }

  bool Finished() {
    for (const auto& e : engines_) {
      if (e.pid > 0) return false;
      if (!stopping_ && e.state != State::kExited && e.state != State::kFailed) return false;
    }
    // Every engine has ended: wait for lingering members of their groups and adopted orphans,
    // for the grace period at most (then KillEverything), so that none outlives kvctl.
    bool lingering = false;
    for (const auto& e : engines_) lingering = lingering || GroupAlive(e.old_group);
    Reap();
    const std::vector<pid_t> orphans = OwnChildren();
    lingering = lingering || !orphans.empty();
    if (lingering && !stopping_) {
      stopping_ = true;
      ended_on_their_own_ = true;
      stop_deadline_ = Clock::now() + spec_.grace;
      for (pid_t child : orphans) ::kill(child, SIGTERM);
    }
    return !lingering;
  }

  void PrintSummary() {
    const LedgerScan scan = LedgerScan::Take(RunningPids());
    for (const auto& e : engines_) {
      std::string line = fmt::format("{:<10}", StateName(e.state));
      if (e.pid > 0) line += fmt::format(" pid {}", e.pid);
      line += fmt::format(" restarts {}", e.restarts);
      if (e.state == State::kExited || e.state == State::kFailed) {
        line += e.last_status >= 0 ? fmt::format(" status {}", e.last_status)
                                   : fmt::format(" signal {}", -e.last_status);
      }
      std::uint64_t in_use = 0;
      std::uint64_t reserved = 0;
      std::uint64_t limit = 0;
      int attached = 0;
      for (const auto& p : scan.Of(e.pid)) {
        in_use += p.slot.in_use;
        reserved += p.slot.reserved;
        limit = p.slot.limit;
        ++attached;
      }
      if (attached > 0) {
        line += fmt::format(" in-use {} reserved {}", FormatBytes(in_use), FormatBytes(reserved));
        if (attached == 1) line += fmt::format(" limit {}", FormatLimit(limit));
      }
      Say(fmt::format("{:<16} {}", e.spec->label, line));
    }
  }

  const LaunchSpec& spec_;
  std::ostream& out_;
  std::vector<Engine> engines_;
  bool stopping_ = false;
  bool killed_ = false;
  bool ended_on_their_own_ = false;  // stopping_ only to clear up what the engines left behind
  TimePoint stop_deadline_;
};

}  // namespace

int Supervise(const LaunchSpec& spec, const std::string& shim, std::ostream& out) {
  Supervisor supervisor(spec, shim, out);
  return supervisor.Run();
}

}  // namespace kvctl
