// Copy-kernel bandwidth on a backed lazy region vs cudaMalloc memory. Same kernel (16-byte
// vector loads, grid filling the GPU), same sizes (>= 2 GiB per buffer, far beyond L2), random
// non-zero data, CUDA events, interleaved reps, medians. Bandwidth counts bytes read + written.
// Target: region / cudaMalloc >= 0.995. The region comes from the core Runtime (which dlopens
// libcuda.so.1); this program's static cudart shares the same primary context.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "bench/bench_common.h"
#include "bench/cuda_bench.cuh"
#include "core/runtime/runtime.h"

namespace kb = kvcached::bench;
using kb::CopyKernel;

namespace {

__device__ __forceinline__ unsigned Hash(unsigned long long i, unsigned seed) {
  unsigned long long x = i * 0x9E3779B97F4A7C15ULL + seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 29;
  return static_cast<unsigned>(x) | 1U;  // never zero: zeros hide unwritten memory
}

__global__ void FillKernel(unsigned* p, unsigned long long words, unsigned seed) {
  for (auto i = blockIdx.x * 1ULL * blockDim.x + threadIdx.x; i < words;
       i += 1ULL * gridDim.x * blockDim.x) {
    p[i] = Hash(i, seed);
  }
}

__global__ void CountMismatchKernel(const unsigned* p, unsigned long long words, unsigned seed,
                                    unsigned long long* bad) {
  unsigned long long n = 0;
  for (auto i = blockIdx.x * 1ULL * blockDim.x + threadIdx.x; i < words;
       i += 1ULL * gridDim.x * blockDim.x) {
    n += p[i] != Hash(i, seed);
  }
  if (n != 0) atomicAdd(bad, n);
}

struct Pair {
  void* a;
  void* b;
};

class Bench {
 public:
  Bench(std::uint64_t bytes, int grid) : bytes_(bytes), grid_(grid) {
    CUDA_OK(cudaEventCreate(&start_));
    CUDA_OK(cudaEventCreate(&stop_));
    CUDA_OK(cudaMalloc(&bad_, sizeof(unsigned long long)));
  }
  ~Bench() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaFree(bad_);
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  void Fill(void* p, unsigned seed) {
    FillKernel<<<grid_, kBlock>>>(static_cast<unsigned*>(p), bytes_ / 4, seed);
    CUDA_OK(cudaGetLastError());
  }
  std::uint64_t Mismatches(const void* p, unsigned seed) {
    CUDA_OK(cudaMemset(bad_, 0, sizeof(unsigned long long)));
    CountMismatchKernel<<<grid_, kBlock>>>(static_cast<const unsigned*>(p), bytes_ / 4, seed, bad_);
    CUDA_OK(cudaGetLastError());
    unsigned long long host = 0;
    CUDA_OK(cudaMemcpy(&host, bad_, sizeof(host), cudaMemcpyDeviceToHost));
    return host;
  }
  // One timed copy (ms); alternates direction so each rep reads what the last one wrote.
  float TimedCopy(Pair& p) {
    CUDA_OK(cudaEventRecord(start_));
    CopyKernel<<<grid_, kBlock>>>(static_cast<const uint4*>(p.a), static_cast<uint4*>(p.b),
                                  bytes_ / 16);
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaEventRecord(stop_));
    CUDA_OK(cudaEventSynchronize(stop_));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start_, stop_));
    std::swap(p.a, p.b);
    return ms;
  }
  static constexpr int kBlock = 256;

 private:
  std::uint64_t bytes_;
  int grid_;
  cudaEvent_t start_{};
  cudaEvent_t stop_{};
  unsigned long long* bad_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  int device = 0;
  double gib = 2;
  int reps = 100;
  int warmup = 5;
  std::string json_out;
  CLI::App app{"Copy-kernel bandwidth: backed lazy region vs cudaMalloc memory"};
  app.add_option("--device", device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  app.add_option("--gib", gib, "bytes per buffer, GiB (two buffers each side)")
      ->check(CLI::Range(0.0625, 64.0));
  app.add_option("--reps", reps, "timed copies per side")->check(CLI::Range(3, 100000));
  app.add_option("--warmup", warmup)->check(CLI::Range(0, 1000));
  app.add_option("--json-out", json_out, "also write the JSON line to this file");
  CLI11_PARSE(app, argc, argv);

  if (kb::SkipWithoutGpu(device, "copy bandwidth", "copy_bandwidth", json_out)) return 0;
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, device));
  int per_sm = 0;
  CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, CopyKernel, Bench::kBlock, 0));
  const int grid = prop.multiProcessorCount * per_sm;

  kvcached::Config cfg = kb::EnvConfig();
  cfg.cuda_driver = "libcuda.so.1";  // must be the driver behind this program's cudart
  auto rt = kb::Take(kvcached::Runtime::Create(cfg), "Runtime::Create");
  const std::uint64_t page = cfg.page_size();
  auto bytes = static_cast<std::uint64_t>(gib * static_cast<double>(1ULL << 30));
  bytes = (bytes + page - 1) / page * page;
  const std::uint64_t base =
      kb::Take(rt->CreateRegion(device, 2 * bytes, kvcached::RegionKind::kLazy), "CreateRegion");
  const kvcached::ByteRange all{base, 2 * bytes};
  kb::Check(rt->Acquire({&all, 1}), "Acquire of the whole region");
  Pair region{reinterpret_cast<void*>(base), reinterpret_cast<void*>(base + bytes)};
  Pair plain{nullptr, nullptr};
  CUDA_OK(cudaMalloc(&plain.a, bytes));
  CUDA_OK(cudaMalloc(&plain.b, bytes));

  Bench b(bytes, grid);
  constexpr unsigned kSeed = 0x5eed;
  for (Pair* p : {&region, &plain}) {
    b.Fill(p->a, kSeed);
    b.Fill(p->b, kSeed ^ 0xffffU);  // poison: the first copy must overwrite it
  }
  std::vector<double> region_gbps;
  std::vector<double> plain_gbps;
  const double moved = 2.0 * static_cast<double>(bytes);  // read + write
  for (int i = -warmup; i < reps; ++i) {  // interleaved so clock drift hits both sides alike
    const float rms = b.TimedCopy(region);
    const float pms = b.TimedCopy(plain);
    if (i < 0) continue;
    region_gbps.push_back(moved / (rms * 1e-3) / 1e9);
    plain_gbps.push_back(moved / (pms * 1e-3) / 1e9);
  }
  CUDA_OK(cudaDeviceSynchronize());
  std::uint64_t bad = 0;
  for (Pair* p : {&region, &plain}) bad += b.Mismatches(p->a, kSeed) + b.Mismatches(p->b, kSeed);

  const double rmed = kb::Median(region_gbps);
  const double pmed = kb::Median(plain_gbps);
  std::printf("copy bandwidth: %s, %d SMs x %d blocks of %d, 2 x %.2f GiB per side, %d reps\n",
              prop.name, prop.multiProcessorCount, per_sm, Bench::kBlock,
              static_cast<double>(bytes) / (1ULL << 30), reps);
  std::printf("  %-10s %10s %10s %10s\n", "memory", "med_GB/s", "p10_GB/s", "p90_GB/s");
  std::printf("  %-10s %10.1f %10.1f %10.1f\n", "region", rmed, kb::Percentile(region_gbps, 10),
              kb::Percentile(region_gbps, 90));
  std::printf("  %-10s %10.1f %10.1f %10.1f\n", "cudaMalloc", pmed, kb::Percentile(plain_gbps, 10),
              kb::Percentile(plain_gbps, 90));
  std::printf("  data check: %llu mismatched words\n", static_cast<unsigned long long>(bad));
  nlohmann::json checks = nlohmann::json::array();
  checks.push_back(kb::MakeCheck("copy_bw_ratio_region_vs_malloc", rmed / pmed, "x", ">=", 0.995));
  checks.push_back(
      kb::MakeCheck("copy_data_mismatches", static_cast<double>(bad), "words", "<=", 0));
  const bool pass = kb::PrintChecks(checks);
  kb::EmitJson({{"bench", "copy_bandwidth"},
                {"device", prop.name},
                {"bytes_per_buffer", bytes},
                {"region_gbps_median", rmed},
                {"malloc_gbps_median", pmed},
                {"ratio", rmed / pmed},
                {"mismatches", bad},
                {"checks", checks},
                {"info",
                 {kb::MakeInfo("copy_region_GBps", rmed, "GB/s"),
                  kb::MakeInfo("copy_cudaMalloc_GBps", pmed, "GB/s")}},
                {"pass", pass}},
               json_out);

  CUDA_OK(cudaFree(plain.a));
  CUDA_OK(cudaFree(plain.b));
  kb::Check(rt->Release({&all, 1}), "Release");
  kb::Check(rt->DestroyRegion(base), "DestroyRegion");
  rt.reset();
  return bad == 0 ? 0 : 1;
}
