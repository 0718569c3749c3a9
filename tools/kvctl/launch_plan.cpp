#include "tools/kvctl/launch_plan.h"

#include <fmt/core.h>
#include <unistd.h>

#include <array>
#include <climits>

#include "tools/kvctl/shim_location.h"

namespace kvctl {
namespace {

using kvcached::Errc;
using kvcached::Status;

std::string Millis2Text(Millis ms) {
  if (ms.count() % 1000 == 0) return fmt::format("{}s", ms.count() / 1000);
  return fmt::format("{}ms", ms.count());
}

}  // namespace

kvcached::Result<std::string> ResolveShim(const LaunchSpec& spec) {
  std::vector<std::string> candidates;
  if (!spec.shim.empty()) {
    candidates.push_back(spec.shim);
  } else {
    candidates = DefaultShimCandidates();
  }
  std::string tried;
  for (const auto& c : candidates) {
    if (::access(c.c_str(), R_OK) == 0) {
      std::array<char, PATH_MAX> real{};
      return std::string(::realpath(c.c_str(), real.data()) != nullptr ? real.data() : c.c_str());
    }
    tried += (tried.empty() ? "" : ", ") + c;
  }
  return Status{
      Errc::kNotFound,
      spec.shim.empty()
          ? fmt::format("libkvcached_shim.so not found next to kvctl (tried {}): "
                        "build it, or give its path with `shim:` in {}",
                        tried, spec.path)
          : fmt::format("{}: shim: {} does not exist or is not readable", spec.path, spec.shim)};
}

std::map<std::string, std::string> EngineEnv(const LaunchSpec& spec, const EngineSpec& engine,
                                             const std::string& shim,
                                             const std::string& inherited_preload) {
  std::map<std::string, std::string> env = spec.env;
  for (const auto& [k, v] : engine.env) env[k] = v;
  std::string preload = shim;
  if (!inherited_preload.empty() &&
      inherited_preload.find("libkvcached_shim") == std::string::npos) {
    preload += ":" + inherited_preload;
  }
  env["LD_PRELOAD"] = preload;
  env["KVCACHED_LABEL"] = engine.label;
  if (!engine.gpu.empty()) {
    env["CUDA_VISIBLE_DEVICES"] = engine.gpu;
    if (auto it = spec.gpus.find(engine.gpu); it != spec.gpus.end()) {
      if (!it->second.utilization.empty()) env["KVCACHED_GPU_UTILIZATION"] = it->second.utilization;
      if (!it->second.budget.empty()) env["KVCACHED_BUDGET"] = it->second.budget;
      if (!it->second.ipc_name.empty()) env["KVCACHED_IPC_NAME"] = it->second.ipc_name;
    }
  }
  return env;
}

std::vector<std::string> MergeEnv(const std::vector<std::string>& base,
                                  const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> out;
  for (const auto& entry : base) {
    const auto eq = entry.find('=');
    if (eq != std::string::npos && overrides.contains(entry.substr(0, eq))) continue;
    out.push_back(entry);
  }
  for (const auto& [k, v] : overrides) out.push_back(fmt::format("{}={}", k, v));
  return out;
}

std::string ShellQuote(const std::string& word) {
  if (!word.empty() &&
      word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                             "_-./:=@%+,") == std::string::npos) {
    return word;
  }
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

void PrintDryRun(const LaunchSpec& spec, const std::string& shim,
                 const std::string& inherited_preload, std::ostream& out) {
  out << fmt::format("# {}: {} engine(s); shim {}; grace period {}\n", spec.path,
                     spec.engines.size(), shim, Millis2Text(spec.grace));
  for (const auto& e : spec.engines) {
    std::string ready = "none (counts as ready once started)";
    if (e.ready.any()) {
      ready.clear();
      if (e.ready.port) ready = fmt::format("{}:{} accepts", e.ready.host, *e.ready.port);
      if (e.ready.log_regex) {
        ready +=
            (ready.empty() ? "" : " or ") + fmt::format("a line matches /{}/", e.ready.log_pattern);
      }
      ready += fmt::format(" (timeout {})", Millis2Text(e.ready.timeout));
    }
    out << fmt::format("\n# [{}] gpu {}; ready: {}\n", e.label,
                       e.gpu.empty() ? "(inherited)" : e.gpu, ready);
    out << fmt::format("# restart: {}", RestartPolicyName(e.restart));
    if (e.restart != RestartPolicy::kNever) {
      out << fmt::format(" (at most {} in a row, back-off {} doubling to {})", e.max_restarts,
                         Millis2Text(e.backoff_initial), Millis2Text(e.backoff_max));
    }
    out << fmt::format("; limit: {}", e.limit.empty() ? "none (the GPU's budget)" : e.limit);
    if (!e.log_file.empty()) out << "; log file: " << e.log_file;
    if (!e.workdir.empty()) out << "; in " << e.workdir;
    out << '\n';
    std::string line = "env";
    for (const auto& [k, v] : EngineEnv(spec, e, shim, inherited_preload)) {
      line += " " + ShellQuote(fmt::format("{}={}", k, v));
    }
    for (const auto& arg : e.argv) line += " " + ShellQuote(arg);
    out << line << '\n';
  }
}

}  // namespace kvctl
