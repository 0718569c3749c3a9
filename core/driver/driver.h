// Driver: the dlopen'ed CUDA driver library and its resolved entry points. The core never links
// libcuda: the library is found at run time (KVCACHED_CUDA_DRIVER overrides the path, which is how
// tests use the fake driver).
#pragma once

#include <cuda.h>

#include <memory>
#include <string>

#include "core/common/status.h"
#include "core/driver/api.h"

namespace kvcached::driver {

// dlsym-shaped resolver (the shim passes the real dlsym because it interposes dlsym itself).
using SymbolLookup = void* (*)(void* handle, const char* name);

class Driver {
  struct Key {
    explicit Key() = default;
  };

 public:
  // dlopens `path`, resolves cuGetProcAddress_v2 through `lookup` (null = ::dlsym), every entry
  // point of Api through it, and calls cuInit(0).
  static Result<std::unique_ptr<Driver>> Load(const std::string& path, SymbolLookup lookup);

  explicit Driver(Key /*key*/) {}  // for make_unique inside Load only (Key is private)
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;
  Driver(Driver&&) = delete;
  Driver& operator=(Driver&&) = delete;
  ~Driver();

  [[nodiscard]] const Api& api() const { return api_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] int version() const { return version_; }

  // OK for CUDA_SUCCESS; otherwise "cuMemMap failed: CUDA_ERROR_INVALID_VALUE (invalid
  // argument)" with Errc::kNoMemory for CUDA_ERROR_OUT_OF_MEMORY and Errc::kDriver for the rest.
  // Each distinct (call, error) pair is logged once.
  [[nodiscard]] Status Check(CUresult result, const char* call) const;
  [[nodiscard]] std::string ErrorName(CUresult result) const;

 private:
  void* handle_ = nullptr;
  std::string path_;
  int version_ = 0;
  Api api_;
};

}  // namespace kvcached::driver
