// A CUDA program built the way nvcc builds by default: cudart linked statically into the
// executable. Static cudart reaches the driver with dlopen("libcuda.so.1") + dlsym +
// cuGetProcAddress, never through a cudaMalloc symbol the shim could interpose, so under
// LD_PRELOAD the shim must catch it on the driver path (dlsym and cuGetProcAddress hooks).
//
// Checks, with the shim preloaded: an allocation made inside a KV window is a lazy region (its
// pages are ZERO until acquired), a kernel writes and reads an acquired range, cudaFree destroys
// the region, and a small allocation outside the window passes through. Exit 0 = pass, 1 = fail,
// 77 = skipped (no GPU, or the shim is not preloaded).
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>

#include "include/kvcached/kvcached.h"

__global__ void Fill(std::uint32_t* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    p[i] = static_cast<std::uint32_t>(i) * 2654435761U + seed;
  }
}

__global__ void Check(const std::uint32_t* p, std::size_t n, std::uint32_t seed, unsigned* bad) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    if (p[i] != static_cast<std::uint32_t>(i) * 2654435761U + seed) atomicAdd(bad, 1U);
  }
}

template <class F>
F Api(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no GPU\n");
    return 77;
  }
  auto window_begin = Api<kvcached_status (*)()>("kvcached_kv_window_begin");
  auto window_end = Api<kvcached_status (*)()>("kvcached_kv_window_end");
  auto state_get =
      Api<kvcached_status (*)(std::uint64_t, kvcached_page_state*)>("kvcached_page_state_get");
  auto acquire = Api<kvcached_status (*)(std::uint64_t, std::uint64_t)>("kvcached_acquire");
  if (window_begin == nullptr || window_end == nullptr || state_get == nullptr ||
      acquire == nullptr) {
    std::printf("SKIP: libkvcached_shim.so is not preloaded\n");
    return 77;
  }
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    failures += ok ? 0 : 1;
  };
  void* small = nullptr;
  check(cudaMalloc(&small, 4096) == cudaSuccess, "small cudaMalloc outside a window passes");
  kvcached_page_state st = KVCACHED_PAGE_IN_USE;
  check(state_get(reinterpret_cast<std::uint64_t>(small), &st) == KVCACHED_ERR_NOT_FOUND,
        "the small allocation is not a shim region");

  const std::size_t bytes = std::size_t{1} << 30;
  void* kv = nullptr;
  window_begin();
  cudaError_t e = cudaMalloc(&kv, bytes);
  window_end();
  check(e == cudaSuccess, "1 GiB cudaMalloc inside the KV window");
  const auto base = reinterpret_cast<std::uint64_t>(kv);
  check(state_get(base + bytes / 2, &st) == KVCACHED_OK && st == KVCACHED_PAGE_ZERO,
        "the static-cudart allocation is a lazy region (middle page ZERO)");
  const std::size_t used = std::size_t{64} << 20;
  check(acquire(base, used) == KVCACHED_OK, "acquire 64 MiB");
  check(state_get(base, &st) == KVCACHED_OK && st == KVCACHED_PAGE_IN_USE, "first page IN_USE");
  unsigned* bad = nullptr;
  cudaMalloc(&bad, sizeof(unsigned));
  cudaMemset(bad, 0, sizeof(unsigned));
  const std::size_t n = used / sizeof(std::uint32_t);
  Fill<<<528, 256>>>(static_cast<std::uint32_t*>(kv), n, 7U);
  Check<<<528, 256>>>(static_cast<std::uint32_t*>(kv), n, 7U, bad);
  unsigned mismatches = 1;
  cudaMemcpy(&mismatches, bad, sizeof(unsigned), cudaMemcpyDeviceToHost);
  check(cudaGetLastError() == cudaSuccess && mismatches == 0, "kernel writes and reads it back");
  check(cudaFree(kv) == cudaSuccess, "cudaFree of the region");
  check(state_get(base, &st) == KVCACHED_ERR_NOT_FOUND, "the region is gone after cudaFree");
  check(cudaFree(small) == cudaSuccess && cudaFree(bad) == cudaSuccess, "pass-through frees");
  std::printf("static_cudart_app: %s (%d failed checks)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
