// Typed pointers to the driver's functions, resolved with dlsym from the driver in use (see
// fake_driver.h) under the names cuda.h gives them (cuMemAlloc -> "cuMemAlloc_v2"), as an
// application compiled against cuda.h would call them. Lets tests drive the fake (or the real
// driver) without linking libcuda.
#pragma once

#include <cuda.h>

#include <string>

#include "tests/fakecuda/fake_functions.h"

namespace kvcached::testing {

// Every function the fake driver implements (one list: FAKECUDA_FUNCTIONS), each of which the real
// driver exports too.
struct DriverApi {
  // Member names go through cuda.h's macros too (api.cuMemAlloc is api.cuMemAlloc_v2).
#define KVCACHED_TEST_DRIVER_MEMBER(fn) decltype(&::fn) fn = nullptr;
  FAKECUDA_FUNCTIONS(KVCACHED_TEST_DRIVER_MEMBER)
#undef KVCACHED_TEST_DRIVER_MEMBER
  std::string error;  // empty when every function was found
};

// Resolved once per process; check .error before use.
const DriverApi& Driver();

// cuInit(0), then retains device `dev`'s primary context and makes it current on this thread.
// Returns the first failing CUresult.
CUresult InitAndMakeCurrent(int dev = 0);

// "CUDA_ERROR_OUT_OF_MEMORY" for r, through the driver's cuGetErrorName.
std::string ResultName(CUresult r);

}  // namespace kvcached::testing
