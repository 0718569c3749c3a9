#include "tools/kvctl/launch_child.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netdb.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <memory>

namespace kvctl {
namespace {

using kvcached::Errc;
using kvcached::Status;

std::vector<char*> CStrings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  // exec takes char* const[] (a C signature) and does not write through them.
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast)
  for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// Parent pid from /proc/PID/stat (the field after the parenthesised command name), -1 if gone.
pid_t ParentOf(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat;
  if (!std::getline(in, stat)) return -1;
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 4 > stat.size()) return -1;
  // ") S PPID ..."
  return static_cast<pid_t>(std::atol(stat.c_str() + close + 4));
}

// Only async-signal-safe calls between fork and exec.
[[noreturn]] void ExecChild(char* const* argv, char* const* envp, const char* workdir, int out_fd,
                            int err_fd, pid_t parent) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(127);  // kvctl died before prctl took effect
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) ::signal(sig, SIG_DFL);
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, 0);
  ::dup2(out_fd, 1);
  ::dup2(out_fd, 2);
  int err = 0;
  if (workdir[0] != '\0' && ::chdir(workdir) != 0) {
    err = errno;
  } else {
    ::execvpe(argv[0], argv, envp);
    err = errno;
  }
  const char tag = workdir[0] != '\0' && err != 0 && ::access(workdir, X_OK) != 0 ? 'd' : 'e';
  const std::array<char, 3> msg = {tag, static_cast<char>(err & 0xff),
                                   static_cast<char>((err >> 8) & 0xff)};
  [[maybe_unused]] const ssize_t written = ::write(err_fd, msg.data(), msg.size());
  ::_exit(127);
}

}  // namespace

kvcached::Result<Spawned> SpawnEngine(const std::vector<std::string>& argv,
                                      const std::vector<std::string>& env,
                                      const std::string& workdir) {
  std::array<int, 2> out{};
  std::array<int, 2> err{};
  if (::pipe2(out.data(), O_CLOEXEC) != 0) {
    return Status{Errc::kState, fmt::format("pipe: {}", std::strerror(errno))};
  }
  if (::pipe2(err.data(), O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(out[0]);
    ::close(out[1]);
    return Status{Errc::kState, fmt::format("pipe: {}", std::strerror(e))};
  }
  auto cargv = CStrings(argv);
  auto cenv = CStrings(env);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) ExecChild(cargv.data(), cenv.data(), workdir.c_str(), out[1], err[1], parent);
  const int fork_errno = errno;
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(err[0]);
    return Status{Errc::kState, fmt::format("fork: {}", std::strerror(fork_errno))};
  }
  ::setpgid(pid, pid);  // also here, so that signals sent right away reach the group
  std::array<char, 3> msg{};
  ssize_t n = 0;
  do {
    n = ::read(err[0], msg.data(), msg.size());
  } while (n < 0 && errno == EINTR);
  ::close(err[0]);
  if (n == 3) {
    ::close(out[0]);
    // The child exits 127 at once; it is reaped by the caller's SIGCHLD handling.
    const int e = static_cast<unsigned char>(msg[1]) | (static_cast<unsigned char>(msg[2]) << 8);
    if (msg[0] == 'd') {
      return Status{Errc::kInvalid,
                    fmt::format("cannot enter workdir {}: {}", workdir, std::strerror(e))};
    }
    return Status{Errc::kInvalid, fmt::format("cannot run {}: {}{}", argv[0], std::strerror(e),
                                              e == ENOENT ? " (not found in PATH)" : "")};
  }
  ::fcntl(out[0], F_SETFL, ::fcntl(out[0], F_GETFL) | O_NONBLOCK);
  return Spawned{pid, out[0]};
}

bool SignalGroup(pid_t pgid, int sig) {
  return pgid > 0 && ::kill(-pgid, sig) == 0;
}

bool GroupAlive(pid_t pgid) {
  return pgid > 0 && (::kill(-pgid, 0) == 0 || errno == EPERM);
}

bool InProcessTree(pid_t pid, pid_t root) {
  for (int depth = 0; depth < 64 && pid > 1; ++depth) {
    if (pid == root) return true;
    pid = ParentOf(pid);
  }
  return false;
}

std::vector<pid_t> OwnChildren() {
  std::vector<pid_t> out;
  const pid_t self = ::getpid();
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc"), ::closedir);
  if (!dir) return out;
  while (const dirent* d = ::readdir(dir.get())) {
    const auto pid = static_cast<pid_t>(std::atol(static_cast<const char*>(d->d_name)));
    if (pid > 0 && ParentOf(pid) == self) out.push_back(pid);
  }
  return out;
}

bool PortAccepts(const std::string& host, int port, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> list(found, ::freeaddrinfo);
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    bool ok = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!ok && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int soerr = 0;
      socklen_t len = sizeof(soerr);
      ok = ::poll(&p, 1, timeout_ms) == 1 &&
           ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0;
    }
    ::close(fd);
    if (ok) return true;
  }
  return false;
}

void LineSplitter::Feed(const char* data, std::size_t n, std::vector<std::string>& lines) {
  for (std::size_t i = 0; i < n; ++i) {
    if (data[i] == '\n') {
      if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
      lines.push_back(std::move(partial_));
      partial_.clear();
    } else {
      partial_ += data[i];
      if (partial_.size() >= max_line_) {
        lines.push_back(std::move(partial_));
        partial_.clear();
      }
    }
  }
}

bool LineSplitter::Flush(std::string& line) {
  if (partial_.empty()) return false;
  line = std::move(partial_);
  partial_.clear();
  return true;
}

}  // namespace kvctl
