// The C API's argument checks, through the built shim opened with dlopen (not preloaded: nothing
// is interposed, and a call refused for its arguments never starts the runtime).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include "kvcached/kvcached.h"

namespace {

template <class F>
F Symbol(void* library, const char* name) {
  return reinterpret_cast<F>(dlsym(library, name));
}

TEST(CApi, BudgetHeadroomWithANullPointerIsInvalidAndNamesTheArgument) {
  void* shim = dlopen(KVCACHED_TEST_SHIM_FILE, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(shim, nullptr) << dlerror();
  auto headroom =
      Symbol<decltype(&kvcached_budget_headroom_get)>(shim, "kvcached_budget_headroom_get");
  auto last_error = Symbol<decltype(&kvcached_last_error)>(shim, "kvcached_last_error");
  ASSERT_NE(headroom, nullptr) << "kvcached_budget_headroom_get is not exported";
  ASSERT_NE(last_error, nullptr);
  EXPECT_EQ(headroom(0, nullptr), KVCACHED_ERR_INVALID);
  EXPECT_STREQ(last_error(), "kvcached_budget_headroom_get: bytes is null");
}

}  // namespace
