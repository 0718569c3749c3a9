// gpu_kernels.h over the fake driver: its "device" pointers are host addresses, so the kernels
// become plain loops. Builds the *_fake variants of the GPU tests (see CMakeLists.txt), which
// check the tests' own logic against the core on machines without a GPU.
#include <cuda.h>
#include <dlfcn.h>

#include <cstdlib>

#include "tests/gpu/gpu_kernels.h"

namespace kvcached::gputest {
namespace {

std::uint32_t Pattern(std::uint64_t word_addr, std::uint32_t seed) {
  std::uint64_t x = (word_addr ^ (static_cast<std::uint64_t>(seed) << 40)) * 0x9E3779B97F4A7C15ULL;
  x ^= x >> 32;
  return static_cast<std::uint32_t>(x) | 1U;
}

const std::uint32_t* Words(std::uint64_t addr) {
  return reinterpret_cast<const std::uint32_t*>(addr);  // NOLINT(performance-no-int-to-ptr)
}

void* Driver() {
  const char* path = std::getenv("KVCACHED_CUDA_DRIVER");
  return path == nullptr ? nullptr : dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

}  // namespace

std::string UnavailableReason() {
  void* drv = Driver();
  if (drv == nullptr) return "KVCACHED_CUDA_DRIVER does not name a loadable driver";
  // Only the fake driver's pointers may be dereferenced on the host.
  if (dlsym(drv, "fakecuda_get_counts") == nullptr) return "the driver is not the fake one";
  return "";
}

const std::uint64_t kDefaultChurnCycles = 1000;

std::string DriverPath() {
  const char* path = std::getenv("KVCACHED_CUDA_DRIVER");
  return path == nullptr ? "" : path;
}

Status UseDevice(int /*device*/) {
  return Status::Ok();
}

Status Fill(std::uint64_t addr, std::uint64_t bytes, std::uint32_t seed) {
  auto* p = reinterpret_cast<std::uint32_t*>(addr);  // NOLINT(performance-no-int-to-ptr)
  for (std::uint64_t i = 0; i < bytes / 4; ++i) p[i] = Pattern(addr / 4 + i, seed);
  return Status::Ok();
}

Result<std::uint64_t> Mismatches(std::uint64_t addr, std::uint64_t bytes, std::uint32_t seed) {
  std::uint64_t n = 0;
  for (std::uint64_t i = 0; i < bytes / 4; ++i)
    n += Words(addr)[i] != Pattern(addr / 4 + i, seed) ? 1 : 0;
  return n;
}

Result<std::uint64_t> NonZeroWords(std::uint64_t addr, std::uint64_t bytes) {
  std::uint64_t n = 0;
  for (std::uint64_t i = 0; i < bytes / 4; ++i) n += Words(addr)[i] != 0 ? 1 : 0;
  return n;
}

Result<std::uint64_t> Checksum(std::uint64_t addr, std::uint64_t bytes) {
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < bytes / 4; ++i) sum += Words(addr)[i] * (2 * i + 1);
  return sum;
}

Result<std::pair<std::uint64_t, std::uint64_t>> MemInfo() {
  void* drv = Driver();
  using Init = CUresult (*)(unsigned);
  using Retain = CUresult (*)(CUcontext*, CUdevice);
  using Release = CUresult (*)(CUdevice);
  using SetCurrent = CUresult (*)(CUcontext);
  using GetInfo = CUresult (*)(size_t*, size_t*);
  auto init = reinterpret_cast<Init>(dlsym(drv, "cuInit"));
  auto retain = reinterpret_cast<Retain>(dlsym(drv, "cuDevicePrimaryCtxRetain"));
  auto release = reinterpret_cast<Release>(dlsym(drv, "cuDevicePrimaryCtxRelease_v2"));
  auto set_current = reinterpret_cast<SetCurrent>(dlsym(drv, "cuCtxSetCurrent"));
  auto get_info = reinterpret_cast<GetInfo>(dlsym(drv, "cuMemGetInfo_v2"));
  if (init == nullptr || retain == nullptr || release == nullptr || set_current == nullptr ||
      get_info == nullptr) {
    return Status(Errc::kDriver, "fake driver lacks a context or meminfo entry point");
  }
  CUcontext ctx = nullptr;
  size_t free_b = 0;
  size_t total_b = 0;
  CUresult r = init(0);
  if (r == CUDA_SUCCESS) r = retain(&ctx, 0);
  if (r == CUDA_SUCCESS) {
    r = set_current(ctx);
    if (r == CUDA_SUCCESS) r = get_info(&free_b, &total_b);
    set_current(nullptr);
    release(0);
  }
  if (r != CUDA_SUCCESS) return Status(Errc::kDriver, "cuMemGetInfo failed", r);
  return std::pair<std::uint64_t, std::uint64_t>{free_b, total_b};
}

}  // namespace kvcached::gputest
