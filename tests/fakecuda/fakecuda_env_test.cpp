// The fake's environment (FAKECUDA_TOTAL_MB, FAKECUDA_DEVICES, FAKECUDA_FAIL, leak report and
// check). The fake reads it once per process, so each case re-runs this binary as a child with
// the environment set (the Child.* tests), and checks the child's exit and output.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fakecuda/fake_test_fixture.h"
#include "tests/fakecuda/fakecuda.h"
#include "tests/support/child_process.h"

namespace fakecuda_test {
namespace {

using kvcached::testing::ChildResult;
using kvcached::testing::Driver;
using kvcached::testing::InitAndMakeCurrent;
using kvcached::testing::RunSelf;

using Env = std::map<std::string, std::optional<std::string>>;

// A clean slate: none of the fake's variables leak in from the parent.
Env Clean(Env extra) {
  for (const char* name : {"FAKECUDA_TOTAL_MB", "FAKECUDA_DEVICES", "FAKECUDA_FAIL",
                           "FAKECUDA_LEAK_REPORT", "FAKECUDA_LEAK_CHECK"}) {
    extra.emplace(name, std::nullopt);
  }
  return extra;
}

size_t Occurrences(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

#define EXPECT_CHILD_PASSED(r)                                            \
  EXPECT_TRUE((r).ExitedWith(0)) << (r).Describe() << "\n" << (r).output; \
  EXPECT_NE((r).output.find("[  PASSED  ] 1 test"), std::string::npos) << (r).output

// --- children (skipped unless run by the parents below) --------------------------------------

TEST(FakeEnvChild, OutOfMemoryAtTheConfiguredTotal) {
  KVCACHED_CHILD_ONLY();
  const auto& d = Driver();
  ASSERT_CU(CUDA_SUCCESS, InitAndMakeCurrent(0));
  const size_t total = std::strtoull(std::getenv("FAKECUDA_TOTAL_MB"), nullptr, 10) * kMiB;
  size_t reported = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceTotalMem(&reported, 0));
  ASSERT_EQ(reported, total);
  CUmemAllocationProp prop = DeviceProp();
  std::vector<CUmemGenericAllocationHandle> handles(total / kPage);
  for (CUmemGenericAllocationHandle& h : handles) {
    ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
  }
  CUmemGenericAllocationHandle extra = 0;
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, d.cuMemCreate(&extra, kPage, &prop, 0));
  CUdeviceptr p = 0;
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, d.cuMemAlloc(&p, 1));
  size_t free = 1;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free, &reported));
  EXPECT_EQ(free, 0u);
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(handles.back()));
  handles.pop_back();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAlloc(&p, 1)) << "a released page is free again";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemFree(p));
  for (CUmemGenericAllocationHandle h : handles) {
    ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
  }
}

TEST(FakeEnvChild, SeveralDevicesWithTheirOwnMemory) {
  KVCACHED_CHILD_ONLY();
  const auto& d = Driver();
  ASSERT_CU(CUDA_SUCCESS, InitAndMakeCurrent(1));
  int count = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetCount(&count));
  ASSERT_EQ(count, std::atoi(std::getenv("FAKECUDA_DEVICES")));
  std::set<std::string> uuids;
  for (int i = 0; i < count; ++i) {
    CUuuid u{};
    ASSERT_CU(CUDA_SUCCESS, d.cuDeviceGetUuid(&u, i));
    uuids.insert(std::string(u.bytes, sizeof(u.bytes)));
  }
  EXPECT_EQ(uuids.size(), static_cast<size_t>(count)) << "UUIDs must differ per device";
  CUdevice dev = -1;
  ASSERT_CU(CUDA_SUCCESS, d.cuCtxGetDevice(&dev));
  EXPECT_EQ(dev, 1);
  size_t free0 = 0;
  size_t total = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free0, &total));
  CUmemAllocationProp on0 = DeviceProp(0);
  CUmemGenericAllocationHandle h = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &on0, 0));
  size_t free1 = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemGetInfo(&free1, &total));
  EXPECT_EQ(free1, free0) << "device 0's page is not device 1's memory";
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(h));
}

TEST(FakeEnvChild, NothingWorksBeforeCuInit) {
  KVCACHED_CHILD_ONLY();
  const auto& d = Driver();
  ASSERT_TRUE(d.error.empty()) << d.error;
  int n = 0;
  EXPECT_CU(CUDA_ERROR_NOT_INITIALIZED, d.cuDeviceGetCount(&n));
  CUdeviceptr va = 0;
  EXPECT_CU(CUDA_ERROR_NOT_INITIALIZED, d.cuMemAddressReserve(&va, kPage, 0, 0, 0));
  CUcontext ctx = nullptr;
  EXPECT_CU(CUDA_ERROR_NOT_INITIALIZED, d.cuCtxGetCurrent(&ctx));
  EXPECT_CU(CUDA_SUCCESS, d.cuDriverGetVersion(&n)) << "works before cuInit";
  void* fn = nullptr;
  EXPECT_CU(CUDA_SUCCESS, d.cuGetProcAddress("cuInit", &fn, 13000, 0, nullptr));
  const char* no_device = std::getenv("FAKECUDA_DEVICES");
  if (no_device != nullptr && std::string(no_device) == "0") {
    EXPECT_CU(CUDA_ERROR_NO_DEVICE, d.cuInit(0));
  } else {
    EXPECT_CU(CUDA_ERROR_INVALID_VALUE, d.cuInit(1)) << "flags must be 0";
    EXPECT_CU(CUDA_SUCCESS, d.cuInit(0));
  }
}

TEST(FakeEnvChild, ReportsDefaults) {
  KVCACHED_CHILD_ONLY();
  ASSERT_CU(CUDA_SUCCESS, InitAndMakeCurrent(0));
  size_t total = 0;
  int count = 0;
  ASSERT_CU(CUDA_SUCCESS, Driver().cuDeviceTotalMem(&total, 0));
  ASSERT_CU(CUDA_SUCCESS, Driver().cuDeviceGetCount(&count));
  std::printf("TOTAL_MB=%zu DEVICES=%d\n", total / kMiB, count);
}

TEST(FakeEnvChild, SecondCreateFailsFromTheEnvironment) {
  KVCACHED_CHILD_ONLY();
  const auto& d = Driver();
  ASSERT_CU(CUDA_SUCCESS, InitAndMakeCurrent(0));
  CUmemAllocationProp prop = DeviceProp();
  CUmemGenericAllocationHandle a = 0;
  CUmemGenericAllocationHandle b = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&a, kPage, &prop, 0));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, d.cuMemCreate(&b, kPage, &prop, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemRelease(a));
}

// Leaves one reservation and one handle behind on purpose.
TEST(FakeEnvChild, Leaks) {
  KVCACHED_CHILD_ONLY();
  const auto& d = Driver();
  ASSERT_CU(CUDA_SUCCESS, InitAndMakeCurrent(0));
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle h = 0;
  CUmemAllocationProp prop = DeviceProp();
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAddressReserve(&va, kPage, 0, 0, 0));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemCreate(&h, kPage, &prop, 0));
}

TEST(FakeEnvChild, CleansUp) {
  KVCACHED_CHILD_ONLY();
  const auto& d = Driver();
  ASSERT_CU(CUDA_SUCCESS, InitAndMakeCurrent(0));
  CUdeviceptr p = 0;
  ASSERT_CU(CUDA_SUCCESS, d.cuMemAlloc(&p, kPage));
  ASSERT_CU(CUDA_SUCCESS, d.cuMemFree(p));
}

// --- parents ---------------------------------------------------------------------------------

class FakeEnv : public ::testing::Test {
 protected:
  void SetUp() override { KVCACHED_REQUIRE_FAKE_DRIVER(); }
};

TEST_F(FakeEnv, TotalMbSetsDeviceMemoryAndOom) {
  const ChildResult r =
      RunSelf("FakeEnvChild.OutOfMemoryAtTheConfiguredTotal", Clean({{"FAKECUDA_TOTAL_MB", "64"}}));
  EXPECT_CHILD_PASSED(r);
}

TEST_F(FakeEnv, DevicesSetsTheDeviceCount) {
  const ChildResult r =
      RunSelf("FakeEnvChild.SeveralDevicesWithTheirOwnMemory", Clean({{"FAKECUDA_DEVICES", "3"}}));
  EXPECT_CHILD_PASSED(r);
}

TEST_F(FakeEnv, ZeroDevicesMakesCuInitFail) {
  const ChildResult r =
      RunSelf("FakeEnvChild.NothingWorksBeforeCuInit", Clean({{"FAKECUDA_DEVICES", "0"}}));
  EXPECT_CHILD_PASSED(r);
  const ChildResult one = RunSelf("FakeEnvChild.NothingWorksBeforeCuInit", Clean({}));
  EXPECT_CHILD_PASSED(one);
}

TEST_F(FakeEnv, DefaultsAndBadValuesAreReportedOnce) {
  const ChildResult def = RunSelf("FakeEnvChild.ReportsDefaults", Clean({}));
  EXPECT_CHILD_PASSED(def);
  EXPECT_NE(def.output.find("TOTAL_MB=8192 DEVICES=1"), std::string::npos) << def.output;

  const ChildResult bad = RunSelf(
      "FakeEnvChild.ReportsDefaults",
      Clean({{"FAKECUDA_TOTAL_MB", "lots"}, {"FAKECUDA_DEVICES", "-1"}, {"FAKECUDA_FAIL", "x"}}));
  EXPECT_CHILD_PASSED(bad);
  EXPECT_NE(bad.output.find("TOTAL_MB=8192 DEVICES=1"), std::string::npos) << bad.output;
  EXPECT_EQ(Occurrences(bad.output, "FAKECUDA_TOTAL_MB='lots'"), 1u) << bad.output;
  EXPECT_EQ(Occurrences(bad.output, "FAKECUDA_DEVICES='-1'"), 1u) << bad.output;
  EXPECT_EQ(Occurrences(bad.output, "bad fault spec entry 'x'"), 1u) << bad.output;
}

TEST_F(FakeEnv, FailSpecFromTheEnvironment) {
  const ChildResult r =
      RunSelf("FakeEnvChild.SecondCreateFailsFromTheEnvironment",
              Clean({{"FAKECUDA_FAIL", "cuMemCreate:2:CUDA_ERROR_OUT_OF_MEMORY"}}));
  EXPECT_CHILD_PASSED(r);
  // Without the spec, the child's expectation of a failure must itself fail.
  const ChildResult none = RunSelf("FakeEnvChild.SecondCreateFailsFromTheEnvironment", Clean({}));
  EXPECT_TRUE(none.ExitedWith(1)) << none.Describe() << "\n" << none.output;
}

TEST_F(FakeEnv, LeakCheckExitsWith97AndNamesTheLeak) {
  const ChildResult leaky = RunSelf("FakeEnvChild.Leaks", Clean({{"FAKECUDA_LEAK_CHECK", "1"}}));
  EXPECT_TRUE(leaky.ExitedWith(FAKECUDA_LEAK_EXIT_CODE)) << leaky.Describe() << "\n"
                                                         << leaky.output;
  EXPECT_NE(leaky.output.find("fakecuda: leaked at exit: handles=1 mappings=0 reservations=1 "
                              "allocations=0 physical_bytes=2097152"),
            std::string::npos)
      << leaky.output;

  const ChildResult clean = RunSelf("FakeEnvChild.CleansUp", Clean({{"FAKECUDA_LEAK_CHECK", "1"}}));
  EXPECT_CHILD_PASSED(clean);
  const ChildResult unchecked = RunSelf("FakeEnvChild.Leaks", Clean({}));
  EXPECT_CHILD_PASSED(unchecked);
}

TEST_F(FakeEnv, LeakReportIsWrittenAtExit) {
  char path[] = "/tmp/fakecuda-leak-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  const ChildResult r = RunSelf("FakeEnvChild.Leaks", Clean({{"FAKECUDA_LEAK_REPORT", path}}));
  EXPECT_CHILD_PASSED(r);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(),
            "handles=1 mappings=0 reservations=1 allocations=0 physical_bytes=2097152\n");

  const ChildResult ok = RunSelf("FakeEnvChild.CleansUp", Clean({{"FAKECUDA_LEAK_REPORT", path}}));
  EXPECT_CHILD_PASSED(ok);
  std::ifstream in2(path);
  std::stringstream text2;
  text2 << in2.rdbuf();
  EXPECT_EQ(text2.str(), "handles=0 mappings=0 reservations=0 allocations=0 physical_bytes=0\n");
  ::unlink(path);
}

}  // namespace
}  // namespace fakecuda_test
