// cudaError_t names and descriptions, and the CUresult -> cudaError_t mapping.
#pragma once

#include <cuda.h>
#include <driver_types.h>

namespace fakecudart {

// Since CUDA 10.1 the runtime and driver share the numbers of the errors they have in common,
// so a driver result maps to the runtime error of the same value; one the runtime lacks
// becomes cudaErrorUnknown.
cudaError_t FromDriver(CUresult r);

const char* ErrorName(cudaError_t e);    // nullptr if not a cudaError_t
const char* ErrorString(cudaError_t e);  // nullptr if not a cudaError_t

}  // namespace fakecudart
