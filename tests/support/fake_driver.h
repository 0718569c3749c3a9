// Test access to the fake CUDA driver (tests/fakecuda): where it is, its live-object counts,
// fault injection and leak expectations. The driver a test process uses is the one named by
// KVCACHED_CUDA_DRIVER (ctest sets it), else the fake this build produced; these helpers reach
// that very instance (dlopen RTLD_NOLOAD first), so they see what the core under test did.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>

namespace kvcached::testing {

struct FakeCounts {
  std::uint64_t handles = 0;
  std::uint64_t mappings = 0;
  std::uint64_t reservations = 0;
  std::uint64_t allocations = 0;
  std::uint64_t physical_bytes = 0;

  bool operator==(const FakeCounts&) const = default;
  [[nodiscard]] bool Empty() const { return *this == FakeCounts{}; }
  [[nodiscard]] std::string ToString() const;
};
void PrintTo(const FakeCounts& c, std::ostream* os);

// $KVCACHED_CUDA_DRIVER if set, else the fake libcuda.so.1 of this build.
std::string DriverPath();
// The fake libcudart.so.13 of this build.
std::string FakeRuntimePath();

// The driver's dlopen handle (loading it if nothing has yet), or nullptr with the reason in
// *error. Never dlclose'd.
void* DriverHandle(std::string* error = nullptr);
// True when the driver in use is the fake (it exports the fakecuda_* functions).
bool IsFakeDriver();

// Live objects in the fake now. Fails the current test if the fake is not the driver in use.
FakeCounts Counts();
// Calls of a driver function (base name, e.g. "cuMemMap") since the fake was loaded.
std::uint64_t CallCount(const char* fn);
// Arms faults (see tests/fakecuda/fakecuda.h for the spec); false for a bad spec.
bool SetFaults(const std::string& spec);
void ClearFaults();

// Arms a fault spec for one scope, counting from now, and disarms every fault at its end.
class ScopedFaults {
 public:
  explicit ScopedFaults(const std::string& spec);
  ~ScopedFaults();
  ScopedFaults(const ScopedFaults&) = delete;
  ScopedFaults& operator=(const ScopedFaults&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  bool ok_ = false;
};

// EXPECT_TRUE(NoLeaks()): the fake holds nothing (no handle, mapping, reservation, allocation
// or physical byte). NoLeaksSince(before) compares with counts taken earlier instead.
::testing::AssertionResult NoLeaks();
::testing::AssertionResult NoLeaksSince(const FakeCounts& before);

// Skips the current test unless the fake driver is the one in use (for tests that need its
// counters or fault injection; real-GPU runs then skip them cleanly).
#define KVCACHED_REQUIRE_FAKE_DRIVER()                              \
  do {                                                              \
    if (!::kvcached::testing::IsFakeDriver()) {                     \
      GTEST_SKIP() << "needs the fake CUDA driver; driver in use: " \
                   << ::kvcached::testing::DriverPath();            \
    }                                                               \
  } while (0)

}  // namespace kvcached::testing
