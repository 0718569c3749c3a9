#include "tools/kvctl/driver_probe.h"

#include <cuda.h>
#include <dlfcn.h>
#include <fmt/core.h>

#include <array>

namespace kvctl {
namespace {

using GetProcV2 = CUresult (*)(const char*, void**, int, cuuint64_t,
                               CUdriverProcAddressQueryResult*);
using GetProcV1 = CUresult (*)(const char*, void**, int, cuuint64_t);

class Resolver {
 public:
  explicit Resolver(void* lib)
      : v2_(reinterpret_cast<GetProcV2>(::dlsym(lib, "cuGetProcAddress_v2"))),
        v1_(reinterpret_cast<GetProcV1>(::dlsym(lib, "cuGetProcAddress"))) {}
  [[nodiscard]] bool usable() const { return v2_ != nullptr || v1_ != nullptr; }

  template <class F>
  F Get(const char* name) const {
    void* fn = nullptr;
    if (v2_ != nullptr) {
      CUdriverProcAddressQueryResult found{};
      if (v2_(name, &fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &found) != CUDA_SUCCESS) fn = nullptr;
    } else if (v1_(name, &fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT) != CUDA_SUCCESS) {
      fn = nullptr;
    }
    return reinterpret_cast<F>(fn);
  }

 private:
  GetProcV2 v2_;
  GetProcV1 v1_;
};

std::string Uuid(const CUuuid& u) {
  const auto* b = reinterpret_cast<const unsigned char*>(u.bytes);
  return fmt::format(
      "GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
      b[15]);
}

}  // namespace

DriverProbe ProbeDriver(const std::string& path) {
  DriverProbe probe;
  probe.path = path;
  void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = ::dlerror();
    probe.error = err != nullptr ? err : "dlopen failed";
    return probe;
  }
  probe.loaded = true;
  const Resolver r(lib);
  if (!r.usable()) {
    probe.error = "the driver exports no cuGetProcAddress (driver older than CUDA 11.3)";
    return probe;
  }
  auto init = r.Get<CUresult (*)(unsigned)>("cuInit");
  auto version = r.Get<CUresult (*)(int*)>("cuDriverGetVersion");
  auto count = r.Get<CUresult (*)(int*)>("cuDeviceGetCount");
  auto get = r.Get<CUresult (*)(CUdevice*, int)>("cuDeviceGet");
  auto attr = r.Get<CUresult (*)(int*, CUdevice_attribute, CUdevice)>("cuDeviceGetAttribute");
  auto name = r.Get<CUresult (*)(char*, int, CUdevice)>("cuDeviceGetName");
  auto total = r.Get<CUresult (*)(size_t*, CUdevice)>("cuDeviceTotalMem");
  auto uuid = r.Get<CUresult (*)(CUuuid*, CUdevice)>("cuDeviceGetUuid");
  if (init == nullptr || count == nullptr || get == nullptr || attr == nullptr) {
    probe.error =
        "cuGetProcAddress did not resolve cuInit/cuDeviceGetCount/cuDeviceGet/"
        "cuDeviceGetAttribute";
    return probe;
  }
  if (version != nullptr) version(&probe.driver_version);
  if (const CUresult rc = init(0); rc != CUDA_SUCCESS) {
    probe.error = fmt::format(
        "cuInit failed with CUresult {} (no usable GPU, or the driver and "
        "kernel module disagree: see nvidia-smi)",
        static_cast<int>(rc));
    return probe;
  }
  int n = 0;
  if (count(&n) != CUDA_SUCCESS) n = 0;
  for (int i = 0; i < n; ++i) {
    CUdevice dev{};
    if (get(&dev, i) != CUDA_SUCCESS) continue;
    DeviceProbe d;
    d.ordinal = i;
    int vmm = 0;
    if (attr(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev) == CUDA_SUCCESS) {
      d.vmm = vmm != 0;
    }
    std::array<char, 256> buf{};
    if (name != nullptr &&
        name(buf.data(), static_cast<int>(buf.size()) - 1, dev) == CUDA_SUCCESS) {
      d.name = buf.data();
    }
    size_t bytes = 0;
    if (total != nullptr && total(&bytes, dev) == CUDA_SUCCESS) d.total_bytes = bytes;
    CUuuid u{};
    if (uuid != nullptr && uuid(&u, dev) == CUDA_SUCCESS) d.uuid = Uuid(u);
    probe.devices.push_back(std::move(d));
  }
  // The driver stays loaded: unloading a CUDA driver at exit is not reliable.
  return probe;
}

}  // namespace kvctl
