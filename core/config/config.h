// Config: every KVCACHED_* environment variable, parsed and validated once.
// A bad value yields one Status naming the variable, the value and the accepted range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/common/status.h"

namespace kvcached {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError, kCritical, kOff };

struct Config {
  bool enabled = true;                        // ENABLE_KVCACHED
  bool autopatch = true;                      // KVCACHED_AUTOPATCH
  std::string ipc_name;                       // KVCACHED_IPC_NAME (sanitised; empty = per-GPU UUID)
  double gpu_utilization = 0.95;              // KVCACHED_GPU_UTILIZATION, (0, 1]
  std::optional<std::uint64_t> budget_bytes;  // KVCACHED_BUDGET (size, e.g. 40G) overrides it
  std::size_t page_size_mb = 2;               // KVCACHED_PAGE_SIZE_MB, even, 2..1024
  std::size_t zero_chunk_mb = 0;              // KVCACHED_ZERO_CHUNK_MB, even, 2..1024 (0 = auto)
  bool page_prealloc = true;                  // KVCACHED_PAGE_PREALLOC_ENABLED
  std::size_t min_reserved_pages = 5;         // KVCACHED_MIN_RESERVED_PAGES, 0..max
  std::size_t max_reserved_pages = 10;        // KVCACHED_MAX_RESERVED_PAGES, min..65536
  std::size_t map_ahead_pages = 2;            // KVCACHED_MAP_AHEAD_PAGES, per lazy region, 0..1024
  std::uint32_t trim_delay_ms = 200;          // KVCACHED_TRIM_DELAY_MS, 0..60000
  LogLevel log_level = LogLevel::kWarn;       // KVCACHED_LOG_LEVEL
  std::string log_file;                       // KVCACHED_LOG_FILE (empty = stderr)
  bool sanity_check = false;                  // KVCACHED_SANITY_CHECK
  bool contiguous_layout = false;             // KVCACHED_CONTIGUOUS_LAYOUT (accepted; see docs)
  std::string cuda_driver = "libcuda.so.1";   // KVCACHED_CUDA_DRIVER
  std::uint64_t capture_min_bytes = 0;        // KVCACHED_CAPTURE_MIN_MB (0 = off)
  bool virtual_meminfo = false;               // KVCACHED_VIRTUAL_MEMINFO
  std::string label;                          // KVCACHED_LABEL
  std::uint32_t shm_mode = 0600;              // KVCACHED_SHM_MODE (octal)
  std::string shm_group;                      // KVCACHED_SHM_GROUP
  std::uint64_t share_weight_milli = 1000;    // KVCACHED_SHARE_WEIGHT x 1000, 1..1000000
  std::uint64_t share_min_bytes = 0;          // KVCACHED_SHARE_MIN (size)
  std::uint32_t share_preempt_ms = 500;       // KVCACHED_SHARE_PREEMPT_MS, 0..60000

  [[nodiscard]] std::size_t page_size() const { return page_size_mb << 20U; }
  // Pages in the largest zero alias (a power of two): unbacked pages are aliased to the zero
  // memory in aligned chunks of 1, 2, 4 .. this many pages. 1 with pages of a size that is not
  // a power of two (chunks must stay aligned in the VA), and with KVCACHED_SANITY_CHECK on.
  [[nodiscard]] std::size_t zero_chunk_pages() const;
};

// Reads variables through `getenv` (injectable for tests). Returns the first invalid variable as
// an error; on success every field is in range.
using EnvLookup = std::function<const char*(const char*)>;
Result<Config> LoadConfig(const EnvLookup& getenv_fn);
Result<Config> LoadConfigFromEnvironment();

// Parses sizes such as "8G", "512MiB", "1.5GB", "4096" (bytes). Binary units (1K = 1024).
std::optional<std::uint64_t> ParseSize(const std::string& text);
// Parses true/false/1/0/yes/no/on/off (case-insensitive).
std::optional<bool> ParseBool(const std::string& text);
// Keeps [A-Za-z0-9_.-], maps anything else to '_', strips leading dots, limits length, so that
// the result is one safe file name under /dev/shm.
std::string SanitizeIpcName(const std::string& raw);

// Table of every variable with its default and accepted values, for docs and `kvctl doctor`.
struct ConfigVarDoc {
  const char* name;
  const char* default_value;
  const char* accepted;
  const char* meaning;
};
const std::vector<ConfigVarDoc>& ConfigVariables();

}  // namespace kvcached
