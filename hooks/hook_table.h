// The table of interposed functions and of the real functions behind them.
//
// Every hook forwards to a "real" function: for the runtime, the cudart definition that comes
// after us (RTLD_NEXT) or, when cudart was loaded RTLD_LOCAL inside a Python extension, the one
// found by walking the loaded objects; for the driver, the entry point libcuda.so.1's own
// cuGetProcAddress returns. The table also answers the two substitution questions: which hook
// replaces a symbol that dlsym found, and which hook replaces a driver pointer that
// cuGetProcAddress / cudaGetDriverEntryPoint returned.
#pragma once

#include <cstdint>

namespace kvcached::hooks {

enum class Lib : std::uint8_t { kRuntime, kDriver };

// Every entry of hooks/hook_list.def, in its order: the interposed functions and the helpers.
enum class Fn : int {
#define KVC_HOOK(id, ...) id,
#define KVC_HOOK_RENAMED(id, ...) id,
#define KVC_HELPER(id, ...) id,
#include "hooks/hook_list.def"
#undef KVC_HOOK
#undef KVC_HOOK_RENAMED
#undef KVC_HELPER
  kCount
};

struct FnSpec {
  const char* symbol;  // exported name, as dlsym sees it ("cuMemAlloc_v2")
  Lib lib;
  const char* proc_name;     // driver: name cuGetProcAddress takes ("cuMemAlloc"); null = dlsym
  int proc_version;          // driver: CUDA version that selects this ABI (3020 -> _v2)
  std::uint64_t proc_flags;  // driver: CU_GET_PROC_ADDRESS_{LEGACY_STREAM,PER_THREAD_...}
  void* hook;                // our exported function, null for helpers
};

const FnSpec& Spec(Fn fn);

// The real function behind `fn`, resolved on first use and cached (a miss is not cached: the
// library may be loaded later). With allow_load=false the driver is never loaded by the lookup.
void* Real(Fn fn, bool allow_load = true) noexcept;

template <class F>
F RealAs(Fn fn) noexcept {
  return reinterpret_cast<F>(Real(fn));
}

// dlsym(handle, name) with a specific handle: our hook when `name` is one we interpose, the
// real lookup finds it, it lies in the same library our hook forwards to, the shim is not a
// pure pass-through, and the caller is not the shim itself. Null = forward unchanged.
void* HookForDlsym(void* handle, const char* name, const void* caller) noexcept;

// A driver function pointer just returned by cuGetProcAddress / cudaGetDriverEntryPoint: our
// hook if `fn` is exactly the real function one of our hooks forwards to (so the ABI -- _v2,
// _ptsz, 4- or 5-argument cuGetProcAddress -- is the one our hook implements), else `fn`.
void* SubstituteDriverPointer(void* fn) noexcept;

}  // namespace kvcached::hooks
