#include "tests/support/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

extern char** environ;  // NOLINT(readability-redundant-declaration)

namespace kvcached::testing {
namespace {

using Clock = std::chrono::steady_clock;

void Decode(int status, ChildResult* r) {
  if (WIFEXITED(status)) {
    r->exited = true;
    r->exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r->signaled = true;
    r->signal = WTERMSIG(status);
  }
}

// Waits for pid until the deadline, then kills it; drains `fd` (if >= 0) meanwhile.
ChildResult Wait(pid_t pid, int fd, std::chrono::milliseconds timeout) {
  ChildResult r;
  const Clock::time_point deadline = Clock::now() + timeout;
  bool reaped = false;
  int status = 0;
  while (true) {
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        char buf[4096];
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n > 0) {
          r.output.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          ::close(fd);
          fd = -1;
        }
      }
    } else if (!reaped) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!reaped) {
      reaped = ::waitpid(pid, &status, WNOHANG) == pid;
    }
    if (reaped && fd < 0) {
      break;
    }
    if (Clock::now() > deadline) {
      if (!reaped) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        r.timed_out = true;
      }
      if (fd >= 0) {
        ::close(fd);
      }
      break;
    }
  }
  Decode(status, &r);
  return r;
}

std::string SelfExe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

std::string ChildResult::Describe() const {
  if (timed_out) {
    return "timed out and was killed";
  }
  if (exited) {
    return "exited with " + std::to_string(exit_code);
  }
  if (signaled) {
    const char* name = ::sigabbrev_np(signal);
    return std::string("killed by SIG") + (name != nullptr ? name : std::to_string(signal));
  }
  return "did not run";
}

ChildResult RunInFork(const std::function<void()>& fn, std::chrono::milliseconds timeout) {
  const pid_t pid = ::fork();
  if (pid < 0) {
    ChildResult r;
    r.output = std::string("fork failed: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    const rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGBUS, SIG_DFL);
    fn();
    ::_exit(0);
  }
  return Wait(pid, -1, timeout);
}

bool DiesOfSegv(const std::function<void()>& fn) {
  const ChildResult r = RunInFork(fn);
  return r.DiedOf(SIGSEGV) || r.DiedOf(SIGBUS);
}

ChildResult RunSelf(const std::string& gtest_filter,
                    const std::map<std::string, std::optional<std::string>>& env,
                    std::chrono::milliseconds timeout) {
  ChildResult r;
  std::map<std::string, std::optional<std::string>> overrides = env;
  overrides["KVCACHED_TEST_CHILD"] = "1";
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    if (!overrides.contains(name)) {
      env_strings.push_back(entry);
    }
  }
  for (const auto& [name, value] : overrides) {
    if (value) {
      env_strings.push_back(name + "=" + *value);
    }
  }
  std::vector<char*> envp;
  for (std::string& s : env_strings) {
    envp.push_back(s.data());
  }
  envp.push_back(nullptr);
  std::string exe = SelfExe();
  std::string filter = "--gtest_filter=" + gtest_filter;
  std::vector<char*> argv = {exe.data(), filter.data(), nullptr};

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    r.output = std::string("pipe failed: ") + std::strerror(errno);
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    r.output = "posix_spawn of " + exe + " failed: " + std::strerror(rc);
    return r;
  }
  return Wait(pid, pipe_fds[0], timeout);
}

bool InChild() {
  const char* v = std::getenv("KVCACHED_TEST_CHILD");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace kvcached::testing
