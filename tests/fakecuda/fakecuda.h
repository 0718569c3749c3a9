/* Fake-only entry points of the fake CUDA driver (build/fakecuda/libcuda.so.1).
 *
 * The fake driver implements the CUDA driver API on host memory so the core can be tested on
 * machines without a GPU. These extra C functions let tests inspect and steer it; reach them
 * with dlsym() on the loaded driver (see tests/support/fake_driver.h), never by linking.
 *
 * Environment read by the fake driver:
 *   FAKECUDA_TOTAL_MB     device memory per device in MiB (default 8192)
 *   FAKECUDA_DEVICES      number of devices (default 1; 0 makes cuInit fail with NO_DEVICE)
 *   FAKECUDA_FAIL         fault spec, see fakecuda_set_faults (armed when the library loads)
 *   FAKECUDA_LEAK_REPORT  path: at exit, write the live counts there as one line
 *   FAKECUDA_LEAK_CHECK=1 at exit, if anything is still live, print it to stderr and _exit(97)
 */
#ifndef KVCACHED_TESTS_FAKECUDA_FAKECUDA_H_
#define KVCACHED_TESTS_FAKECUDA_FAKECUDA_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the fake still holds: every one of these must be zero when a test has cleaned up. */
struct fakecuda_counts {
  uint64_t handles;        /* cuMemCreate handles not yet released (retains count too) */
  uint64_t mappings;       /* live cuMemMap mappings */
  uint64_t reservations;   /* live cuMemAddressReserve ranges */
  uint64_t allocations;    /* live cuMemAlloc / cuMemAllocAsync allocations */
  uint64_t physical_bytes; /* device memory charged, all devices (cuMemCreate + cuMemAlloc) */
};

void fakecuda_get_counts(struct fakecuda_counts* out);

/* Replaces the armed faults with `spec`: comma-separated entries "fn:N[:ERR]" (the Nth call of
 * fn from now fails) or "fn:N+[:ERR]" (the Nth and every later call fails). fn is a driver
 * function's base name ("cuMemMap"; a versioned name such as "cuMemAlloc_v2" means the same),
 * N >= 1, ERR any CUresult name (default CUDA_ERROR_UNKNOWN). A failing call does nothing but
 * return ERR. Returns 0, or -1 for a bad spec (reported on stderr; the armed faults are kept).
 */
int fakecuda_set_faults(const char* spec);

void fakecuda_clear_faults(void);

/* Calls of driver function `fn` (base or versioned name; every variant of one base name counts
 * together) since the library was loaded, failed ones included. Unknown names give 0. */
uint64_t fakecuda_call_count(const char* fn);

typedef void (*fakecuda_get_counts_fn)(struct fakecuda_counts*);
typedef int (*fakecuda_set_faults_fn)(const char*);
typedef void (*fakecuda_clear_faults_fn)(void);
typedef uint64_t (*fakecuda_call_count_fn)(const char*);

#define FAKECUDA_LEAK_EXIT_CODE 97

#ifdef __cplusplus
}
#endif

#endif /* KVCACHED_TESTS_FAKECUDA_FAKECUDA_H_ */
