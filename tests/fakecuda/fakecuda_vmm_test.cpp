// The fake's virtual memory management semantics, which the core's regions rely on.
#include <cstring>
#include <thread>
#include <vector>

#include "tests/fakecuda/fake_test_fixture.h"
#include "tests/support/child_process.h"

namespace fakecuda_test {
namespace {

using kvcached::testing::Counts;
using kvcached::testing::DiesOfSegv;
using kvcached::testing::FakeCounts;
using kvcached::testing::RunInFork;

using FakeVmm = FakeDriverTest;

TEST_F(FakeVmm, RoundTripKeepsBytesAndCleansUp) {
  size_t gran = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS,
            d.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  EXPECT_EQ(gran, kPage);
  ASSERT_CU(CUDA_SUCCESS,
            d.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
  EXPECT_EQ(gran, kPage);

  CUdeviceptr va = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, 4 * kPage, 0, 0, 0));
  EXPECT_EQ(va % kPage, 0u);
  CUmemGenericAllocationHandle h = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, 2 * kPage, &prop, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va + kPage, 2 * kPage, 0, h, 0));
  const CUmemAccessDesc rw = Access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemSetAccess(va + kPage, 2 * kPage, &rw, 1));

  std::vector<unsigned char> pattern(2 * kPage);
  for (size_t i = 0; i < pattern.size(); ++i) {
    pattern[i] = static_cast<unsigned char>(i * 131 + 7);
  }
  std::memcpy(Host(va + kPage), pattern.data(), pattern.size());
  std::vector<unsigned char> back(pattern.size());
  ASSERT_CU(CUDA_SUCCESS, d.cuMemcpyDtoH(back.data(), va + kPage, back.size()));
  EXPECT_EQ(back, pattern);

  unsigned long long flags = 0;
  CUmemLocation loc{CU_MEM_LOCATION_TYPE_DEVICE, 0};
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetAccess(&flags, &loc, va + kPage + 123));
  EXPECT_EQ(flags, static_cast<unsigned long long>(CU_MEM_ACCESS_FLAGS_PROT_READWRITE));

  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va + kPage, 2 * kPage));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, 4 * kPage));
}

TEST_F(FakeVmm, ReservedButUnbackedMemoryFaults) {
  CUdeviceptr va = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, kPage, 0, 0, 0));
  EXPECT_TRUE(DiesOfSegv([&] { Host(va)[100] = 1; }));
  EXPECT_TRUE(DiesOfSegv([&] { _exit(Host(va)[100]); }));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, kPage));
}

TEST_F(FakeVmm, MappingStartsWithoutAccessAndReadOnlyRefusesWrites) {
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va, kPage, 0, h, 0));
  EXPECT_TRUE(DiesOfSegv([&] { _exit(Host(va)[0]); })) << "mapped memory is readable before "
                                                          "cuMemSetAccess";
  const CUmemAccessDesc ro = Access(CU_MEM_ACCESS_FLAGS_PROT_READ);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemSetAccess(va, kPage, &ro, 1));
  EXPECT_TRUE(RunInFork([&] { _exit(Host(va)[0]); }).ExitedWith(0));  // reads zeros
  EXPECT_TRUE(DiesOfSegv([&] { Host(va)[0] = 1; }));
  FreeBackedPage(va, h);
}

TEST_F(FakeVmm, AccessIsLostOnUnmapAndRemapButBytesStay) {
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  BackedPage(&va, &h);
  std::memset(Host(va), 0x5a, kPage);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, kPage));
  EXPECT_TRUE(DiesOfSegv([&] { Host(va)[0] = 1; })) << "unmapped VA must fault";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va, kPage, 0, h, 0));

  unsigned long long flags = 99;
  CUmemLocation loc{CU_MEM_LOCATION_TYPE_DEVICE, 0};
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetAccess(&flags, &loc, va));
  EXPECT_EQ(flags, static_cast<unsigned long long>(CU_MEM_ACCESS_FLAGS_PROT_NONE));
  EXPECT_TRUE(DiesOfSegv([&] { Host(va)[0] = 1; })) << "a remap must need cuMemSetAccess again";

  const CUmemAccessDesc rw = Access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemSetAccess(va, kPage, &rw, 1));
  EXPECT_EQ(Host(va)[0], 0x5a);
  EXPECT_EQ(Host(va)[kPage - 1], 0x5a);
  FreeBackedPage(va, h);
}

TEST_F(FakeVmm, OneHandleMappedTwiceAliasesTheSameBytes) {
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, 2 * kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va, kPage, 0, h, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va + kPage, kPage, 0, h, 0));
  const CUmemAccessDesc rw = Access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemSetAccess(va, 2 * kPage, &rw, 1));  // spans both mappings
  Host(va)[77] = 0xab;
  EXPECT_EQ(Host(va + kPage)[77], 0xab);
  EXPECT_EQ(Counts().physical_bytes - before_.physical_bytes, kPage);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, 2 * kPage));  // two whole mappings in one call
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, 2 * kPage));
}

TEST_F(FakeVmm, UnmapMustCoverWholeMappings) {
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle big = 0;
  CUmemGenericAllocationHandle small = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, 4 * kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&big, 2 * kPage, &prop, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&small, kPage, &prop, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va, 2 * kPage, 0, big, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va + 3 * kPage, kPage, 0, small, 0));

  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemUnmap(va, kPage));              // half a mapping
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemUnmap(va + kPage, kPage));      // its other half
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemUnmap(va, 4 * kPage));          // spans a hole
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemUnmap(va + 2 * kPage, kPage));  // nothing mapped
  EXPECT_EQ(Counts().mappings - before_.mappings, 2u);

  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, 2 * kPage));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va + 3 * kPage, kPage));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(big));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(small));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, 4 * kPage));
}

TEST_F(FakeVmm, MapRefusesBadRequests) {
  CUdeviceptr va = 0;
  CUdeviceptr other = 0;
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, 2 * kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&other, 2 * kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va, 2 * kPage, 0, h, 0));     // > handle
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va, kPage, kPage, h, 0));     // offset != 0
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va + 4096, kPage, 0, h, 0));  // unaligned
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va, kPage, 0, h + 999, 0));   // no handle
  CUmemGenericAllocationHandle wide = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&wide, 2 * kPage, &prop, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va + kPage, 2 * kPage, 0, wide, 0))
      << "runs past the end of the reservation";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(wide));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(va, kPage, 0, h, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va, kPage, 0, h, 0));  // already mapped
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemAddressFree(va, 2 * kPage))
      << "a reservation with live mappings must not be freed";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemAddressFree(other, kPage)) << "wrong size";

  // Every byte of a cuMemSetAccess range must be mapped.
  const CUmemAccessDesc rw = Access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemSetAccess(va, 2 * kPage, &rw, 1));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemSetAccess(va + kPage, kPage, &rw, 1));
  EXPECT_CU(CUDA_SUCCESS, d.cuMemSetAccess(va, kPage, &rw, 1));

  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, kPage));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemRelease(h)) << "double release";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemMap(va, kPage, 0, h, 0)) << "released handle";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, 2 * kPage));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(other, 2 * kPage));
}

TEST_F(FakeVmm, CreateRefusesBadProperties) {
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemCreate(&h, kPage + 4096, &prop, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemCreate(&h, 0, &prop, 0));
  CUmemAllocationProp bad_dev = DeviceProp(64);
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, d.cuMemCreate(&h, kPage, &bad_dev, 0));
  CUmemAllocationProp host = prop;
  host.location.type = CU_MEM_LOCATION_TYPE_HOST;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemCreate(&h, kPage, &host, 0));
  CUdeviceptr va = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuMemAddressReserve(&va, kPage + 1, 0, 0, 0));
}

TEST_F(FakeVmm, ReleasedHandleLivesUntilUnmappedAndRetainCounts) {
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  BackedPage(&va, &h);
  Host(va)[5] = 42;
  FakeCounts c = Counts();
  EXPECT_EQ(c.handles - before_.handles, 1u);
  EXPECT_EQ(c.mappings - before_.mappings, 1u);
  EXPECT_EQ(c.reservations - before_.reservations, 1u);
  EXPECT_EQ(c.physical_bytes - before_.physical_bytes, kPage);

  CUmemGenericAllocationHandle again = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRetainAllocationHandle(&again, Host(va + kMiB)));
  EXPECT_EQ(again, h);
  CUmemAllocationProp prop{};
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetAllocationPropertiesFromHandle(&prop, again));
  EXPECT_EQ(prop.location.id, 0);
  EXPECT_EQ(prop.type, CU_MEM_ALLOCATION_TYPE_PINNED);

  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  EXPECT_EQ(Counts().handles - before_.handles, 1u) << "the retain still holds it";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(again));
  c = Counts();
  EXPECT_EQ(c.handles, before_.handles);
  EXPECT_EQ(c.physical_bytes - before_.physical_bytes, kPage) << "still mapped: still held";
  EXPECT_EQ(Host(va)[5], 42);

  ASSERT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, kPage));
  EXPECT_EQ(Counts().physical_bytes, before_.physical_bytes);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, kPage));
}

TEST_F(FakeVmm, CreateChargesMemGetInfo) {
  size_t free0 = 0;
  size_t total = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free0, &total));
  size_t device_total = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceTotalMem(&device_total, 0));
  EXPECT_EQ(total, device_total);
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, 3 * kPage, &prop, 0));
  size_t free1 = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free1, &total));
  EXPECT_EQ(free0 - free1, 3 * kPage);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free1, &total));
  EXPECT_EQ(free1, free0);
}

TEST_F(FakeVmm, ConcurrentThreadsLeakNothing) {
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t, &failures] {
      CUmemAllocationProp prop = DeviceProp();
      const CUmemAccessDesc rw = Access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
      for (int i = 0; i < 200; ++i) {
        CUdeviceptr va = 0;
        CUmemGenericAllocationHandle h = 0;
        bool ok = d.cuMemAddressReserve(&va, kPage, 0, 0, 0) == CUDA_SUCCESS &&
                  d.cuMemCreate(&h, kPage, &prop, 0) == CUDA_SUCCESS &&
                  d.cuMemMap(va, kPage, 0, h, 0) == CUDA_SUCCESS &&
                  d.cuMemSetAccess(va, kPage, &rw, 1) == CUDA_SUCCESS;
        if (ok) {
          Host(va)[i] = static_cast<unsigned char>(t);
          ok = Host(va)[i] == static_cast<unsigned char>(t);
        }
        ok = d.cuMemUnmap(va, kPage) == CUDA_SUCCESS && ok;
        ok = d.cuMemRelease(h) == CUDA_SUCCESS && ok;
        ok = d.cuMemAddressFree(va, kPage) == CUDA_SUCCESS && ok;
        failures[static_cast<size_t>(t)] += ok ? 0 : 1;
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace fakecuda_test
