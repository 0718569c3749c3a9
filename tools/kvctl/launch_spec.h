// The launch file of `kvctl launch FILE.yaml`: which engines to start, on which GPU, how to tell
// they are ready, and what to do when they die. Parsed once; every error names the file, the
// line and the key (docs/launch.md describes the format).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "core/common/status.h"

namespace kvctl {

using Millis = std::chrono::milliseconds;

enum class RestartPolicy { kNever, kOnFailure, kAlways };
const char* RestartPolicyName(RestartPolicy policy);

struct Readiness {
  std::optional<int> port;  // ready when HOST:PORT accepts a TCP connection
  std::string host = "127.0.0.1";
  std::string log_pattern;  // ready when a line of its output matches (ECMAScript)
  std::optional<std::regex> log_regex;
  Millis timeout{std::chrono::minutes(10)};
  [[nodiscard]] bool any() const { return port.has_value() || log_regex.has_value(); }
};

struct EngineSpec {
  std::string label;
  std::vector<std::string> argv;  // a string command becomes {"/bin/sh", "-c", command}
  std::string gpu;                // CUDA_VISIBLE_DEVICES value ("0", "1", a UUID); "" = inherit
  std::string limit;              // as `kvctl limit` SIZE ("8G", "50%", "0.5"); "" = none
  std::map<std::string, std::string> env;  // the engine's own, over the file-wide env
  std::string workdir;                     // "" = kvctl's
  RestartPolicy restart = RestartPolicy::kNever;
  int max_restarts = 10;  // consecutive restarts before it is given up on
  Millis backoff_initial{1000};
  Millis backoff_max{30000};
  Readiness ready;
  std::string log_file;  // its output, unprefixed, appended ("" = none)
  int line = 0;          // where it is in the file, for messages
};

// Shared by every engine on one GPU (one budget per GPU: same values in every engine's env).
struct GpuSpec {
  std::string utilization;  // KVCACHED_GPU_UTILIZATION
  std::string budget;       // KVCACHED_BUDGET
  std::string ipc_name;     // KVCACHED_IPC_NAME
};

struct LaunchSpec {
  std::string path;  // the file, as given
  std::string shim;  // explicit `shim:`; "" = next to kvctl
  Millis grace{10000};
  Millis status_interval{10000};  // summary lines; 0 = only on state changes
  std::map<std::string, std::string> env;
  std::map<std::string, GpuSpec> gpus;
  std::vector<EngineSpec> engines;
};

// Reads and validates FILE. Errors read "FILE:LINE:COL: KEY: what is wrong; the fix".
kvcached::Result<LaunchSpec> LoadLaunchFile(const std::string& path);
kvcached::Result<LaunchSpec> ParseLaunchText(const std::string& text, const std::string& path);

// "1500ms", "2s", "1.5s", "3m", "1h", or a bare number of seconds.
kvcached::Result<Millis> ParseDuration(const std::string& text);

}  // namespace kvctl
