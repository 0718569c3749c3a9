// GpuTest: fixture of the GPU tests. Skips (GTEST_SKIP) when no usable GPU is found, makes the
// runtime API share the primary context with the core, and owns one core Runtime on the real
// driver, created by each test with the pool behaviour it needs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

#include "core/config/config.h"
#include "core/runtime/runtime.h"
#include "tests/gpu/gpu_kernels.h"

#define KVC_ASSERT_OK(expr)                       \
  do {                                            \
    const ::kvcached::Status kvc_s_ = (expr);     \
    ASSERT_TRUE(kvc_s_.ok()) << kvc_s_.message(); \
  } while (0)
#define KVC_EXPECT_OK(expr)                       \
  do {                                            \
    const ::kvcached::Status kvc_s_ = (expr);     \
    EXPECT_TRUE(kvc_s_.ok()) << kvc_s_.message(); \
  } while (0)

namespace kvcached::gputest {

class GpuTest : public ::testing::Test {
 protected:
  static constexpr int kDevice = 0;

  void SetUp() override;
  void TearDown() override { rt_.reset(); }

  // The environment's configuration (so KVCACHED_PAGE_SIZE_MB etc. apply) on the real driver,
  // with a quiet log; tests then set the pool knobs they depend on.
  static Config BaseConfig();
  // Creates rt_ (use with ASSERT_NO_FATAL_FAILURE).
  void StartRuntime(const Config& config);

  // Byte-range helpers over rt_.
  Status Acquire(std::uint64_t addr, std::uint64_t length);
  Status Release(std::uint64_t addr, std::uint64_t length);
  PageState StateAt(std::uint64_t addr);  // fails the test on error
  RegionInfo InfoOf(std::uint64_t addr);  // fails the test on error
  DeviceStats Stats();                    // fails the test on error
  // Creates a region and fails the test on error (returns 0 then).
  std::uint64_t Create(std::uint64_t size, RegionKind kind);

  std::uint64_t page_ = 0;
  std::unique_ptr<Runtime> rt_;
};

// The value of a kernel helper's result; fails the test (and returns UINT64_MAX) on error.
inline std::uint64_t Val(const Result<std::uint64_t>& r) {
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? r.value() : UINT64_MAX;
}

// Number of the test's iterations: the environment variable `name` if set, else `def`.
std::uint64_t EnvCount(const char* name, std::uint64_t def);

}  // namespace kvcached::gputest
