/* kvcached demo: a lazy region whose physical memory follows what you acquire.
 *
 * Loads libkvcached_shim.so with dlopen (as any program or ctypes user could), creates an 8 GiB
 * lazy region and walks through acquire / release / trim, printing after each step the page
 * states (a strip of the region) and the physical memory the shim holds. Plain C on purpose: the
 * C API is all a caller needs.
 *
 * usage: kvcached_demo [path/to/libkvcached_shim.so] [virtual GiB]
 */
#define _GNU_SOURCE /* readlink, usleep, dlfcn */
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvcached/kvcached.h"

#define MIB (1024.0 * 1024.0)
#define GIB (1024ULL * 1024ULL * 1024ULL)
#define STRIP 64

/* The C API, resolved from the shim. */
static struct {
  const char* (*version)(void);
  const char* (*last_error)(void);
  int (*enabled)(void);
  kvcached_status (*region_create)(int, uint64_t, kvcached_region_kind, uint64_t*);
  kvcached_status (*region_destroy)(uint64_t);
  kvcached_status (*region_info_get)(uint64_t, kvcached_region_info*);
  kvcached_status (*acquire)(uint64_t, uint64_t);
  kvcached_status (*release)(uint64_t, uint64_t);
  kvcached_status (*page_state_get)(uint64_t, kvcached_page_state*);
  kvcached_status (*stats_get)(int, kvcached_stats*);
  kvcached_status (*trim)(int);
} api;

static void* Sym(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (p == NULL) {
    fprintf(stderr, "demo: %s not found in the shim (built from another version?)\n", name);
    exit(1);
  }
  return p;
}

static void Load(const char* path) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "demo: cannot load %s: %s\n  build it first: cmake --build build\n", path,
            dlerror());
    exit(1);
  }
  *(void**)&api.version = Sym(lib, "kvcached_version");
  *(void**)&api.last_error = Sym(lib, "kvcached_last_error");
  *(void**)&api.enabled = Sym(lib, "kvcached_enabled");
  *(void**)&api.region_create = Sym(lib, "kvcached_region_create");
  *(void**)&api.region_destroy = Sym(lib, "kvcached_region_destroy");
  *(void**)&api.region_info_get = Sym(lib, "kvcached_region_info_get");
  *(void**)&api.acquire = Sym(lib, "kvcached_acquire");
  *(void**)&api.release = Sym(lib, "kvcached_release");
  *(void**)&api.page_state_get = Sym(lib, "kvcached_page_state_get");
  *(void**)&api.stats_get = Sym(lib, "kvcached_stats_get");
  *(void**)&api.trim = Sym(lib, "kvcached_trim");
}

static void Check(kvcached_status st, const char* what) {
  if (st != KVCACHED_OK) {
    fprintf(stderr, "demo: %s failed: %s\n", what, api.last_error());
    exit(1);
  }
}

/* One line per step: physical memory by kind, then a strip of the region where each cell is
 * 1/STRIP of it: '#' some page in use, 'o' mapped ahead / kept warm, '.' only zero-page aliases. */
static void Show(const char* step, uint64_t base) {
  kvcached_region_info info;
  kvcached_stats st;
  Check(api.region_info_get(base, &info), "kvcached_region_info_get");
  Check(api.stats_get(0, &st), "kvcached_stats_get");
  char strip[STRIP + 1];
  const uint64_t per_cell = (info.pages + STRIP - 1) / STRIP;
  for (int c = 0; c < STRIP; ++c) {
    char mark = ' ';
    for (uint64_t p = c * per_cell; p < (c + 1) * per_cell && p < info.pages; ++p) {
      kvcached_page_state s;
      Check(api.page_state_get(base + p * info.page_size, &s), "kvcached_page_state_get");
      if (s == KVCACHED_PAGE_IN_USE)
        mark = '#';
      else if (s == KVCACHED_PAGE_MAPPED_FREE && mark != '#')
        mark = 'o';
      else if (mark == ' ')
        mark = '.';
    }
    strip[c] = mark;
  }
  strip[STRIP] = '\0';
  const uint64_t physical = st.in_use_bytes + st.mapped_free_bytes + st.pool_bytes;
  printf("%-34s in use %7.0f MiB  ahead/warm %5.0f MiB  pool %5.0f MiB  = physical %7.0f MiB\n",
         step, st.in_use_bytes / MIB, st.mapped_free_bytes / MIB, st.pool_bytes / MIB,
         physical / MIB);
  printf("    [%s]  pages: %llu in use, %llu mapped, %llu zero\n", strip,
         (unsigned long long)info.in_use_pages, (unsigned long long)info.mapped_free_pages,
         (unsigned long long)info.zero_pages);
}

static const char* DefaultShim(char* buf, size_t size) {
  /* bin/kvcached_demo -> lib/libkvcached_shim.so in the same build tree. */
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "libkvcached_shim.so";
  exe[n] = '\0';
  snprintf(buf, size, "%s/../lib/libkvcached_shim.so", dirname(exe));
  return buf;
}

int main(int argc, char** argv) {
  char buf[PATH_MAX + 64];
  const char* shim = argc > 1 ? argv[1] : DefaultShim(buf, sizeof(buf));
  const double gib = argc > 2 ? atof(argv[2]) : 8.0;
  if (!(gib >= 4.0 && gib <= 1024.0)) {
    fprintf(stderr, "demo: virtual size %s GiB out of range: give 4 to 1024\n", argv[2]);
    return 2;
  }
  Load(shim);
  const char* driver = getenv("KVCACHED_CUDA_DRIVER");
  printf("kvcached %s, driver: %s\n", api.version(),
         driver && *driver ? driver : "libcuda.so.1 (the real GPU driver)");
  if (!api.enabled()) {
    fprintf(stderr, "demo: the shim did not start: %s\n", api.last_error());
    return 1;
  }

  const uint64_t size = (uint64_t)(gib * GIB);
  uint64_t base = 0;
  Check(api.region_create(0, size, KVCACHED_REGION_LAZY, &base), "kvcached_region_create");
  printf(
      "\nCreated a lazy region of %.1f GiB at 0x%llx: address space only. Memory comes with\n"
      "acquire, plus a few pages the pool keeps ready (map-ahead, pre-allocation).\n",
      gib, (unsigned long long)base);
  printf(
      "Strip of the region: '#' pages in use, 'o' mapped but free (mapped ahead or kept warm\n"
      "after release), '.' aliased to the shared zero page (no memory).\n\n");
  Show("1. new region", base);

  Check(api.acquire(base, 1 * GIB), "kvcached_acquire");
  usleep(100 * 1000); /* let the background thread map a few pages ahead */
  Show("2. acquire 1 GiB at offset 0", base);

  Check(api.acquire(base + size / 2, 2 * GIB), "kvcached_acquire");
  Show("3. acquire 2 GiB in the middle", base);

  Check(api.release(base, 1 * GIB), "kvcached_release");
  Show("4. release the first 1 GiB", base);
  printf("    (released pages stay mapped for a moment, so a new burst finds them warm)\n");

  Check(api.trim(0), "kvcached_trim");
  Show("5. trim: give unused pages back", base);

  Check(api.release(base + size / 2, 2 * GIB), "kvcached_release");
  Check(api.trim(0), "kvcached_trim");
  Show("6. release the rest, trim", base);

  kvcached_stats st;
  Check(api.stats_get(0, &st), "kvcached_stats_get");
  Check(api.region_destroy(base), "kvcached_region_destroy");
  printf("\nPhysical memory followed the acquired ranges, never the %.1f GiB of address space.\n",
         gib);
  printf(
      "Stats: page %llu MiB, peak physical %.0f MiB, %llu pages swapped in, %llu out "
      "(%llu on the caller's thread), budget %.1f GiB.\n",
      (unsigned long long)(st.page_size >> 20), st.peak_physical_bytes / MIB,
      (unsigned long long)st.maps, (unsigned long long)st.unmaps, (unsigned long long)st.sync_maps,
      st.budget_limit_bytes / (double)GIB);
  return 0;
}
