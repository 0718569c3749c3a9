// The C API's exception guard (shim/c_api_guard.h): no exception crosses the C ABI, and the
// status tells "no memory, retry" apart from a failure inside kvcached.
#include "shim/c_api_guard.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>

namespace kvcached::shim {
namespace {

TEST(CApiGuard, OutOfHostMemoryIsNoMemory) {
  const kvcached_status s =
      GuardCall("kvcached_acquire", []() -> kvcached_status { throw std::bad_alloc(); });
  EXPECT_EQ(s, KVCACHED_ERR_NO_MEMORY);
  EXPECT_NE(t_last_error.find("kvcached_acquire: out of host memory"), std::string::npos);
}

TEST(CApiGuard, AnyOtherExceptionIsAnInternalErrorNamingIt) {
  const kvcached_status s = GuardCall(
      "kvcached_stats_get", []() -> kvcached_status { throw std::out_of_range("map::at"); });
  EXPECT_EQ(s, KVCACHED_ERR_INTERNAL);
  EXPECT_NE(t_last_error.find("kvcached_stats_get: internal error"), std::string::npos);
  EXPECT_NE(t_last_error.find("map::at"), std::string::npos);
  EXPECT_EQ(GuardCall("f", []() -> kvcached_status { throw 42; }), KVCACHED_ERR_INTERNAL);
}

TEST(CApiGuard, AReturnedStatusPassesUnchanged) {
  EXPECT_EQ(GuardCall("f", [] { return KVCACHED_OK; }), KVCACHED_OK);
  EXPECT_EQ(GuardCall("f", [] { return KVCACHED_ERR_STATE; }), KVCACHED_ERR_STATE);
}

}  // namespace
}  // namespace kvcached::shim
