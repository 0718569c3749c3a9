// A program that reaches the CUDA driver the way a static cudart, PyTorch's driver table or CuPy
// do: dlopen("libcuda.so.1") and dlsym, or dlsym of cuGetProcAddress and then cuGetProcAddress.
// It links no CUDA library. preload_check.py runs it with and without the shim.
//
//   driver_app <dlsym|procaddr> <mode>
#include <cuda.h>
#include <dlfcn.h>

#include <cstring>
#include <string>

#include "tests/preload/preload_util.h"

namespace {

using CuInitFn = CUresult (*)(unsigned int);
using CuDeviceGetFn = CUresult (*)(CUdevice*, int);
using CuPrimaryCtxRetainFn = CUresult (*)(CUcontext*, CUdevice);
using CuCtxSetCurrentFn = CUresult (*)(CUcontext);
using CuMemAllocFn = CUresult (*)(CUdeviceptr*, size_t);
using CuMemFreeFn = CUresult (*)(CUdeviceptr);
using CuMemAllocAsyncFn = CUresult (*)(CUdeviceptr*, size_t, CUstream);
using CuMemFreeAsyncFn = CUresult (*)(CUdeviceptr, CUstream);
using CuMemGetInfoFn = CUresult (*)(size_t*, size_t*);
using CuIpcGetMemHandleFn = CUresult (*)(CUipcMemHandle*, CUdeviceptr);
using CuGetProcAddressFn = CUresult (*)(const char*, void**, int, cuuint64_t,
                                        CUdriverProcAddressQueryResult*);
using CuGetProcAddressLegacyFn = CUresult (*)(const char*, void**, int, cuuint64_t);
using CuMemGetAddressRangeFn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);

void* g_driver = nullptr;
bool g_via_procaddr = false;

void* Sym(const char* name) {
  void* p = dlsym(g_driver, name);
  if (p == nullptr) {
    std::fprintf(stderr, "dlsym(libcuda.so.1, %s) failed\n", name);
    std::exit(2);
  }
  return p;
}

void* Proc(const char* name, int version, cuuint64_t flags = CU_GET_PROC_ADDRESS_DEFAULT) {
  auto get_proc = reinterpret_cast<CuGetProcAddressFn>(Sym("cuGetProcAddress_v2"));
  void* p = nullptr;
  CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  if (get_proc(name, &p, version, flags, &status) != CUDA_SUCCESS || p == nullptr) {
    std::fprintf(stderr, "cuGetProcAddress(%s, %d) failed\n", name, version);
    std::exit(2);
  }
  return p;
}

// cuMemAlloc etc., found the way the command line asked.
template <class F>
F Get(const char* base, const char* exported, int version = 12000) {
  return reinterpret_cast<F>(g_via_procaddr ? Proc(base, version) : Sym(exported));
}

void InitContext() {
  auto init = Get<CuInitFn>("cuInit", "cuInit");
  auto device_get = Get<CuDeviceGetFn>("cuDeviceGet", "cuDeviceGet");
  auto retain = Get<CuPrimaryCtxRetainFn>("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain");
  auto set_current = Get<CuCtxSetCurrentFn>("cuCtxSetCurrent", "cuCtxSetCurrent");
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  PRELOAD_CHECK(init(0) == CUDA_SUCCESS);
  PRELOAD_CHECK(device_get(&device, 0) == CUDA_SUCCESS);
  PRELOAD_CHECK(retain(&ctx, device) == CUDA_SUCCESS);
  PRELOAD_CHECK(set_current(ctx) == CUDA_SUCCESS);
}

// "hook <symbol>" when `p` is a function of the preloaded shim, "real" otherwise.
std::string Origin(void* p) {
  Dl_info info{};
  if (dladdr(p, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  if (std::strstr(info.dli_fname, "libkvcached_shim") == nullptr) return "real";
  return std::string("hook ") + (info.dli_sname != nullptr ? info.dli_sname : "?");
}

bool IsRealAllocation(CUdeviceptr p, size_t size) {
  auto range = reinterpret_cast<CuMemGetAddressRangeFn>(Sym("cuMemGetAddressRange_v2"));
  CUdeviceptr base = 0;
  size_t bytes = 0;
  return range(&base, &bytes, p) == CUDA_SUCCESS && base == p && bytes == size;
}

// Which functions the program was handed: hooks under the shim, and only where the ABI matches.
int Which() {
  std::printf("cuMemAlloc: %s\n", Origin(Get<void*>("cuMemAlloc", "cuMemAlloc_v2")).c_str());
  std::printf("cuMemFree: %s\n", Origin(Get<void*>("cuMemFree", "cuMemFree_v2")).c_str());
  std::printf("cuMemGetInfo: %s\n", Origin(Get<void*>("cuMemGetInfo", "cuMemGetInfo_v2")).c_str());
  std::printf("cuMemAllocAsync: %s\n",
              Origin(Get<void*>("cuMemAllocAsync", "cuMemAllocAsync")).c_str());
  std::printf("cuIpcGetMemHandle: %s\n",
              Origin(Get<void*>("cuIpcGetMemHandle", "cuIpcGetMemHandle")).c_str());
  std::printf("cuInit: %s\n", Origin(Get<void*>("cuInit", "cuInit")).c_str());
  std::printf("cuGetProcAddress_v2 (dlsym): %s\n", Origin(Sym("cuGetProcAddress_v2")).c_str());
  std::printf("cuGetProcAddress (dlsym): %s\n", Origin(Sym("cuGetProcAddress")).c_str());
  if (g_via_procaddr) {
    // ABI selection: the legacy 32-bit cuMemGetInfo is never replaced; the per-thread-stream
    // flag selects the _ptsz hook; cuGetProcAddress itself by version.
    std::printf("cuMemGetInfo@2000: %s\n", Origin(Proc("cuMemGetInfo", 2000)).c_str());
    std::printf(
        "cuMemAllocAsync/ptsz: %s\n",
        Origin(Proc("cuMemAllocAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
            .c_str());
    std::printf("cuMemFreeAsync/legacy: %s\n",
                Origin(Proc("cuMemFreeAsync", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM)).c_str());
    std::printf("cuGetProcAddress@12000: %s\n", Origin(Proc("cuGetProcAddress", 12000)).c_str());
    std::printf("cuGetProcAddress@11030: %s\n", Origin(Proc("cuGetProcAddress", 11030)).c_str());
    // The legacy entry point substitutes too.
    auto legacy = reinterpret_cast<CuGetProcAddressLegacyFn>(Sym("cuGetProcAddress"));
    void* p = nullptr;
    PRELOAD_CHECK(legacy("cuMemFree", &p, 11000, 0) == CUDA_SUCCESS);
    std::printf("legacy cuGetProcAddress(cuMemFree): %s\n", Origin(p).c_str());
  }
  return 0;
}

int Sequence() {
  FakeApi fake = LoadFake();
  InitContext();
  auto alloc = Get<CuMemAllocFn>("cuMemAlloc", "cuMemAlloc_v2");
  auto free_fn = Get<CuMemFreeFn>("cuMemFree", "cuMemFree_v2");
  auto alloc_async = Get<CuMemAllocAsyncFn>("cuMemAllocAsync", "cuMemAllocAsync");
  auto free_async = Get<CuMemFreeAsyncFn>("cuMemFreeAsync", "cuMemFreeAsync");
  const size_t sizes[] = {512, kMiB, 7 * kMiB, 64 * kMiB};
  CUdeviceptr ptrs[4] = {};
  for (int i = 0; i < 4; ++i) {
    const uint64_t before = fake.call_count("cuMemAlloc");
    const CUresult rc = alloc(&ptrs[i], sizes[i]);
    std::printf("cuMemAlloc(%zu) rc=%d real=%d driver_calls=%llu\n", sizes[i], rc,
                IsRealAllocation(ptrs[i], sizes[i]) ? 1 : 0,
                static_cast<unsigned long long>(fake.call_count("cuMemAlloc") - before));
  }
  for (CUdeviceptr p : ptrs) std::printf("cuMemFree rc=%d\n", free_fn(p));
  std::printf("cuMemFree(bogus) rc=%d\n", free_fn(0x1234));
  std::printf("cuMemAlloc(null) rc=%d\n", alloc(nullptr, 16));
  CUdeviceptr a = 0;
  std::printf("cuMemAllocAsync rc=%d real=%d\n", alloc_async(&a, 3 * kMiB, nullptr),
              IsRealAllocation(a, 3 * kMiB) ? 1 : 0);
  std::printf("cuMemFreeAsync rc=%d\n", free_async(a, nullptr));
  std::printf("live=%llu\n", static_cast<unsigned long long>(Counts(fake).allocations));
  return 0;
}

int Oom() {
  FakeApi fake = LoadFake();
  InitContext();
  auto alloc = Get<CuMemAllocFn>("cuMemAlloc", "cuMemAlloc_v2");
  auto free_fn = Get<CuMemFreeFn>("cuMemFree", "cuMemFree_v2");
  PRELOAD_CHECK(fake.set_faults("cuMemAlloc:1:CUDA_ERROR_OUT_OF_MEMORY,"
                                "cuMemAlloc:2:CUDA_ERROR_INVALID_DEVICE") == 0);
  CUdeviceptr p = 0x5;
  std::printf("faulted rc=%d unchanged=%d\n", alloc(&p, kMiB), p == 0x5 ? 1 : 0);
  std::printf("faulted rc=%d\n", alloc(&p, kMiB));
  std::printf("next rc=%d\n", alloc(&p, kMiB));
  std::printf("free rc=%d\n", free_fn(p));
  return 0;
}

int Window() {
  const ShimApi api = RequireShimApi();
  FakeApi fake = LoadFake();
  InitContext();
  kvcached_status st = KVCACHED_OK;
  auto alloc = Get<CuMemAllocFn>("cuMemAlloc", "cuMemAlloc_v2");
  auto free_fn = Get<CuMemFreeFn>("cuMemFree", "cuMemFree_v2");
  auto alloc_ptsz = reinterpret_cast<CuMemAllocAsyncFn>(
      g_via_procaddr ? Proc("cuMemAllocAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
                     : Sym("cuMemAllocAsync_ptsz"));
  auto free_ptsz = reinterpret_cast<CuMemFreeAsyncFn>(
      g_via_procaddr ? Proc("cuMemFreeAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
                     : Sym("cuMemFreeAsync_ptsz"));
  auto ipc = Get<CuIpcGetMemHandleFn>("cuIpcGetMemHandle", "cuIpcGetMemHandle");

  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  CUdeviceptr region = 0;
  CUdeviceptr async = 0;
  CUdeviceptr small = 0;
  PRELOAD_CHECK(alloc(&region, 32 * kMiB) == CUDA_SUCCESS);
  PRELOAD_CHECK(alloc_ptsz(&async, 4 * kMiB, nullptr) == CUDA_SUCCESS);
  PRELOAD_CHECK(alloc(&small, 1024) == CUDA_SUCCESS);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  PRELOAD_CHECK(IsIdleRegionPage(api, region));
  PRELOAD_CHECK(IsIdleRegionPage(api, async));
  PRELOAD_CHECK(IsRealAllocation(small, 1024) && Counts(fake).allocations == 1);
  CUipcMemHandle handle{};
  PRELOAD_CHECK(ipc(&handle, region) == CUDA_ERROR_INVALID_VALUE);
  PRELOAD_CHECK(ipc(&handle, small) == CUDA_SUCCESS);
  PRELOAD_CHECK(api.acquire(region, 4 * kMiB) == KVCACHED_OK);
  std::memset(reinterpret_cast<void*>(region), 0x33, 4 * kMiB);
  PRELOAD_CHECK(api.release(region, 4 * kMiB) == KVCACHED_OK);
  PRELOAD_CHECK(free_fn(region) == CUDA_SUCCESS);
  PRELOAD_CHECK(free_ptsz(async, nullptr) == CUDA_SUCCESS);
  PRELOAD_CHECK(free_fn(small) == CUDA_SUCCESS);
  (void)PageState(api, region, &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_NOT_FOUND);
  std::printf("window ok\n");
  return 0;
}

int MemInfo() {
  InitContext();
  auto info = Get<CuMemGetInfoFn>("cuMemGetInfo", "cuMemGetInfo_v2");
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  const CUresult rc = info(&free_bytes, &total_bytes);
  std::printf("rc=%d free=%zu total=%zu\n", rc, free_bytes, total_bytes);
  return rc == CUDA_SUCCESS ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s dlsym|procaddr which|sequence|oom|window|meminfo\n", argv[0]);
    return 2;
  }
  g_via_procaddr = std::string(argv[1]) == "procaddr";
  g_driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  PRELOAD_CHECK(g_driver != nullptr);
  const std::string mode = argv[2];
  if (mode == "which") return Which();
  if (mode == "sequence") return Sequence();
  if (mode == "oom") return Oom();
  if (mode == "window") return Window();
  if (mode == "meminfo") return MemInfo();
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
