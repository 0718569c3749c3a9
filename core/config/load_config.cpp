// LoadConfig: reads every variable once, in table order, and refuses the first bad one with a
// message that names the variable, repeats the value and states what is accepted.
#include <grp.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/config/config.h"
#include "core/config/device_budget.h"
#include "core/config/parsers.h"

namespace kvcached {
namespace {

using config_detail::QuoteValue;

// `NAME="value": <reason or "must be <accepted>"> (default <default>)`.
Status Invalid(const char* name, std::string_view value, const std::string& reason = {}) {
  const ConfigVarDoc* doc = FindConfigVariable(name);
  std::string message = std::string(name) + "=" + QuoteValue(value) + ": ";
  if (reason.empty()) {
    message += "must be ";
    message += doc != nullptr ? doc->accepted : "a valid value";
  } else {
    message += reason;
    if (doc != nullptr) message += std::string("; accepted: ") + doc->accepted;
  }
  if (doc != nullptr) message += std::string(" (default ") + doc->default_value + ")";
  return {Errc::kInvalid, message};
}

class Reader {
 public:
  explicit Reader(const EnvLookup& lookup) : lookup_(lookup) {}

  // The trimmed value, or nullopt when the variable is unset or empty (both mean "default").
  std::optional<std::string> Get(const char* name) const {
    const char* raw = lookup_ ? lookup_(name) : nullptr;
    if (raw == nullptr) return std::nullopt;
    const std::string_view value = config_detail::Trim(raw);
    if (value.empty()) return std::nullopt;
    return std::string(value);
  }

  Status Bool(const char* name, bool& out) const {
    const auto raw = Get(name);
    if (!raw) return Status::Ok();
    const auto value = ParseBool(*raw);
    if (!value) return Invalid(name, *raw);
    out = *value;
    return Status::Ok();
  }

  template <class T>
  Status Unsigned(const char* name, std::uint64_t min, std::uint64_t max, T& out,
                  bool* was_set = nullptr) const {
    const auto raw = Get(name);
    if (was_set != nullptr) *was_set = raw.has_value();
    if (!raw) return Status::Ok();
    const auto value = config_detail::ParseUnsigned(*raw);
    if (!value || *value < min || *value > max) return Invalid(name, *raw);
    out = static_cast<T>(*value);
    return Status::Ok();
  }

 private:
  const EnvLookup& lookup_;
};

bool IsGroupNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

bool GroupExists(const std::string& name) {
  struct group entry {};
  struct group* found = nullptr;
  std::vector<char> buf(16384);
  for (;;) {
    const int rc = ::getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
    if (rc != ERANGE || buf.size() >= (1U << 22)) return rc == 0 && found != nullptr;
    buf.resize(buf.size() * 4);  // a group with many members
  }
}

std::optional<LogLevel> ParseLogLevel(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  struct Name {
    const char* text;
    LogLevel level;
  };
  static constexpr std::array<Name, 8> kNames = {{
      {"trace", LogLevel::kTrace},
      {"debug", LogLevel::kDebug},
      {"info", LogLevel::kInfo},
      {"warn", LogLevel::kWarn},
      {"warning", LogLevel::kWarn},
      {"error", LogLevel::kError},
      {"critical", LogLevel::kCritical},
      {"off", LogLevel::kOff},
  }};
  for (const Name& name : kNames) {
    if (text == name.text) return name.level;
  }
  return std::nullopt;
}

Status ReadIdentity(const Reader& env, Config& config) {
  KVC_RETURN_IF_ERROR(env.Bool("ENABLE_KVCACHED", config.enabled));
  KVC_RETURN_IF_ERROR(env.Bool("KVCACHED_AUTOPATCH", config.autopatch));
  if (const auto raw = env.Get("KVCACHED_IPC_NAME")) {
    config.ipc_name = SanitizeIpcName(*raw);
    if (config.ipc_name.empty()) {
      return Invalid("KVCACHED_IPC_NAME", *raw,
                     "nothing is left of it once unsafe characters and leading dots are removed");
    }
  }
  return Status::Ok();
}

Status ReadBudget(const Reader& env, Config& config) {
  if (const auto raw = env.Get("KVCACHED_GPU_UTILIZATION")) {
    const auto value = config_detail::ParseDecimal(*raw);
    if (!value || !(*value > 0.0) || *value > 1.0) return Invalid("KVCACHED_GPU_UTILIZATION", *raw);
    config.gpu_utilization = *value;
  }
  if (const auto raw = env.Get("KVCACHED_BUDGET")) {
    const auto value = ParseSize(*raw);
    if (!value || *value == 0) return Invalid("KVCACHED_BUDGET", *raw);
    config.budget_bytes = *value;
  }
  return Status::Ok();
}

Status ReadPool(const Reader& env, Config& config) {
  if (const auto raw = env.Get("KVCACHED_PAGE_SIZE_MB")) {
    const auto value = config_detail::ParseUnsigned(*raw);
    if (!value || *value < 2 || *value > 1024 || !IsPowerOfTwo(*value)) {
      return Invalid("KVCACHED_PAGE_SIZE_MB", *raw);
    }
    config.page_size_mb = static_cast<std::size_t>(*value);
  }
  if (const auto raw = env.Get("KVCACHED_ZERO_CHUNK_MB")) {
    const auto value = config_detail::ParseUnsigned(*raw);
    if (!value || *value < 2 || *value > 1024 || *value % 2 != 0) {
      return Invalid("KVCACHED_ZERO_CHUNK_MB", *raw);
    }
    config.zero_chunk_mb = static_cast<std::size_t>(*value);
  }
  KVC_RETURN_IF_ERROR(env.Bool("KVCACHED_PAGE_PREALLOC_ENABLED", config.page_prealloc));

  constexpr std::uint64_t kMaxReserved = 65536;
  bool min_set = false;
  bool max_set = false;
  KVC_RETURN_IF_ERROR(env.Unsigned("KVCACHED_MIN_RESERVED_PAGES", 0, kMaxReserved,
                                   config.min_reserved_pages, &min_set));
  KVC_RETURN_IF_ERROR(env.Unsigned("KVCACHED_MAX_RESERVED_PAGES", 1, kMaxReserved,
                                   config.max_reserved_pages, &max_set));
  if (config.min_reserved_pages > config.max_reserved_pages) {
    // Only one of the two was given: follow it (the seed guides recommend MIN=20 with the
    // default MAX), rather than refusing a setting users were told to use.
    if (min_set && !max_set) {
      config.max_reserved_pages = config.min_reserved_pages;
    } else if (max_set && !min_set) {
      config.min_reserved_pages = config.max_reserved_pages;
    } else {
      return {Errc::kInvalid,
              "KVCACHED_MIN_RESERVED_PAGES=\"" + std::to_string(config.min_reserved_pages) +
                  "\" is greater than KVCACHED_MAX_RESERVED_PAGES=\"" +
                  std::to_string(config.max_reserved_pages) +
                  "\": the minimum must not exceed the maximum; lower "
                  "KVCACHED_MIN_RESERVED_PAGES or raise KVCACHED_MAX_RESERVED_PAGES (defaults 5 "
                  "and 10)"};
    }
  }
  KVC_RETURN_IF_ERROR(env.Unsigned("KVCACHED_MAP_AHEAD_PAGES", 0, 1024, config.map_ahead_pages));
  KVC_RETURN_IF_ERROR(
      env.Unsigned("KVCACHED_MAP_AHEAD_BURST_PAGES", 0, 65536, config.map_ahead_burst_pages));
  KVC_RETURN_IF_ERROR(env.Unsigned("KVCACHED_TRIM_DELAY_MS", 0, 60000, config.trim_delay_ms));
  return Status::Ok();
}

Status ReadDiagnostics(const Reader& env, Config& config) {
  if (const auto raw = env.Get("KVCACHED_LOG_LEVEL")) {
    const auto level = ParseLogLevel(*raw);
    if (!level) return Invalid("KVCACHED_LOG_LEVEL", *raw);
    config.log_level = *level;
  }
  if (const auto raw = env.Get("KVCACHED_LOG_FILE")) config.log_file = *raw;
  KVC_RETURN_IF_ERROR(env.Bool("KVCACHED_SANITY_CHECK", config.sanity_check));
  return Status::Ok();
}

Status ReadHooks(const Reader& env, Config& config) {
  KVC_RETURN_IF_ERROR(env.Bool("KVCACHED_CONTIGUOUS_LAYOUT", config.contiguous_layout));
  if (const auto raw = env.Get("KVCACHED_CUDA_DRIVER")) config.cuda_driver = *raw;
  std::uint64_t capture_mb = 0;
  KVC_RETURN_IF_ERROR(env.Unsigned("KVCACHED_CAPTURE_MIN_MB", 0, 1048576, capture_mb));
  config.capture_min_bytes = capture_mb << 20U;
  if (const auto raw = env.Get("KVCACHED_VIRTUAL_MEMINFO")) {
    const auto mode = ParseVirtualMemInfo(*raw);
    if (!mode) return Invalid("KVCACHED_VIRTUAL_MEMINFO", *raw);
    config.virtual_meminfo = *mode;
  }
  if (const auto raw = env.Get("KVCACHED_LABEL")) {
    config.label = config_detail::SanitizeLabel(*raw);
  }
  return Status::Ok();
}

Status ReadSharedMemory(const Reader& env, Config& config) {
  if (const auto raw = env.Get("KVCACHED_SHM_MODE")) {
    const auto mode = config_detail::ParseOctalMode(*raw);
    if (!mode) return Invalid("KVCACHED_SHM_MODE", *raw);
    if ((*mode & ~0777U) != 0) {
      return Invalid("KVCACHED_SHM_MODE", *raw,
                     "setuid, setgid and sticky bits have no meaning for a shared-memory segment");
    }
    if ((*mode & 0600U) != 0600U) {
      return Invalid("KVCACHED_SHM_MODE", *raw,
                     "the owner must keep read and write (0600), or the engine that creates the "
                     "segment could not update its own line");
    }
    if ((*mode & 0002U) != 0) {
      return Invalid("KVCACHED_SHM_MODE", *raw,
                     "a world-writable segment is refused because any local user could then "
                     "change every engine's budget and limits; use 0660 with KVCACHED_SHM_GROUP "
                     "to share it with a group");
    }
    config.shm_mode = *mode;
  }
  if (const auto raw = env.Get("KVCACHED_SHM_GROUP")) {
    constexpr std::size_t kMaxGroupName = 64;
    bool valid = raw->size() <= kMaxGroupName;
    for (char c : *raw) valid = valid && IsGroupNameChar(c);
    if (!valid) return Invalid("KVCACHED_SHM_GROUP", *raw);
    // Checked now, not when a segment is first created: otherwise the first engine of a machine
    // fails to create it and every engine runs without the shared budget.
    if (!GroupExists(*raw)) {
      return Invalid("KVCACHED_SHM_GROUP", *raw,
                     "no such group on this machine (see `getent group`); create it or unset the "
                     "variable");
    }
    config.shm_group = *raw;
  }
  return Status::Ok();
}

Status ReadShares(const Reader& env, Config& config) {
  if (const auto raw = env.Get("KVCACHED_SHARE_WEIGHT")) {
    const auto value = config_detail::ParseDecimal(*raw);
    const double milli = value ? *value * 1000.0 : 0.0;
    if (!value || milli < 1.0 || milli > 1000000.0) return Invalid("KVCACHED_SHARE_WEIGHT", *raw);
    config.share_weight_milli = static_cast<std::uint64_t>(std::llround(milli));
  }
  if (const auto raw = env.Get("KVCACHED_SHARE_MIN")) {
    const auto value = ParseSize(*raw);
    if (!value) return Invalid("KVCACHED_SHARE_MIN", *raw);
    config.share_min_bytes = *value;
  }
  KVC_RETURN_IF_ERROR(env.Unsigned("KVCACHED_SHARE_PREEMPT_MS", 0, 60000, config.share_preempt_ms));
  return Status::Ok();
}

}  // namespace

bool IsPowerOfTwo(std::uint64_t value) {
  return value != 0 && (value & (value - 1)) == 0;
}

std::size_t Config::zero_chunk_pages() const {
  const std::size_t page = page_size_mb;
  // The sanity check's stray-write canary watches one unbacked page, which sees every stray write
  // only when all unbacked pages alias the same one page.
  if (sanity_check) return 1;
  if (page == 0 || (page & (page - 1)) != 0) return 1;
  std::size_t chunk = zero_chunk_mb;
  if (chunk == 0) chunk = page == 2 ? 8 : (page <= 32 ? 2 * page : page);
  std::size_t pages = 1;
  while (pages * 2 * page <= chunk) pages *= 2;
  return pages;
}

Result<Config> LoadConfig(const EnvLookup& getenv_fn) {
  Config config;
  const Reader env(getenv_fn);
  KVC_RETURN_IF_ERROR(ReadIdentity(env, config));
  KVC_RETURN_IF_ERROR(ReadBudget(env, config));
  KVC_RETURN_IF_ERROR(ReadPool(env, config));
  KVC_RETURN_IF_ERROR(ReadDiagnostics(env, config));
  KVC_RETURN_IF_ERROR(ReadHooks(env, config));
  KVC_RETURN_IF_ERROR(ReadSharedMemory(env, config));
  // Needs the page size and pool settings read above.
  if (config.budget_bytes) {
    if (const std::string why = BudgetTooSmall(config, *config.budget_bytes); !why.empty()) {
      return Invalid("KVCACHED_BUDGET", env.Get("KVCACHED_BUDGET").value_or(""), why);
    }
  }
  KVC_RETURN_IF_ERROR(ReadShares(env, config));
  return config;
}

Result<Config> LoadConfigFromEnvironment() {
  return LoadConfig([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace kvcached
