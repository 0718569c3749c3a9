// The fake libcudart.so.13: it must reach the driver only through dlopen("libcuda.so.1") and
// cuGetProcAddress (as the real runtime does, which is what the shim's interposers see), and
// turn driver results into the runtime's errors.
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/fakecuda/fake_test_fixture.h"
#include "tests/support/child_process.h"

namespace fakecuda_test {
namespace {

using kvcached::testing::CallCount;
using kvcached::testing::ChildResult;
using kvcached::testing::Counts;
using kvcached::testing::DriverHandle;
using kvcached::testing::FakeRuntimePath;
using kvcached::testing::RunSelf;
using kvcached::testing::ScopedFaults;

// clang-format off
#define FAKECUDART_FUNCTIONS(X)        \
  X(cudaMalloc)                        \
  X(cudaFree)                          \
  X(cudaMallocAsync)                   \
  X(cudaFreeAsync)                     \
  X(cudaMemGetInfo)                    \
  X(cudaGetDriverEntryPoint)           \
  X(cudaGetDriverEntryPointByVersion)  \
  X(cudaGetDevice)                     \
  X(cudaSetDevice)                     \
  X(cudaGetDeviceCount)                \
  X(cudaDeviceSynchronize)             \
  X(cudaGetLastError)                  \
  X(cudaPeekAtLastError)               \
  X(cudaGetErrorName)                  \
  X(cudaGetErrorString)                \
  X(cudaMemcpy)                        \
  X(cudaMemset)                        \
  X(cudaIpcGetMemHandle)               \
  X(cudaStreamCreate)                  \
  X(cudaStreamDestroy)
// clang-format on

// The runtime, loaded by path and called through dlsym like any consumer would.
struct Runtime {
  void* handle = nullptr;
#define FAKECUDART_MEMBER(fn) decltype(&::fn) fn = nullptr;
  FAKECUDART_FUNCTIONS(FAKECUDART_MEMBER)
#undef FAKECUDART_MEMBER
  void* get_entry_point_ptsz = nullptr;
  std::string error;
};

const Runtime& Rt() {
  static const Runtime rt = [] {
    Runtime r;
    r.handle = ::dlopen(FakeRuntimePath().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (r.handle == nullptr) {
      r.error = std::string("cannot load ") + FakeRuntimePath() + ": " + ::dlerror();
      return r;
    }
#define FAKECUDART_RESOLVE(fn)                                      \
  r.fn = reinterpret_cast<decltype(&::fn)>(::dlsym(r.handle, #fn)); \
  if (r.fn == nullptr) r.error = "the fake runtime exports no " #fn;
    FAKECUDART_FUNCTIONS(FAKECUDART_RESOLVE)
#undef FAKECUDART_RESOLVE
    r.get_entry_point_ptsz = ::dlsym(r.handle, "cudaGetDriverEntryPoint_ptsz");
    return r;
  }();
  return rt;
}

class FakeRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    KVCACHED_REQUIRE_FAKE_DRIVER();
    ASSERT_TRUE(Rt().error.empty()) << Rt().error;
    ASSERT_EQ(rt.cudaFree(nullptr), cudaSuccess);  // the runtime's lazy initialisation
    before_ = Counts();
  }
  void TearDown() override {
    if (!IsSkipped()) {
      kvcached::testing::ClearFaults();
      EXPECT_TRUE(kvcached::testing::NoLeaksSince(before_));
    }
  }
  const Runtime& rt = Rt();
  kvcached::testing::FakeCounts before_;
};

TEST_F(FakeRuntime, MallocGoesThroughTheDriver) {
  const uint64_t allocs = CallCount("cuMemAlloc");
  void* p = nullptr;
  ASSERT_EQ(rt.cudaMalloc(&p, 5 * kMiB), cudaSuccess);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(CallCount("cuMemAlloc") - allocs, 1u);
  EXPECT_EQ(Counts().allocations - before_.allocations, 1u);
  EXPECT_EQ(Counts().physical_bytes - before_.physical_bytes, 6 * kMiB);

  std::vector<char> in(5 * kMiB, 'k');
  std::vector<char> out(in.size());
  ASSERT_EQ(rt.cudaMemcpy(p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(rt.cudaMemset(static_cast<char*>(p) + 1, 'v', 1), cudaSuccess);
  ASSERT_EQ(rt.cudaMemcpy(out.data(), p, out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(out[0], 'k');
  EXPECT_EQ(out[1], 'v');
  EXPECT_EQ(out[2], 'k');
  EXPECT_EQ(rt.cudaMemcpy(out.data(), p, 1, static_cast<cudaMemcpyKind>(9)),
            cudaErrorInvalidMemcpyDirection);
  EXPECT_EQ(rt.cudaGetLastError(), cudaErrorInvalidMemcpyDirection);

  cudaIpcMemHandle_t ipc{};
  EXPECT_EQ(rt.cudaIpcGetMemHandle(&ipc, p), cudaSuccess);
  ASSERT_EQ(rt.cudaFree(p), cudaSuccess);
  EXPECT_EQ(rt.cudaFree(p), cudaErrorInvalidValue) << "double free";
  EXPECT_EQ(rt.cudaGetLastError(), cudaErrorInvalidValue);
}

TEST_F(FakeRuntime, ZeroByteMallocAllocatesNothing) {
  const uint64_t allocs = CallCount("cuMemAlloc");
  void* p = reinterpret_cast<void*>(1);
  ASSERT_EQ(rt.cudaMalloc(&p, 0), cudaSuccess);
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(CallCount("cuMemAlloc"), allocs);
}

TEST_F(FakeRuntime, DriverErrorsBecomeRuntimeErrors) {
  void* p = nullptr;
  {
    ScopedFaults oom("cuMemAlloc:1:CUDA_ERROR_OUT_OF_MEMORY");
    EXPECT_EQ(rt.cudaMalloc(&p, kPage), cudaErrorMemoryAllocation);
  }
  EXPECT_EQ(rt.cudaPeekAtLastError(), cudaErrorMemoryAllocation);
  EXPECT_EQ(rt.cudaPeekAtLastError(), cudaErrorMemoryAllocation) << "peek does not reset";
  EXPECT_EQ(rt.cudaGetLastError(), cudaErrorMemoryAllocation);
  EXPECT_EQ(rt.cudaGetLastError(), cudaSuccess) << "get resets";
  EXPECT_STREQ(rt.cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation");
  EXPECT_STREQ(rt.cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory");
  EXPECT_STREQ(rt.cudaGetErrorName(static_cast<cudaError_t>(4242)), "unrecognized error code");
  {
    ScopedFaults unknown("cuMemGetInfo:1");
    size_t free = 0;
    size_t total = 0;
    EXPECT_EQ(rt.cudaMemGetInfo(&free, &total), cudaErrorUnknown);
  }
  {
    ScopedFaults ctx("cuCtxSynchronize:1:CUDA_ERROR_INVALID_CONTEXT");
    EXPECT_EQ(rt.cudaDeviceSynchronize(), cudaErrorDeviceUninitialized);
  }
  EXPECT_EQ(rt.cudaSetDevice(64), cudaErrorInvalidDevice);
  rt.cudaGetLastError();
}

TEST_F(FakeRuntime, MemGetInfoMatchesTheDriver) {
  size_t free = 0;
  size_t total = 0;
  ASSERT_EQ(rt.cudaMemGetInfo(&free, &total), cudaSuccess);
  void* p = nullptr;
  ASSERT_EQ(rt.cudaMalloc(&p, kPage), cudaSuccess);
  size_t free2 = 0;
  ASSERT_EQ(rt.cudaMemGetInfo(&free2, &total), cudaSuccess);
  EXPECT_EQ(free - free2, kPage);
  ASSERT_EQ(rt.cudaFree(p), cudaSuccess);
}

TEST_F(FakeRuntime, StreamsAndAsyncAllocation) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(rt.cudaStreamCreate(&s), cudaSuccess);
  void* p = nullptr;
  const uint64_t async_allocs = CallCount("cuMemAllocAsync");
  ASSERT_EQ(rt.cudaMallocAsync(&p, kPage, s), cudaSuccess);
  EXPECT_EQ(CallCount("cuMemAllocAsync") - async_allocs, 1u);
  ASSERT_EQ(rt.cudaFreeAsync(p, s), cudaSuccess);
  ASSERT_EQ(rt.cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(rt.cudaStreamDestroy(s), cudaErrorInvalidResourceHandle);
  rt.cudaGetLastError();
}

TEST_F(FakeRuntime, DevicesAndEntryPoints) {
  int n = 0;
  ASSERT_EQ(rt.cudaGetDeviceCount(&n), cudaSuccess);
  EXPECT_GE(n, 1);
  int dev = -1;
  ASSERT_EQ(rt.cudaGetDevice(&dev), cudaSuccess);
  EXPECT_EQ(dev, 0);

  void* fn = nullptr;
  cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
  ASSERT_EQ(rt.cudaGetDriverEntryPoint("cuMemAlloc", &fn, cudaEnableDefault, &status), cudaSuccess);
  EXPECT_EQ(status, cudaDriverEntryPointSuccess);
  EXPECT_EQ(fn, ::dlsym(DriverHandle(), "cuMemAlloc_v2"));
  ASSERT_EQ(rt.cudaGetDriverEntryPoint("cuMemcpy", &fn, cudaEnablePerThreadDefaultStream, &status),
            cudaSuccess);
  EXPECT_EQ(fn, ::dlsym(DriverHandle(), "cuMemcpy_ptds"));

  // Not found: success, a null pointer and a status that says why (documented behaviour).
  fn = reinterpret_cast<void*>(1);
  ASSERT_EQ(rt.cudaGetDriverEntryPoint("cuNoSuchThing", &fn, cudaEnableDefault, &status),
            cudaSuccess);
  EXPECT_EQ(fn, nullptr);
  EXPECT_EQ(status, cudaDriverEntryPointSymbolNotFound);
  ASSERT_EQ(
      rt.cudaGetDriverEntryPointByVersion("cuMemAlloc", &fn, 3000, cudaEnableDefault, &status),
      cudaSuccess);
  EXPECT_EQ(status, cudaDriverEntryPointVersionNotSufficent);
  EXPECT_EQ(fn, nullptr);

  // The per-thread-default-stream build of the API defaults to the _ptds forms.
  ASSERT_NE(rt.get_entry_point_ptsz, nullptr);
  const auto ptsz = reinterpret_cast<decltype(&::cudaGetDriverEntryPoint)>(rt.get_entry_point_ptsz);
  ASSERT_EQ(ptsz("cuMemcpy", &fn, cudaEnableDefault, &status), cudaSuccess);
  EXPECT_EQ(fn, ::dlsym(DriverHandle(), "cuMemcpy_ptds"));
}

// Child: a fresh process where nothing has loaded libcuda.so.1 yet.
TEST(FakeRuntimeChild, ReachesTheDriverOnlyThroughCuGetProcAddress) {
  KVCACHED_CHILD_ONLY();
  void* runtime = ::dlopen(FakeRuntimePath().c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(runtime, nullptr) << ::dlerror();
  EXPECT_EQ(::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD), nullptr)
      << "libcudart must not link libcuda: it dlopens it on first use";
  auto free_fn = reinterpret_cast<decltype(&::cudaFree)>(::dlsym(runtime, "cudaFree"));
  auto malloc_fn = reinterpret_cast<decltype(&::cudaMalloc)>(::dlsym(runtime, "cudaMalloc"));
  ASSERT_NE(free_fn, nullptr);
  ASSERT_EQ(free_fn(nullptr), cudaSuccess);

  // It found the fake beside it through its $ORIGIN RUNPATH (LD_LIBRARY_PATH is unset here).
  void* driver = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(driver, nullptr);
  Dl_info info{};
  ASSERT_NE(::dladdr(::dlsym(driver, "cuInit"), &info), 0);
  const std::string loaded = info.dli_fname;
  const std::string beside =
      FakeRuntimePath().substr(0, FakeRuntimePath().rfind('/')) + "/libcuda.so.1";
  EXPECT_EQ(loaded, beside);

  auto count = reinterpret_cast<uint64_t (*)(const char*)>(::dlsym(driver, "fakecuda_call_count"));
  ASSERT_NE(count, nullptr);
  EXPECT_GE(count("cuGetProcAddress"), 10u) << "every entry point is resolved through it";
  EXPECT_EQ(count("cuInit"), 1u);
  const uint64_t allocs = count("cuMemAlloc");
  void* p = nullptr;
  ASSERT_EQ(malloc_fn(&p, 1), cudaSuccess);
  ASSERT_EQ(free_fn(p), cudaSuccess);
  EXPECT_EQ(count("cuMemAlloc") - allocs, 1u);
}

TEST(FakeRuntimeChild, NoDeviceIsReported) {
  KVCACHED_CHILD_ONLY();
  const Runtime& rt = Rt();
  ASSERT_TRUE(rt.error.empty()) << rt.error;
  int n = 7;
  EXPECT_EQ(rt.cudaGetDeviceCount(&n), cudaErrorNoDevice);
  EXPECT_EQ(n, 0);
  void* p = nullptr;
  EXPECT_EQ(rt.cudaMalloc(&p, 1), cudaErrorNoDevice);
}

TEST(FakeRuntimeParent, RuntimeReachesTheDriverThroughCuGetProcAddress) {
  KVCACHED_REQUIRE_FAKE_DRIVER();
  const ChildResult r = RunSelf("FakeRuntimeChild.ReachesTheDriverOnlyThroughCuGetProcAddress",
                                {{"LD_LIBRARY_PATH", std::nullopt},
                                 {"FAKECUDA_FAIL", std::nullopt},
                                 {"FAKECUDA_DEVICES", std::nullopt}});
  EXPECT_TRUE(r.ExitedWith(0)) << r.Describe() << "\n" << r.output;
  EXPECT_NE(r.output.find("[  PASSED  ] 1 test"), std::string::npos) << r.output;
}

TEST(FakeRuntimeParent, NoDevice) {
  KVCACHED_REQUIRE_FAKE_DRIVER();
  const ChildResult r = RunSelf("FakeRuntimeChild.NoDeviceIsReported",
                                {{"FAKECUDA_DEVICES", "0"}, {"FAKECUDA_FAIL", std::nullopt}});
  EXPECT_TRUE(r.ExitedWith(0)) << r.Describe() << "\n" << r.output;
  EXPECT_NE(r.output.find("[  PASSED  ] 1 test"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fakecuda_test
