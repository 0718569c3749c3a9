// kvctl doctor: checks everything the shim needs and reports each problem with its fix.
#include <dlfcn.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <iostream>

#include "core/config/config.h"
#include "core/config/device_budget.h"
#include "core/config/unknown_variables.h"
#include "core/ledger/ledger_name.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/doctor_ledger.h"
#include "tools/kvctl/driver_probe.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"
#include "tools/kvctl/shim_location.h"

namespace kvctl {
namespace {

enum class Level { kOk, kWarn, kFail };

struct Check {
  std::string name;
  Level level;
  std::string detail;
};

// How a level is written: the column before each check in the text output, and its JSON name.
struct LevelText {
  const char* tag;
  const char* name;
};

LevelText TextOf(Level l) {
  switch (l) {
    case Level::kOk:
      return {"[ ok ]", "ok"};
    case Level::kWarn:
      return {"[warn]", "warn"};
    case Level::kFail:
      return {"[FAIL]", "fail"};
  }
  return {"[ ?? ]", "?"};
}

// Returns whether the configuration is valid (the engine would start with it).
bool CheckConfig(std::vector<Check>& out, kvcached::Config& config) {
  auto loaded = kvcached::LoadConfigFromEnvironment();
  if (loaded.ok()) {
    config = loaded.value();
    out.push_back({"config", Level::kOk, "every KVCACHED_* variable in the environment is valid"});
    return true;
  }
  out.push_back({"config", Level::kFail, loaded.status().message()});
  return false;
}

// The names the shim warns about at start: ignored by every reader, so most likely a typo.
void CheckUnknownVariables(std::vector<Check>& out) {
  const auto unknown = kvcached::FindUnknownVariables(kvcached::EnvironmentNames());
  if (unknown.empty()) {
    out.push_back({"variables", Level::kOk, "no unknown or misspelled KVCACHED_* variables"});
    return;
  }
  for (const auto& u : unknown) {
    out.push_back({"variables", Level::kWarn, kvcached::DescribeUnknown(u)});
  }
}

// Each GPU's budget, by the function the engine runs at start (BudgetForDevice).
void CheckBudgets(std::vector<Check>& out, const kvcached::Config& config, bool config_ok,
                  const DriverProbe& probe) {
  if (!config_ok) {
    out.push_back({"budget", Level::kWarn, "not checked: the configuration is invalid"});
    return;
  }
  if (probe.devices.empty()) {
    out.push_back({"budget", Level::kWarn, "not checked: no GPU visible"});
    return;
  }
  for (const auto& d : probe.devices) {
    auto budget = kvcached::BudgetForDevice(config, d.total_bytes, d.ordinal);
    if (!budget.ok()) {
      out.push_back({"budget", Level::kFail, budget.status().message()});
    } else if (!budget.value().warning.empty()) {
      out.push_back({"budget", Level::kWarn, budget.value().warning});
    } else {
      out.push_back({"budget", Level::kOk,
                     fmt::format("GPU {}: budget {} of {} (minimum {})", d.ordinal,
                                 FormatBytes(budget.value().bytes), FormatBytes(d.total_bytes),
                                 FormatBytes(kvcached::MinimumBudgetBytes(config)))});
    }
  }
}

DriverProbe CheckDriver(std::vector<Check>& out, const kvcached::Config& config) {
  const char* env = std::getenv("KVCACHED_CUDA_DRIVER");
  const std::string path = env != nullptr && *env != '\0' ? env : config.cuda_driver;
  DriverProbe probe = ProbeDriver(path);
  if (!probe.loaded || !probe.error.empty()) {
    std::string fix = probe.loaded ? ""
                                   : ": install the NVIDIA driver (in a container: the NVIDIA "
                                     "container runtime), or set KVCACHED_CUDA_DRIVER to the "
                                     "path of libcuda.so.1";
    out.push_back(
        {"driver", Level::kFail, fmt::format("CUDA driver {}: {}{}", path, probe.error, fix)});
    out.push_back({"vmm", Level::kFail, "not checked: no usable CUDA driver"});
    return {};
  }
  out.push_back({"driver", Level::kOk,
                 fmt::format("{} loaded (driver version {}), {} device(s)", path,
                             probe.driver_version, probe.devices.size())});
  if (probe.devices.empty()) {
    out.push_back({"vmm", Level::kFail,
                   "the driver sees no GPU (check CUDA_VISIBLE_DEVICES and "
                   "nvidia-smi)"});
    return probe;
  }
  int with_vmm = 0;
  std::string detail;
  for (const auto& d : probe.devices) {
    with_vmm += d.vmm ? 1 : 0;
    if (!detail.empty()) detail += "; ";
    detail += fmt::format("device {} {} ({}, {}): VMM {}", d.ordinal, Printable(d.name),
                          Printable(d.uuid), FormatBytes(d.total_bytes),
                          d.vmm ? "supported" : "NOT supported");
  }
  const Level level = with_vmm == static_cast<int>(probe.devices.size()) ? Level::kOk
                      : with_vmm > 0                                     ? Level::kWarn
                                                                         : Level::kFail;
  if (level != Level::kOk) detail += " (devices without VMM run without the shim's elasticity)";
  out.push_back({"vmm", level, detail});
  return probe;
}

void CheckShm(std::vector<Check>& out) {
  const std::string dir(kvcached::ledger::kShmDir);
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) {
    out.push_back({"shm", Level::kFail,
                   fmt::format("{} is missing: mount a tmpfs there (Docker: --shm-size; "
                               "Kubernetes: an emptyDir with medium: Memory)",
                               dir)});
    return;
  }
  const std::uint64_t size = std::uint64_t{vfs.f_blocks} * vfs.f_frsize;
  const std::uint64_t free = std::uint64_t{vfs.f_bavail} * vfs.f_frsize;
  std::string detail =
      fmt::format("{}: {} size, {} free", dir, FormatBytes(size), FormatBytes(free));
  Level level = Level::kOk;
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    level = Level::kFail;
    detail += "; not writable by this user, so engines cannot create their ledger";
  } else if (free < (1U << 20)) {
    level = Level::kWarn;
    detail += "; less than 1 MiB free (each ledger needs about 17 KiB)";
  }
  out.push_back({"shm", level, detail});
}

// Which segments the doctor judges (kvctl doctor --all / --segment).
struct Scope {
  bool all = false;                   // every segment in /dev/shm
  std::vector<std::string> segments;  // only these (normalized names)
};

// The segments in scope; `skipped` counts those left out by the default scope.
std::vector<SegmentEntry> SegmentsInScope(const Scope& scope, const kvcached::Config& config,
                                          std::size_t& skipped) {
  skipped = 0;
  std::vector<SegmentEntry> out;
  if (!scope.segments.empty()) {
    for (const auto& name : scope.segments) out.push_back(Inspect(name));
    return out;
  }
  const std::vector<std::string> engines = EngineSegmentNames(config);
  const uid_t me = ::geteuid();
  for (auto& e : InspectAll()) {
    const bool engines_would_use =
        std::find(engines.begin(), engines.end(), e.name) != engines.end();
    if (scope.all || e.uid == me || engines_would_use) {
      out.push_back(std::move(e));
    } else {
      ++skipped;
    }
  }
  return out;
}

void CheckSegments(std::vector<Check>& out, const Scope& scope, const kvcached::Config& config) {
  std::size_t skipped = 0;
  const auto entries = SegmentsInScope(scope, config, skipped);
  if (skipped > 0) {
    out.push_back({"segments", Level::kOk,
                   fmt::format("{} other segment(s) in /dev/shm not judged (other users', not "
                               "for this user's engines); `kvctl doctor --all` judges every one",
                               skipped)});
  }
  if (entries.empty()) {
    if (skipped == 0) out.push_back({"segments", Level::kOk, "no kvcached segments yet"});
    out.push_back({"permissions", Level::kOk, "no kvcached segments of this user yet"});
    return;
  }
  for (const auto& e : entries) {
    struct stat st {};
    if (!scope.segments.empty() && ::lstat(e.path.c_str(), &st) != 0 && errno == ENOENT) {
      out.push_back(
          {"segments", Level::kFail, fmt::format("no segment {} (see `kvctl list`)", e.path)});
      continue;
    }
    switch (e.status) {
      case SegmentStatus::kOk:
        out.push_back(
            {"segments", Level::kOk,
             fmt::format("{}: valid, {} live process(es)", Printable(e.name), e.snapshot->live)});
        break;
      case SegmentStatus::kStale:
        out.push_back({"segments", Level::kWarn,
                       fmt::format("{}: stale, all {} attached process(es) are dead; remove it "
                                   "with `kvctl delete {}`",
                                   Printable(e.name), e.snapshot->dead, Printable(e.name))});
        break;
      case SegmentStatus::kCorrupt:
        out.push_back({"segments", Level::kFail, Printable(e.error)});
        break;
      case SegmentStatus::kUnreadable:
      case SegmentStatus::kOtherVersion:
        out.push_back({"segments", Level::kWarn, Printable(e.error)});
        break;
      case SegmentStatus::kCreating:
        out.push_back({"segments", Level::kOk, Printable(e.error)});
        break;
    }
    if ((e.mode & 0002) != 0) {
      out.push_back({"permissions", Level::kFail,
                     fmt::format("{} is world-writable (mode {:04o}): any user can change limits "
                                 "and forge usage. Stop its engines, `kvctl delete {}`, and start "
                                 "them with KVCACHED_SHM_MODE=0600 (or 0660 with "
                                 "KVCACHED_SHM_GROUP)",
                                 e.path, e.mode, Printable(e.name))});
    } else if ((e.mode & 0004) != 0) {
      out.push_back({"permissions", Level::kWarn,
                     fmt::format("{} is world-readable (mode {:04o}): other users can see usage",
                                 e.path, e.mode)});
    } else {
      out.push_back({"permissions", Level::kOk,
                     fmt::format("{}: mode {:04o}, uid {}, gid {}", e.path, e.mode, e.uid, e.gid)});
    }
  }
}

void CheckShim(std::vector<Check>& out) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("KVCACHED_SHIM_PATH"); env != nullptr && *env != '\0') {
    candidates.emplace_back(env);
  } else {
    candidates = DefaultShimCandidates();
  }
  std::string tried;
  for (const auto& path : candidates) {
    if (::access(path.c_str(), F_OK) != 0) {
      tried += (tried.empty() ? "" : ", ") + path;
      continue;
    }
    void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* err = ::dlerror();
      out.push_back(
          {"shim", Level::kFail,
           fmt::format("{} exists but does not load: {}", path, err != nullptr ? err : "?")});
      return;
    }
    auto version = reinterpret_cast<const char* (*)()>(::dlsym(lib, "kvcached_version"));
    out.push_back({"shim", Level::kOk,
                   fmt::format("{} loads (version {}); use it with LD_PRELOAD={}", path,
                               version != nullptr ? version() : "unknown", path)});
    return;
  }
  out.push_back({"shim", Level::kFail,
                 fmt::format("libkvcached_shim.so not found (tried {}): build it, or set "
                             "KVCACHED_SHIM_PATH to its path",
                             tried)});
}

int RunDoctor(bool json, Scope scope) {
  for (auto& name : scope.segments) {
    auto normalized = kvcached::ledger::NormalizeSegmentName(name);
    if (!normalized.ok()) {
      PrintError(normalized.status().message());
      return kExitUsage;
    }
    name = normalized.value();
  }
  std::vector<Check> checks;
  kvcached::Config config;
  const bool config_ok = CheckConfig(checks, config);
  CheckUnknownVariables(checks);
  const DriverProbe probe = CheckDriver(checks, config);
  CheckBudgets(checks, config, config_ok, probe);
  CheckShm(checks);
  CheckSegments(checks, scope, config);
  // ---- ledger: the segments this user's engines would attach to (issue 12; doctor_ledger.cpp)
  for (const auto& c : CheckEngineSegments(config, scope.segments)) {
    checks.push_back({"ledger", c.ok ? Level::kOk : Level::kFail, c.detail});
  }
  // ---- end ledger
  CheckShim(checks);
  bool failed = false;
  for (const auto& c : checks) failed = failed || c.level == Level::kFail;
  if (json) {
    nlohmann::json out;
    out["ok"] = !failed;
    out["checks"] = nlohmann::json::array();
    for (const auto& c : checks) {
      out["checks"].push_back(
          {{"check", c.name}, {"status", TextOf(c.level).name}, {"detail", c.detail}});
    }
    std::cout << Dump(out) << '\n';
  } else {
    for (const auto& c : checks) {
      std::cout << fmt::format("{} {:<12} {}\n", TextOf(c.level).tag, c.name, c.detail);
    }
    std::cout << (failed ? "\nproblems found: see the [FAIL] lines\n" : "\nall checks passed\n");
  }
  return failed ? kExitFailure : kExitOk;
}

}  // namespace

void AddDoctorCommand(CLI::App& app, int& exit_code) {
  auto json = std::make_shared<bool>(false);
  auto scope = std::make_shared<Scope>();
  auto* cmd = app.add_subcommand(
      "doctor",
      "Check the setup: CUDA driver and VMM support, /dev/shm, stale/corrupt segments, "
      "segment permissions, the shim library, KVCACHED_* variables (values, misspelled names, "
      "each GPU's budget). Segments judged: this user's and those this user's engines would "
      "attach to (--all: every one; --segment: only those named)");
  cmd->add_flag("--json", *json, "Print JSON for scripts");
  auto* all = cmd->add_flag("--all", scope->all,
                            "Judge every segment in /dev/shm (other users' and leftovers too)");
  cmd->add_option("--segment", scope->segments,
                  "Judge only this segment (NAME, kvcached_NAME or /dev/shm/kvcached_NAME); "
                  "repeatable")
      ->excludes(all);
  cmd->callback([json, scope, &exit_code] { exit_code = RunDoctor(*json, *scope); });
}

}  // namespace kvctl
