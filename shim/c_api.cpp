// The C API (include/kvcached/kvcached.h) on top of the Runtime. No exception crosses it: every
// entry point catches everything and reports it through the status and kvcached_last_error().
#include <array>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/runtime/runtime.h"
#include "hooks/alloc_policy.h"
#include "hooks/meminfo_mode.h"
#include "hooks/region_ops.h"
#include "hooks/runtime_access.h"
#include "hooks/torch_allocator.h"
#include "kvcached/kvcached.h"
#include "shim/c_api_guard.h"
#include "shim/version.h"

namespace kvcached::shim {
namespace {

kvcached_status ToCStatus(Errc code) {
  switch (code) {
    case Errc::kOk:
      return KVCACHED_OK;
    case Errc::kInvalid:
      return KVCACHED_ERR_INVALID;
    case Errc::kNoMemory:
      return KVCACHED_ERR_NO_MEMORY;
    case Errc::kDriver:
      return KVCACHED_ERR_DRIVER;
    case Errc::kNotFound:
      return KVCACHED_ERR_NOT_FOUND;
    case Errc::kDisabled:
      return KVCACHED_ERR_DISABLED;
    case Errc::kState:
      return KVCACHED_ERR_STATE;
    case Errc::kUnsupported:
      return KVCACHED_ERR_UNSUPPORTED;
  }
  return KVCACHED_ERR_INVALID;
}

kvcached_status Report(const Status& status) {
  if (status.ok()) return KVCACHED_OK;
  return Fail(ToCStatus(status.code()), status.message());
}

// Runs `body(runtime)` with the started Runtime, or reports why there is none.
template <class Body>
kvcached_status WithRuntime(const char* function, Body&& body) noexcept {
  return GuardCall(function, [&] {
    const hooks::RuntimeRef runtime = hooks::WaitForRuntime();
    if (!runtime) {
      const char* reason = hooks::PassThroughReason();
      return Fail(KVCACHED_ERR_DISABLED,
                  std::string(function) + ": " +
                      (reason[0] != '\0' ? reason : "kvcached is not running in this process"));
    }
    return body(*runtime);
  });
}

kvcached_status NullArgument(const char* function, const char* argument) {
  return Fail(KVCACHED_ERR_INVALID, std::string(function) + ": " + argument + " is null");
}

ByteRange ToByteRange(const kvcached_range& range) {
  return {range.addr, range.length};
}

// Ranges converted without a heap allocation for the usual batch sizes (one engine step).
template <class Call>
kvcached_status WithRanges(const kvcached_range* ranges, size_t count, Call&& call) {
  constexpr size_t kOnStack = 64;
  if (count <= kOnStack) {
    std::array<ByteRange, kOnStack> buffer;
    for (size_t i = 0; i < count; ++i) buffer[i] = ToByteRange(ranges[i]);
    return call(std::span<const ByteRange>(buffer.data(), count));
  }
  std::vector<ByteRange> converted(count);
  for (size_t i = 0; i < count; ++i) converted[i] = ToByteRange(ranges[i]);
  return call(std::span<const ByteRange>(converted));
}

}  // namespace
}  // namespace kvcached::shim

using kvcached::ByteRange;
using kvcached::Runtime;
using kvcached::shim::Fail;
using kvcached::shim::NullArgument;
using kvcached::shim::Report;
using kvcached::shim::WithRanges;
using kvcached::shim::WithRuntime;

extern "C" {

const char* kvcached_version(void) {
  return kvcached::shim::kVersion;
}

int kvcached_api_version(void) {
  return KVCACHED_API_VERSION;
}

const char* kvcached_status_string(kvcached_status status) {
  switch (status) {
    case KVCACHED_OK:
      return "ok";
    case KVCACHED_ERR_INVALID:
      return "invalid argument";
    case KVCACHED_ERR_NO_MEMORY:
      return "out of memory (budget or device): retry later";
    case KVCACHED_ERR_DRIVER:
      return "CUDA driver error";
    case KVCACHED_ERR_NOT_FOUND:
      return "no kvcached region at that address";
    case KVCACHED_ERR_DISABLED:
      return "kvcached is disabled or not running";
    case KVCACHED_ERR_STATE:
      return "operation not valid in the current state";
    case KVCACHED_ERR_UNSUPPORTED:
      return "not supported by this device";
    case KVCACHED_ERR_INTERNAL:
      return "internal error in kvcached (kvcached_last_error says what)";
  }
  return "unknown status";
}

const char* kvcached_last_error(void) {
  return kvcached::shim::t_last_error.c_str();
}

int kvcached_enabled(void) {
  try {
    return kvcached::hooks::WaitForRuntime() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

kvcached_status kvcached_region_create(int device, uint64_t size, kvcached_region_kind kind,
                                       uint64_t* out_base) {
  if (out_base == nullptr) return NullArgument("kvcached_region_create", "out_base");
  if (kind != KVCACHED_REGION_LAZY && kind != KVCACHED_REGION_EAGER) {
    return Fail(KVCACHED_ERR_INVALID,
                "kvcached_region_create: kind must be KVCACHED_REGION_LAZY (0) or "
                "KVCACHED_REGION_EAGER (1), got " +
                    std::to_string(static_cast<int>(kind)));
  }
  return WithRuntime("kvcached_region_create", [&](Runtime& runtime) {
    auto base = kvcached::hooks::CreateRegion(
        runtime, device, size,
        kind == KVCACHED_REGION_LAZY ? kvcached::RegionKind::kLazy : kvcached::RegionKind::kEager);
    if (!base.ok()) return Report(base.status());
    *out_base = base.value();
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_region_destroy(uint64_t base) {
  return WithRuntime("kvcached_region_destroy", [&](Runtime& runtime) {
    return Report(kvcached::hooks::DestroyRegion(runtime, base));
  });
}

kvcached_status kvcached_region_info_get(uint64_t addr, kvcached_region_info* out) {
  if (out == nullptr) return NullArgument("kvcached_region_info_get", "out");
  return WithRuntime("kvcached_region_info_get", [&](Runtime& runtime) {
    auto info = runtime.Info(addr);
    if (!info.ok()) return Report(info.status());
    const kvcached::RegionInfo& i = info.value();
    *out = kvcached_region_info{i.base,         i.size,       i.page_size,
                                i.pages,        i.zero_pages, i.mapped_free_pages,
                                i.in_use_pages, i.device,     static_cast<int32_t>(i.kind)};
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_acquire(uint64_t addr, uint64_t length) {
  return WithRuntime("kvcached_acquire", [&](Runtime& runtime) {
    const ByteRange range{addr, length};
    return Report(runtime.Acquire(std::span<const ByteRange>(&range, 1)));
  });
}

kvcached_status kvcached_release(uint64_t addr, uint64_t length) {
  return WithRuntime("kvcached_release", [&](Runtime& runtime) {
    const ByteRange range{addr, length};
    return Report(runtime.Release(std::span<const ByteRange>(&range, 1)));
  });
}

kvcached_status kvcached_acquire_ranges(const kvcached_range* ranges, size_t count) {
  if (ranges == nullptr && count > 0) return NullArgument("kvcached_acquire_ranges", "ranges");
  return WithRuntime("kvcached_acquire_ranges", [&](Runtime& runtime) {
    return WithRanges(ranges, count, [&](std::span<const ByteRange> converted) {
      return Report(runtime.Acquire(converted));
    });
  });
}

kvcached_status kvcached_release_ranges(const kvcached_range* ranges, size_t count) {
  if (ranges == nullptr && count > 0) return NullArgument("kvcached_release_ranges", "ranges");
  return WithRuntime("kvcached_release_ranges", [&](Runtime& runtime) {
    return WithRanges(ranges, count, [&](std::span<const ByteRange> converted) {
      return Report(runtime.Release(converted));
    });
  });
}

kvcached_status kvcached_page_state_get(uint64_t addr, kvcached_page_state* out) {
  if (out == nullptr) return NullArgument("kvcached_page_state_get", "out");
  return WithRuntime("kvcached_page_state_get", [&](Runtime& runtime) {
    auto state = runtime.PageStateAt(addr);
    if (!state.ok()) return Report(state.status());
    *out = static_cast<kvcached_page_state>(state.value());
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_stats_get(int device, kvcached_stats* out) {
  if (out == nullptr) return NullArgument("kvcached_stats_get", "out");
  return WithRuntime("kvcached_stats_get", [&](Runtime& runtime) {
    auto stats = runtime.Stats(device);
    if (!stats.ok()) return Report(stats.status());
    const kvcached::DeviceStats& s = stats.value();
    *out = kvcached_stats{s.page_size,
                          s.regions,
                          s.reserved_va_bytes,
                          s.in_use_bytes,
                          s.mapped_free_bytes,
                          s.pool_bytes,
                          s.zero_page_bytes,
                          s.peak_physical_bytes,
                          s.passthrough_bytes,
                          s.budget_limit_bytes,
                          s.maps,
                          s.unmaps,
                          s.sync_maps,
                          s.budget_refusals};
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_budget_headroom_get(int device, uint64_t* bytes) {
  if (bytes == nullptr) return NullArgument("kvcached_budget_headroom_get", "bytes");
  return WithRuntime("kvcached_budget_headroom_get", [&](Runtime& runtime) {
    auto headroom = runtime.BudgetHeadroom(device);
    if (!headroom.ok()) return Report(headroom.status());
    *bytes = headroom.value();
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_trim(int device) {
  return WithRuntime("kvcached_trim",
                     [&](Runtime& runtime) { return Report(runtime.Trim(device)); });
}

kvcached_status kvcached_pressure_get(int device, uint64_t* seq, int32_t* pid) {
  return WithRuntime("kvcached_pressure_get", [&](Runtime& runtime) {
    auto p = runtime.Pressure(device);
    if (!p.ok()) return Report(p.status());
    if (seq != nullptr) *seq = p.value().seq;
    if (pid != nullptr) *pid = p.value().pid;
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_share_verdict(int device, kvcached_share_verdict_t* out) {
  if (out == nullptr) return NullArgument("kvcached_share_verdict", "out");
  return WithRuntime("kvcached_share_verdict", [&](Runtime& runtime) {
    auto v = runtime.Share(device);
    if (!v.ok()) return Report(v.status());
    const kvcached::ShareVerdict& s = v.value();
    *out = kvcached_share_verdict_t{static_cast<int32_t>(s.action),
                                    static_cast<int32_t>(s.starved_pid),
                                    s.give_bytes,
                                    s.fair_share,
                                    s.held,
                                    s.others_deficit,
                                    s.starved_ns / 1000000,
                                    s.weight_milli,
                                    s.min_bytes};
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_share_action_get(int device, int32_t* action) {
  if (action == nullptr) return NullArgument("kvcached_share_action_get", "action");
  return WithRuntime("kvcached_share_action_get", [&](Runtime& runtime) {
    auto a = runtime.ShareActionNow(device);
    if (!a.ok()) return Report(a.status());
    *action = static_cast<int32_t>(a.value());
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_share_report(int device, uint64_t bytes, uint64_t requests) {
  return WithRuntime("kvcached_share_report", [&](Runtime& runtime) {
    return Report(runtime.ReportShare(device, bytes, requests));
  });
}

kvcached_status kvcached_share_set_unit(int device, uint64_t unit_bytes) {
  return WithRuntime("kvcached_share_set_unit", [&](Runtime& runtime) {
    return Report(runtime.SetShareUnit(device, unit_bytes));
  });
}

kvcached_status kvcached_report_engine_steps(int device, uint64_t steps, uint64_t hook_ns,
                                             uint64_t c_calls) {
  return WithRuntime("kvcached_report_engine_steps", [&](Runtime& runtime) {
    return Report(runtime.ReportEngineSteps(device, {steps, hook_ns, c_calls}));
  });
}

kvcached_status kvcached_kv_window_begin(void) {
  return WithRuntime("kvcached_kv_window_begin", [](Runtime& /*runtime*/) {
    kvcached::hooks::EnterKvWindow();
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_kv_window_end(void) {
  if (!kvcached::hooks::LeaveKvWindow()) {
    return Fail(KVCACHED_ERR_STATE,
                "kvcached_kv_window_end: no KV window is open on this thread (every "
                "kvcached_kv_window_end must follow a successful kvcached_kv_window_begin on the "
                "same thread)");
  }
  return KVCACHED_OK;
}

kvcached_status kvcached_set_label(const char* label) {
  if (label == nullptr) return NullArgument("kvcached_set_label", "label");
  return WithRuntime("kvcached_set_label", [&](Runtime& runtime) {
    runtime.SetLabel(label);
    return KVCACHED_OK;
  });
}

kvcached_status kvcached_set_meminfo_mode(int mode) {
  if (mode != KVCACHED_MEMINFO_REAL && mode != KVCACHED_MEMINFO_PROCESS &&
      mode != KVCACHED_MEMINFO_SHARED) {
    return Fail(KVCACHED_ERR_INVALID,
                "kvcached_set_meminfo_mode: mode must be KVCACHED_MEMINFO_REAL (0), "
                "KVCACHED_MEMINFO_PROCESS (1) or KVCACHED_MEMINFO_SHARED (2), got " +
                    std::to_string(mode));
  }
  return WithRuntime("kvcached_set_meminfo_mode", [&](Runtime& /*runtime*/) {
    kvcached::hooks::SetMemInfoMode(static_cast<kvcached::hooks::MemInfoMode>(mode));
    return KVCACHED_OK;
  });
}

void* kvcached_torch_malloc(ssize_t size, int device, void* stream) {
  try {
    if (size <= 0) return nullptr;
    const kvcached::hooks::RuntimeRef runtime = kvcached::hooks::WaitForRuntime();
    void* ptr =
        kvcached::hooks::TorchMalloc(runtime.get(), static_cast<uint64_t>(size), device, stream);
    if (ptr == nullptr) {
      Fail(KVCACHED_ERR_NO_MEMORY, "kvcached_torch_malloc: could not allocate " +
                                       std::to_string(size) + " bytes on device " +
                                       std::to_string(device));
    }
    return ptr;
  } catch (...) {
    return nullptr;
  }
}

void kvcached_torch_free(void* ptr, ssize_t /*size*/, int device, void* stream) {
  try {
    const kvcached::hooks::RuntimeRef runtime = kvcached::hooks::WaitForRuntime();
    kvcached::hooks::TorchFree(runtime.get(), ptr, device, stream);
  } catch (...) {
    // Nothing can be reported from a void free; the hooks already logged any failure.
  }
}

}  // extern "C"
