// libcudart loaded RTLD_LOCAL (inside a dlopen'ed library, as in a Python process): the shim's
// hooks must still find the real runtime (dlsym(RTLD_NEXT) finds nothing; the shim walks the
// loaded objects), pass small allocations through and turn window allocations into regions.
#include <dlfcn.h>

#include <cstring>
#include <string>

#include "tests/preload/preload_util.h"

namespace {

using MallocFn = int (*)(void**, size_t);
using FreeFn = int (*)(void*);
using RangeFn = int (*)(std::uint64_t*, size_t*, std::uint64_t);

bool IsRealAllocation(void* p, size_t size) {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto range = reinterpret_cast<RangeFn>(dlsym(driver, "cuMemGetAddressRange_v2"));
  std::uint64_t base = 0;
  size_t bytes = 0;
  return range != nullptr && range(&base, &bytes, Addr(p)) == 0 && base == Addr(p) && bytes == size;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string lib = std::string(argc > 1 ? argv[1] : ".") + "/libpreload_local_user.so";
  void* user = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  PRELOAD_CHECK(user != nullptr);
  auto user_malloc = reinterpret_cast<MallocFn>(dlsym(user, "local_cuda_malloc"));
  auto user_free = reinterpret_cast<FreeFn>(dlsym(user, "local_cuda_free"));
  PRELOAD_CHECK(user_malloc != nullptr && user_free != nullptr);
  PRELOAD_CHECK(dlsym(RTLD_DEFAULT, "cudaGetDevice") == nullptr);  // cudart is not global

  void* small = nullptr;
  PRELOAD_CHECK(user_malloc(&small, 4096) == 0);
  PRELOAD_CHECK(IsRealAllocation(small, 4096));

  // A lookup in the RTLD_LOCAL runtime's own handle is answered with the hook when preloaded.
  void* cudart = dlopen("libcudart.so.13", RTLD_NOW | RTLD_NOLOAD);
  PRELOAD_CHECK(cudart != nullptr);
  Dl_info info{};
  PRELOAD_CHECK(dladdr(dlsym(cudart, "cudaMalloc"), &info) != 0 && info.dli_fname != nullptr);
  const bool hooked = std::strstr(info.dli_fname, "libkvcached_shim") != nullptr;
  std::printf("dlsym(cudart, cudaMalloc): %s\n", hooked ? "hook" : "real");

  const ShimApi api = LoadShimApi();
  if (api.loaded()) {
    PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
    void* region = nullptr;
    PRELOAD_CHECK(user_malloc(&region, 32 * kMiB) == 0);
    PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
    PRELOAD_CHECK(IsIdleRegionPage(api, Addr(region)));
    PRELOAD_CHECK(user_free(region) == 0);
    kvcached_stats stats{};
    PRELOAD_CHECK(api.stats(0, &stats) == KVCACHED_OK && stats.passthrough_bytes == 4096);
  }
  PRELOAD_CHECK(user_free(small) == 0);
  std::printf("local ok\n");
  return 0;
}
