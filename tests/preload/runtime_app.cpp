// A CUDA runtime program (linked against libcudart.so.13: the fake one in CI) that
// preload_check.py runs with and without LD_PRELOAD=libkvcached_shim.so. Each mode checks one
// behaviour of the interposed runtime functions and prints what the driver script compares.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/preload/preload_util.h"

namespace {

using CuMemGetAddressRangeFn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);

// True when `p` is exactly an allocation the fake driver's cuMemAlloc made, of `size` bytes:
// i.e. the pointer the real allocator handed out, not a region of the shim.
bool IsRealAllocation(void* p, size_t size) {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto range = reinterpret_cast<CuMemGetAddressRangeFn>(dlsym(driver, "cuMemGetAddressRange_v2"));
  CUdeviceptr base = 0;
  size_t bytes = 0;
  return range != nullptr && range(&base, &bytes, Addr(p)) == CUDA_SUCCESS && base == Addr(p) &&
         bytes == size;
}

// Pass-through: every result, pointer origin, and driver call the program observes is printed;
// preload_check.py requires the output with the shim to equal the output without it.
int Sequence() {
  FakeApi fake = LoadFake();
  const size_t sizes[] = {256, 4096, kMiB, 3 * kMiB, 100, 5 * kMiB, 64 * kMiB};
  std::vector<void*> ptrs;
  for (size_t size : sizes) {
    const uint64_t before = fake.call_count("cuMemAlloc");
    void* p = nullptr;
    const cudaError_t rc = cudaMalloc(&p, size);
    std::printf("cudaMalloc(%zu) rc=%d real=%d driver_calls=%llu\n", size, rc,
                IsRealAllocation(p, size) ? 1 : 0,
                static_cast<unsigned long long>(fake.call_count("cuMemAlloc") - before));
    ptrs.push_back(p);
  }
  for (size_t i = 0; i < ptrs.size(); i += 2) {
    std::printf("cudaFree rc=%d\n", cudaFree(ptrs[i]));
  }
  std::printf("live=%llu\n", static_cast<unsigned long long>(Counts(fake).allocations));
  for (size_t i = 1; i < ptrs.size(); i += 2) {
    std::printf("cudaFree rc=%d\n", cudaFree(ptrs[i]));
  }
  // Errors of the real functions come back unchanged.
  std::printf("cudaMalloc(null) rc=%d\n", cudaMalloc(nullptr, 16));
  void* zero = reinterpret_cast<void*>(0x1);
  std::printf("cudaMalloc(0) rc=%d ptr_null=%d\n", cudaMalloc(&zero, 0), zero == nullptr ? 1 : 0);
  std::printf("cudaFree(bogus) rc=%d\n", cudaFree(reinterpret_cast<void*>(0x1234)));
  std::printf("cudaFree(null) rc=%d\n", cudaFree(nullptr));
  void* async = nullptr;
  std::printf("cudaMallocAsync rc=%d real=%d\n", cudaMallocAsync(&async, 2 * kMiB, nullptr),
              IsRealAllocation(async, 2 * kMiB) ? 1 : 0);
  std::printf("cudaFreeAsync rc=%d\n", cudaFreeAsync(async, nullptr));
  std::printf("live=%llu\n", static_cast<unsigned long long>(Counts(fake).allocations));
  return 0;
}

// An injected driver failure propagates through the shim with its exact code.
int Oom() {
  FakeApi fake = LoadFake();
  void* warm = nullptr;
  PRELOAD_CHECK(cudaMalloc(&warm, 4096) == cudaSuccess);  // initialise the runtime first
  PRELOAD_CHECK(fake.set_faults("cuMemAlloc:1:CUDA_ERROR_OUT_OF_MEMORY") == 0);
  void* p = reinterpret_cast<void*>(0x5);
  const cudaError_t rc = cudaMalloc(&p, 8 * kMiB);
  std::printf("faulted cudaMalloc rc=%d ptr_unchanged=%d\n", rc,
              p == reinterpret_cast<void*>(0x5) ? 1 : 0);
  void* q = nullptr;
  std::printf("next cudaMalloc rc=%d\n", cudaMalloc(&q, 8 * kMiB));
  PRELOAD_CHECK(fake.set_faults("cuMemFree:1:CUDA_ERROR_ILLEGAL_ADDRESS") == 0);
  std::printf("faulted cudaFree rc=%d\n", cudaFree(q));
  std::printf("retry cudaFree rc=%d\n", cudaFree(q));
  std::printf("cudaFree rc=%d\n", cudaFree(warm));
  return 0;
}

// KV-window allocations become lazy regions; everything else stays a real allocation.
int Window() {
  const ShimApi api = RequireShimApi();
  FakeApi fake = LoadFake();
  kvcached_status st = KVCACHED_OK;

  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  void* region = nullptr;
  void* small = nullptr;
  PRELOAD_CHECK(cudaMalloc(&region, 64 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(cudaMalloc(&small, 4096) == cudaSuccess);  // under one page: passes through
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  PRELOAD_CHECK(api.window_end() == KVCACHED_ERR_STATE);  // no window open any more

  PRELOAD_CHECK(IsIdleRegionPage(api, Addr(region)));
  kvcached_region_info info{};
  PRELOAD_CHECK(api.region_info(Addr(region), &info) == KVCACHED_OK);
  PRELOAD_CHECK(info.base == Addr(region) && info.size >= 64 * kMiB);
  PRELOAD_CHECK(info.kind == KVCACHED_REGION_LAZY && info.in_use_pages == 0);
  PRELOAD_CHECK(!IsRealAllocation(region, 64 * kMiB));
  PRELOAD_CHECK(IsRealAllocation(small, 4096));
  (void)PageState(api, Addr(small), &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_NOT_FOUND);
  PRELOAD_CHECK(Counts(fake).allocations == 1);  // only the small one reached cuMemAlloc

  // Back one range, use it (the fake's device memory is host memory), give it back.
  PRELOAD_CHECK(api.acquire(Addr(region) + 2 * kMiB, 2 * kMiB) == KVCACHED_OK);
  PRELOAD_CHECK(PageState(api, Addr(region) + 2 * kMiB, &st) == KVCACHED_PAGE_IN_USE);
  auto* bytes = static_cast<unsigned char*>(region) + 2 * kMiB;
  std::memset(bytes, 0x5a, 2 * kMiB);
  PRELOAD_CHECK(bytes[0] == 0x5a && bytes[2 * kMiB - 1] == 0x5a);
  PRELOAD_CHECK(PageState(api, Addr(region), &st) != KVCACHED_PAGE_IN_USE);
  PRELOAD_CHECK(api.release(Addr(region) + 2 * kMiB, 2 * kMiB) == KVCACHED_OK);
  PRELOAD_CHECK(PageState(api, Addr(region) + 2 * kMiB, &st) != KVCACHED_PAGE_IN_USE);

  // Outside the window the same size is a real allocation.
  void* outside = nullptr;
  PRELOAD_CHECK(cudaMalloc(&outside, 64 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(IsRealAllocation(outside, 64 * kMiB));

  // Windows nest; cudaMallocAsync is covered too.
  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  void* nested = nullptr;
  void* async = nullptr;
  PRELOAD_CHECK(cudaMalloc(&nested, 4 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(cudaMallocAsync(&async, 8 * kMiB, nullptr) == cudaSuccess);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  PRELOAD_CHECK(IsIdleRegionPage(api, Addr(nested)));
  PRELOAD_CHECK(IsIdleRegionPage(api, Addr(async)));

  // Another thread has no window open.
  std::thread([&] {
    void* p = nullptr;
    PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
    PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
    PRELOAD_CHECK(cudaMalloc(&p, 4 * kMiB) == cudaSuccess);
    PRELOAD_CHECK(IsRealAllocation(p, 4 * kMiB));
    PRELOAD_CHECK(cudaFree(p) == cudaSuccess);
  }).join();

  // Frees release the regions (the fake's leak check at exit proves nothing stays behind).
  PRELOAD_CHECK(cudaFree(region) == cudaSuccess);
  (void)PageState(api, Addr(region), &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_NOT_FOUND);
  PRELOAD_CHECK(cudaFree(nested) == cudaSuccess);
  PRELOAD_CHECK(cudaFreeAsync(async, nullptr) == cudaSuccess);
  PRELOAD_CHECK(cudaFree(small) == cudaSuccess);
  PRELOAD_CHECK(cudaFree(outside) == cudaSuccess);
  PRELOAD_CHECK(Counts(fake).allocations == 0);
  std::printf("window ok\n");
  return 0;
}

// The PyTorch pluggable-allocator entry points.
int Torch() {
  const ShimApi api = RequireShimApi();
  kvcached_status st = KVCACHED_OK;
  void* region = api.torch_malloc(64 * kMiB, 0, nullptr);
  PRELOAD_CHECK(region != nullptr);
  PRELOAD_CHECK(IsIdleRegionPage(api, Addr(region)));
  void* small = api.torch_malloc(4096, 0, nullptr);
  PRELOAD_CHECK(small != nullptr && IsRealAllocation(small, 4096));
  // Another device: the region lives there, and the caller's current device is kept.
  int device = -1;
  PRELOAD_CHECK(cudaGetDevice(&device) == cudaSuccess && device == 0);
  void* on1 = api.torch_malloc(8 * kMiB, 1, nullptr);
  PRELOAD_CHECK(on1 != nullptr);
  kvcached_region_info info{};
  PRELOAD_CHECK(api.region_info(Addr(on1), &info) == KVCACHED_OK && info.device == 1);
  void* small1 = api.torch_malloc(4096, 1, nullptr);
  PRELOAD_CHECK(small1 != nullptr && IsRealAllocation(small1, 4096));
  PRELOAD_CHECK(cudaGetDevice(&device) == cudaSuccess && device == 0);
  // A device that does not exist: null, with a reason.
  PRELOAD_CHECK(api.torch_malloc(8 * kMiB, 7, nullptr) == nullptr);
  PRELOAD_CHECK(std::strlen(api.last_error()) > 0);
  api.torch_free(region, 64 * kMiB, 0, nullptr);
  api.torch_free(small, 4096, 0, nullptr);
  api.torch_free(on1, 8 * kMiB, 1, nullptr);
  api.torch_free(small1, 4096, 1, nullptr);
  (void)PageState(api, Addr(region), &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_NOT_FOUND);
  std::printf("torch ok\n");
  return 0;
}

// KVCACHED_CAPTURE_MIN_MB: big allocations outside a window become eager (backed) regions.
int Capture() {
  const ShimApi api = RequireShimApi();
  kvcached_status st = KVCACHED_OK;
  void* big = nullptr;
  void* below = nullptr;
  PRELOAD_CHECK(cudaMalloc(&big, 32 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(cudaMalloc(&below, 8 * kMiB) == cudaSuccess);
  kvcached_region_info info{};
  PRELOAD_CHECK(api.region_info(Addr(big), &info) == KVCACHED_OK);
  PRELOAD_CHECK(info.kind == KVCACHED_REGION_EAGER);
  std::memset(big, 0x11, 32 * kMiB);  // fully backed: no page may fault
  PRELOAD_CHECK(static_cast<unsigned char*>(big)[32 * kMiB - 1] == 0x11);
  (void)PageState(api, Addr(below), &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_NOT_FOUND && IsRealAllocation(below, 8 * kMiB));
  PRELOAD_CHECK(cudaFree(big) == cudaSuccess);
  PRELOAD_CHECK(cudaFree(below) == cudaSuccess);
  std::printf("capture ok\n");
  return 0;
}

int MemInfo() {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  const cudaError_t rc = cudaMemGetInfo(&free_bytes, &total_bytes);
  std::printf("rc=%d free=%zu total=%zu\n", rc, free_bytes, total_bytes);
  return rc == cudaSuccess ? 0 : 1;
}

// Holds `mib` MiB (captured as an eager region when KVCACHED_CAPTURE_MIN_MB allows: charged to
// the shared budget) until stdin closes: the neighbour of the meminfo_watch case.
int Hold(size_t mib) {
  void* p = nullptr;
  PRELOAD_CHECK(cudaMalloc(&p, mib * kMiB) == cudaSuccess);
  std::printf("holding\n");
  std::fflush(stdout);
  char line[64];
  while (std::fgets(line, sizeof(line), stdin) != nullptr) {
  }
  PRELOAD_CHECK(cudaFree(p) == cudaSuccess);
  return 0;
}

// Reads commands from stdin, one per line, and answers each with one line:
//   read        "rc=R free=F total=T" from cudaMemGetInfo
//   alloc MIB   allocates MIB MiB (pass-through) and answers "ok"
//   free        frees the last allocation and answers "ok"
//   mode M      kvcached_set_meminfo_mode(M), answers "status=S"
int MemInfoWatch() {
  const ShimApi api = RequireShimApi();
  std::vector<void*> held;
  char line[128];
  while (std::fgets(line, sizeof(line), stdin) != nullptr) {
    const std::string command(line, std::strcspn(line, "\n"));
    if (command == "read") {
      (void)MemInfo();
    } else if (command.rfind("alloc ", 0) == 0) {
      void* p = nullptr;
      PRELOAD_CHECK(cudaMalloc(&p, std::stoul(command.substr(6)) * kMiB) == cudaSuccess);
      held.push_back(p);
      std::printf("ok\n");
    } else if (command == "free") {
      PRELOAD_CHECK(!held.empty() && cudaFree(held.back()) == cudaSuccess);
      held.pop_back();
      std::printf("ok\n");
    } else if (command.rfind("mode ", 0) == 0) {
      std::printf("status=%d\n", api.set_meminfo_mode(std::stoi(command.substr(5))));
    } else {
      std::printf("unknown command %s\n", command.c_str());
    }
    std::fflush(stdout);
  }
  for (void* p : held) PRELOAD_CHECK(cudaFree(p) == cudaSuccess);
  return 0;
}

// Pass-through bytes are counted once (the runtime's inner cuMemAlloc is not counted again).
int Count() {
  const ShimApi api = RequireShimApi();
  kvcached_stats before{};
  kvcached_stats during{};
  kvcached_stats after{};
  void* warm = nullptr;
  PRELOAD_CHECK(cudaMalloc(&warm, 256) == cudaSuccess);
  PRELOAD_CHECK(api.stats(0, &before) == KVCACHED_OK);
  void* p = nullptr;
  PRELOAD_CHECK(cudaMalloc(&p, 3 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(api.stats(0, &during) == KVCACHED_OK);
  PRELOAD_CHECK(cudaFree(p) == cudaSuccess);
  PRELOAD_CHECK(api.stats(0, &after) == KVCACHED_OK);
  std::printf("delta=%lld back=%lld\n",
              static_cast<long long>(during.passthrough_bytes - before.passthrough_bytes),
              static_cast<long long>(after.passthrough_bytes - before.passthrough_bytes));
  PRELOAD_CHECK(during.passthrough_bytes - before.passthrough_bytes == 3 * kMiB);
  PRELOAD_CHECK(after.passthrough_bytes == before.passthrough_bytes);
  PRELOAD_CHECK(cudaFree(warm) == cudaSuccess);
  return 0;
}

int Ipc() {
  const ShimApi api = RequireShimApi();
  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  void* region = nullptr;
  PRELOAD_CHECK(cudaMalloc(&region, 16 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  cudaIpcMemHandle_t handle{};
  PRELOAD_CHECK(cudaIpcGetMemHandle(&handle, region) == cudaErrorInvalidValue);
  PRELOAD_CHECK(cudaIpcGetMemHandle(&handle, static_cast<char*>(region) + 4 * kMiB) ==
                cudaErrorInvalidValue);
  void* plain = nullptr;
  PRELOAD_CHECK(cudaMalloc(&plain, 4 * kMiB) == cudaSuccess);
  std::printf("plain ipc rc=%d\n", cudaIpcGetMemHandle(&handle, plain));
  PRELOAD_CHECK(cudaFree(region) == cudaSuccess);
  PRELOAD_CHECK(cudaFree(plain) == cudaSuccess);
  return 0;
}

// A fork child that uses CUDA starts with a clean shim; the parent's state is untouched.
int Fork() {
  const ShimApi api = RequireShimApi();
  kvcached_status st = KVCACHED_OK;
  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  void* parent_region = nullptr;
  PRELOAD_CHECK(cudaMalloc(&parent_region, 16 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  PRELOAD_CHECK(api.acquire(Addr(parent_region), 2 * kMiB) == KVCACHED_OK);

  const pid_t child = fork();
  PRELOAD_CHECK(child >= 0);
  if (child == 0) {
    // The parent's region is unknown to the child's fresh runtime.
    (void)PageState(api, Addr(parent_region), &st);
    if (st != KVCACHED_ERR_NOT_FOUND) _exit(10);
    if (api.window_begin() != KVCACHED_OK) _exit(11);
    void* mine = nullptr;
    if (cudaMalloc(&mine, 8 * kMiB) != cudaSuccess) _exit(12);
    if (api.window_end() != KVCACHED_OK) _exit(13);
    if (api.acquire(Addr(mine), 2 * kMiB) != KVCACHED_OK) _exit(14);
    std::memset(mine, 0x22, 2 * kMiB);
    if (PageState(api, Addr(mine), &st) != KVCACHED_PAGE_IN_USE) _exit(15);
    if (cudaFree(mine) != cudaSuccess) _exit(16);
    // _exit: the fake driver would report the parent's copied state as the child's leaks.
    _exit(0);
  }
  int status = 0;
  PRELOAD_CHECK(waitpid(child, &status, 0) == child);
  std::printf("child exit=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status));
  PRELOAD_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  PRELOAD_CHECK(PageState(api, Addr(parent_region), &st) == KVCACHED_PAGE_IN_USE);
  PRELOAD_CHECK(api.release(Addr(parent_region), 2 * kMiB) == KVCACHED_OK);
  PRELOAD_CHECK(cudaFree(parent_region) == cudaSuccess);
  return 0;
}

// ENABLE_KVCACHED=false (or a bad configuration): a pure pass-through.
int Disabled() {
  const ShimApi api = RequireShimApi();
  kvcached_status st = KVCACHED_OK;
  PRELOAD_CHECK(api.enabled() == 0);
  PRELOAD_CHECK(api.window_begin() == KVCACHED_ERR_DISABLED);
  PRELOAD_CHECK(std::strlen(api.last_error()) > 0);
  void* p = nullptr;
  PRELOAD_CHECK(cudaMalloc(&p, 64 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(IsRealAllocation(p, 64 * kMiB));
  (void)PageState(api, Addr(p), &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_DISABLED);
  void* torch = api.torch_malloc(64 * kMiB, 0, nullptr);  // the real cudaMalloc
  PRELOAD_CHECK(torch != nullptr && IsRealAllocation(torch, 64 * kMiB));
  api.torch_free(torch, 64 * kMiB, 0, nullptr);
  PRELOAD_CHECK(cudaFree(p) == cudaSuccess);
  std::printf("disabled: %s\n", api.last_error());
  return 0;
}

// Many threads make the process's first CUDA call at once.
int Race() {
  constexpr int kThreads = 8;
  std::atomic<int> ready{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      for (int i = 0; i < 200; ++i) {
        void* p = nullptr;
        if (cudaMalloc(&p, 4096 + i) != cudaSuccess || cudaFree(p) != cudaSuccess) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  PRELOAD_CHECK(failures.load() == 0);
  const ShimApi api = RequireShimApi();
  PRELOAD_CHECK(api.enabled() == 1);
  kvcached_stats stats{};
  PRELOAD_CHECK(api.stats(0, &stats) == KVCACHED_OK);
  PRELOAD_CHECK(stats.passthrough_bytes == 0);  // every counted allocation was uncounted
  std::printf("race ok\n");
  return 0;
}

// cudaGetDriverEntryPoint(ByVersion) hands out the driver hooks (PyTorch's expandable segments
// reach the driver this way), and those hooks apply the window policy.
int Entry() {
  auto origin = [](void* p) {
    Dl_info info{};
    if (p == nullptr || dladdr(p, &info) == 0 || info.dli_fname == nullptr) return std::string("?");
    if (std::strstr(info.dli_fname, "libkvcached_shim") == nullptr) return std::string("real");
    return std::string("hook ") + (info.dli_sname != nullptr ? info.dli_sname : "?");
  };
  void* by_version = nullptr;
  void* plain = nullptr;
  void* init = nullptr;
  cudaDriverEntryPointQueryResult q{};
  PRELOAD_CHECK(cudaGetDriverEntryPointByVersion("cuMemAlloc", &by_version, 12000,
                                                 cudaEnableDefault, &q) == cudaSuccess);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  PRELOAD_CHECK(cudaGetDriverEntryPoint("cuMemFree", &plain, cudaEnableDefault, &q) == cudaSuccess);
#pragma GCC diagnostic pop
  PRELOAD_CHECK(cudaGetDriverEntryPointByVersion("cuInit", &init, 12000, cudaEnableDefault, &q) ==
                cudaSuccess);
  std::printf("ByVersion(cuMemAlloc): %s\n", origin(by_version).c_str());
  std::printf("EntryPoint(cuMemFree): %s\n", origin(plain).c_str());
  std::printf("ByVersion(cuInit): %s\n", origin(init).c_str());
  const ShimApi api = LoadShimApi();
  if (!api.loaded()) return 0;
  // The hooks obtained this way apply the window policy.
  auto alloc = reinterpret_cast<CUresult (*)(CUdeviceptr*, size_t)>(by_version);
  auto free_fn = reinterpret_cast<CUresult (*)(CUdeviceptr)>(plain);
  void* warm = nullptr;
  PRELOAD_CHECK(cudaMalloc(&warm, 256) == cudaSuccess);  // makes the primary context current
  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  CUdeviceptr region = 0;
  PRELOAD_CHECK(alloc(&region, 16 * kMiB) == CUDA_SUCCESS);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  kvcached_status st = KVCACHED_OK;
  PRELOAD_CHECK(IsIdleRegionPage(api, region));
  PRELOAD_CHECK(free_fn(region) == CUDA_SUCCESS);
  (void)PageState(api, region, &st);
  PRELOAD_CHECK(st == KVCACHED_ERR_NOT_FOUND);
  PRELOAD_CHECK(cudaFree(warm) == cudaSuccess);
  return 0;
}

// Leaves a region behind: the fake's leak check must catch it (proves that check can fail).
int Leak() {
  const ShimApi api = RequireShimApi();
  PRELOAD_CHECK(api.window_begin() == KVCACHED_OK);
  void* region = nullptr;
  PRELOAD_CHECK(cudaMalloc(&region, 16 * kMiB) == cudaSuccess);
  PRELOAD_CHECK(api.window_end() == KVCACHED_OK);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "sequence") return Sequence();
  if (mode == "oom") return Oom();
  if (mode == "window") return Window();
  if (mode == "torch") return Torch();
  if (mode == "capture") return Capture();
  if (mode == "meminfo") return MemInfo();
  if (mode == "count") return Count();
  if (mode == "ipc") return Ipc();
  if (mode == "fork") return Fork();
  if (mode == "disabled") return Disabled();
  if (mode == "race") return Race();
  if (mode == "leak") return Leak();
  if (mode == "entry") return Entry();
  if (mode == "hold" && argc > 2) return Hold(std::stoul(argv[2]));
  if (mode == "meminfo_watch") return MemInfoWatch();
  std::fprintf(stderr,
               "usage: %s sequence|oom|window|torch|capture|meminfo|count|ipc|fork|"
               "disabled|race|leak|entry|hold MIB|meminfo_watch\n",
               argv[0]);
  return 2;
}
