// Shared helpers of the benchmark programs: configuration from the environment, statistics,
// and the one machine-readable JSON line each program prints (and writes to --json-out).
// Header-only so that each bench stays one source file (bench/CMakeLists.txt globs *.cpp).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/common/status.h"
#include "core/config/config.h"

namespace kvcached::bench {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The folder of the running program (where the build puts its siblings: ../lib holds the shim);
// "." when /proc/self/exe cannot be read.
inline std::string SelfDir() {
  std::array<char, 4096> path{};
  const ssize_t n = readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n <= 0) return ".";
  path[static_cast<std::size_t>(n)] = '\0';
  const std::string s(path.data());
  return s.substr(0, s.rfind('/'));
}

// Linear-interpolated percentile (p in [0, 100]) of an unsorted sample; NaN when empty.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const double pos = (p / 100.0) * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}
inline double Median(const std::vector<double>& v) {
  return Percentile(v, 50.0);
}

[[noreturn]] inline void Die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "error: %s: %s\n", what.c_str(), st.message().c_str());
  std::exit(1);
}
inline void Check(const Status& st, const std::string& what) {
  if (!st.ok()) Die(what, st);
}
template <class T>
T Take(Result<T> r, const std::string& what) {
  if (!r.ok()) Die(what, r.status());
  return std::move(r).value();
}

// Runs a bench's body: an exception (out of memory, a JSON or file error) ends it with one error
// line and exit status 1, not std::terminate.
inline int Main(int argc, char** argv, int (*run)(int, char**)) noexcept {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "error: unexpected exception\n");
  }
  return 1;
}

// The product's configuration from the environment (KVCACHED_*), so every bench honours the same
// variables as the shim; each bench then overrides only what it measures.
inline Config EnvConfig() {
  Result<Config> cfg = LoadConfigFromEnvironment();
  if (!cfg.ok()) Die("configuration", cfg.status());
  return std::move(cfg).value();
}

// True when a driver other than the system's libcuda.so.1 is in use (the fake one in CI).
inline bool CustomDriver(const Config& c) {
  return c.cuda_driver != "libcuda.so.1";
}
inline std::string DriverLabel(const Config& c) {
  return CustomDriver(c) ? "custom driver " + c.cuda_driver : "real driver libcuda.so.1";
}

// Polls `ready` (every 100 us) for up to `timeout_s`; returns whether it became true.
template <class F>
bool WaitFor(F ready, double timeout_s) {
  const auto start = Clock::now();
  while (!ready()) {
    if (SecondsSince(start) > timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

// One target check: value `op` target, e.g. warm p50 "<" 1 us.
inline nlohmann::json MakeCheck(const std::string& name, double value, const std::string& unit,
                                const std::string& op, double target) {
  const bool pass = op == "<" ? value < target : op == "<=" ? value <= target : value >= target;
  return {{"name", name}, {"value", value},   {"unit", unit},
          {"op", op},     {"target", target}, {"pass", pass}};
}

// A number reported without a target (shown as "info" in the GPU suite's summary).
inline nlohmann::json MakeInfo(const std::string& name, double value, const std::string& unit) {
  return {{"name", name}, {"value", value}, {"unit", unit}};
}

// Prints the JSON line (prefixed so scripts can grep it) and writes it to `path` if given.
inline void EmitJson(const nlohmann::json& j, const std::string& path) {
  const std::string line = j.dump();
  std::printf("BENCH_JSON %s\n", line.c_str());
  if (path.empty()) return;
  std::ofstream out(path);
  out << line << "\n";
  if (!out) {
    std::fprintf(stderr, "error: cannot write --json-out %s\n", path.c_str());
    std::exit(1);
  }
}

// Prints the checks as "name value unit op target PASS|FAIL" rows and returns true if all pass.
inline bool PrintChecks(const nlohmann::json& checks) {
  bool all = true;
  for (const auto& c : checks) {
    const bool pass = c["pass"].get<bool>();
    all = all && pass;
    std::printf("  %-28s %12.3f %-5s %-2s %-10g %s\n", c["name"].get<std::string>().c_str(),
                c["value"].get<double>(), c["unit"].get<std::string>().c_str(),
                c["op"].get<std::string>().c_str(), c["target"].get<double>(),
                pass ? "PASS" : "FAIL");
  }
  return all;
}

}  // namespace kvcached::bench
