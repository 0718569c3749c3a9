/* A program that links the installed C API (kvcached::shim or pkg-config kvcached): built by
 * tests/packaging/install_consumers.sh against an installed tree, never against the build tree.
 *
 * Without a driver it checks the API version only. With KVCACHED_CUDA_DRIVER set (the fake driver
 * in tests) it also creates a lazy region, acquires one page, checks the shim's stats count it,
 * and releases everything. Prints one line per step; exits 1 on the first failure. */
#include <stdio.h>
#include <stdlib.h>

#include "kvcached/kvcached.h"

static int Fail(const char* step, kvcached_status s) {
  fprintf(stderr, "consumer: %s failed: %s (%s)\n", step, kvcached_status_string(s),
          kvcached_last_error());
  return 1;
}

int main(void) {
  if (kvcached_api_version() != KVCACHED_API_VERSION) {
    fprintf(stderr, "consumer: header API %d, library API %d\n", KVCACHED_API_VERSION,
            kvcached_api_version());
    return 1;
  }
  printf("consumer: kvcached %s, API %d\n", kvcached_version(), kvcached_api_version());
  if (getenv("KVCACHED_CUDA_DRIVER") == NULL) return 0;

  uint64_t base = 0;
  kvcached_status s = kvcached_region_create(0, 64ull << 20, KVCACHED_REGION_LAZY, &base);
  if (s != KVCACHED_OK) return Fail("kvcached_region_create", s);
  kvcached_region_info info;
  if ((s = kvcached_region_info_get(base, &info)) != KVCACHED_OK) return Fail("region_info", s);
  if ((s = kvcached_acquire(base, info.page_size)) != KVCACHED_OK) return Fail("acquire", s);
  kvcached_stats stats;
  if ((s = kvcached_stats_get(0, &stats)) != KVCACHED_OK) return Fail("stats_get", s);
  if (stats.in_use_bytes < info.page_size) {
    fprintf(stderr, "consumer: in use %llu bytes after acquiring a %llu-byte page\n",
            (unsigned long long)stats.in_use_bytes, (unsigned long long)info.page_size);
    return 1;
  }
  printf("consumer: region of %llu pages, one page in use (%llu bytes)\n",
         (unsigned long long)info.pages, (unsigned long long)stats.in_use_bytes);
  if ((s = kvcached_release(base, info.page_size)) != KVCACHED_OK) return Fail("release", s);
  if ((s = kvcached_region_destroy(base)) != KVCACHED_OK) return Fail("region_destroy", s);
  printf("consumer: released and destroyed\n");
  return 0;
}
