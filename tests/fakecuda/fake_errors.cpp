#include "tests/fakecuda/fake_errors.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "tests/fakecuda/no_destructor.h"

namespace fakecuda {
namespace {

struct Entry {
  CUresult value;
  const char* name;
  std::string text;
};

// The driver's own wording for the results tests and users meet most; the rest get their
// name in words ("CUDA_ERROR_ALREADY_MAPPED" -> "already mapped").
const char* KnownText(CUresult r) {
  switch (r) {
    case CUDA_SUCCESS:
      return "no error";
    case CUDA_ERROR_INVALID_VALUE:
      return "invalid argument";
    case CUDA_ERROR_OUT_OF_MEMORY:
      return "out of memory";
    case CUDA_ERROR_NOT_INITIALIZED:
      return "initialization error";
    case CUDA_ERROR_DEINITIALIZED:
      return "driver shutting down";
    case CUDA_ERROR_NO_DEVICE:
      return "no CUDA-capable device is detected";
    case CUDA_ERROR_INVALID_DEVICE:
      return "invalid device ordinal";
    case CUDA_ERROR_INVALID_CONTEXT:
      return "invalid device context";
    case CUDA_ERROR_INVALID_HANDLE:
      return "invalid resource handle";
    case CUDA_ERROR_NOT_FOUND:
      return "named symbol not found";
    case CUDA_ERROR_NOT_SUPPORTED:
      return "operation not supported";
    case CUDA_ERROR_NOT_PERMITTED:
      return "operation not permitted";
    case CUDA_ERROR_ILLEGAL_ADDRESS:
      return "an illegal memory access was encountered";
    case CUDA_ERROR_LAUNCH_FAILED:
      return "unspecified launch failure";
    case CUDA_ERROR_STUB_LIBRARY:
      return "CUDA driver is a stub library";
    case CUDA_ERROR_UNKNOWN:
      return "unknown error";
    default:
      return nullptr;
  }
}

std::string InWords(std::string_view name) {
  for (std::string_view prefix : {"CUDA_ERROR_", "CUDA_"}) {
    if (name.substr(0, prefix.size()) == prefix) {
      name.remove_prefix(prefix.size());
      break;
    }
  }
  std::string text(name);
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) {
    return c == '_' ? ' ' : static_cast<char>(std::tolower(c));
  });
  return text;
}

std::vector<Entry> BuildTable() {
  std::vector<Entry> table;
  // cu_result_list.inc is generated at configure time from the toolkit's cuda.h.
#define FAKECUDA_RESULT(name) table.push_back({name, #name, {}});
#include "cu_result_list.inc"
#undef FAKECUDA_RESULT
  for (Entry& e : table) {
    const char* known = KnownText(e.value);
    e.text = known != nullptr ? known : InWords(e.name);
  }
  return table;
}

const std::vector<Entry>& Table() {
  static NoDestructor<std::vector<Entry>> table(BuildTable());
  return *table;
}

const Entry* Find(CUresult r) {
  for (const Entry& e : Table()) {
    if (e.value == r) {
      return &e;
    }
  }
  return nullptr;
}

}  // namespace

const char* ResultName(CUresult r) {
  const Entry* e = Find(r);
  return e != nullptr ? e->name : nullptr;
}

const char* ResultString(CUresult r) {
  const Entry* e = Find(r);
  return e != nullptr ? e->text.c_str() : nullptr;
}

std::optional<CUresult> ResultFromName(std::string_view name) {
  for (const Entry& e : Table()) {
    if (name == e.name) {
      return e.value;
    }
  }
  return std::nullopt;
}

}  // namespace fakecuda
