// cuGetProcAddress resolution, error names, call counting and fault injection.
#include <dlfcn.h>

#include <string>

#include "tests/fakecuda/fake_test_fixture.h"

namespace fakecuda_test {
namespace {

using kvcached::testing::CallCount;
using kvcached::testing::ClearFaults;
using kvcached::testing::Counts;
using kvcached::testing::DriverHandle;
using kvcached::testing::ScopedFaults;
using kvcached::testing::SetFaults;

using FakeEntry = FakeDriverTest;

void* Exported(const char* name) {
  return ::dlsym(DriverHandle(), name);
}

struct Proc {
  CUresult result;
  void* fn;
  CUdriverProcAddressQueryResult status;
};

Proc Get(const kvcached::testing::DriverApi& d, const char* symbol, int version, cuuint64_t flags) {
  Proc p{CUDA_ERROR_UNKNOWN, reinterpret_cast<void*>(1), CU_GET_PROC_ADDRESS_SUCCESS};
  p.result = d.cuGetProcAddress(symbol, &p.fn, version, flags, &p.status);
  return p;
}

TEST_F(FakeEntry, ProcAddressPicksTheVersionedSymbol) {
  const Proc alloc = Get(d, "cuMemAlloc", 13000, CU_GET_PROC_ADDRESS_DEFAULT);
  EXPECT_CU(CUDA_SUCCESS, alloc.result);
  EXPECT_EQ(alloc.status, CU_GET_PROC_ADDRESS_SUCCESS);
  EXPECT_EQ(alloc.fn, Exported("cuMemAlloc_v2"));
  EXPECT_NE(alloc.fn, nullptr);

  EXPECT_EQ(Get(d, "cuMemGetInfo", 13000, 0).fn, Exported("cuMemGetInfo_v2"));
  EXPECT_EQ(Get(d, "cuMemGetInfo", 2000, 0).fn, Exported("cuMemGetInfo"));
  EXPECT_EQ(Get(d, "cuDeviceGetUuid", 12000, 0).fn, Exported("cuDeviceGetUuid_v2"));
  EXPECT_EQ(Get(d, "cuDeviceGetUuid", 11000, 0).fn, Exported("cuDeviceGetUuid"));
  EXPECT_EQ(Get(d, "cuGetProcAddress", 12000, 0).fn, Exported("cuGetProcAddress_v2"));
  EXPECT_EQ(Get(d, "cuGetProcAddress", 11030, 0).fn, Exported("cuGetProcAddress"));
  EXPECT_EQ(Get(d, "cuMemCreate", 12000, 0).fn, Exported("cuMemCreate"));
  EXPECT_EQ(Get(d, "cuCtxPushCurrent", 12000, 0).fn, Exported("cuCtxPushCurrent_v2"));
}

TEST_F(FakeEntry, ProcAddressHonoursPerThreadDefaultStream) {
  const cuuint64_t pt = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  const cuuint64_t legacy = CU_GET_PROC_ADDRESS_LEGACY_STREAM;
  EXPECT_EQ(Get(d, "cuMemcpy", 13000, pt).fn, Exported("cuMemcpy_ptds"));
  EXPECT_EQ(Get(d, "cuMemcpy", 13000, legacy).fn, Exported("cuMemcpy"));
  EXPECT_EQ(Get(d, "cuMemAllocAsync", 13000, pt).fn, Exported("cuMemAllocAsync_ptsz"));
  EXPECT_EQ(Get(d, "cuMemAllocAsync", 13000, legacy).fn, Exported("cuMemAllocAsync"));
  EXPECT_EQ(Get(d, "cuMemsetD8", 13000, pt).fn, Exported("cuMemsetD8_v2_ptds"));
  // No per-thread form: the legacy one is returned.
  EXPECT_EQ(Get(d, "cuMemAlloc", 13000, pt).fn, Exported("cuMemAlloc_v2"));
}

TEST_F(FakeEntry, ProcAddressReportsWhatIsMissing) {
  const Proc unknown = Get(d, "cuNoSuchFunction", 13000, 0);
  EXPECT_CU(CUDA_ERROR_NOT_FOUND, unknown.result);
  EXPECT_EQ(unknown.status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  EXPECT_EQ(unknown.fn, nullptr);
  EXPECT_CU(CUDA_ERROR_NOT_FOUND, Get(d, "cuMemAlloc_v2", 13000, 0).result)
      << "callers ask by base name";
  const Proc old = Get(d, "cuMemAlloc", 3000, 0);
  EXPECT_CU(CUDA_ERROR_NOT_FOUND, old.result);
  EXPECT_EQ(old.status, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, Get(d, "cuMemAlloc", 13010, 0).result)
      << "a version newer than the driver";
}

TEST_F(FakeEntry, ErrorNamesAreTheDriversNames) {
  const char* s = nullptr;
  ASSERT_CU(CUDA_SUCCESS, d.cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, &s));
  EXPECT_STREQ(s, "CUDA_ERROR_OUT_OF_MEMORY");
  ASSERT_CU(CUDA_SUCCESS, d.cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &s));
  EXPECT_STREQ(s, "out of memory");
  ASSERT_CU(CUDA_SUCCESS, d.cuGetErrorName(CUDA_ERROR_NOT_MAPPED, &s));
  EXPECT_STREQ(s, "CUDA_ERROR_NOT_MAPPED");
  ASSERT_CU(CUDA_SUCCESS, d.cuGetErrorString(CUDA_ERROR_NOT_MAPPED, &s));
  EXPECT_STREQ(s, "not mapped");
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuGetErrorName(static_cast<CUresult>(12345), &s));
  EXPECT_EQ(s, nullptr);
}

TEST_F(FakeEntry, CallsAreCountedByBaseName) {
  const uint64_t before = CallCount("cuMemAlloc");
  CUdeviceptr p = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAlloc(&p, kPage));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemAlloc(&p, 0));
  EXPECT_EQ(CallCount("cuMemAlloc") - before, 2u) << "failed calls count too";
  EXPECT_EQ(CallCount("cuMemAlloc_v2"), CallCount("cuMemAlloc"));
  EXPECT_EQ(CallCount("cuNoSuchFunction"), 0u);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemFree(p));
}

TEST_F(FakeEntry, FaultOnNthCallOnly) {
  CUmemAllocationProp prop = DeviceProp();
  CUmemGenericAllocationHandle h[3] = {};
  {
    ScopedFaults faults("cuMemCreate:2");
    ASSERT_TRUE(faults.ok());
    EXPECT_CU(CUDA_SUCCESS, d.cuMemCreate(&h[0], kPage, &prop, 0));
    EXPECT_CU(CUDA_ERROR_UNKNOWN, d.cuMemCreate(&h[1], kPage, &prop, 0));
    EXPECT_CU(CUDA_SUCCESS, d.cuMemCreate(&h[2], kPage, &prop, 0));
  }
  EXPECT_EQ(Counts().handles - before_.handles, 2u) << "a failed call must create nothing";
  EXPECT_CU(CUDA_SUCCESS, d.cuMemRelease(h[0]));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemRelease(h[2]));
}

TEST_F(FakeEntry, FaultOnNthAndLaterWithChosenError) {
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, 4 * kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
  // Counting starts when the spec is armed: the calls above do not count.
  ASSERT_TRUE(SetFaults("cuMemMap:2+:CUDA_ERROR_OUT_OF_MEMORY, cuMemAlloc_v2:1"));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemMap(va, kPage, 0, h, 0));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, d.cuMemMap(va + kPage, kPage, 0, h, 0));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, d.cuMemMap(va + 2 * kPage, kPage, 0, h, 0));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, d.cuMemMap(va + 3 * kPage, kPage, 0, h, 0));
  CUdeviceptr p = 0;
  EXPECT_CU(CUDA_ERROR_UNKNOWN, d.cuMemAlloc(&p, kPage)) << "versioned names name the base";
  EXPECT_EQ(Counts().mappings - before_.mappings, 1u);
  ClearFaults();
  EXPECT_CU(CUDA_SUCCESS, d.cuMemMap(va + kPage, kPage, 0, h, 0));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, kPage));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemUnmap(va + kPage, kPage));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, 4 * kPage));
}

TEST_F(FakeEntry, BadFaultSpecsAreRefusedAndKeepTheArmedOnes) {
  ASSERT_TRUE(SetFaults("cuMemCreate:1:CUDA_ERROR_NOT_PERMITTED"));
  for (const char* bad :
       {"cuMemMpa:1", "cuMemMap:0", "cuMemMap", "cuMemMap:x", "cuMemMap:1:NOT_AN_ERROR",
        "cuMemMap:1:CUDA_SUCCESS", "cuMemMap:1,", "cuMemMap:1:CUDA_ERROR_UNKNOWN:extra"}) {
    EXPECT_FALSE(SetFaults(bad)) << bad;
  }
  CUmemAllocationProp prop = DeviceProp();
  CUmemGenericAllocationHandle h = 0;
  EXPECT_CU(CUDA_ERROR_NOT_PERMITTED, d.cuMemCreate(&h, kPage, &prop, 0));
  ClearFaults();
  EXPECT_TRUE(SetFaults(""));  // empty: no faults
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
}

}  // namespace
}  // namespace fakecuda_test
