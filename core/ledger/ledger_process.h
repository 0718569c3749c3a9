// Process identity and liveness, as the ledger needs them: a slot belongs to (pid, start time),
// and a slot whose process is gone (or whose pid now names another process) may be reclaimed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace kvcached::ledger {

struct ProcessIdentity {
  std::uint64_t pid = 0;
  std::uint64_t start_ticks = 0;  // /proc/<pid>/stat field 22, masked to the owner word's width
  std::uint64_t pidns = 0;        // inode of /proc/self/ns/pid, 0 when unknown
};

struct ProcessStat {
  char state = '?';  // R, S, D, T, Z, X, ...
  std::uint64_t start_ticks = 0;
};

// Parses /proc/<pid>/stat; nullopt when the process does not exist or /proc is unreadable.
std::optional<ProcessStat> ReadProcessStat(pid_t pid);
// Parses the text of a stat file (exposed for tests: comm may hold spaces and parentheses).
std::optional<ProcessStat> ParseProcessStat(const char* text);

// This process, computed on each call (cheap enough for attach time; differs after fork).
ProcessIdentity CurrentProcess();

std::uint64_t BoottimeNs();  // CLOCK_BOOTTIME: comparable across processes (and with start times)
std::uint64_t RealtimeNs();

// Whether the owner recorded in a slot is gone. Conservative: anything uncertain is "alive".
// Owners in another pid namespace cannot be checked by pid; they are dead only when their
// heartbeat is older than kForeignStaleNs.
inline constexpr std::uint64_t kForeignStaleNs = 300ULL * 1000 * 1000 * 1000;
bool OwnerIsDead(std::uint64_t owner_word, std::uint64_t slot_pidns, std::uint64_t heartbeat_ns,
                 std::uint64_t my_pidns, std::uint64_t now_boottime_ns);

}  // namespace kvcached::ledger
