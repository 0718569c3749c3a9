// CUresult names and descriptions, as cuGetErrorName / cuGetErrorString report them, and the
// reverse lookup that FAKECUDA_FAIL uses.
#pragma once

#include <cuda.h>

#include <optional>
#include <string_view>

namespace fakecuda {

// nullptr for a value that is not a CUresult.
const char* ResultName(CUresult r);
const char* ResultString(CUresult r);
std::optional<CUresult> ResultFromName(std::string_view name);

}  // namespace fakecuda
