// Config: every KVCACHED_* environment variable, parsed and validated once.
// A bad value yields one Status naming the variable, the value and the accepted range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/common/status.h"

namespace kvcached {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError, kCritical, kOff };

// What cudaMemGetInfo / cuMemGetInfo report (KVCACHED_VIRTUAL_MEMINFO): the values match
// kvcached_meminfo_mode of the C API (hooks/meminfo_mode.h describes each view).
enum class VirtualMemInfo : std::int8_t { kReal = 0, kProcess = 1, kShared = 2 };

struct Config {
  bool enabled = true;                        // ENABLE_KVCACHED
  bool autopatch = true;                      // KVCACHED_AUTOPATCH
  std::string ipc_name;                       // KVCACHED_IPC_NAME (sanitised; empty = per-GPU UUID)
  double gpu_utilization = 0.95;              // KVCACHED_GPU_UTILIZATION, (0, 1]
  std::optional<std::uint64_t> budget_bytes;  // KVCACHED_BUDGET (size, e.g. 40G) overrides it
  std::size_t page_size_mb = 2;               // KVCACHED_PAGE_SIZE_MB, power of two, 2..1024
  std::size_t zero_chunk_mb = 0;              // KVCACHED_ZERO_CHUNK_MB, even, 2..1024 (0 = auto)
  bool page_prealloc = true;                  // KVCACHED_PAGE_PREALLOC_ENABLED
  std::size_t min_reserved_pages = 5;         // KVCACHED_MIN_RESERVED_PAGES, 0..max
  std::size_t max_reserved_pages = 10;        // KVCACHED_MAX_RESERVED_PAGES, min..65536
  std::size_t map_ahead_pages = 2;            // KVCACHED_MAP_AHEAD_PAGES, per lazy region, 0..1024
  std::size_t map_ahead_burst_pages = 64;     // KVCACHED_MAP_AHEAD_BURST_PAGES, 0..65536
  std::uint32_t trim_delay_ms = 200;          // KVCACHED_TRIM_DELAY_MS, 0..60000
  LogLevel log_level = LogLevel::kWarn;       // KVCACHED_LOG_LEVEL
  std::string log_file;                       // KVCACHED_LOG_FILE (empty = stderr)
  bool sanity_check = false;                  // KVCACHED_SANITY_CHECK
  bool contiguous_layout = false;             // KVCACHED_CONTIGUOUS_LAYOUT (accepted; see docs)
  std::string cuda_driver = "libcuda.so.1";   // KVCACHED_CUDA_DRIVER
  std::uint64_t capture_min_bytes = 0;        // KVCACHED_CAPTURE_MIN_MB (0 = off)
  VirtualMemInfo virtual_meminfo{};           // KVCACHED_VIRTUAL_MEMINFO (kReal)
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
  // Bytes of zero memory each process holds per GPU (outside the budget): one handle of 1, 2,
  // 4 .. zero_chunk_pages() pages (ZeroPage::BytesFor agrees; a unit test checks it).
  [[nodiscard]] std::uint64_t zero_memory_bytes() const {
    return std::uint64_t{page_size()} * (2 * zero_chunk_pages() - 1);
  }
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
// KVCACHED_VIRTUAL_MEMINFO: process, shared or real (any case), or a boolean (true = process,
// false = real).
std::optional<VirtualMemInfo> ParseVirtualMemInfo(const std::string& text);
// Keeps [A-Za-z0-9_.-], maps anything else to '_', strips leading dots, limits length, so that
// the result is one safe file name under /dev/shm.
std::string SanitizeIpcName(const std::string& raw);

// The one options table: every environment variable the project reads (the shim, the engine
// hook, kvctl, the test and GPU scripts), with its type, default and accepted values. It is the
// source of the "accepted" text of error messages, of docs/configuration.md and of the
// unknown-variable warning (a test compares it with the tree and the docs so that it cannot drift).
enum class VarType { kBool, kInteger, kDecimal, kSize, kText, kPath, kMode, kChoice };
// Who reads it: the shim's config loader (LoadConfig), the shim's Python start-up, the Python
// engine hook, the hook and kvctl, or only the project's own tests and scripts.
enum class VarScope { kShim, kPythonBoot, kEngineHook, kTools, kDevelopment };

struct ConfigVarDoc {
  const char* name;
  VarType type;
  VarScope scope;
  const char* default_value;
  const char* accepted;
  const char* meaning;
};
const std::vector<ConfigVarDoc>& ConfigVariables();
// The table entry of `name` (exact, case-sensitive), or null.
const ConfigVarDoc* FindConfigVariable(std::string_view name);
const char* VarTypeName(VarType type);
const char* VarScopeName(VarScope scope);

// Pages are a power of two MiB: reservations and zero aliases are aligned to the page size, and
// the driver's VA alignment must be a power of two.
bool IsPowerOfTwo(std::uint64_t value);

}  // namespace kvcached
