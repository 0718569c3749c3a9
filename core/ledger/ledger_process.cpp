#include "core/ledger/ledger_process.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "core/ledger/ledger_layout.h"

namespace kvcached::ledger {

std::optional<ProcessStat> ParseProcessStat(const char* text) {
  // "pid (comm) S ppid ... starttime ...": comm is free text, so fields count from the last ')'.
  const char* close = std::strrchr(text, ')');
  if (close == nullptr || close[1] != ' ' || close[2] == '\0') return std::nullopt;
  ProcessStat out;
  out.state = close[2];
  const char* p = close + 3;
  // Field 3 is the state; starttime is field 22, i.e. 19 fields after the state.
  for (int field = 4; field < 22; ++field) {
    while (*p == ' ') ++p;
    while (*p != ' ' && *p != '\0') ++p;
    if (*p == '\0') return std::nullopt;
  }
  while (*p == ' ') ++p;
  char* end = nullptr;
  errno = 0;
  const unsigned long long start = std::strtoull(p, &end, 10);
  if (end == p || errno != 0) return std::nullopt;
  out.start_ticks = static_cast<std::uint64_t>(start) & kStartMask;
  return out;
}

std::optional<ProcessStat> ReadProcessStat(pid_t pid) {
  std::array<char, 64> path{};
  std::snprintf(path.data(), path.size(), "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path.data(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::array<char, 1024> buf{};
  const ssize_t n = ::read(fd, buf.data(), buf.size() - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  return ParseProcessStat(buf.data());
}

ProcessIdentity CurrentProcess() {
  ProcessIdentity id;
  id.pid = static_cast<std::uint64_t>(::getpid());
  if (auto st = ReadProcessStat(::getpid())) id.start_ticks = st->start_ticks;
  struct stat ns {};
  if (::stat("/proc/self/ns/pid", &ns) == 0) id.pidns = ns.st_ino;
  return id;
}

namespace {
std::uint64_t ClockNs(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

std::uint64_t BoottimeNs() {
  return ClockNs(CLOCK_BOOTTIME);
}
std::uint64_t RealtimeNs() {
  return ClockNs(CLOCK_REALTIME);
}

bool OwnerIsDead(std::uint64_t owner_word, std::uint64_t slot_pidns, std::uint64_t heartbeat_ns,
                 std::uint64_t my_pidns, std::uint64_t now_boottime_ns) {
  const SlotState state = OwnerState(owner_word);
  if (state == SlotState::kFree || state == SlotState::kInvalid) return false;
  if (slot_pidns != 0 && my_pidns != 0 && slot_pidns != my_pidns) {
    return heartbeat_ns != 0 && now_boottime_ns > heartbeat_ns &&
           now_boottime_ns - heartbeat_ns > kForeignStaleNs;
  }
  const auto pid = static_cast<pid_t>(OwnerPid(owner_word));
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const auto st = ReadProcessStat(pid);
  // kill() says the pid exists; an unreadable stat (hidepid, or it died just now) stays "alive"
  // until a later pass sees ESRCH.
  if (!st) return false;
  // A zombie has already lost its address space and its device memory.
  if (st->state == 'Z' || st->state == 'X' || st->state == 'x') return true;
  // Start time 0: the owner could not read its own (no /proc then); trust the pid alone.
  if (OwnerStart(owner_word) == 0) return false;
  return st->start_ticks != OwnerStart(owner_word);  // the pid now names another process
}

}  // namespace kvcached::ledger
