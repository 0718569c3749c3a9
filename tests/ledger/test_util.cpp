#include "tests/ledger/test_util.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/ledger/ledger_segment.h"

extern char** environ;

namespace kvcached::ledger::testing {

std::string UniqueName(const std::string& tag) {
  return "kvcached_test_" + tag + "_" + std::to_string(::getpid());
}

ScopedSegmentName::ScopedSegmentName(const std::string& tag) : name_(UniqueName(tag)) {
  (void)Segment::Remove(name_);
}
ScopedSegmentName::~ScopedSegmentName() {
  (void)Segment::Remove(name_);
}

namespace {

std::vector<std::string> MergedEnv(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& x : extra) overridden = overridden || x.substr(0, x.find('=')) == key;
    if (!overridden) env.push_back(entry);
  }
  for (const auto& x : extra) {
    if (x.back() != '=') env.push_back(x);
  }
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

RunResult Run(const std::vector<std::string>& argv_in, const std::vector<std::string>& env_in,
              std::chrono::milliseconds timeout, int uid, int gid) {
  RunResult r;
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) return r;
  std::vector<std::string> argv = argv_in;
  std::vector<std::string> env = MergedEnv(env_in);
  std::vector<char*> cargv = CStrings(argv);
  std::vector<char*> cenv = CStrings(env);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    if (gid >= 0 && (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(gid)) != 0))
      _exit(126);
    if (uid >= 0 && ::setuid(static_cast<uid_t>(uid)) != 0) _exit(126);
    ::execve(cargv[0], cargv.data(), cenv.data());
    _exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP)) == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.rc = DecodeStatus(status);
  return r;
}

Holder::Holder(const std::string& segment, const std::string& label,
               std::vector<std::string> args) {
  int to_child[2];
  int from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) return;
  std::vector<std::string> argv = {WorkerPath(), "hold", "--segment", segment, "--label", label};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv = CStrings(argv);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::execv(cargv[0], cargv.data());
    _exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  in_ = to_child[1];
  out_ = from_child[0];
  const std::string line = ReadLine(std::chrono::seconds(10));
  std::istringstream is(line);
  std::string word;
  int pid = 0;
  if (is >> word >> pid >> slot_ && word == "ready" && pid == pid_) ready_ = true;
}

Holder::~Holder() {
  if (pid_ > 0) Kill(SIGTERM);
}

std::string Holder::ReadLine(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || out_ < 0) return {};
    pollfd fd{out_, POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) return {};
    char buf[512];
    const ssize_t n = ::read(out_, buf, sizeof(buf));
    if (n <= 0) return {};
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

std::string Holder::Send(const std::string& line) {
  const std::string msg = line + "\n";
  if (in_ < 0 || ::write(in_, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size()))
    return {};
  return ReadLine(std::chrono::seconds(10));
}

void Holder::Kill(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  if (in_ >= 0) ::close(in_);
  in_ = -1;
  int status = 0;
  ::waitpid(pid_, &status, 0);
  if (out_ >= 0) ::close(out_);
  out_ = -1;
  pid_ = -1;
}

const char* KvctlPath() {
  return KVCACHED_TEST_KVCTL;
}

KvctlCopyForOtherUsers::KvctlCopyForOtherUsers(const std::string& tag)
    : dir_("/tmp/kvcached_" + tag + "_" + std::to_string(::getpid())), path_(dir_ + "/kvctl") {
  std::filesystem::create_directories(dir_);
  std::filesystem::permissions(dir_, std::filesystem::perms(0755));
  std::filesystem::copy_file(KvctlPath(), path_, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::permissions(path_, std::filesystem::perms(0755));
}

KvctlCopyForOtherUsers::~KvctlCopyForOtherUsers() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}
const char* WorkerPath() {
  return KVCACHED_TEST_WORKER;
}
const char* FakeDriverPath() {
  return KVCACHED_TEST_FAKE_DRIVER;
}

}  // namespace kvcached::ledger::testing
