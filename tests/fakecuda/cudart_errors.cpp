#include "tests/fakecuda/cudart_errors.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "tests/fakecuda/no_destructor.h"

namespace fakecudart {
namespace {

struct Entry {
  cudaError_t value;
  const char* name;
  std::string text;
};

// The runtime's own wording for the errors met most; the rest get their name in words.
const char* KnownText(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInitializationError:
      return "initialization error";
    case cudaErrorCudartUnloading:
      return "driver shutting down";
    case cudaErrorInsufficientDriver:
      return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorDeviceUninitialized:
      return "invalid device context";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorSymbolNotFound:
      return "named symbol not found";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorNotSupported:
      return "operation not supported";
    case cudaErrorNotPermitted:
      return "operation not permitted";
    case cudaErrorUnknown:
      return "unknown error";
    default:
      return nullptr;
  }
}

std::string InWords(std::string_view name) {
  if (name.substr(0, 9) == "cudaError") {
    name.remove_prefix(9);
  }
  std::string text;
  for (char c : name) {
    if (std::isupper(static_cast<unsigned char>(c)) != 0 && !text.empty()) {
      text.push_back(' ');
    }
    text.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return text;
}

std::vector<Entry> BuildTable() {
  std::vector<Entry> table;
  // cuda_error_list.inc is generated at configure time from the toolkit's driver_types.h.
#define FAKECUDART_ERROR(name) table.push_back({name, #name, {}});
#include "cuda_error_list.inc"
#undef FAKECUDART_ERROR
  for (Entry& e : table) {
    const char* known = KnownText(e.value);
    e.text = known != nullptr ? known : InWords(e.name);
  }
  return table;
}

const Entry* Find(int value) {
  static fakecuda::NoDestructor<std::vector<Entry>> table(BuildTable());
  for (const Entry& e : *table) {
    if (static_cast<int>(e.value) == value) {
      return &e;
    }
  }
  return nullptr;
}

}  // namespace

cudaError_t FromDriver(CUresult r) {
  const Entry* e = Find(static_cast<int>(r));
  return e != nullptr ? e->value : cudaErrorUnknown;
}

const char* ErrorName(cudaError_t e) {
  const Entry* entry = Find(static_cast<int>(e));
  return entry != nullptr ? entry->name : nullptr;
}

const char* ErrorString(cudaError_t e) {
  const Entry* entry = Find(static_cast<int>(e));
  return entry != nullptr ? entry->text.c_str() : nullptr;
}

}  // namespace fakecudart
