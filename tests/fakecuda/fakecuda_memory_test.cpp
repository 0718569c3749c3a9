// cuMemAlloc-family memory, contexts, copies, pointer attributes and legacy IPC.
#include <cstring>
#include <thread>
#include <vector>

#include "tests/fakecuda/fake_test_fixture.h"

namespace fakecuda_test {
namespace {

using kvcached::testing::Counts;

using FakeMemory = FakeDriverTest;

TEST_F(FakeMemory, AllocIsChargedInPagesAndFreed) {
  size_t free0 = 0;
  size_t total = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free0, &total));
  CUdeviceptr p = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAlloc(&p, 3 * kMiB));
  EXPECT_EQ(p % kPage, 0u);
  EXPECT_EQ(Counts().allocations - before_.allocations, 1u);
  size_t free1 = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free1, &total));
  EXPECT_EQ(free0 - free1, 2 * kPage) << "3 MiB occupies two 2 MiB pages";

  std::vector<unsigned char> in(3 * kMiB, 0x3c);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemcpyHtoD(p, in.data(), in.size()));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemsetD8(p + 10, 0x11, 5));
  std::vector<unsigned char> out(in.size());
  ASSERT_CU(CUDA_SUCCESS, d.cuMemcpyDtoH(out.data(), p, out.size()));
  EXPECT_EQ(out[9], 0x3c);
  EXPECT_EQ(out[10], 0x11);
  EXPECT_EQ(out[14], 0x11);
  EXPECT_EQ(out[15], 0x3c);

  ASSERT_CU(CUDA_SUCCESS, d.cuMemFree(p));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemFree(p)) << "double free";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemAlloc(&p, 0));
}

TEST_F(FakeMemory, AsyncAllocNeedsAValidStream) {
  CUstream s = nullptr;
  ASSERT_CU(CUDA_SUCCESS, d.cuStreamCreate(&s, 0));
  CUdeviceptr p = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAllocAsync(&p, kPage, s));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemFreeAsync(p, s));
  ASSERT_CU(CUDA_SUCCESS, d.cuStreamDestroy(s));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, d.cuMemAllocAsync(&p, kPage, s)) << "destroyed stream";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAllocAsync(&p, kPage, CU_STREAM_PER_THREAD));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemFreeAsync(p, nullptr));
}

TEST_F(FakeMemory, ContextIsPerThread) {
  CUcontext mine = nullptr;
  ASSERT_CU(CUDA_SUCCESS, d.cuCtxGetCurrent(&mine));
  ASSERT_NE(mine, nullptr);
  CUresult alloc_elsewhere = CUDA_SUCCESS;
  CUcontext seen = mine;
  std::thread([&] {
    d.cuCtxGetCurrent(&seen);
    CUdeviceptr p = 0;
    alloc_elsewhere = d.cuMemAlloc(&p, kPage);
  }).join();
  EXPECT_EQ(seen, nullptr);
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, alloc_elsewhere);

  // Push/pop stack: pop returns to what was current.
  ASSERT_CU(CUDA_SUCCESS, d.cuCtxPushCurrent(mine));
  CUcontext popped = nullptr;
  ASSERT_CU(CUDA_SUCCESS, d.cuCtxPopCurrent(&popped));
  EXPECT_EQ(popped, mine);
  CUdevice dev = -1;
  ASSERT_CU(CUDA_SUCCESS, d.cuCtxGetDevice(&dev));
  EXPECT_EQ(dev, 0);
  ASSERT_CU(CUDA_SUCCESS, d.cuCtxSynchronize());
}

TEST_F(FakeMemory, PointerAttributesAndIpc) {
  CUdeviceptr p = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAlloc(&p, kPage));
  int ordinal = -1;
  ASSERT_CU(CUDA_SUCCESS,
            d.cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p + 100));
  EXPECT_EQ(ordinal, 0);
  CUdeviceptr start = 0;
  size_t size = 0;
  ASSERT_CU(CUDA_SUCCESS,
            d.cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, p + 100));
  ASSERT_CU(CUDA_SUCCESS, d.cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, p));
  EXPECT_EQ(start, p);
  EXPECT_EQ(size, kPage);
  CUipcMemHandle ipc{};
  EXPECT_CU(CUDA_SUCCESS, d.cuIpcGetMemHandle(&ipc, p));

  // VMM memory: legacy IPC is refused, as by the real driver.
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  BackedPage(&va, &h);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuIpcGetMemHandle(&ipc, va));
  ASSERT_CU(CUDA_SUCCESS,
            d.cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, va + 7));
  EXPECT_EQ(start, va);
  FreeBackedPage(va, h);

  int unused = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            d.cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                    reinterpret_cast<CUdeviceptr>(&unused)));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemFree(p));
}

TEST_F(FakeMemory, DeviceQueries) {
  int count = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetCount(&count));
  EXPECT_GE(count, 1);
  CUdevice dev = -1;
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGet(&dev, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, d.cuDeviceGet(&dev, count));
  int value = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetAttribute(
                              &value, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0));
  EXPECT_EQ(value, 1);
  ASSERT_CU(CUDA_SUCCESS,
            d.cuDeviceGetAttribute(&value, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0));
  EXPECT_EQ(value, 9);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuDeviceGetAttribute(&value, CU_DEVICE_ATTRIBUTE_MAX, 0));
  char name[64] = {};
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetName(name, sizeof(name), 0));
  EXPECT_NE(std::string(name).find("FakeCUDA"), std::string::npos);
  CUuuid a{};
  CUuuid b{};
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetUuid(&a, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetUuid(&b, 0));
  EXPECT_EQ(std::memcmp(a.bytes, b.bytes, sizeof(a.bytes)), 0) << "stable per device";
  int version = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuDriverGetVersion(&version));
  EXPECT_EQ(version, 13000);
}

}  // namespace
}  // namespace fakecuda_test
