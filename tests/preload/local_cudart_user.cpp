// A library linked against libcudart.so.13 that local_app loads with RTLD_LOCAL, as Python loads
// PyTorch's CUDA extension: libcudart then lives outside the global lookup scope.
#include <cuda_runtime_api.h>

extern "C" __attribute__((visibility("default"))) int local_cuda_malloc(void** p, size_t size) {
  return cudaMalloc(p, size);
}

extern "C" __attribute__((visibility("default"))) int local_cuda_free(void* p) {
  return cudaFree(p);
}
