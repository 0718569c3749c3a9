#include "core/driver/driver.h"

#include <dlfcn.h>

#include <string>

#include "core/log/log.h"

namespace kvcached::driver {
namespace {

// Every entry point is resolved at the CUDA 12.0 ABI: the signatures of all functions the core
// uses are unchanged since 12.0, so any driver from 12.0 on (including CUDA 13) serves us, and a
// newer driver never hands us a newer, incompatible variant of a function.
constexpr int kAbiVersion = 12000;

using GetProcAddressFn = CUresult (*)(const char*, void**, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult*);

std::string InstallHint() {
  return "install the NVIDIA driver, or set KVCACHED_CUDA_DRIVER to the full path of libcuda.so.1";
}

}  // namespace

Result<std::unique_ptr<Driver>> Driver::Load(const std::string& path, SymbolLookup lookup) {
  if (lookup == nullptr) lookup = &::dlsym;
  auto d = std::make_unique<Driver>(Key{});
  d->path_ = path;
  // RTLD_LOCAL: the driver's symbols must not become visible to later lookups through us.
  d->handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (d->handle_ == nullptr) {
    const char* why = ::dlerror();
    return Status(Errc::kDriver, "cannot load the CUDA driver '" + path +
                                     "': " + (why != nullptr ? why : "unknown error") + "; " +
                                     InstallHint());
  }
  auto gpa = reinterpret_cast<GetProcAddressFn>(lookup(d->handle_, "cuGetProcAddress_v2"));
  if (gpa == nullptr) {
    return Status(Errc::kUnsupported, "the CUDA driver '" + path +
                                          "' has no cuGetProcAddress_v2: it is older than CUDA "
                                          "12.0; upgrade the NVIDIA driver");
  }

  std::string missing;
  auto resolve = [&](const char* name, void** slot, bool required) {
    CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SUCCESS;
    CUresult r = gpa(name, slot, kAbiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &found);
    if (r != CUDA_SUCCESS || found != CU_GET_PROC_ADDRESS_SUCCESS) *slot = nullptr;
    if (*slot == nullptr && required) missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
#define KVC_RESOLVE_REQUIRED(name) resolve(#name, reinterpret_cast<void**>(&d->api_.name), true);
#define KVC_RESOLVE_OPTIONAL(name) resolve(#name, reinterpret_cast<void**>(&d->api_.name), false);
  KVC_DRIVER_REQUIRED_FNS(KVC_RESOLVE_REQUIRED)
  KVC_DRIVER_OPTIONAL_FNS(KVC_RESOLVE_OPTIONAL)
#undef KVC_RESOLVE_REQUIRED
#undef KVC_RESOLVE_OPTIONAL
  if (!missing.empty()) {
    return Status(Errc::kUnsupported, "the CUDA driver '" + path + "' lacks " + missing +
                                          " (at the CUDA 12.0 ABI); upgrade the NVIDIA driver");
  }

  KVC_RETURN_IF_ERROR(d->Check(d->api_.cuInit(0), "cuInit"));
  KVC_RETURN_IF_ERROR(d->Check(d->api_.cuDriverGetVersion(&d->version_), "cuDriverGetVersion"));
  return d;
}

// The library is never dlclose'd: the engine uses the same driver, and unloading a driver that
// may own threads is unsafe; dlopen is reference counted, so loading it again is cheap.
Driver::~Driver() = default;

std::string Driver::ErrorName(CUresult result) const {
  const char* name = nullptr;
  if (api_.cuGetErrorName != nullptr && api_.cuGetErrorName(result, &name) == CUDA_SUCCESS &&
      name != nullptr) {
    return name;
  }
  return "CUresult " + std::to_string(static_cast<int>(result));
}

Status Driver::Check(CUresult result, const char* call) const {
  if (result == CUDA_SUCCESS) return Status::Ok();
  std::string name = ErrorName(result);
  const char* text = nullptr;
  std::string message = std::string(call) + " failed: " + name;
  if (api_.cuGetErrorString != nullptr && api_.cuGetErrorString(result, &text) == CUDA_SUCCESS &&
      text != nullptr) {
    message += " (" + std::string(text) + ")";
  }
  log::ErrorOnce(std::string(call) + ":" + name, message);
  Errc code = result == CUDA_ERROR_OUT_OF_MEMORY ? Errc::kNoMemory : Errc::kDriver;
  return {code, message, static_cast<int>(result)};
}

}  // namespace kvcached::driver
