// Running test code in another process: a forked child (to watch it die, e.g. of SIGSEGV when
// it touches memory that is not backed, as a GPU kernel would fault), or this test binary
// re-run with another environment (the fake driver reads its settings once per process).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace kvcached::testing {

struct ChildResult {
  bool exited = false;  // exit_code is valid
  int exit_code = -1;
  bool signaled = false;  // signal is valid
  int signal = 0;
  bool timed_out = false;  // killed after the timeout
  std::string output;      // stdout + stderr (RunSelf only)

  [[nodiscard]] bool DiedOf(int sig) const { return signaled && signal == sig; }
  [[nodiscard]] bool ExitedWith(int code) const { return exited && exit_code == code; }
  [[nodiscard]] std::string Describe() const;  // "exited with 0", "killed by SIGSEGV", ...
};

// Runs fn in a forked child that _exit(0)s when fn returns (gtest assertions inside fn do not
// reach the parent: report through the exit code, e.g. _exit(3)). Core dumps are off in the
// child. The fork shares MAP_SHARED memory (the fake's VMM mappings) with the parent.
ChildResult RunInFork(const std::function<void()>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

// True when fn, run in a forked child, is killed by SIGSEGV (or SIGBUS).
bool DiesOfSegv(const std::function<void()>& fn);

// Re-runs this test binary with --gtest_filter=<filter>, the current environment plus `env`
// (a nullopt value unsets the variable) and KVCACHED_TEST_CHILD=1; captures its output.
ChildResult RunSelf(const std::string& gtest_filter,
                    const std::map<std::string, std::optional<std::string>>& env,
                    std::chrono::milliseconds timeout = std::chrono::seconds(60));

// True inside a RunSelf child.
bool InChild();

// First line of a test that only makes sense as a RunSelf child (it needs an environment set
// before the driver loads); run directly, it skips. Convention: such tests live in suites
// named *Child, which gtest_discover_tests leaves out with TEST_FILTER "-*Child.*".
#define KVCACHED_CHILD_ONLY()                                         \
  do {                                                                \
    if (!::kvcached::testing::InChild()) {                            \
      GTEST_SKIP() << "runs only as a RunSelf child of another test"; \
    }                                                                 \
  } while (0)

}  // namespace kvcached::testing
