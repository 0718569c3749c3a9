// Shared set-up for the fake driver's own tests: the driver resolved by dlsym (as the shim
// reaches it), a current context, and a leak check against the counts at the test's start.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>

#include "tests/support/driver_api.h"
#include "tests/support/fake_driver.h"

namespace fakecuda_test {

inline constexpr std::size_t kMiB = std::size_t{1} << 20;
inline constexpr std::size_t kPage = 2 * kMiB;

// Compare by name so a failure says "CUDA_ERROR_INVALID_VALUE", not "1".
#define EXPECT_CU(expected, expr) \
  EXPECT_EQ(::kvcached::testing::ResultName(expr), ::kvcached::testing::ResultName(expected))
#define ASSERT_CU(expected, expr) \
  ASSERT_EQ(::kvcached::testing::ResultName(expr), ::kvcached::testing::ResultName(expected))

inline CUmemAllocationProp DeviceProp(int dev = 0) {
  CUmemAllocationProp p{};
  p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p.location.id = dev;
  return p;
}

inline CUmemAccessDesc Access(CUmemAccess_flags flags, int dev = 0) {
  CUmemAccessDesc a{};
  a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  a.location.id = dev;
  a.flags = flags;
  return a;
}

inline unsigned char* Host(CUdeviceptr p) {
  return reinterpret_cast<unsigned char*>(p);
}

class FakeDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KVCACHED_REQUIRE_FAKE_DRIVER();
    ASSERT_TRUE(d.error.empty()) << d.error;
    ASSERT_CU(CUDA_SUCCESS, ::kvcached::testing::InitAndMakeCurrent(0));
    before_ = ::kvcached::testing::Counts();
  }
  void TearDown() override {
    if (!IsSkipped()) {
      ::kvcached::testing::ClearFaults();
      EXPECT_TRUE(::kvcached::testing::NoLeaksSince(before_));
    }
  }

  // Reserve + create + map + grant read-write: a backed 2 MiB page at *va.
  void BackedPage(CUdeviceptr* va, CUmemGenericAllocationHandle* h) {
    CUmemAllocationProp prop = DeviceProp();
    ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(va, kPage, 0, 0, 0));
    ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(h, kPage, &prop, 0));
    ASSERT_CU(CUDA_SUCCESS, d.cuMemMap(*va, kPage, 0, *h, 0));
    const CUmemAccessDesc rw = Access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
    ASSERT_CU(CUDA_SUCCESS, d.cuMemSetAccess(*va, kPage, &rw, 1));
  }
  void FreeBackedPage(CUdeviceptr va, CUmemGenericAllocationHandle h) {
    EXPECT_CU(CUDA_SUCCESS, d.cuMemUnmap(va, kPage));
    EXPECT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
    EXPECT_CU(CUDA_SUCCESS, d.cuMemAddressFree(va, kPage));
  }

  const ::kvcached::testing::DriverApi& d = ::kvcached::testing::Driver();
  ::kvcached::testing::FakeCounts before_;
};

}  // namespace fakecuda_test
