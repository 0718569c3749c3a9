#include "tests/fakecuda/cudart_driver.h"

#include <dlfcn.h>

#include <mutex>

#include "tests/fakecuda/no_destructor.h"

namespace fakecudart {
namespace {

constexpr int kRuntimeVersion = 13000;  // CUDART_VERSION of the headers the fake mirrors

using LegacyGetProc = CUresult (*)(const char*, void**, int, cuuint64_t);
LegacyGetProc g_legacy_get_proc = nullptr;

CUresult LegacyGetProcShim(const char* symbol, void** pfn, int version, cuuint64_t flags,
                           CUdriverProcAddressQueryResult* status) {
  const CUresult r = g_legacy_get_proc(symbol, pfn, version, flags);
  if (status != nullptr) {
    *status =
        r == CUDA_SUCCESS ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  return r;
}

template <class F>
bool Resolve(const Driver& d, const char* base, cuuint64_t flags, F* out) {
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  if (d.get_proc(base, &fn, kRuntimeVersion, flags, &status) != CUDA_SUCCESS || fn == nullptr) {
    return false;
  }
  *out = reinterpret_cast<F>(fn);
  return true;
}

bool ResolveTable(const Driver& d, cuuint64_t flags, DriverTable* t) {
  bool ok = true;
#define FAKECUDART_RESOLVE(base, decl) ok = Resolve(d, #base, flags, &t->base) && ok;
  FAKECUDART_DRIVER_FUNCTIONS(FAKECUDART_RESOLVE)
#undef FAKECUDART_RESOLVE
  return ok;
}

void Load(Driver* d) {
  // The handle is kept for the life of the process, as cudart keeps it.
  void* lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    return;
  }
  if (void* v2 = ::dlsym(lib, "cuGetProcAddress_v2"); v2 != nullptr) {
    d->get_proc = reinterpret_cast<decltype(d->get_proc)>(v2);
  } else if (void* v1 = ::dlsym(lib, "cuGetProcAddress"); v1 != nullptr) {
    g_legacy_get_proc = reinterpret_cast<LegacyGetProc>(v1);
    d->get_proc = &LegacyGetProcShim;
  } else {
    return;
  }
  if (!ResolveTable(*d, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &d->legacy) ||
      !ResolveTable(*d, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &d->per_thread)) {
    return;
  }
  d->loaded = true;
  d->init_result = d->legacy.cuInit(0);
}

}  // namespace

const Driver& GetDriver() {
  static fakecuda::NoDestructor<Driver> driver;
  static std::once_flag once;
  std::call_once(once, [] { Load(driver.get()); });
  return *driver;
}

}  // namespace fakecudart
