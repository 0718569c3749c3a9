// Logging: pid-prefixed lines to a file or stderr, level filtering, the fallback when the log file
// cannot be opened, ErrorOnce, whole lines under concurrency, and no deadlock in a forked child.
#include "core/log/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/log/utc_time.h"

namespace kvcached {
namespace {

namespace fs = std::filesystem;

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kvcached-log-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    log::Configure(Make(LogLevel::kWarn, ""));  // leave the logger as a fresh process has it
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  static Config Make(LogLevel level, const std::string& file) {
    Config config;
    config.log_level = level;
    config.log_file = file;
    return config;
  }
  [[nodiscard]] std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::size_t Count(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++count;
  }
  return count;
}

// Redirects file descriptor 2 into a file while alive.
class StderrCapture {
 public:
  explicit StderrCapture(std::string path) : path_(std::move(path)) {
    std::fflush(stderr);
    saved_ = ::dup(STDERR_FILENO);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    EXPECT_GE(fd, 0);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  ~StderrCapture() { Stop(); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  std::string Stop() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      ::dup2(saved_, STDERR_FILENO);
      ::close(saved_);
      saved_ = -1;
    }
    return ReadFile(path_);
  }

 private:
  std::string path_;
  int saved_ = -1;
};

TEST_F(LogTest, FileLinesCarryTimestampPidAndLevel) {
  const std::string file = Path("kv.log");
  log::Configure(Make(LogLevel::kInfo, file));
  KVC_LOG_INFO("hello {}", 42);
  KVC_LOG_WARN("careful {}", "now");
  const std::vector<std::string> lines = Lines(ReadFile(file));
  ASSERT_EQ(lines.size(), 2U) << ReadFile(file);
  const std::string pid = std::to_string(::getpid());
  const std::regex info(R"(^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} kvcached pid=)" + pid +
                        R"( info\] hello 42$)");
  const std::regex warn(R"(^\[[-0-9: .]+ kvcached pid=)" + pid + R"( warning\] careful now$)");
  EXPECT_TRUE(std::regex_match(lines[0], info)) << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], warn)) << lines[1];
}

TEST_F(LogTest, StderrLinesCarryPidAndLevel) {
  StderrCapture capture(Path("stderr.txt"));
  log::Configure(Make(LogLevel::kInfo, ""));
  KVC_LOG_ERROR("broken {}", 7);
  const std::string text = capture.Stop();
  EXPECT_EQ(text, "[kvcached pid=" + std::to_string(::getpid()) + " error] broken 7\n");
}

TEST_F(LogTest, LevelFiltering) {
  const std::string file = Path("levels.log");
  log::Configure(Make(LogLevel::kWarn, file));
  KVC_LOG_DEBUG("w-debug");
  KVC_LOG_INFO("w-info");
  KVC_LOG_WARN("w-warn");
  KVC_LOG_ERROR("w-error");
  log::Configure(Make(LogLevel::kError, file));
  KVC_LOG_WARN("e-warn");
  KVC_LOG_ERROR("e-error");
  log::Configure(Make(LogLevel::kOff, file));
  KVC_LOG_ERROR("o-error");
  log::Write(LogLevel::kCritical, "o-critical");
  log::Configure(Make(LogLevel::kTrace, file));
  KVC_LOG_TRACE("t-trace");

  const std::string text = ReadFile(file);
  for (const char* shown : {"w-warn", "w-error", "e-error", "t-trace"}) {
    EXPECT_EQ(Count(text, shown), 1U) << shown << "\n" << text;
  }
  for (const char* hidden : {"w-debug", "w-info", "e-warn", "o-error", "o-critical"}) {
    EXPECT_EQ(Count(text, hidden), 0U) << hidden << "\n" << text;
  }
}

TEST_F(LogTest, LastConfigureWins) {
  const std::string first = Path("first.log");
  const std::string second = Path("second.log");
  log::Configure(Make(LogLevel::kInfo, first));
  KVC_LOG_INFO("to-first");
  log::Configure(Make(LogLevel::kInfo, second));
  KVC_LOG_INFO("to-second");
  StderrCapture capture(Path("stderr.txt"));
  log::Configure(Make(LogLevel::kInfo, ""));
  KVC_LOG_INFO("to-stderr");
  const std::string err = capture.Stop();

  EXPECT_EQ(Count(ReadFile(first), "to-"), 1U);
  EXPECT_EQ(Count(ReadFile(second), "to-second"), 1U);
  EXPECT_EQ(Count(ReadFile(second), "to-stderr"), 0U);
  EXPECT_EQ(Count(err, "to-stderr"), 1U) << err;
}

TEST_F(LogTest, FileIsAppendedNotTruncated) {
  const std::string file = Path("append.log");
  std::ofstream(file) << "existing line\n";
  log::Configure(Make(LogLevel::kInfo, file));
  KVC_LOG_INFO("appended");
  const std::string text = ReadFile(file);
  EXPECT_EQ(text.rfind("existing line\n", 0), 0U) << text;
  EXPECT_EQ(Count(text, "appended"), 1U) << text;
}

TEST_F(LogTest, UnopenableFileFallsBackToStderrWithOneWarning) {
  const std::string missing = Path("no-such-dir/kv.log");
  StderrCapture capture(Path("stderr.txt"));
  log::Configure(Make(LogLevel::kInfo, missing));
  KVC_LOG_INFO("still-logged");
  const std::string err = capture.Stop();

  const std::vector<std::string> lines = Lines(err);
  ASSERT_EQ(lines.size(), 2U) << err;
  EXPECT_NE(lines[0].find("warning]"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("KVCACHED_LOG_FILE=\"" + missing + "\""), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("No such file or directory"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("still-logged"), std::string::npos) << lines[1];
  EXPECT_FALSE(fs::exists(missing));
}

TEST_F(LogTest, DirectoryAsLogFileIsReportedEvenAtErrorLevel) {
  StderrCapture capture(Path("stderr.txt"));
  log::Configure(Make(LogLevel::kError, dir_.string()));
  KVC_LOG_WARN("filtered-out");
  const std::string err = capture.Stop();
  EXPECT_EQ(Count(err, "KVCACHED_LOG_FILE"), 1U) << err;
  EXPECT_EQ(Count(err, "Is a directory"), 1U) << err;
  EXPECT_EQ(Count(err, "filtered-out"), 0U) << err;
}

TEST_F(LogTest, UnopenableFileIsSilentWhenLoggingIsOff) {
  StderrCapture capture(Path("stderr.txt"));
  log::Configure(Make(LogLevel::kOff, Path("no-such-dir/kv.log")));
  EXPECT_EQ(capture.Stop(), "");
}

TEST_F(LogTest, ErrorOnceLogsEachKeyOnce) {
  const std::string file = Path("once.log");
  log::Configure(Make(LogLevel::kWarn, file));
  for (int i = 0; i < 3; ++i) log::ErrorOnce("cuMemMap:1", "map-failed-message");
  log::ErrorOnce("cuMemCreate:2", "create-failed-message");
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([] {
      for (int i = 0; i < 200; ++i) log::ErrorOnce("threaded-key", "threaded-message");
    });
  }
  for (std::thread& thread : threads) thread.join();

  const std::string text = ReadFile(file);
  EXPECT_EQ(Count(text, "map-failed-message"), 1U) << text;
  EXPECT_EQ(Count(text, "create-failed-message"), 1U) << text;
  EXPECT_EQ(Count(text, "threaded-message"), 1U) << text;
  EXPECT_EQ(Count(text, " error] "), 3U) << text;
}

TEST_F(LogTest, ConcurrentLinesStayWhole) {
  const std::string file = Path("threads.log");
  log::Configure(Make(LogLevel::kInfo, file));
  constexpr int kThreads = 4;
  constexpr int kLines = 500;
  const std::string padding(200, 'p');
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &padding] {
      for (int i = 0; i < kLines; ++i) KVC_LOG_INFO("t{} n{} {}", t, i, padding);
    });
  }
  for (std::thread& thread : threads) thread.join();

  const std::vector<std::string> lines = Lines(ReadFile(file));
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kLines));
  const std::regex whole(R"(^\[[-0-9: .]+ kvcached pid=\d+ info\] t\d n\d+ p{200}$)");
  for (const std::string& line : lines) ASSERT_TRUE(std::regex_match(line, whole)) << line;
}

TEST_F(LogTest, ForkedChildLogsWhileParentThreadsAreLogging) {
  const std::string file = Path("fork.log");
  log::Configure(Make(LogLevel::kInfo, file));
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&stop] {
      while (!stop.load()) KVC_LOG_INFO("parent-noise {}", std::string(100, 'n'));
    });
  }
  std::vector<pid_t> children;
  bool hung = false;
  for (int i = 0; i < 40 && !hung; ++i) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      KVC_LOG_INFO("child-line {}", i);
      log::ErrorOnce("child-key", "child-error-once");
      ::_exit(0);
    }
    children.push_back(child);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(child, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        hung = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_FALSE(hung) << "child " << i << " blocked in the logger after fork";
    if (!hung) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
  }
  stop = true;
  for (std::thread& thread : threads) thread.join();

  const std::string text = ReadFile(file);
  for (std::size_t i = 0; i < children.size() && !hung; ++i) {
    const std::string expected =
        "kvcached pid=" + std::to_string(children[i]) + " info] child-line " + std::to_string(i);
    EXPECT_EQ(Count(text, expected + "\n"), 1U) << expected;
  }
  // Each child starts with its own ErrorOnce memory.
  EXPECT_EQ(Count(text, "child-error-once"), children.size());
}

// The timestamp is computed without libc (which could deadlock a fork child): it must agree
// with gmtime_r everywhere, leap days and century years included.
TEST(LogUtcTime, MatchesGmtimeFrom1970To2400) {
  std::mt19937_64 rng(7);
  std::vector<std::int64_t> seconds = {
      0, 951'782'400, 951'868'799, 4'107'542'400, 4'102'444'799, 1'709'164'800, 253'402'300'799};
  std::uniform_int_distribution<std::int64_t> any(0, 13'569'465'600);  // up to 2400-01-01
  for (int i = 0; i < 100'000; ++i) seconds.push_back(any(rng));
  for (std::int64_t s : seconds) {
    const std::int64_t ms = s * 1000 + s % 1000;
    std::array<char, 23> ours{};
    log::FormatUtcMs(ms, ours);
    const std::time_t t = static_cast<std::time_t>(s);
    std::tm tm{};
    ASSERT_NE(::gmtime_r(&t, &tm), nullptr);
    char expected[32];
    const std::size_t n = std::strftime(expected, sizeof(expected), "%Y-%m-%d %H:%M:%S", &tm);
    std::snprintf(expected + n, sizeof(expected) - n, ".%03d", static_cast<int>(s % 1000));
    ASSERT_EQ(std::string(ours.data(), ours.size()), std::string(expected)) << "at " << s << " s";
  }
}

TEST(LogGet, AlwaysTheSameLogger) {
  spdlog::logger& first = log::Get();
  std::thread other([&first] { EXPECT_EQ(&log::Get(), &first); });
  other.join();
  EXPECT_EQ(&log::Get(), &first);
}

}  // namespace
}  // namespace kvcached
