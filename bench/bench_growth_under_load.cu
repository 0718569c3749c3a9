// Growth under load: the same step-by-step growth as bench_step_growth (32 KV tensors growing
// after an idle spell), with the GPU idle and with it busy running a bandwidth-bound copy kernel
// on every SM, as a serving engine's GPU is while its scheduler backs the next steps' pages.
// Answers two questions, alternating the settings in one run:
//   - does the driver map pages more slowly while kernels run? (the engine's time in acquires,
//     busy / idle; vLLM serving an 8B-shaped model spent ~145 us a 2 MiB page where this growth
//     on an idle GPU took ~65-75 us);
//   - do the page swaps slow the running kernels? (the copy kernel's bandwidth during the growth
//     against the same time without it).
// Page size and the burst reserve come from the environment (KVCACHED_PAGE_SIZE_MB,
// KVCACHED_MAP_AHEAD_BURST_PAGES): run it once per setting to compare them.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "bench/cuda_bench.cuh"
#include "bench/step_growth.h"
#include "core/runtime/runtime.h"

namespace kb = kvcached::bench;

namespace {

constexpr int kBlock = 256;

// Keeps the GPU busy with back-to-back copies on its own stream until stopped; counts the bytes
// the finished copies moved (read + write) between Start and Stop.
class BusyGpu {
 public:
  BusyGpu(int device, std::uint64_t bytes, int grid)
      : device_(device), bytes_(bytes / 16 * 16), grid_(grid) {
    CUDA_OK(cudaMalloc(&a_, bytes_));
    CUDA_OK(cudaMalloc(&b_, bytes_));
    CUDA_OK(cudaMemset(a_, 1, bytes_));
    CUDA_OK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~BusyGpu() {
    Stop();
    cudaStreamDestroy(stream_);
    cudaFree(a_);
    cudaFree(b_);
  }
  BusyGpu(const BusyGpu&) = delete;
  BusyGpu& operator=(const BusyGpu&) = delete;

  void Start() {
    stop_ = false;
    copies_ = 0;
    start_ = kb::Clock::now();
    thread_ = std::thread([this] { Run(); });
  }
  // GB/s (1e9 bytes) of the copies finished since Start.
  double Stop() {
    if (!thread_.joinable()) return 0;
    stop_ = true;
    thread_.join();
    const double s = kb::SecondsSince(start_);
    return 2.0 * static_cast<double>(bytes_) * static_cast<double>(copies_) / s / 1e9;
  }

 private:
  void Run() {
    CUDA_OK(cudaSetDevice(device_));  // the runtime's current device is per thread
    // Two copies queued at a time: the GPU never waits for the host, and Stop waits one copy.
    int queued = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      kb::CopyKernel<<<grid_, kBlock, 0, stream_>>>(static_cast<const uint4*>(a_),
                                                    static_cast<uint4*>(b_), bytes_ / 16);
      CUDA_OK(cudaGetLastError());
      if (++queued == 2) {
        CUDA_OK(cudaStreamSynchronize(stream_));
        copies_ += queued;
        queued = 0;
      }
    }
    CUDA_OK(cudaStreamSynchronize(stream_));
    copies_ += queued;
  }

  int device_;
  std::uint64_t bytes_;
  int grid_;
  void* a_ = nullptr;
  void* b_ = nullptr;
  cudaStream_t stream_{};
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::uint64_t copies_ = 0;  // written by the busy thread, read after join
  kb::Clock::time_point start_;
};

}  // namespace

int main(int argc, char** argv) {
  kb::GrowthShape shape;
  int regions = 32;
  double region_gib = 1;
  double busy_gib = 1;
  int reps = 3;
  std::string json_out;
  CLI::App app{"Growth under load: acquire calls of a growing cache with the GPU idle and busy"};
  app.add_option("--device", shape.device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  app.add_option("--regions", regions, "KV tensors (one lazy region each)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--region-gib", region_gib, "size of each region, GiB")
      ->check(CLI::Range(0.0625, 64.0));
  app.add_option("--pages-per-step", shape.pages_per_step, "pages each region grows by a step")
      ->check(CLI::Range(1, 4096));
  app.add_option("--steps", shape.steps, "growing steps per rep")->check(CLI::Range(1, 10000));
  app.add_option("--step-ms", shape.step_ms, "time from one step's start to the next")
      ->check(CLI::Range(0.0, 10000.0));
  app.add_option("--busy-gib", busy_gib, "bytes each copy of the busy kernel reads (and writes)")
      ->check(CLI::Range(0.0625, 16.0));
  app.add_option("--reps", reps, "reps of each setting, alternating")->check(CLI::Range(1, 100));
  app.add_option("--json-out", json_out, "also write the JSON line to this file");
  CLI11_PARSE(app, argc, argv);

  if (kb::SkipWithoutGpu(shape.device, "growth under load", "growth_under_load", json_out)) {
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, shape.device));
  int per_sm = 0;
  CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kb::CopyKernel, kBlock, 0));

  kvcached::Config cfg = kb::EnvConfig();
  cfg.cuda_driver = "libcuda.so.1";  // must be the driver behind this program's cudart
  auto rt = kb::Take(kvcached::Runtime::Create(cfg), "Runtime::Create");
  const std::uint64_t page = cfg.page_size();
  const auto region_bytes =
      (static_cast<std::uint64_t>(region_gib * static_cast<double>(1ULL << 30)) + page - 1) / page *
      page;
  if (const std::string why = kb::GrowthFits(shape, page, region_bytes); !why.empty()) {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    return 2;
  }
  std::vector<std::uint64_t> bases;
  for (int r = 0; r < regions; ++r) {
    bases.push_back(kb::Take(
        rt->CreateRegion(shape.device, region_bytes, kvcached::RegionKind::kLazy), "CreateRegion"));
  }
  BusyGpu busy(shape.device, static_cast<std::uint64_t>(busy_gib * static_cast<double>(1ULL << 30)),
               prop.multiProcessorCount * per_sm);
  std::printf(
      "growth under load: %d regions of %llu MiB, %d pages of %llu MiB each a step, %d steps "
      "%.0f ms apart, burst reserve %zu pages, busy kernel copying %.2f GiB, %d reps, %s\n",
      regions, static_cast<unsigned long long>(region_bytes >> 20), shape.pages_per_step,
      static_cast<unsigned long long>(page >> 20), shape.steps, shape.step_ms,
      cfg.map_ahead_burst_pages, busy_gib, reps, prop.name);

  std::vector<double> idle_ms;
  std::vector<double> busy_ms;
  std::vector<double> kernel_with_growth;     // GB/s of the busy kernel while the cache grew
  std::vector<double> kernel_without_growth;  // GB/s of the busy kernel alone, as long
  std::vector<double> idle_sync;
  std::vector<double> busy_sync;
  for (int rep = -1; rep < reps; ++rep) {  // rep -1: untimed warm-up of both
    kb::GrowthRep quiet = kb::GrowSteps(*rt, bases, shape, page);
    kb::ResetToIdle(*rt, bases, shape, page);

    busy.Start();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the kernels are running
    kb::GrowthRep loaded = kb::GrowSteps(*rt, bases, shape, page);
    const double with_growth = busy.Stop();
    kb::ResetToIdle(*rt, bases, shape, page);
    busy.Start();
    std::this_thread::sleep_for(std::chrono::duration<double>(loaded.wall_s + 0.05));
    const double alone = busy.Stop();
    if (rep < 0) continue;
    idle_ms.push_back(quiet.acquire_ms_total);
    busy_ms.push_back(loaded.acquire_ms_total);
    idle_sync.push_back(static_cast<double>(quiet.sync_maps));
    busy_sync.push_back(static_cast<double>(loaded.sync_maps));
    kernel_with_growth.push_back(with_growth);
    kernel_without_growth.push_back(alone);
  }

  const double idle_med = kb::Median(idle_ms);
  const double busy_med = kb::Median(busy_ms);
  const double kw = kb::Median(kernel_with_growth);
  const double ka = kb::Median(kernel_without_growth);
  std::printf("  %-22s %12s %16s %12s\n", "setting", "acquire_ms", "min-max", "sync_maps");
  std::printf("  %-22s %12.1f %7.1f-%-8.1f %12.0f\n", "GPU idle", idle_med,
              kb::Percentile(idle_ms, 0), kb::Percentile(idle_ms, 100), kb::Median(idle_sync));
  std::printf("  %-22s %12.1f %7.1f-%-8.1f %12.0f\n", "GPU busy (copy kernel)", busy_med,
              kb::Percentile(busy_ms, 0), kb::Percentile(busy_ms, 100), kb::Median(busy_sync));
  std::printf("  engine time in acquires, busy / idle: %.3f\n",
              idle_med > 0 ? busy_med / idle_med : 0);
  std::printf("  copy kernel GB/s while the cache grew / alone: %.1f / %.1f = %.3f\n", kw, ka,
              ka > 0 ? kw / ka : 0);
  nlohmann::json info = nlohmann::json::array();
  info.push_back(
      kb::MakeInfo("acquire_ms_busy_over_idle", idle_med > 0 ? busy_med / idle_med : 0, "ratio"));
  info.push_back(
      kb::MakeInfo("kernel_gbps_with_over_without_growth", ka > 0 ? kw / ka : 0, "ratio"));
  kb::EmitJson({{"bench", "growth_under_load"},
                {"device", prop.name},
                {"page_bytes", page},
                {"burst_pages", cfg.map_ahead_burst_pages},
                {"regions", regions},
                {"pages_per_step", shape.pages_per_step},
                {"steps", shape.steps},
                {"step_ms", shape.step_ms},
                {"reps", reps},
                {"acquire_ms_idle", idle_ms},
                {"acquire_ms_busy", busy_ms},
                {"kernel_gbps_with_growth", kernel_with_growth},
                {"kernel_gbps_without_growth", kernel_without_growth},
                {"info", info}},
               json_out);
  return 0;
}
