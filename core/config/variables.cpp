// The table of every environment variable the product reads: the single source for the
// "accepted" text of error messages, for docs/configuration.md and for `kvctl doctor`.
#include <vector>

#include "core/config/config.h"

namespace kvcached {

const std::vector<ConfigVarDoc>& ConfigVariables() {
  static const std::vector<ConfigVarDoc> kVariables = {
      {"ENABLE_KVCACHED", "true", "true/false, 1/0, yes/no, on/off (any case)",
       "Master switch; false makes the shim a pure pass-through to the CUDA libraries."},
      {"KVCACHED_AUTOPATCH", "true", "true/false, 1/0, yes/no, on/off (any case)",
       "Load the engine hook into Python engines at interpreter start."},
      {"KVCACHED_IPC_NAME", "unset, meaning one segment per GPU named from its UUID",
       "a name of up to 64 characters from [A-Za-z0-9_.-] (other characters become '_', leading "
       "dots are dropped)",
       "Name of the shared budget segment in /dev/shm; engines with the same name share one "
       "budget."},
      {"KVCACHED_GPU_UTILIZATION", "0.95",
       "a decimal number greater than 0 and at most 1, e.g. 0.9",
       "Fraction of the GPU's memory that all engines on it may draw together (the shared "
       "budget)."},
      {"KVCACHED_BUDGET", "unset, meaning KVCACHED_GPU_UTILIZATION x GPU memory",
       "a size greater than 0 such as 40G, 512MiB, 1.5GiB or 1073741824 (bytes); units are "
       "binary (1K = 1024)",
       "The shared budget in bytes; overrides KVCACHED_GPU_UTILIZATION."},
      {"KVCACHED_PAGE_SIZE_MB", "2", "an even number of MiB from 2 to 1024",
       "Size of one physical page; larger pages map faster, smaller pages return memory more "
       "finely."},
      {"KVCACHED_ZERO_CHUNK_MB",
       "unset, meaning 8 with 2 MiB pages, twice the page size with 4 to 32 MiB pages, one page "
       "with larger pages",
       "an even number of MiB from 2 to 1024; values below the page size mean one page (always "
       "one page with KVCACHED_SANITY_CHECK on)",
       "Largest zero alias: unbacked pages are aliased to the zero memory in aligned chunks of up "
       "to this size, so a burst unmaps one alias per chunk instead of one per page (each unmap "
       "costs ~20 us). The zero memory held per GPU is about twice this size."},
      {"KVCACHED_PAGE_PREALLOC_ENABLED", "true", "true/false, 1/0, yes/no, on/off (any case)",
       "Keep a pool of created physical pages ready so that backing new blocks needs no "
       "cuMemCreate."},
      {"KVCACHED_MIN_RESERVED_PAGES", "5",
       "an integer from 0 to 65536, at most KVCACHED_MAX_RESERVED_PAGES",
       "Pages the pool refills to when it runs low (counted in the budget as reserved)."},
      {"KVCACHED_MAX_RESERVED_PAGES", "10",
       "an integer from 1 to 65536, at least KVCACHED_MIN_RESERVED_PAGES",
       "Most pages the pool keeps; released pages beyond it go back to the driver."},
      {"KVCACHED_MAP_AHEAD_PAGES", "2", "an integer from 0 to 1024",
       "Pages kept mapped ahead of demand in each lazy region, so that backing blocks makes no "
       "driver call."},
      {"KVCACHED_TRIM_DELAY_MS", "200", "an integer number of milliseconds from 0 to 60000",
       "How long a freed page stays mapped before it is unmapped, in case the engine reuses it."},
      {"KVCACHED_LOG_LEVEL", "warn",
       "one of trace, debug, info, warn (or warning), error, critical, off (any case)",
       "Least severe message that is logged."},
      {"KVCACHED_LOG_FILE", "unset, meaning stderr", "a file path (lines are appended)",
       "Where log lines go; falls back to stderr with a warning if the file cannot be opened."},
      {"KVCACHED_SANITY_CHECK", "false", "true/false, 1/0, yes/no, on/off (any case)",
       "Extra consistency checks of page states and block ranges (slower; for debugging)."},
      {"KVCACHED_CONTIGUOUS_LAYOUT", "false", "true/false, 1/0, yes/no, on/off (any case)",
       "Accepted for compatibility and ignored: the engine's own per-layer KV layout is kept."},
      {"KVCACHED_CUDA_DRIVER", "libcuda.so.1", "a library name or path that dlopen accepts",
       "The CUDA driver library to load."},
      {"KVCACHED_CAPTURE_MIN_MB", "0", "an integer number of MiB from 0 to 1048576 (0 = off)",
       "Allocations at or above this size outside a KV window become fully backed regions, so "
       "they count in the budget."},
      {"KVCACHED_VIRTUAL_MEMINFO", "false", "true/false, 1/0, yes/no, on/off (any case)",
       "cudaMemGetInfo/cuMemGetInfo report this process's budget instead of the whole GPU."},
      {"KVCACHED_LABEL", "unset",
       "up to 63 printable ASCII characters (longer values are cut, other characters become "
       "'_')",
       "Name shown for this process by kvctl."},
      {"KVCACHED_SHM_MODE", "0600",
       "an octal mode such as 0600, 0640 or 0660 that includes owner read/write (0600), has no "
       "bits beyond 0777 and is not writable by others",
       "Permissions of a newly created budget segment."},
      {"KVCACHED_SHM_GROUP", "unset, meaning the creator's group",
       "a group name of up to 64 characters from [A-Za-z0-9_.-] (the group must exist)",
       "Group that owns a newly created budget segment, for engines running as different "
       "users."},
      {"KVCACHED_SHARE_WEIGHT", "1", "a decimal number from 0.001 to 1000, e.g. 2 or 0.5",
       "This engine's weight when engines on one GPU compete for the budget: fair shares are "
       "proportional to the weights (docs/sharing.md); `kvctl share` changes it live."},
      {"KVCACHED_SHARE_MIN", "0", "a size such as 8G or 512MiB (at most the budget; more is cut)",
       "Memory guaranteed to this engine under contention: engines above their share give it "
       "back when this engine asks for it."},
      {"KVCACHED_SHARE_PREEMPT_MS", "500", "an integer number of milliseconds from 0 to 60000",
       "How long an engine below its fair share may be refused before engines above their "
       "share preempt their newest requests to give it memory."},
  };
  return kVariables;
}

}  // namespace kvcached
