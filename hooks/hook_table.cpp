#include "hooks/hook_table.h"

#include <dlfcn.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/log/log.h"
#include "hooks/hook_decls.h"
#include "hooks/loaded_objects.h"
#include "hooks/real_dlsym.h"
#include "hooks/runtime_access.h"

extern "C" __attribute__((visibility("hidden"))) void kvcached_dlsym_trampoline();

namespace kvcached::hooks {
namespace {

constexpr std::uint64_t kLegacy = CU_GET_PROC_ADDRESS_LEGACY_STREAM;
constexpr std::uint64_t kPerThread = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;

void* H(auto fn) {
  return reinterpret_cast<void*>(fn);
}

// FindInterposed skips every name not starting with "cu" (the common miss costs two compares).
#define KVC_CU_PREFIX(symbol)                                                     \
  static_assert((symbol)[0] == 'c' && (symbol)[1] == 'u',                         \
                "hook_list.def: an interposed symbol must start with \"cu\", or " \
                "FindInterposed must learn its prefix");
#define KVC_HOOK(id, name, ...) KVC_CU_PREFIX(#name)
#define KVC_HOOK_RENAMED(id, cxx_name, symbol, ...) KVC_CU_PREFIX(symbol)
#define KVC_HELPER(...)
#include "hooks/hook_list.def"
#undef KVC_HOOK
#undef KVC_HOOK_RENAMED
#undef KVC_HELPER
#undef KVC_CU_PREFIX

// Generated from hooks/hook_list.def, so it is in the order of enum Fn by construction.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
const std::array<FnSpec, static_cast<std::size_t>(Fn::kCount)>& Specs() {
  static const std::array<FnSpec, static_cast<std::size_t>(Fn::kCount)> specs = {{
#define KVC_HOOK(id, name, lib, proc_name, proc_version, proc_flags, ret, params) \
  {#name, Lib::lib, proc_name, proc_version, proc_flags, H(&(name))},
#define KVC_HOOK_RENAMED(id, cxx_name, symbol, lib, proc_name, proc_version, proc_flags, ret, \
                         params)                                                              \
  {symbol, Lib::lib, proc_name, proc_version, proc_flags, H(&(cxx_name))},
#define KVC_HELPER(id, symbol, lib, proc_name, proc_version, proc_flags, ret, params) \
  {symbol, Lib::lib, proc_name, proc_version, proc_flags, nullptr},
#include "hooks/hook_list.def"
#undef KVC_HOOK
#undef KVC_HOOK_RENAMED
#undef KVC_HELPER
  }};
  return specs;
}
#pragma GCC diagnostic pop

// Real functions, resolved lazily. Zero-initialised: no constructor runs at load time.
constinit std::array<std::atomic<void*>, static_cast<std::size_t>(Fn::kCount)> g_real{};
constinit std::atomic<void*> g_driver_handle{nullptr};

struct SymbolQuery {
  const char* symbol;
  void* not_this;  // our own hook: never a valid answer
  void* found;
};

bool HasSymbol(void* handle, void* context) {
  auto* query = static_cast<SymbolQuery*>(context);
  void* p = RealDlsym()(handle, query->symbol);
  if (p == nullptr || p == query->not_this) return false;
  query->found = p;
  return true;
}

void* ResolveRuntime(const FnSpec& spec) {
  // RTLD_NEXT is taken relative to this call site, i.e. to the shim: the next definition after
  // ours in the global scope (libcudart linked by the program or loaded RTLD_GLOBAL).
  void* p = RealDlsym()(RTLD_NEXT, spec.symbol);
  if (p != nullptr && p != spec.hook) return p;
  // libcudart loaded RTLD_LOCAL (inside a Python extension): find it among the loaded objects.
  SymbolQuery query{spec.symbol, spec.hook, nullptr};
  if (FindLoadedObject("libcudart.so", &HasSymbol, &query) != nullptr) return query.found;
  return nullptr;
}

bool AnyHandle(void* /*handle*/, void* /*context*/) {
  return true;
}

void* DriverHandle(bool allow_load) {
  void* handle = g_driver_handle.load(std::memory_order_acquire);
  if (handle != nullptr) return handle;
  const char* configured = std::getenv("KVCACHED_CUDA_DRIVER");
  handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr && configured != nullptr && configured[0] != '\0') {
    handle = dlopen(configured, RTLD_NOW | RTLD_NOLOAD);
  }
  if (handle == nullptr) handle = FindLoadedObject("libcuda.so", &AnyHandle, nullptr);
  if (handle == nullptr && allow_load) {
    // A driver hook runs only after the program reached the driver, so this load normally finds
    // the library already mapped; it is the last resort of an unusual layout.
    handle = dlopen(configured != nullptr && configured[0] != '\0' ? configured : "libcuda.so.1",
                    RTLD_NOW | RTLD_LOCAL);
  }
  if (handle != nullptr) {
    void* expected = nullptr;
    if (!g_driver_handle.compare_exchange_strong(expected, handle, std::memory_order_acq_rel)) {
      dlclose(handle);  // another thread won; drop our extra reference
      handle = expected;
    }
  }
  return handle;
}

void* ResolveDriver(const FnSpec& spec, bool allow_load) {
  void* handle = DriverHandle(allow_load);
  if (handle == nullptr) return nullptr;
  if (spec.proc_name != nullptr) {
    auto get_proc =
        reinterpret_cast<CuGetProcAddressV2Fn>(Real(Fn::kCuGetProcAddressV2, allow_load));
    if (get_proc != nullptr) {
      void* p = nullptr;
      CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SUCCESS;
      if (get_proc(spec.proc_name, &p, spec.proc_version, spec.proc_flags, &status) ==
              CUDA_SUCCESS &&
          p != nullptr && p != spec.hook) {
        return p;
      }
    }
  }
  void* p = RealDlsym()(handle, spec.symbol);
  return p != spec.hook ? p : nullptr;
}

const FnSpec* FindInterposed(const char* name, Fn* out) {
  // Every interposed name starts with "cu"; this keeps the common miss to two compares.
  if (name[0] != 'c' || name[1] != 'u') return nullptr;
  const auto& specs = Specs();
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].hook != nullptr && std::strcmp(specs[i].symbol, name) == 0) {
      *out = static_cast<Fn>(i);
      return &specs[i];
    }
  }
  return nullptr;
}

const void* ObjectBase(const void* address) {
  Dl_info info{};
  if (address == nullptr || dladdr(address, &info) == 0) return nullptr;
  return info.dli_fbase;
}

void* HookForDlsymUnguarded(void* handle, const char* name, const void* caller);
void* SubstituteDriverPointerUnguarded(void* fn);

const void* ShimBase() {
  static const void* base = ObjectBase(reinterpret_cast<const void*>(&kvcached_dlsym_trampoline));
  return base;
}

}  // namespace

const FnSpec& Spec(Fn fn) {
  return Specs()[static_cast<std::size_t>(fn)];
}

void* Real(Fn fn, bool allow_load) noexcept {
  auto& slot = g_real[static_cast<std::size_t>(fn)];
  void* p = slot.load(std::memory_order_acquire);
  if (p != nullptr) return p;
  const FnSpec& spec = Spec(fn);
  try {
    p = spec.lib == Lib::kRuntime ? ResolveRuntime(spec) : ResolveDriver(spec, allow_load);
  } catch (...) {
    return nullptr;  // out of host memory while resolving: try again on the next call
  }
  if (p != nullptr) slot.store(p, std::memory_order_release);
  return p;
}

void* HookForDlsym(void* handle, const char* name, const void* caller) noexcept {
  try {
    return HookForDlsymUnguarded(handle, name, caller);
  } catch (...) {
    return nullptr;  // forward unchanged
  }
}

void* SubstituteDriverPointer(void* fn) noexcept {
  try {
    return SubstituteDriverPointerUnguarded(fn);
  } catch (...) {
    return fn;
  }
}

namespace {

void* HookForDlsymUnguarded(void* handle, const char* name, const void* caller) {
  Fn fn{};
  const FnSpec* spec = FindInterposed(name, &fn);
  if (spec == nullptr) return nullptr;
  // The shim's own lookups (and the core's driver loader) must get the real functions.
  if (ObjectBase(caller) == ShimBase()) return nullptr;
  void* found = RealDlsym()(handle, name);
  if (found == nullptr || found == spec->hook) return nullptr;
  if (!SubstitutionAllowed()) return nullptr;
  // Only where our hook forwards to that very library: with two copies of cudart loaded, a
  // lookup in the other one keeps its own function.
  void* real = Real(fn, /*allow_load=*/false);
  if (real == nullptr || (real != found && ObjectBase(real) != ObjectBase(found))) return nullptr;
  KVC_LOG_DEBUG("dlsym({}) answered with the kvcached hook", name);
  return spec->hook;
}

void* SubstituteDriverPointerUnguarded(void* fn) {
  if (fn == nullptr) return fn;
  const auto& specs = Specs();
  for (const FnSpec& spec : specs) {
    if (spec.lib == Lib::kDriver && spec.hook == fn) return fn;  // already ours
  }
  if (!SubstitutionAllowed()) return fn;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const FnSpec& spec = specs[i];
    if (spec.lib != Lib::kDriver || spec.hook == nullptr) continue;
    if (Real(static_cast<Fn>(i), /*allow_load=*/false) == fn) {
      KVC_LOG_DEBUG("driver entry point {} answered with the kvcached hook", spec.symbol);
      return spec.hook;
    }
  }
  return fn;
}

}  // namespace
}  // namespace kvcached::hooks
