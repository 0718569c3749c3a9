// Parses the launch file with yaml-cpp. yaml-cpp reports problems by exception; they are caught
// here and turned into a Status naming the file, line, column and key, and nothing else throws.
#include "tools/kvctl/launch_spec.h"

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "tools/kvctl/limit_value.h"

namespace kvctl {
namespace {

using kvcached::Errc;
using kvcached::Result;
using kvcached::Status;

// Variables the launcher sets itself; a file that sets them would split a GPU's budget or run
// an engine outside the shim, so it is told which key to use instead.
const std::map<std::string, std::string>& ReservedEnv() {
  static const std::map<std::string, std::string> reserved = {
      {"LD_PRELOAD", "the top-level `shim:` key"},
      {"CUDA_VISIBLE_DEVICES", "the engine's `gpu:` key"},
      {"KVCACHED_LABEL", "the engine's `label:` key"},
      {"KVCACHED_GPU_UTILIZATION", "`gpus: {GPU: {utilization: ...}}`"},
      {"KVCACHED_BUDGET", "`gpus: {GPU: {budget: ...}}`"},
      {"KVCACHED_IPC_NAME", "`gpus: {GPU: {ipc_name: ...}}`"},
  };
  return reserved;
}

class Parser {
 public:
  explicit Parser(std::string path) : path_(std::move(path)) {}

  Status Error(const YAML::Node& node, const std::string& key, const std::string& what) const {
    const YAML::Mark mark = node.Mark();
    if (mark.is_null()) {
      return {Errc::kInvalid, fmt::format("{}: {}: {}", path_, key, what)};
    }
    return {Errc::kInvalid,
            fmt::format("{}:{}:{}: {}: {}", path_, mark.line + 1, mark.column + 1, key, what)};
  }

  Status CheckKeys(const YAML::Node& map, const std::string& where,
                   const std::set<std::string>& known) const {
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (!known.contains(key)) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        return Error(kv.first, where.empty() ? key : fmt::format("{}.{}", where, key),
                     fmt::format("unknown key (known here: {})", list));
      }
    }
    return Status::Ok();
  }

  Result<std::string> Scalar(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) return Error(node, key, "expected a single value (a string or number)");
    return node.Scalar();
  }

  Result<Millis> Duration(const YAML::Node& node, const std::string& key) const {
    auto text = Scalar(node, key);
    if (!text.ok()) return text.status();
    auto d = ParseDuration(text.value());
    if (!d.ok()) return Error(node, key, d.status().message());
    return d.value();
  }

  Result<int> Int(const YAML::Node& node, const std::string& key, int lo, int hi) const {
    auto text = Scalar(node, key);
    if (!text.ok()) return text.status();
    int value = 0;
    std::size_t used = 0;
    try {
      value = std::stoi(text.value(), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.value().size() || value < lo || value > hi) {
      return Error(node, key,
                   fmt::format("'{}' is not an integer from {} to {}", text.value(), lo, hi));
    }
    return value;
  }

  Status Env(const YAML::Node& node, const std::string& key,
             std::map<std::string, std::string>& out) const {
    if (!node.IsMap()) return Error(node, key, "expected a map of NAME: value");
    for (const auto& kv : node) {
      const std::string name = kv.first.Scalar();
      const std::string full = fmt::format("{}.{}", key, name);
      if (name.empty() || name.find_first_of("=\0", 0, 2) != std::string::npos) {
        return Error(kv.first, full, "not a valid environment variable name");
      }
      if (auto it = ReservedEnv().find(name); it != ReservedEnv().end()) {
        return Error(kv.first, full,
                     fmt::format("kvctl launch sets {} itself; use {} instead", name, it->second));
      }
      auto value = Scalar(kv.second, full);
      if (!value.ok()) return value.status();
      out[name] = value.value();
    }
    return Status::Ok();
  }

  Status Ready(const YAML::Node& node, const std::string& key, Readiness& out) const {
    if (!node.IsMap()) return Error(node, key, "expected a map (port:, log:, host:, timeout:)");
    KVC_RETURN_IF_ERROR(CheckKeys(node, key, {"port", "host", "log", "timeout"}));
    if (node["port"]) {
      auto port = Int(node["port"], key + ".port", 1, 65535);
      if (!port.ok()) return port.status();
      out.port = port.value();
    }
    if (node["host"]) {
      auto host = Scalar(node["host"], key + ".host");
      if (!host.ok()) return host.status();
      out.host = host.value();
    }
    if (node["log"]) {
      auto pattern = Scalar(node["log"], key + ".log");
      if (!pattern.ok()) return pattern.status();
      try {
        out.log_regex.emplace(pattern.value(), std::regex::ECMAScript | std::regex::optimize);
      } catch (const std::regex_error& e) {
        return Error(
            node["log"], key + ".log",
            fmt::format("'{}' is not a valid regular expression: {}", pattern.value(), e.what()));
      }
      out.log_pattern = pattern.value();
    }
    if (node["timeout"]) {
      auto t = Duration(node["timeout"], key + ".timeout");
      if (!t.ok()) return t.status();
      out.timeout = t.value();
    }
    if (!out.any()) return Error(node, key, "give `port:` or `log:` (or both)");
    return Status::Ok();
  }

  Status Engine(const YAML::Node& node, const std::string& key, EngineSpec& e) const {
    if (!node.IsMap()) return Error(node, key, "expected a map with at least `command:`");
    e.line = static_cast<int>(node.Mark().line) + 1;
    KVC_RETURN_IF_ERROR(CheckKeys(node, key,
                                  {"label", "command", "gpu", "limit", "env", "workdir", "restart",
                                   "max_restarts", "backoff", "ready", "log_file"}));
    const YAML::Node cmd = node["command"];
    if (!cmd) return Error(node, key + ".command", "missing: give the engine's command line");
    if (cmd.IsScalar()) {
      if (cmd.Scalar().empty()) return Error(cmd, key + ".command", "empty");
      e.argv = {"/bin/sh", "-c", "exec " + cmd.Scalar()};
    } else if (cmd.IsSequence() && cmd.size() > 0) {
      for (std::size_t i = 0; i < cmd.size(); ++i) {
        auto arg = Scalar(cmd[i], fmt::format("{}.command[{}]", key, i));
        if (!arg.ok()) return arg.status();
        e.argv.push_back(arg.value());
      }
    } else {
      return Error(cmd, key + ".command", "expected a string (run by /bin/sh) or a list of words");
    }
    if (node["label"]) {
      auto label = Scalar(node["label"], key + ".label");
      if (!label.ok()) return label.status();
      e.label = label.value();
      if (e.label.empty() || e.label.size() > 63 ||
          e.label.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                    "0123456789_.-") != std::string::npos) {
        return Error(node["label"], key + ".label",
                     "use 1 to 63 letters, digits, '_', '.' or '-' (it names the engine in "
                     "output and in kvctl)");
      }
    }
    if (node["gpu"]) {
      auto gpu = Scalar(node["gpu"], key + ".gpu");
      if (!gpu.ok()) return gpu.status();
      e.gpu = gpu.value();
      if (e.gpu.empty() || e.gpu.find_first_of(", \t") != std::string::npos) {
        return Error(node["gpu"], key + ".gpu",
                     "give one GPU (an index like 0, or a UUID): engines on several GPUs are "
                     "not supported by the launcher");
      }
    }
    if (node["limit"]) {
      auto limit = Scalar(node["limit"], key + ".limit");
      if (!limit.ok()) return limit.status();
      e.limit = limit.value();
      if (auto v = ParseLimitValue(e.limit); !v.ok()) {
        return Error(node["limit"], key + ".limit", v.status().message());
      }
    }
    if (node["env"]) KVC_RETURN_IF_ERROR(Env(node["env"], key + ".env", e.env));
    if (node["workdir"]) {
      auto dir = Scalar(node["workdir"], key + ".workdir");
      if (!dir.ok()) return dir.status();
      e.workdir = dir.value();
    }
    if (node["restart"]) {
      auto r = Scalar(node["restart"], key + ".restart");
      if (!r.ok()) return r.status();
      if (r.value() == "never" || r.value() == "no") {
        e.restart = RestartPolicy::kNever;
      } else if (r.value() == "on-failure") {
        e.restart = RestartPolicy::kOnFailure;
      } else if (r.value() == "always") {
        e.restart = RestartPolicy::kAlways;
      } else {
        return Error(node["restart"], key + ".restart",
                     fmt::format("'{}' is not one of never, on-failure, always", r.value()));
      }
    }
    if (node["max_restarts"]) {
      auto n = Int(node["max_restarts"], key + ".max_restarts", 0, 1000000);
      if (!n.ok()) return n.status();
      e.max_restarts = n.value();
    }
    if (const YAML::Node b = node["backoff"]) {
      if (!b.IsMap()) return Error(b, key + ".backoff", "expected a map (initial:, max:)");
      KVC_RETURN_IF_ERROR(CheckKeys(b, key + ".backoff", {"initial", "max"}));
      if (b["initial"]) {
        auto d = Duration(b["initial"], key + ".backoff.initial");
        if (!d.ok()) return d.status();
        e.backoff_initial = d.value();
      }
      if (b["max"]) {
        auto d = Duration(b["max"], key + ".backoff.max");
        if (!d.ok()) return d.status();
        e.backoff_max = d.value();
      }
      if (e.backoff_max < e.backoff_initial) {
        return Error(b, key + ".backoff", "max is shorter than initial");
      }
    }
    if (node["ready"]) KVC_RETURN_IF_ERROR(Ready(node["ready"], key + ".ready", e.ready));
    if (node["log_file"]) {
      auto f = Scalar(node["log_file"], key + ".log_file");
      if (!f.ok()) return f.status();
      e.log_file = f.value();
    }
    return Status::Ok();
  }

  Result<LaunchSpec> File(const YAML::Node& root) const {
    LaunchSpec spec;
    spec.path = path_;
    if (!root.IsMap()) return Error(root, "(top level)", "expected a map with an `engines:` list");
    KVC_RETURN_IF_ERROR(
        CheckKeys(root, "", {"shim", "grace_period", "status_interval", "env", "gpus", "engines"}));
    if (root["shim"]) {
      auto shim = Scalar(root["shim"], "shim");
      if (!shim.ok()) return shim.status();
      spec.shim = shim.value();
    }
    if (root["grace_period"]) {
      auto d = Duration(root["grace_period"], "grace_period");
      if (!d.ok()) return d.status();
      spec.grace = d.value();
    }
    if (root["status_interval"]) {
      auto d = Duration(root["status_interval"], "status_interval");
      if (!d.ok()) return d.status();
      spec.status_interval = d.value();
    }
    if (root["env"]) KVC_RETURN_IF_ERROR(Env(root["env"], "env", spec.env));
    if (const YAML::Node gpus = root["gpus"]) {
      if (!gpus.IsMap()) return Error(gpus, "gpus", "expected a map of GPU: {utilization:, ...}");
      for (const auto& kv : gpus) {
        const std::string gpu = kv.first.Scalar();
        const std::string key = "gpus." + gpu;
        if (!kv.second.IsMap()) return Error(kv.second, key, "expected a map");
        KVC_RETURN_IF_ERROR(CheckKeys(kv.second, key, {"utilization", "budget", "ipc_name"}));
        GpuSpec g;
        for (auto [name, field] :
             {std::pair{"utilization", &g.utilization}, std::pair{"budget", &g.budget},
              std::pair{"ipc_name", &g.ipc_name}}) {
          if (!kv.second[name]) continue;
          auto v = Scalar(kv.second[name], key + "." + name);
          if (!v.ok()) return v.status();
          *field = v.value();
        }
        if (!g.utilization.empty() && !g.budget.empty()) {
          return Error(kv.second, key, "give utilization or budget, not both");
        }
        spec.gpus[gpu] = g;
      }
    }
    const YAML::Node engines = root["engines"];
    if (!engines) return Error(root, "engines", "missing: list the engines to start");
    if (!engines.IsSequence() || engines.size() == 0) {
      return Error(engines, "engines", "expected a non-empty list of engines");
    }
    std::set<std::string> labels;
    for (std::size_t i = 0; i < engines.size(); ++i) {
      EngineSpec e;
      const std::string key = fmt::format("engines[{}]", i);
      KVC_RETURN_IF_ERROR(Engine(engines[i], key, e));
      if (e.label.empty()) e.label = fmt::format("engine{}", i);
      if (!labels.insert(e.label).second) {
        return Error(engines[i]["label"] ? engines[i]["label"] : engines[i], key + ".label",
                     fmt::format("'{}' is used by an earlier engine: labels must differ", e.label));
      }
      spec.engines.push_back(std::move(e));
    }
    for (const auto& [gpu, g] : spec.gpus) {
      bool used = false;
      for (const auto& e : spec.engines) used = used || e.gpu == gpu;
      if (!used) {
        return Error(root["gpus"], "gpus." + gpu, "no engine runs on this GPU (check `gpu:`)");
      }
    }
    return spec;
  }

 private:
  std::string path_;
};

}  // namespace

const char* RestartPolicyName(RestartPolicy policy) {
  switch (policy) {
    case RestartPolicy::kNever:
      return "never";
    case RestartPolicy::kOnFailure:
      return "on-failure";
    case RestartPolicy::kAlways:
      return "always";
  }
  return "?";
}

Result<Millis> ParseDuration(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = used == 0 ? "" : text.substr(used);
  double scale = 0;
  if (unit.empty() || unit == "s") {
    scale = 1000;
  } else if (unit == "ms") {
    scale = 1;
  } else if (unit == "m" || unit == "min") {
    scale = 60000;
  } else if (unit == "h") {
    scale = 3600000;
  }
  if (used == 0 || scale == 0 || !std::isfinite(value) || value < 0 || value * scale > 1e12) {
    return Status{Errc::kInvalid,
                  fmt::format("'{}' is not a duration: write 500ms, 2s, 1.5m, 1h or a number of "
                              "seconds",
                              text)};
  }
  return Millis{static_cast<std::int64_t>(std::llround(value * scale))};
}

Result<LaunchSpec> ParseLaunchText(const std::string& text, const std::string& path) {
  Parser parser(path);
  try {
    return parser.File(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    // e.mark is 0-based; e.msg is yaml-cpp's own description of the syntax error.
    return Status{Errc::kInvalid, fmt::format("{}:{}:{}: not valid YAML: {}", path, e.mark.line + 1,
                                              e.mark.column + 1, e.msg)};
  }
}

Result<LaunchSpec> LoadLaunchFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status{Errc::kInvalid, fmt::format("cannot read {}: {}", path, std::strerror(errno))};
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseLaunchText(buf.str(), path);
}

}  // namespace kvctl
