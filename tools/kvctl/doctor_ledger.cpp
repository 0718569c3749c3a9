#include "tools/kvctl/doctor_ledger.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "core/ledger/ledger_budget_factory.h"
#include "core/ledger/ledger_name.h"
#include "tools/kvctl/driver_probe.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {

namespace ledger = kvcached::ledger;

namespace {

// What every name an engine of this user with this configuration may use starts with.
std::string EnginePrefix(const kvcached::Config& config) {
  if (!config.ipc_name.empty()) return ledger::SegmentNameFor(config.ipc_name, "", 0);
  const std::string one = ledger::DefaultSegmentName(config, kvcached::DeviceIdentity{0, "x", 0});
  return one.substr(0, one.size() - 1);  // without the "x" uuid
}

}  // namespace

std::vector<std::string> EngineSegmentNames(const kvcached::Config& config) {
  // Each visible GPU's, plus every existing segment an engine of this user with this
  // configuration could pick (their GPUs may be invisible here).
  std::vector<std::string> names;
  const char* env = std::getenv("KVCACHED_CUDA_DRIVER");
  const DriverProbe probe =
      ProbeDriver(env != nullptr && *env != '\0' ? std::string(env) : config.cuda_driver);
  for (const auto& d : probe.devices) {
    names.push_back(ledger::DefaultSegmentName(
        config, kvcached::DeviceIdentity{d.ordinal, d.uuid, d.total_bytes}));
  }
  const std::string prefix = EnginePrefix(config);
  for (const auto& name : SegmentNames()) {
    const bool ipc_match = name == prefix || name.starts_with(prefix + "_");
    if (config.ipc_name.empty() ? name.starts_with(prefix) : ipc_match) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::vector<LedgerCheck> CheckEngineSegments(const kvcached::Config& config,
                                             const std::vector<std::string>& only) {
  const std::vector<std::string> names = only.empty() ? EngineSegmentNames(config) : only;
  std::vector<LedgerCheck> out;
  if (names.empty()) {
    out.push_back({true, fmt::format("no segment for this user's engines yet (they create {}* on "
                                     "first use)",
                                     EnginePrefix(config))});
    return out;
  }
  for (const auto& name : names) {
    const kvcached::Status s = ledger::DiagnoseSegment(name, config.shm_group);
    if (s.ok()) {
      out.push_back(
          {true, fmt::format("{}: engines of this user can attach", ledger::SegmentPath(name))});
    } else {
      out.push_back({false, fmt::format("{} (engines would run with a process-local budget, not "
                                        "sharing this GPU elastically)",
                                        Printable(s.message()))});
    }
  }
  return out;
}

}  // namespace kvctl
