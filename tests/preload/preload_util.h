// Helpers for the programs that tests/preload runs under LD_PRELOAD=libkvcached_shim.so.
//
// The programs never link the shim: they reach its C API with dlsym(RTLD_DEFAULT, ...) (found
// only when the shim is preloaded), and the fake driver's test functions with dlsym on
// libcuda.so.1 (the fake, through LD_LIBRARY_PATH).
#pragma once

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kvcached/kvcached.h"
#include "tests/fakecuda/fakecuda.h"

#define PRELOAD_CHECK(cond)                                                           \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

// The shim's C API, or nulls when the shim is not preloaded.
struct ShimApi {
  decltype(&kvcached_enabled) enabled = nullptr;
  decltype(&kvcached_last_error) last_error = nullptr;
  decltype(&kvcached_kv_window_begin) window_begin = nullptr;
  decltype(&kvcached_kv_window_end) window_end = nullptr;
  decltype(&kvcached_page_state_get) page_state = nullptr;
  decltype(&kvcached_region_info_get) region_info = nullptr;
  decltype(&kvcached_acquire) acquire = nullptr;
  decltype(&kvcached_release) release = nullptr;
  decltype(&kvcached_stats_get) stats = nullptr;
  decltype(&kvcached_torch_malloc) torch_malloc = nullptr;
  decltype(&kvcached_torch_free) torch_free = nullptr;
  decltype(&kvcached_set_meminfo_mode) set_meminfo_mode = nullptr;

  [[nodiscard]] bool loaded() const { return page_state != nullptr; }
};

template <class F>
void Resolve(F* out, const char* name) {
  *out = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

inline ShimApi LoadShimApi() {
  ShimApi api;
  Resolve(&api.enabled, "kvcached_enabled");
  Resolve(&api.last_error, "kvcached_last_error");
  Resolve(&api.window_begin, "kvcached_kv_window_begin");
  Resolve(&api.window_end, "kvcached_kv_window_end");
  Resolve(&api.page_state, "kvcached_page_state_get");
  Resolve(&api.region_info, "kvcached_region_info_get");
  Resolve(&api.acquire, "kvcached_acquire");
  Resolve(&api.release, "kvcached_release");
  Resolve(&api.stats, "kvcached_stats_get");
  Resolve(&api.torch_malloc, "kvcached_torch_malloc");
  Resolve(&api.torch_free, "kvcached_torch_free");
  Resolve(&api.set_meminfo_mode, "kvcached_set_meminfo_mode");
  return api;
}

inline ShimApi RequireShimApi() {
  ShimApi api = LoadShimApi();
  if (!api.loaded()) {
    std::fprintf(stderr,
                 "the kvcached C API is not reachable: is libkvcached_shim.so preloaded?\n");
    std::exit(2);
  }
  return api;
}

// The fake driver's test functions.
struct FakeApi {
  fakecuda_get_counts_fn counts = nullptr;
  fakecuda_set_faults_fn set_faults = nullptr;
  fakecuda_call_count_fn call_count = nullptr;
};

inline FakeApi LoadFake() {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW);
  PRELOAD_CHECK(driver != nullptr);
  FakeApi fake;
  fake.counts = reinterpret_cast<fakecuda_get_counts_fn>(dlsym(driver, "fakecuda_get_counts"));
  fake.set_faults = reinterpret_cast<fakecuda_set_faults_fn>(dlsym(driver, "fakecuda_set_faults"));
  fake.call_count = reinterpret_cast<fakecuda_call_count_fn>(dlsym(driver, "fakecuda_call_count"));
  if (fake.counts == nullptr || fake.set_faults == nullptr || fake.call_count == nullptr) {
    std::fprintf(stderr, "libcuda.so.1 is not the fake driver (set LD_LIBRARY_PATH)\n");
    std::exit(2);
  }
  return fake;
}

inline fakecuda_counts Counts(const FakeApi& fake) {
  fakecuda_counts c{};
  fake.counts(&c);
  return c;
}

inline kvcached_page_state PageState(const ShimApi& api, std::uint64_t addr,
                                     kvcached_status* status) {
  kvcached_page_state state = KVCACHED_PAGE_ZERO;
  *status = api.page_state(addr, &state);
  return state;
}

// A page of a region that nothing acquired: ZERO, or MAPPED_FREE when the pool mapped it ahead.
inline bool IsIdleRegionPage(const ShimApi& api, std::uint64_t addr) {
  kvcached_status status = KVCACHED_OK;
  const kvcached_page_state state = PageState(api, addr, &status);
  return status == KVCACHED_OK && state != KVCACHED_PAGE_IN_USE;
}

inline std::uint64_t Addr(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

constexpr std::uint64_t kMiB = 1ULL << 20;
