// Memset and memcpy: device pointers are host addresses, so these are plain memset/memcpy. An
// address without access faults (SIGSEGV) the way a kernel touching it faults the GPU.
#include <cstring>

#include "tests/fakecuda/fake_state.h"

namespace fakecuda {
namespace {

// The driver checks for a current context before it copies anything.
CUresult Ready(const State& s) {
  int dev = 0;
  return RequireContext(s, &dev);
}

void* Ptr(CUdeviceptr p) {
  return reinterpret_cast<void*>(p);
}

}  // namespace
}  // namespace fakecuda

using fakecuda::Ptr;

extern "C" {

static CUresult MemsetD8(CUdeviceptr dst, unsigned char uc, size_t n) {
  FAKECUDA_ENTER(c, cuMemsetD8);
  if (const CUresult r = fakecuda::Ready(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  std::memset(Ptr(dst), uc, n);
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8_v2(CUdeviceptr dstDevice, unsigned char uc, size_t N) {
  return MemsetD8(dstDevice, uc, N);
}
CUresult cuMemsetD8_v2_ptds(CUdeviceptr dstDevice, unsigned char uc, size_t N) {
  return MemsetD8(dstDevice, uc, N);
}

static CUresult MemsetD32(CUdeviceptr dst, unsigned int ui, size_t n) {
  FAKECUDA_ENTER(c, cuMemsetD32);
  if (const CUresult r = fakecuda::Ready(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (dst % 4 != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  auto* words = static_cast<unsigned int*>(Ptr(dst));
  for (size_t i = 0; i < n; ++i) {
    words[i] = ui;
  }
  return CUDA_SUCCESS;
}

CUresult cuMemsetD32_v2(CUdeviceptr dstDevice, unsigned int ui, size_t N) {
  return MemsetD32(dstDevice, ui, N);
}
CUresult cuMemsetD32_v2_ptds(CUdeviceptr dstDevice, unsigned int ui, size_t N) {
  return MemsetD32(dstDevice, ui, N);
}

static CUresult MemsetD8Async(CUdeviceptr dst, unsigned char uc, size_t n, CUstream stream) {
  FAKECUDA_ENTER(c, cuMemsetD8Async);
  if (const CUresult r = fakecuda::Ready(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (const CUresult r = fakecuda::ValidStream(c.state(), stream); r != CUDA_SUCCESS) {
    return r;
  }
  std::memset(Ptr(dst), uc, n);
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream) {
  return MemsetD8Async(dstDevice, uc, N, hStream);
}
CUresult cuMemsetD8Async_ptsz(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream) {
  return MemsetD8Async(dstDevice, uc, N, hStream);
}

// One body for every copy direction; `fn` is what the call counts as.
static CUresult Copy(fakecuda::Fn fn, void* dst, const void* src, size_t n, CUstream stream) {
  fakecuda::Call c(fn);
  if (c.fault() != CUDA_SUCCESS) {
    return c.fault();
  }
  if (const CUresult r = fakecuda::Ready(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (const CUresult r = fakecuda::ValidStream(c.state(), stream); r != CUDA_SUCCESS) {
    return r;
  }
  std::memmove(dst, src, n);
  return CUDA_SUCCESS;
}

CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpy, Ptr(dst), Ptr(src), ByteCount, nullptr);
}
CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpy, Ptr(dst), Ptr(src), ByteCount, nullptr);
}
CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream) {
  return Copy(fakecuda::Fn::k_cuMemcpyAsync, Ptr(dst), Ptr(src), ByteCount, hStream);
}
CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream) {
  return Copy(fakecuda::Fn::k_cuMemcpyAsync, Ptr(dst), Ptr(src), ByteCount, hStream);
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpyHtoD, Ptr(dstDevice), srcHost, ByteCount, nullptr);
}
CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpyHtoD, Ptr(dstDevice), srcHost, ByteCount, nullptr);
}
CUresult cuMemcpyDtoH_v2(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpyDtoH, dstHost, Ptr(srcDevice), ByteCount, nullptr);
}
CUresult cuMemcpyDtoH_v2_ptds(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpyDtoH, dstHost, Ptr(srcDevice), ByteCount, nullptr);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpyDtoD, Ptr(dstDevice), Ptr(srcDevice), ByteCount, nullptr);
}
CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount) {
  return Copy(fakecuda::Fn::k_cuMemcpyDtoD, Ptr(dstDevice), Ptr(srcDevice), ByteCount, nullptr);
}

}  // extern "C"
