#include "tests/support/driver_api.h"

#include <dlfcn.h>

#include "tests/support/fake_driver.h"

// Two-step stringize so the argument's macro expansion is named: cuMemAlloc -> "cuMemAlloc_v2".
#define KVCACHED_TEST_STR2(x) #x
#define KVCACHED_TEST_STR(x) KVCACHED_TEST_STR2(x)

namespace kvcached::testing {
namespace {

template <class F>
void Resolve(void* handle, const char* name, F* out, std::string* error) {
  *out = reinterpret_cast<F>(::dlsym(handle, name));
  if (*out == nullptr && error->empty()) {
    *error = std::string("the CUDA driver exports no ") + name;
  }
}

DriverApi Load() {
  DriverApi api;
  void* handle = DriverHandle(&api.error);
  if (handle == nullptr) {
    return api;
  }
#define KVCACHED_TEST_DRIVER_RESOLVE(fn) \
  Resolve(handle, KVCACHED_TEST_STR(fn), &api.fn, &api.error);
  FAKECUDA_FUNCTIONS(KVCACHED_TEST_DRIVER_RESOLVE)
#undef KVCACHED_TEST_DRIVER_RESOLVE
  return api;
}

}  // namespace

const DriverApi& Driver() {
  static const DriverApi api = Load();
  return api;
}

CUresult InitAndMakeCurrent(int dev) {
  const DriverApi& d = Driver();
  if (!d.error.empty()) {
    return CUDA_ERROR_NOT_FOUND;
  }
  if (const CUresult r = d.cuInit(0); r != CUDA_SUCCESS) {
    return r;
  }
  CUcontext ctx = nullptr;
  if (const CUresult r = d.cuDevicePrimaryCtxRetain(&ctx, dev); r != CUDA_SUCCESS) {
    return r;
  }
  return d.cuCtxSetCurrent(ctx);
}

std::string ResultName(CUresult r) {
  const char* name = nullptr;
  if (Driver().error.empty() && Driver().cuGetErrorName(r, &name) == CUDA_SUCCESS &&
      name != nullptr) {
    return name;
  }
  return "CUresult " + std::to_string(static_cast<int>(r));
}

}  // namespace kvcached::testing
