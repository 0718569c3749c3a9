// Processes of `kvctl launch`: starting an engine in a process group of its own with its output
// on a pipe, signalling its group, probing a TCP port, and splitting output into lines.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/common/status.h"

namespace kvctl {

struct Spawned {
  pid_t pid = -1;   // also the process group of the engine and its children
  int out_fd = -1;  // read end: the engine's stdout and stderr, merged (O_CLOEXEC, non-blocking)
};

// fork + exec of argv[0] (searched in PATH) with `env`, in `workdir` ("" = ours), stdin from
// /dev/null, in a new process group, signals reset to their defaults, SIGTERM when kvctl dies.
// An exec failure ("no such file") is reported here, not as an exit status.
kvcached::Result<Spawned> SpawnEngine(const std::vector<std::string>& argv,
                                      const std::vector<std::string>& env,
                                      const std::string& workdir);

// kill(-pgid, sig); true when the group still had a member.
bool SignalGroup(pid_t pgid, int sig);
bool GroupAlive(pid_t pgid);

// Whether `pid` is `root` or one of its descendants (following parent pids in /proc).
bool InProcessTree(pid_t pid, pid_t root);

// The pids whose parent is this process (children and orphans adopted as subreaper).
std::vector<pid_t> OwnChildren();

// True when HOST:PORT accepts a TCP connection within `timeout_ms`.
bool PortAccepts(const std::string& host, int port, int timeout_ms);

// Splits a byte stream into lines; a line longer than `max_line` is cut there.
class LineSplitter {
 public:
  explicit LineSplitter(std::size_t max_line = 65536) : max_line_(max_line) {}
  void Feed(const char* data, std::size_t n, std::vector<std::string>& lines);
  // The unterminated rest at end of stream, if any.
  bool Flush(std::string& line);

 private:
  std::size_t max_line_;
  std::string partial_;
};

}  // namespace kvctl
