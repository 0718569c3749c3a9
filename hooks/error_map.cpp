#include "hooks/error_map.h"

#include <string>

#include "core/log/log.h"

namespace kvcached::hooks {

cudaError_t ToCudaError(const Status& status, Op op) {
  switch (status.code()) {
    case Errc::kOk:
      return cudaSuccess;
    case Errc::kNoMemory:
      return cudaErrorMemoryAllocation;
    case Errc::kInvalid:
    case Errc::kNotFound:
    case Errc::kState:
      return cudaErrorInvalidValue;
    case Errc::kUnsupported:
      return cudaErrorNotSupported;
    case Errc::kDisabled:
      return cudaErrorInitializationError;
    case Errc::kDriver:
      // An allocation the shim could not make is reported the way the real allocator reports
      // one it cannot make, so that the engine's out-of-memory handling applies.
      return op == Op::kAlloc ? cudaErrorMemoryAllocation : cudaErrorUnknown;
  }
  return cudaErrorUnknown;
}

CUresult ToCuResult(const Status& status, Op op) {
  switch (status.code()) {
    case Errc::kOk:
      return CUDA_SUCCESS;
    case Errc::kNoMemory:
      return CUDA_ERROR_OUT_OF_MEMORY;
    case Errc::kInvalid:
    case Errc::kNotFound:
    case Errc::kState:
      return CUDA_ERROR_INVALID_VALUE;
    case Errc::kUnsupported:
      return CUDA_ERROR_NOT_SUPPORTED;
    case Errc::kDisabled:
      return CUDA_ERROR_NOT_INITIALIZED;
    case Errc::kDriver:
      if (status.driver_code() != 0) return static_cast<CUresult>(status.driver_code());
      return op == Op::kAlloc ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_UNKNOWN;
  }
  return CUDA_ERROR_UNKNOWN;
}

void LogFailureOnce(const char* call, const Status& status) {
  log::ErrorOnce(std::string(call) + ":" + std::to_string(static_cast<int>(status.code())),
                 std::string(call) + ": " + status.message());
}

}  // namespace kvcached::hooks
