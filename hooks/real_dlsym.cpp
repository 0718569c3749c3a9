#include "hooks/real_dlsym.h"

#include <dlfcn.h>

#include <array>

extern "C" {
void* kvcached_real_dlsym = nullptr;
}

namespace kvcached::hooks {
namespace {

void* FindsNothing(void* /*handle*/, const char* /*name*/) {
  return nullptr;
}

// glibc >= 2.34 defines dlsym@@GLIBC_2.34 in libc.so.6; older ones (and the compat alias) use
// the architecture's first glibc version.
#if defined(__x86_64__)
constexpr std::array<const char*, 2> kDlsymVersions = {"GLIBC_2.34", "GLIBC_2.2.5"};
#elif defined(__aarch64__)
constexpr std::array<const char*, 2> kDlsymVersions = {"GLIBC_2.34", "GLIBC_2.17"};
#else
#error "kvcached: unsupported architecture (x86_64 and aarch64 only)"
#endif

}  // namespace

// Our own dlsym (hooks/dlsym_trampoline.cpp) under a hidden name, so that this comparison sees
// our definition even when the library was dlopen'ed rather than preloaded.
extern "C" __attribute__((visibility("hidden"))) void kvcached_dlsym_trampoline();

DlsymFn RealDlsym() {
  void* fn = __atomic_load_n(&kvcached_real_dlsym, __ATOMIC_ACQUIRE);
  if (fn != nullptr) return reinterpret_cast<DlsymFn>(fn);
  for (const char* version : kDlsymVersions) {
    // dlvsym is not interposed, and RTLD_NEXT is taken relative to this call site, i.e. to this
    // library, so the answer is the next dlsym after ours.
    void* candidate = dlvsym(RTLD_NEXT, "dlsym", version);
    if (candidate != nullptr && candidate != reinterpret_cast<void*>(&kvcached_dlsym_trampoline)) {
      fn = candidate;
      break;
    }
  }
  if (fn == nullptr) fn = reinterpret_cast<void*>(&FindsNothing);
  // Every thread computes the same value, so a plain racing store is harmless.
  __atomic_store_n(&kvcached_real_dlsym, fn, __ATOMIC_RELEASE);
  return reinterpret_cast<DlsymFn>(fn);
}

}  // namespace kvcached::hooks
