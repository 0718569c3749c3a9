#include "hooks/meminfo_mode.h"

#include <atomic>

namespace kvcached::hooks {
namespace {
// -1 until the C API sets a mode: then the configuration decides. Inherited by fork children.
constinit std::atomic<int> g_mode{-1};
}  // namespace

MemInfoMode CurrentMemInfoMode(const Config& config) noexcept {
  const int mode = g_mode.load(std::memory_order_relaxed);
  if (mode >= 0) return static_cast<MemInfoMode>(mode);
  switch (config.virtual_meminfo) {
    case VirtualMemInfo::kProcess:
      return MemInfoMode::kProcess;
    case VirtualMemInfo::kShared:
      return MemInfoMode::kShared;
    case VirtualMemInfo::kReal:
      break;
  }
  return MemInfoMode::kReal;
}

void SetMemInfoMode(MemInfoMode mode) noexcept {
  g_mode.store(static_cast<int>(mode), std::memory_order_relaxed);
}

}  // namespace kvcached::hooks
