// Helpers shared by the ledger and kvctl tests: unique segment names, running programs with
// captured output, and long-lived "holder" worker processes driven over pipes.
#pragma once

#include <grp.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

namespace kvcached::ledger::testing {

// Runs fn in a forked child that has become uid `uid` with primary group `gid` and only the
// supplementary `groups` (needs root); returns fn's result as the child's exit status (100 when
// the child could not become that user, 200 + signal when it died of one).
template <class F>
int AsUser(uid_t uid, gid_t gid, std::vector<gid_t> groups, F fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0 || ::geteuid() != uid) {
      _exit(100);
    }
    _exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

// "kvcached_test_<tag>_<pid>": never collides with a real segment or another test run.
std::string UniqueName(const std::string& tag);

// Removes the segment when destroyed (tests must not leave files in /dev/shm).
class ScopedSegmentName {
 public:
  explicit ScopedSegmentName(const std::string& tag);
  ~ScopedSegmentName();
  ScopedSegmentName(const ScopedSegmentName&) = delete;
  ScopedSegmentName& operator=(const ScopedSegmentName&) = delete;
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string path() const { return "/dev/shm/" + name_; }

 private:
  std::string name_;
};

struct RunResult {
  int rc = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
  bool timed_out = false;
};

// Runs argv[0] with extra "K=V" environment entries (an entry "K=" with nothing after '=' unsets
// K); `uid`/`gid` >= 0 drop privileges in the child first.
RunResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
              std::chrono::milliseconds timeout = std::chrono::seconds(30), int uid = -1,
              int gid = -1);

// A ledger_worker in "hold" mode.
class Holder {
 public:
  // Extra args go to `ledger_worker hold` (e.g. {"--charge", "1073741824"}).
  Holder(const std::string& segment, const std::string& label, std::vector<std::string> args = {});
  ~Holder();
  Holder(const Holder&) = delete;
  Holder& operator=(const Holder&) = delete;

  [[nodiscard]] bool ready() const { return ready_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] unsigned slot() const { return slot_; }
  // Sends one command line and returns the reply line ("" on failure).
  std::string Send(const std::string& line);
  // Sends `sig` and reaps the process.
  void Kill(int sig);

 private:
  pid_t pid_ = -1;
  int in_ = -1;   // worker's stdin
  int out_ = -1;  // worker's stdout
  bool ready_ = false;
  unsigned slot_ = 0;
  std::string ReadLine(std::chrono::milliseconds timeout);
  std::string buffer_;
};

// Paths of the built programs (compile definitions from tests/ledger/CMakeLists.txt).
const char* KvctlPath();

// A copy of kvctl in a world-readable temporary folder, so that a test acting as another user
// (AsUser, Run with a uid) can run it; the folder is removed when this goes away.
class KvctlCopyForOtherUsers {
 public:
  explicit KvctlCopyForOtherUsers(const std::string& tag);
  ~KvctlCopyForOtherUsers();
  KvctlCopyForOtherUsers(const KvctlCopyForOtherUsers&) = delete;
  KvctlCopyForOtherUsers& operator=(const KvctlCopyForOtherUsers&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};
const char* WorkerPath();
const char* FakeDriverPath();  // "" when the fake driver is not built

}  // namespace kvcached::ledger::testing
