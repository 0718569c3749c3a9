// metrics_engine: a stand-in engine for the metrics tests. Runs under
// LD_PRELOAD=libkvcached_shim.so on the fake CUDA driver (LD_LIBRARY_PATH) and obeys stdin lines,
// answering each on stdout with one line ("ok ...", "refused", or "error ..."):
//   region MB           create a lazy region of MB MiB on device 0 (the KV cache)
//   acquire OFF LEN     back [OFF, OFF+LEN) MiB of the region (an engine taking KV blocks)
//   release OFF LEN     give them back (blocks freed)
//   trim                give back every page not in use now
//   alloc KB            a small cuMemAlloc (passed through to the driver: "other" memory)
//   stats               the shim's own counters for device 0, as JSON
//   steps N NS CALLS    report the engine hook's totals (kvcached_report_engine_steps, device 0)
// It prints "ready <pid>" first and exits on EOF.
#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

#include "kvcached/kvcached.h"

namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;

template <class F>
F Need(void* handle, const char* name) {
  void* p = dlsym(handle, name);
  if (p == nullptr) {
    std::fprintf(stderr,
                 "metrics_engine: %s not found (is libkvcached_shim.so preloaded and the "
                 "fake libcuda.so.1 on LD_LIBRARY_PATH?)\n",
                 name);
    std::exit(2);
  }
  return reinterpret_cast<F>(p);
}

struct Api {
  decltype(&kvcached_region_create) region_create;
  decltype(&kvcached_acquire) acquire;
  decltype(&kvcached_release) release;
  decltype(&kvcached_trim) trim;
  decltype(&kvcached_stats_get) stats;
  decltype(&kvcached_last_error) last_error;
  decltype(&kvcached_report_engine_steps) report_steps;
  CUresult (*mem_alloc)(CUdeviceptr*, size_t);
};

Api Load() {
  Api a{};
  a.region_create = Need<decltype(a.region_create)>(RTLD_DEFAULT, "kvcached_region_create");
  a.acquire = Need<decltype(a.acquire)>(RTLD_DEFAULT, "kvcached_acquire");
  a.release = Need<decltype(a.release)>(RTLD_DEFAULT, "kvcached_release");
  a.trim = Need<decltype(a.trim)>(RTLD_DEFAULT, "kvcached_trim");
  a.stats = Need<decltype(a.stats)>(RTLD_DEFAULT, "kvcached_stats_get");
  a.last_error = Need<decltype(a.last_error)>(RTLD_DEFAULT, "kvcached_last_error");
  a.report_steps = Need<decltype(a.report_steps)>(RTLD_DEFAULT, "kvcached_report_engine_steps");
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (driver == nullptr) {
    std::fprintf(stderr, "metrics_engine: dlopen(libcuda.so.1): %s\n", dlerror());
    std::exit(2);
  }
  auto init = Need<CUresult (*)(unsigned)>(driver, "cuInit");
  auto retain = Need<CUresult (*)(CUcontext*, CUdevice)>(driver, "cuDevicePrimaryCtxRetain");
  auto set_current = Need<CUresult (*)(CUcontext)>(driver, "cuCtxSetCurrent");
  a.mem_alloc = Need<decltype(a.mem_alloc)>(driver, "cuMemAlloc_v2");
  CUcontext ctx = nullptr;
  if (init(0) != CUDA_SUCCESS || retain(&ctx, 0) != CUDA_SUCCESS ||
      set_current(ctx) != CUDA_SUCCESS) {
    std::fprintf(stderr, "metrics_engine: no CUDA context on device 0\n");
    std::exit(2);
  }
  return a;
}

std::string Answer(const Api& api, kvcached_status st) {
  if (st == KVCACHED_OK) return "ok";
  if (st == KVCACHED_ERR_NO_MEMORY) return "refused";
  return std::string("error ") + api.last_error();
}

}  // namespace

int main() {
  const Api api = Load();
  std::uint64_t base = 0;
  std::cout << "ready " << ::getpid() << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    std::uint64_t c = 0;
    in >> cmd >> a >> b >> c;
    std::string reply;
    if (cmd == "region") {
      reply = Answer(api, api.region_create(0, a * kMiB, KVCACHED_REGION_LAZY, &base));
    } else if (cmd == "acquire") {
      reply = Answer(api, api.acquire(base + a * kMiB, b * kMiB));
    } else if (cmd == "release") {
      reply = Answer(api, api.release(base + a * kMiB, b * kMiB));
    } else if (cmd == "trim") {
      reply = Answer(api, api.trim(0));
    } else if (cmd == "alloc") {
      CUdeviceptr p = 0;
      reply = api.mem_alloc(&p, a * 1024) == CUDA_SUCCESS ? "ok" : "error cuMemAlloc failed";
    } else if (cmd == "steps") {
      reply = Answer(api, api.report_steps(0, a, b, c));
    } else if (cmd == "stats") {
      kvcached_stats s{};
      const kvcached_status st = api.stats(0, &s);
      if (st != KVCACHED_OK) {
        reply = Answer(api, st);
      } else {
        std::ostringstream j;
        j << "ok {\"maps\": " << s.maps << ", \"unmaps\": " << s.unmaps
          << ", \"sync_maps\": " << s.sync_maps << ", \"budget_refusals\": " << s.budget_refusals
          << "}";
        reply = j.str();
      }
    } else {
      reply = "error unknown command '" + cmd + "'";
    }
    std::cout << reply << std::endl;
  }
  return 0;
}
