// The library's logger. It writes each line with one write(2) to a file descriptor (stderr or an
// O_APPEND file), so that lines from several engine processes sharing one log file never
// interleave, and it owns its sink so that a file that cannot be opened never reaches spdlog's
// own error path (which, built without exceptions, aborts the host process).
#include "core/log/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <unordered_set>

#include "core/log/utc_time.h"

namespace kvcached::log {
namespace {

// One prefix per line with the pid; the file also gets a UTC timestamp (%*, below; stderr
// usually goes to a supervisor that adds its own).
constexpr const char* kStderrPattern = "[kvcached pid=%P %l] %v";
constexpr const char* kFilePattern = "[%* kvcached pid=%P %l] %v";

// %*: the time in UTC without libc's time functions (utc_time.h says why spdlog's own time
// flags must not be used).
class UtcTimeFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*unused*/,
              spdlog::memory_buf_t& dest) override {
    std::array<char, 23> text{};
    FormatUtcMs(
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count(),
        text);
    dest.append(text.data(), text.data() + text.size());
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<UtcTimeFlag>();
  }
};

void WriteAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a failing log write
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

class FdSink final : public spdlog::sinks::sink {
 public:
  FdSink(int fd, bool owns_fd, bool is_file)
      : fd_(fd), owns_fd_(owns_fd), is_file_(is_file), formatter_(MakeFormatter(is_file)) {}
  ~FdSink() override {
    if (owns_fd_) ::close(fd_.load());
  }
  FdSink(const FdSink&) = delete;
  FdSink& operator=(const FdSink&) = delete;
  FdSink(FdSink&&) = delete;
  FdSink& operator=(FdSink&&) = delete;

  void log(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    const std::lock_guard<std::mutex> lock(mutex_);
    formatter_->format(msg, line);
    WriteAll(fd_.load(), line.data(), line.size());
  }
  void flush() override {}  // write(2) is unbuffered
  void set_pattern(const std::string& pattern) override {
    const std::lock_guard<std::mutex> lock(mutex_);
    formatter_ = FormatterFor(pattern);
  }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    const std::lock_guard<std::mutex> lock(mutex_);
    formatter_ = std::move(formatter);
  }

  // Switches to another descriptor, closing the previous one if this sink opened it.
  void Retarget(int fd, bool owns_fd, bool is_file) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (owns_fd_ && fd_.load() != fd) ::close(fd_.load());
    fd_.store(fd);
    owns_fd_ = owns_fd;
    is_file_.store(is_file);
    formatter_ = MakeFormatter(is_file);
  }

  // Read without the mutex by ResetAfterFork (the mutex may be held by a vanished thread).
  [[nodiscard]] int fd() const { return fd_.load(); }
  [[nodiscard]] bool is_file() const { return is_file_.load(); }

 private:
  static std::unique_ptr<spdlog::formatter> MakeFormatter(bool is_file) {
    return FormatterFor(is_file ? kFilePattern : kStderrPattern);
  }
  static std::unique_ptr<spdlog::formatter> FormatterFor(const std::string& pattern) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<UtcTimeFlag>('*');
    formatter->set_pattern(pattern);
    return formatter;
  }

  std::mutex mutex_;
  std::atomic<int> fd_;
  bool owns_fd_;
  std::atomic<bool> is_file_;
  std::unique_ptr<spdlog::formatter> formatter_;
};

struct State {
  State(int fd, bool owns_fd, bool is_file, spdlog::level::level_enum level)
      : sink(std::make_shared<FdSink>(fd, owns_fd, is_file)), logger("kvcached", sink) {
    logger.set_level(level);
  }

  std::shared_ptr<FdSink> sink;
  spdlog::logger logger;  // not registered with spdlog's registry: no global lock, no name clash
  std::mutex once_mutex;
  std::unordered_set<std::string> once_keys;
};

// The state is created on first use and never destroyed: engine threads may still log while
// the process runs its static destructors, and a child after fork abandons (leaks) the parent's
// copy rather than touch a mutex that a vanished thread may hold.
std::atomic<State*> g_state{nullptr};
// The level, kept apart from the state so that ShouldLog is one load and creates nothing.
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};

void AtForkChild() {
  ResetAfterFork();
}

State& GetState() {
  if (State* state = g_state.load(std::memory_order_acquire)) return *state;
  auto fresh = std::make_unique<State>(STDERR_FILENO, false, false, spdlog::level::warn);
  State* expected = nullptr;
  if (g_state.compare_exchange_strong(expected, fresh.get(), std::memory_order_acq_rel)) {
    ::pthread_atfork(nullptr, nullptr, &AtForkChild);  // only the winner registers
    return *fresh.release();
  }
  return *expected;  // another thread won the race; ours is destroyed here
}

spdlog::level::level_enum ToSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
    case LogLevel::kCritical:
      return spdlog::level::critical;
    case LogLevel::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::warn;
}

}  // namespace

void Configure(const Config& config) {
  State& state = GetState();
  g_level.store(static_cast<int>(config.log_level), std::memory_order_relaxed);
  state.logger.set_level(ToSpdlog(config.log_level));
  if (config.log_file.empty()) {
    state.sink->Retarget(STDERR_FILENO, false, false);
    return;
  }
  // O_APPEND: several processes (tensor-parallel workers) may share one file; each line is one
  // write and lands whole. O_CLOEXEC: programs the engine execs must not inherit it.
  const int fd = ::open(config.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    state.sink->Retarget(fd, true, true);
    return;
  }
  const int err = errno;
  state.sink->Retarget(STDERR_FILENO, false, false);
  if (config.log_level == LogLevel::kOff) return;
  // Shown even when the level is above warn: otherwise every message would vanish unnoticed.
  const std::string message = "KVCACHED_LOG_FILE=\"" + config.log_file +
                              "\": cannot open it for appending (" +
                              std::error_code(err, std::generic_category()).message() +
                              "); logging to stderr instead. Fix the path or its permissions.";
  state.sink->log(spdlog::details::log_msg("kvcached", spdlog::level::warn, message));
}

bool ShouldLog(LogLevel level) {
  return level != LogLevel::kOff &&
         static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void Write(LogLevel level, std::string_view message) {
  if (!ShouldLog(level)) return;
  GetState().logger.log(ToSpdlog(level), spdlog::string_view_t(message.data(), message.size()));
}

spdlog::logger& Get() {
  return GetState().logger;
}

void ErrorOnce(const std::string& key, const std::string& message) {
  State& state = GetState();
  {
    const std::lock_guard<std::mutex> lock(state.once_mutex);
    if (!state.once_keys.insert(key).second) return;
  }
  state.logger.error("{}", message);
}

void ResetAfterFork() {
  State* old = g_state.load(std::memory_order_acquire);
  if (old == nullptr) return;  // never used: stays lazy in the child too
  // The child keeps the parent's target and level. The old state (and its descriptor, which the
  // new sink now owns) is deliberately leaked: its mutexes may be locked forever.
  auto fresh = std::make_unique<State>(old->sink->fd(), old->sink->is_file(), old->sink->is_file(),
                                       old->logger.level());
  g_state.store(fresh.release(), std::memory_order_release);
}

}  // namespace kvcached::log
