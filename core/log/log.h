// Logging: one spdlog logger for the whole library, created on first use (never at load time:
// a preloaded library must stay silent until CUDA is used). Lines carry the pid so that output
// from several engine processes can be told apart.
//
// Only core/log/*.cpp include spdlog: it is compiled header-only, which costs seconds per
// translation unit, so the rest of the tree formats with fmt/core.h and calls Write().
#pragma once

#include <fmt/core.h>

#include <string>
#include <string_view>

#include "core/config/config.h"

namespace spdlog {
class logger;
}

namespace kvcached::log {

// Configures the logger from config (level, KVCACHED_LOG_FILE). Safe to call more than once;
// the last call wins. Before any call, the logger logs warnings and above to stderr.
void Configure(const Config& config);
// True when a message at `level` would be written (one relaxed atomic load).
bool ShouldLog(LogLevel level);
// Writes one line at `level`.
void Write(LogLevel level, std::string_view message);
// The library's logger (never null), for code that needs spdlog itself.
spdlog::logger& Get();
// Logs `message` at error level only the first time `key` is seen in this process (used for
// driver errors, so that a failing call in a loop does not flood the engine's log).
void ErrorOnce(const std::string& key, const std::string& message);
// In a fork child: replaces the logger without touching locks the parent's threads may hold.
void ResetAfterFork();

}  // namespace kvcached::log

#define KVC_LOG_AT(level, ...)                                   \
  do {                                                           \
    if (::kvcached::log::ShouldLog(level)) {                     \
      ::kvcached::log::Write(level, ::fmt::format(__VA_ARGS__)); \
    }                                                            \
  } while (0)
#define KVC_LOG_TRACE(...) KVC_LOG_AT(::kvcached::LogLevel::kTrace, __VA_ARGS__)
#define KVC_LOG_DEBUG(...) KVC_LOG_AT(::kvcached::LogLevel::kDebug, __VA_ARGS__)
#define KVC_LOG_INFO(...) KVC_LOG_AT(::kvcached::LogLevel::kInfo, __VA_ARGS__)
#define KVC_LOG_WARN(...) KVC_LOG_AT(::kvcached::LogLevel::kWarn, __VA_ARGS__)
#define KVC_LOG_ERROR(...) KVC_LOG_AT(::kvcached::LogLevel::kError, __VA_ARGS__)
