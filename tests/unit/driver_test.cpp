// The driver loader, error conversion and RAII wrappers (core/driver) on the fake driver.
#include "core/driver/driver.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "core/driver/context.h"
#include "core/driver/handles.h"
#include "tests/support/fake_driver.h"

namespace kvcached {
namespace {

using testing::Counts;
using testing::DriverPath;
using testing::FakeCounts;
using testing::NoLeaksSince;
using testing::ScopedFaults;

std::unique_ptr<driver::Driver> LoadOrDie() {
  auto d = driver::Driver::Load(DriverPath(), nullptr);
  EXPECT_TRUE(d.ok()) << d.status().message();
  return d.ok() ? std::move(d).value() : nullptr;
}

TEST(DriverTest, LoadsTheDriverAndResolvesEveryEntryPoint) {
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  EXPECT_NE(d->api().cuMemCreate, nullptr);
  EXPECT_NE(d->api().cuMemsetD8, nullptr);
  EXPECT_NE(d->api().cuDeviceTotalMem, nullptr);
  EXPECT_GE(d->version(), 12000);
  int count = 0;
  EXPECT_EQ(d->api().cuDeviceGetCount(&count), CUDA_SUCCESS);
  EXPECT_GE(count, 1);
}

TEST(DriverTest, MissingLibraryNamesThePathAndTheFix) {
  auto d = driver::Driver::Load("/nonexistent/libcuda.so.1", nullptr);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Errc::kDriver);
  EXPECT_NE(d.status().message().find("/nonexistent/libcuda.so.1"), std::string::npos);
  EXPECT_NE(d.status().message().find("KVCACHED_CUDA_DRIVER"), std::string::npos);
  EXPECT_NE(d.status().message().find("NVIDIA driver"), std::string::npos);
}

int g_lookups = 0;
void* CountingLookup(void* handle, const char* name) {
  ++g_lookups;
  return ::dlsym(handle, name);
}
void* NoLookup(void* /*handle*/, const char* /*name*/) {
  return nullptr;
}

TEST(DriverTest, ResolvesCuGetProcAddressThroughTheInjectedLookup) {
  g_lookups = 0;
  auto d = driver::Driver::Load(DriverPath(), &CountingLookup);
  ASSERT_TRUE(d.ok()) << d.status().message();
  // Only cuGetProcAddress_v2 is looked up by name; everything else comes through it.
  EXPECT_EQ(g_lookups, 1);

  auto none = driver::Driver::Load(DriverPath(), &NoLookup);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("cuGetProcAddress_v2"), std::string::npos);
}

TEST(DriverTest, CheckNamesTheCallAndTheError) {
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(d->Check(CUDA_SUCCESS, "cuMemMap").ok());
  Status st = d->Check(CUDA_ERROR_INVALID_VALUE, "cuMemMap");
  EXPECT_EQ(st.code(), Errc::kDriver);
  EXPECT_EQ(st.driver_code(), CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(st.message().rfind("cuMemMap failed: CUDA_ERROR_INVALID_VALUE (", 0), 0U)
      << st.message();
  Status oom = d->Check(CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate");
  EXPECT_EQ(oom.code(), Errc::kNoMemory);
  EXPECT_NE(oom.message().find("CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos);
}

TEST(DriverTest, RaiiObjectsFreeWhatTheyOwn) {
  KVCACHED_REQUIRE_FAKE_DRIVER();
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  CUdevice dev = 0;
  ASSERT_EQ(d->api().cuDeviceGet(&dev, 0), CUDA_SUCCESS);
  FakeCounts before = Counts();
  {
    auto va = driver::VaReservation::Reserve(*d, 4 << 20, 2 << 20);
    ASSERT_TRUE(va.ok()) << va.status().message();
    auto h = driver::PhysicalHandle::Create(*d, dev, 2 << 20);
    ASSERT_TRUE(h.ok()) << h.status().message();
    auto m = driver::Mapping::Map(*d, va.value().ptr(), 2 << 20, h.value().get());
    ASSERT_TRUE(m.ok()) << m.status().message();
    ASSERT_TRUE(driver::SetAccess(*d, dev, va.value().ptr(), 2 << 20).ok());
    FakeCounts live = Counts();
    EXPECT_EQ(live.handles, before.handles + 1);
    EXPECT_EQ(live.mappings, before.mappings + 1);
    EXPECT_EQ(live.reservations, before.reservations + 1);
    // Moving transfers ownership: exactly one owner frees.
    driver::Mapping moved = std::move(m).value();
    EXPECT_TRUE(static_cast<bool>(moved));
    *reinterpret_cast<volatile char*>(va.value().ptr()) = 1;  // host-backed in the fake
  }  // mapping, then handle, then VA (reverse order)
  EXPECT_TRUE(NoLeaksSince(before));
}

TEST(DriverTest, DestructorRetriesAFailedFreeOnce) {
  KVCACHED_REQUIRE_FAKE_DRIVER();
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  FakeCounts before = Counts();
  {
    ScopedFaults f("cuMemAddressFree:1");  // declared first: still armed when va is destroyed
    ASSERT_TRUE(f.ok());
    auto va = driver::VaReservation::Reserve(*d, 2 << 20, 2 << 20);
    ASSERT_TRUE(va.ok());
  }  // the first cuMemAddressFree fails, the retry frees it
  EXPECT_GE(testing::CallCount("cuMemAddressFree"), 2U);
  EXPECT_TRUE(NoLeaksSince(before));
}

TEST(DriverTest, FreeFailureKeepsOwnership) {
  KVCACHED_REQUIRE_FAKE_DRIVER();
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  CUdevice dev = 0;
  ASSERT_EQ(d->api().cuDeviceGet(&dev, 0), CUDA_SUCCESS);
  FakeCounts before = Counts();
  auto h = driver::PhysicalHandle::Create(*d, dev, 2 << 20);
  ASSERT_TRUE(h.ok());
  {
    ScopedFaults f("cuMemRelease:1:CUDA_ERROR_INVALID_VALUE");
    Status st = h.value().Free();
    EXPECT_EQ(st.code(), Errc::kDriver);
    EXPECT_NE(st.message().find("cuMemRelease failed: CUDA_ERROR_INVALID_VALUE"),
              std::string::npos);
    EXPECT_TRUE(static_cast<bool>(h.value()));  // still owned: can be freed later
  }
  EXPECT_TRUE(h.value().Free().ok());
  EXPECT_FALSE(static_cast<bool>(h.value()));
  EXPECT_TRUE(NoLeaksSince(before));
}

TEST(DriverTest, CreateFailureReportsTheCall) {
  KVCACHED_REQUIRE_FAKE_DRIVER();
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  FakeCounts before = Counts();
  ScopedFaults f("cuMemCreate:1:CUDA_ERROR_OUT_OF_MEMORY,cuMemAddressReserve:1");
  auto h = driver::PhysicalHandle::Create(*d, 0, 2 << 20);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Errc::kNoMemory);
  EXPECT_NE(h.status().message().find("cuMemCreate"), std::string::npos);
  auto va = driver::VaReservation::Reserve(*d, 2 << 20, 2 << 20);
  ASSERT_FALSE(va.ok());
  EXPECT_NE(va.status().message().find("cuMemAddressReserve failed"), std::string::npos);
  EXPECT_TRUE(NoLeaksSince(before));
}

TEST(DriverTest, GranularityIsTwoMiB) {
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  auto g = driver::Granularity(*d, 0);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g.value(), 2U << 20);
}

TEST(DriverTest, ScopedContextMakesThePrimaryContextCurrentAndRestores) {
  auto d = LoadOrDie();
  ASSERT_NE(d, nullptr);
  const driver::Api& api = d->api();
  auto primary = driver::PrimaryContext::Retain(*d, 0);
  ASSERT_TRUE(primary.ok()) << primary.status().message();
  ASSERT_NE(primary.value().get(), nullptr);

  std::thread([&] {
    CUcontext cur = reinterpret_cast<CUcontext>(0x1);
    ASSERT_EQ(api.cuCtxGetCurrent(&cur), CUDA_SUCCESS);
    ASSERT_EQ(cur, nullptr);  // a fresh thread has no context
    {
      auto scope = driver::ScopedContext::Enter(*d, primary.value().get());
      ASSERT_TRUE(scope.ok());
      ASSERT_EQ(api.cuCtxGetCurrent(&cur), CUDA_SUCCESS);
      EXPECT_EQ(cur, primary.value().get());
    }
    ASSERT_EQ(api.cuCtxGetCurrent(&cur), CUDA_SUCCESS);
    EXPECT_EQ(cur, nullptr);  // restored
  }).join();

  // Already current: nothing to switch, nothing to restore.
  ASSERT_EQ(api.cuCtxSetCurrent(primary.value().get()), CUDA_SUCCESS);
  {
    auto scope = driver::ScopedContext::Enter(*d, primary.value().get());
    ASSERT_TRUE(scope.ok());
  }
  CUcontext cur = nullptr;
  ASSERT_EQ(api.cuCtxGetCurrent(&cur), CUDA_SUCCESS);
  EXPECT_EQ(cur, primary.value().get());
  ASSERT_EQ(api.cuCtxSetCurrent(nullptr), CUDA_SUCCESS);
}

}  // namespace
}  // namespace kvcached
