// Kernels and runtime-API calls used by the GPU tests (see gpu_kernels.h).
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include "tests/gpu/gpu_kernels.h"

namespace kvcached::gputest {
namespace {

constexpr int kBlock = 256;
constexpr int kGrid = 1024;

Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return {Errc::kDriver,
          std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")",
          static_cast<int>(e)};
}

// Launch, then check both the launch and the kernel's execution (a fault is reported at sync).
Status AfterLaunch(const char* what) {
  KVC_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), what));
  return CudaStatus(cudaDeviceSynchronize(), what);
}

__device__ __forceinline__ unsigned Pattern(unsigned long long word_addr, unsigned seed) {
  unsigned long long x =
      (word_addr ^ (static_cast<unsigned long long>(seed) << 40)) * 0x9E3779B97F4A7C15ULL;
  x ^= x >> 32;
  return static_cast<unsigned>(x) | 1U;  // never zero, so it never looks like the zero page
}

__global__ void FillKernel(unsigned* p, unsigned long long words, unsigned seed) {
  const auto first = reinterpret_cast<unsigned long long>(p) / 4;
  for (auto i = blockIdx.x * 1ULL * blockDim.x + threadIdx.x; i < words;
       i += 1ULL * gridDim.x * blockDim.x) {
    p[i] = Pattern(first + i, seed);
  }
}

// mode 0: count mismatches against Pattern; 1: count non-zero words; 2: weighted checksum.
__global__ void ScanKernel(const unsigned* p, unsigned long long words, unsigned seed, int mode,
                           unsigned long long* out) {
  const auto first = reinterpret_cast<unsigned long long>(p) / 4;
  unsigned long long acc = 0;
  for (auto i = blockIdx.x * 1ULL * blockDim.x + threadIdx.x; i < words;
       i += 1ULL * gridDim.x * blockDim.x) {
    const unsigned v = p[i];
    if (mode == 0) acc += v != Pattern(first + i, seed);
    if (mode == 1) acc += v != 0;
    if (mode == 2) acc += static_cast<unsigned long long>(v) * (2 * i + 1);
  }
  if (acc != 0) atomicAdd(out, acc);
}

Result<std::uint64_t> Scan(std::uint64_t addr, std::uint64_t bytes, unsigned seed, int mode) {
  unsigned long long* d = nullptr;
  KVC_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&d, sizeof(*d)), "cudaMalloc"));
  unsigned long long host = 0;
  auto run = [&]() -> Status {
    KVC_RETURN_IF_ERROR(CudaStatus(cudaMemset(d, 0, sizeof(*d)), "cudaMemset"));
    ScanKernel<<<kGrid, kBlock>>>(reinterpret_cast<const unsigned*>(addr), bytes / 4, seed, mode,
                                  d);
    KVC_RETURN_IF_ERROR(AfterLaunch("scan kernel"));
    return CudaStatus(cudaMemcpy(&host, d, sizeof(host), cudaMemcpyDeviceToHost), "cudaMemcpy");
  };
  const Status st = run();
  cudaFree(d);
  if (!st.ok()) return st;
  return static_cast<std::uint64_t>(host);
}

}  // namespace

std::string UnavailableReason() {
  // The real driver, not KVCACHED_CUDA_DRIVER: kernels run through the system's libcuda.
  void* drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (drv == nullptr) {
    const char* err = dlerror();
    return std::string("no CUDA driver (libcuda.so.1 not loadable: ") + (err ? err : "?") + ")";
  }
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    return std::string("no CUDA device (") + (e != cudaSuccess ? cudaGetErrorName(e) : "0") + ")";
  }
  // The runtime API has no attribute for VMM support; ask the driver (initialized by cudart).
  using GetAttr = CUresult (*)(int*, CUdevice_attribute, CUdevice);
  auto get_attr = reinterpret_cast<GetAttr>(dlsym(drv, "cuDeviceGetAttribute"));
  int vmm = 0;
  if (get_attr == nullptr ||
      get_attr(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0) != CUDA_SUCCESS ||
      vmm == 0) {
    return "device 0 does not support virtual memory management";
  }
  return "";
}

const std::uint64_t kDefaultChurnCycles = 5000;

std::string DriverPath() {
  return "libcuda.so.1";
}

Status UseDevice(int device) {
  KVC_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  return CudaStatus(cudaFree(nullptr), "cudaFree(nullptr)");
}

Status Fill(std::uint64_t addr, std::uint64_t bytes, std::uint32_t seed) {
  FillKernel<<<kGrid, kBlock>>>(reinterpret_cast<unsigned*>(addr), bytes / 4, seed);
  return AfterLaunch("fill kernel");
}

Result<std::uint64_t> Mismatches(std::uint64_t addr, std::uint64_t bytes, std::uint32_t seed) {
  return Scan(addr, bytes, seed, 0);
}
Result<std::uint64_t> NonZeroWords(std::uint64_t addr, std::uint64_t bytes) {
  return Scan(addr, bytes, 0, 1);
}
Result<std::uint64_t> Checksum(std::uint64_t addr, std::uint64_t bytes) {
  return Scan(addr, bytes, 0, 2);
}

Result<std::pair<std::uint64_t, std::uint64_t>> MemInfo() {
  std::size_t free_b = 0;
  std::size_t total_b = 0;
  KVC_RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo"));
  return std::pair<std::uint64_t, std::uint64_t>{free_b, total_b};
}

}  // namespace kvcached::gputest
