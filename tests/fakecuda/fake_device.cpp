// cuInit, devices, primary contexts and the per-thread context stack.
#include <climits>
#include <cstdio>
#include <cstring>

#include "tests/fakecuda/fake_state.h"

using fakecuda::Call;
using fakecuda::Fn;

namespace fakecuda {
namespace {

bool IsOurContext(const State& s, CUcontext ctx) {
  for (const Device& d : s.devices) {
    if (ctx == &d.primary) {
      return true;
    }
  }
  return false;
}

// Distinct per ordinal and stable across runs, so a ledger named by UUID is reproducible.
CUuuid UuidOf(CUdevice dev) {
  CUuuid u{};
  const unsigned char bytes[16] = {0xfa, 0xce, 0xc0, 0xda, 0x4b, 0x56, 0x43, 0x41,
                                   0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  std::memcpy(u.bytes, bytes, sizeof(bytes));
  u.bytes[14] = static_cast<char>((dev >> 8) & 0xff);
  u.bytes[15] = static_cast<char>(dev & 0xff);
  return u;
}

// H100-like values for what engines and PyTorch commonly query; anything else reads 0.
int Attribute(CUdevice_attribute attrib, CUdevice dev) {
  switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
      return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
      return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y:
      return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z:
      return 64;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X:
      return INT_MAX;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
      return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z:
      return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK:
      return 49152;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
      return 232448;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY:
      return 65536;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE:
      return 32;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK:
      return 65536;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE:
      return 1980000;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE:
      return 2619000;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH:
      return 5120;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE:
      return 52428800;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
      return 132;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR:
      return 2048;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT:
      return 3;
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY:
      return 1;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS:
      return 1;
    case CU_DEVICE_ATTRIBUTE_ECC_ENABLED:
      return 1;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
      return 0x18 + dev;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
      return 1;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
      return 9;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
      return 0;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY:
      return 1;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS:
      return 1;
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH:
      return 1;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
      return 1;
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
      return 1;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED:
      return 1;
    default:
      return 0;
  }
}

}  // namespace
}  // namespace fakecuda

extern "C" {

CUresult cuInit(unsigned int Flags) {
  FAKECUDA_ENTER(c, cuInit);
  fakecuda::State& s = c.state();
  if (Flags != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (s.initialized) {
    return CUDA_SUCCESS;
  }
  if (s.config.devices == 0) {
    return CUDA_ERROR_NO_DEVICE;
  }
  for (int i = 0; i < s.config.devices; ++i) {
    fakecuda::Device& d = s.devices.emplace_back();
    d.total = s.config.total_bytes;
    d.primary.device = i;
  }
  s.initialized = true;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  FAKECUDA_ENTER(c, cuDeviceGet);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (device == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (const CUresult r = fakecuda::ValidDevice(c.state(), ordinal); r != CUDA_SUCCESS) {
    return r;
  }
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
  FAKECUDA_ENTER(c, cuDeviceGetCount);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (count == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *count = static_cast<int>(c.state().devices.size());
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  FAKECUDA_ENTER(c, cuDeviceGetName);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (name == nullptr || len <= 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::snprintf(name, static_cast<std::size_t>(len), "FakeCUDA Device %d (host memory)", dev);
  return CUDA_SUCCESS;
}

static CUresult GetUuid(CUuuid* uuid, CUdevice dev) {
  FAKECUDA_ENTER(c, cuDeviceGetUuid);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (uuid == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *uuid = fakecuda::UuidOf(dev);
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev) {
  return GetUuid(uuid, dev);
}
CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice dev) {
  return GetUuid(uuid, dev);
}

static CUresult TotalMem(std::uint64_t* bytes, CUdevice dev) {
  FAKECUDA_ENTER(c, cuDeviceTotalMem);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  *bytes = c.state().devices.at(static_cast<std::size_t>(dev)).total;
  return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  if (bytes == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::uint64_t total = 0;
  const CUresult r = TotalMem(&total, dev);
  if (r == CUDA_SUCCESS) {
    *bytes = total;
  }
  return r;
}

// The pre-3.2 ABI: 32-bit sizes, clamped as the driver does.
CUresult cuDeviceTotalMem(unsigned int* bytes, CUdevice dev) {
  if (bytes == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::uint64_t total = 0;
  const CUresult r = TotalMem(&total, dev);
  if (r == CUDA_SUCCESS) {
    *bytes = total > UINT_MAX ? UINT_MAX : static_cast<unsigned int>(total);
  }
  return r;
}

CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev) {
  FAKECUDA_ENTER(c, cuDeviceGetAttribute);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (pi == nullptr || attrib < 1 || attrib >= CU_DEVICE_ATTRIBUTE_MAX) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *pi = fakecuda::Attribute(attrib, dev);
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  FAKECUDA_ENTER(c, cuDevicePrimaryCtxRetain);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (pctx == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  CUctx_st& ctx = c.state().devices.at(static_cast<std::size_t>(dev)).primary;
  ++ctx.refcount;
  *pctx = &ctx;
  return CUDA_SUCCESS;
}

static CUresult PrimaryCtxRelease(CUdevice dev) {
  FAKECUDA_ENTER(c, cuDevicePrimaryCtxRelease);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  CUctx_st& ctx = c.state().devices.at(static_cast<std::size_t>(dev)).primary;
  if (ctx.refcount <= 0) {
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  --ctx.refcount;
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease(CUdevice dev) {
  return PrimaryCtxRelease(dev);
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  return PrimaryCtxRelease(dev);
}

CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int* flags, int* active) {
  FAKECUDA_ENTER(c, cuDevicePrimaryCtxGetState);
  if (const CUresult r = fakecuda::ValidDevice(c.state(), dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (flags == nullptr || active == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *flags = 0;
  *active = c.state().devices.at(static_cast<std::size_t>(dev)).primary.refcount > 0 ? 1 : 0;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* pctx) {
  FAKECUDA_ENTER(c, cuCtxGetCurrent);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (pctx == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *pctx = fakecuda::CurrentContext();
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
  FAKECUDA_ENTER(c, cuCtxSetCurrent);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  std::vector<CUcontext>& stack = fakecuda::ContextStack();
  if (ctx == nullptr) {  // documented: NULL pops the top, if any
    if (!stack.empty()) {
      stack.pop_back();
    }
    return CUDA_SUCCESS;
  }
  if (!fakecuda::IsOurContext(c.state(), ctx)) {
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  if (stack.empty()) {
    stack.push_back(ctx);
  } else {
    stack.back() = ctx;
  }
  return CUDA_SUCCESS;
}

static CUresult CtxPush(CUcontext ctx) {
  FAKECUDA_ENTER(c, cuCtxPushCurrent);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (ctx == nullptr || !fakecuda::IsOurContext(c.state(), ctx)) {
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  fakecuda::ContextStack().push_back(ctx);
  return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent(CUcontext ctx) {
  return CtxPush(ctx);
}
CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
  return CtxPush(ctx);
}

static CUresult CtxPop(CUcontext* pctx) {
  FAKECUDA_ENTER(c, cuCtxPopCurrent);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  std::vector<CUcontext>& stack = fakecuda::ContextStack();
  if (stack.empty()) {
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  if (pctx != nullptr) {
    *pctx = stack.back();
  }
  stack.pop_back();
  return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent(CUcontext* pctx) {
  return CtxPop(pctx);
}
CUresult cuCtxPopCurrent_v2(CUcontext* pctx) {
  return CtxPop(pctx);
}

CUresult cuCtxGetDevice(CUdevice* device) {
  FAKECUDA_ENTER(c, cuCtxGetDevice);
  int dev = 0;
  if (const CUresult r = fakecuda::RequireContext(c.state(), &dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (device == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *device = dev;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) {
  FAKECUDA_ENTER(c, cuCtxSynchronize);
  int dev = 0;
  return fakecuda::RequireContext(c.state(), &dev);  // host memory: nothing is in flight
}

CUresult cuStreamCreate(CUstream* phStream, unsigned int Flags) {
  FAKECUDA_ENTER(c, cuStreamCreate);
  int dev = 0;
  if (const CUresult r = fakecuda::RequireContext(c.state(), &dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (phStream == nullptr || (Flags & ~static_cast<unsigned int>(CU_STREAM_NON_BLOCKING)) != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  auto stream = std::make_unique<CUstream_st>();
  stream->device = dev;
  CUstream handle = stream.get();
  c.state().streams.emplace(handle, std::move(stream));
  *phStream = handle;
  return CUDA_SUCCESS;
}

static CUresult StreamDestroy(CUstream stream) {
  FAKECUDA_ENTER(c, cuStreamDestroy);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  return c.state().streams.erase(stream) == 1 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuStreamDestroy(CUstream stream) {
  return StreamDestroy(stream);
}
CUresult cuStreamDestroy_v2(CUstream stream) {
  return StreamDestroy(stream);
}

static CUresult StreamSynchronize(CUstream stream) {
  FAKECUDA_ENTER(c, cuStreamSynchronize);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  return fakecuda::ValidStream(c.state(), stream);
}

CUresult cuStreamSynchronize(CUstream stream) {
  return StreamSynchronize(stream);
}
CUresult cuStreamSynchronize_ptsz(CUstream stream) {
  return StreamSynchronize(stream);
}

}  // extern "C"
