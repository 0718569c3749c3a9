// interpose_overhead: what the shim adds to a pass-through cudaMalloc + cudaFree pair.
//
// The program times N pairs (median over batches) in two child processes of itself: one bare,
// one with LD_PRELOAD=libkvcached_shim.so, and prints both medians and the difference. The CUDA
// runtime is dlopen'ed (RTLD_GLOBAL) and the functions looked up with dlsym(RTLD_DEFAULT), which
// is exactly how a program linked against libcudart binds: the preloaded shim comes first.
// No CUDA toolkit is needed to build it; on a GPU machine it uses the real libcudart.so.13
// (on CI, the fake one through LD_LIBRARY_PATH).
//
//   interpose_overhead [--rounds R] [--pairs N] [--size BYTES] [--cudart PATH] [--shim PATH]
//
// Two sizes are timed: 0 bytes (cudaMalloc returns at once: the hook's own cost, no table) and
// --size (default 4096: a real allocation, counted in the pass-through table). The bare and
// preloaded children alternate for --rounds rounds (median of the rounds' medians), so drift on
// a busy machine hits both alike. Where the runtime's symbols are versioned (the real
// libcudart.so.13), the preloaded child also times the real functions, found with dlvsym (which
// the shim does not interpose), in alternating batches in the same process: the "in-process"
// lines, the most direct measure of what the hook adds.
#include <dlfcn.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"

namespace {

namespace kb = kvcached::bench;
using kb::Median;
using kb::SelfDir;

using MallocFn = int (*)(void**, size_t);
using FreeFn = int (*)(void*);

struct Options {
  int rounds = 5;
  long pairs = 200000;
  size_t size = 4096;
  std::string cudart = "libcudart.so.13";
  std::string shim;
};

// Nanoseconds per pair over one batch of 100 pairs.
double TimeBatch(MallocFn cuda_malloc, FreeFn cuda_free, size_t size) {
  constexpr long kBatch = 100;
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < kBatch; ++i) {
    void* p = nullptr;
    if (cuda_malloc(&p, size) != 0 || cuda_free(p) != 0) {
      std::fprintf(stderr, "cudaMalloc/cudaFree(%zu) failed\n", size);
      std::exit(1);
    }
  }
  const auto end = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(end - start).count() / kBatch;
}

// Median nanoseconds per pair, over batches of 100 pairs.
double TimePairs(MallocFn cuda_malloc, FreeFn cuda_free, size_t size, long pairs) {
  std::vector<double> samples;
  for (long done = 0; done < pairs; done += 100) {
    samples.push_back(TimeBatch(cuda_malloc, cuda_free, size));
  }
  return Median(samples);
}

// The same, alternating batches of two implementations (hooked, real).
void TimeAlternating(MallocFn hooked_malloc, FreeFn hooked_free, MallocFn real_malloc,
                     FreeFn real_free, size_t size, long pairs, double* hooked, double* real) {
  std::vector<double> a;
  std::vector<double> b;
  for (long done = 0; done < pairs; done += 100) {
    a.push_back(TimeBatch(hooked_malloc, hooked_free, size));
    b.push_back(TimeBatch(real_malloc, real_free, size));
  }
  *hooked = Median(a);
  *real = Median(b);
}

int Child(const Options& o) {
  void* cudart = dlopen(o.cudart.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (cudart == nullptr)
    cudart = dlopen("/usr/local/cuda/lib64/libcudart.so.13", RTLD_NOW | RTLD_GLOBAL);
  if (cudart == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", o.cudart.c_str(), dlerror());
    return 1;
  }
  auto cuda_malloc = reinterpret_cast<MallocFn>(dlsym(RTLD_DEFAULT, "cudaMalloc"));
  auto cuda_free = reinterpret_cast<FreeFn>(dlsym(RTLD_DEFAULT, "cudaFree"));
  if (cuda_malloc == nullptr || cuda_free == nullptr) return 1;
  void* warm = nullptr;
  if (cuda_malloc(&warm, 1) != 0 || cuda_free(warm) != 0) {  // context creation, shim start
    std::fprintf(stderr, "CUDA initialisation failed\n");
    return 1;
  }
  (void)TimePairs(cuda_malloc, cuda_free, o.size, o.pairs / 10);  // warm caches and the table
  const double zero = TimePairs(cuda_malloc, cuda_free, 0, o.pairs);
  const double sized = TimePairs(cuda_malloc, cuda_free, o.size, o.pairs);
  std::printf("%.1f %.1f", zero, sized);
  auto real_malloc = reinterpret_cast<MallocFn>(dlvsym(cudart, "cudaMalloc", "libcudart.so.13"));
  auto real_free = reinterpret_cast<FreeFn>(dlvsym(cudart, "cudaFree", "libcudart.so.13"));
  if (real_malloc != nullptr && real_free != nullptr && real_malloc != cuda_malloc) {
    double hooked_zero = 0;
    double real_zero = 0;
    double hooked_sized = 0;
    double real_sized = 0;
    TimeAlternating(cuda_malloc, cuda_free, real_malloc, real_free, 0, o.pairs, &hooked_zero,
                    &real_zero);
    TimeAlternating(cuda_malloc, cuda_free, real_malloc, real_free, o.size, o.pairs, &hooked_sized,
                    &real_sized);
    std::printf(" %.1f %.1f %.1f %.1f", hooked_zero, real_zero, hooked_sized, real_sized);
  }
  std::printf("\n");
  return 0;
}

// Runs one measuring child; its numbers (2, or 6 with the in-process comparison) go to `values`.
bool RunChild(const Options& o, bool preload, std::vector<double>* values) {
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0 &&
        std::strncmp(*e, "KVCACHED_IPC_NAME=", 18) != 0) {
      env_storage.emplace_back(*e);
    }
  }
  const std::string ipc_name = "bench_interpose_" + std::to_string(getpid());
  env_storage.push_back("KVCACHED_IPC_NAME=" + ipc_name);  // a private ledger, removed below
  if (preload) env_storage.push_back("LD_PRELOAD=" + o.shim);
  std::vector<char*> envp;
  envp.reserve(env_storage.size() + 1);
  for (auto& s : env_storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  const std::string self = SelfDir() + "/interpose_overhead";
  std::vector<std::string> arg_storage = {
      self,       "--child", "--pairs", std::to_string(o.pairs), "--size", std::to_string(o.size),
      "--cudart", o.cudart};
  std::vector<char*> argv;
  argv.reserve(arg_storage.size() + 1);
  for (auto& s : arg_storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::array<int, 2> out{};
  if (pipe(out.data()) != 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (rc != 0) return false;
  std::array<char, 256> buffer{};
  const ssize_t n = read(out[0], buffer.data(), buffer.size() - 1);
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  unlink(("/dev/shm/kvcached_" + ipc_name).c_str());
  if (n <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return false;
  values->clear();
  char* cursor = buffer.data();
  for (;;) {
    char* end = nullptr;
    const double v = std::strtod(cursor, &end);
    if (end == cursor) break;
    values->push_back(v);
    cursor = end;
  }
  return values->size() >= 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.shim = SelfDir() + "/../lib/libkvcached_shim.so";
  bool child = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--child") {
      child = true;
    } else if (arg == "--rounds") {
      o.rounds = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--pairs") {
      o.pairs = std::max(1000L, std::atol(next().c_str()));
    } else if (arg == "--size") {
      o.size = std::strtoull(next().c_str(), nullptr, 10);
    } else if (arg == "--cudart") {
      o.cudart = next();
    } else if (arg == "--shim") {
      o.shim = next();
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--rounds R] [--pairs N] [--size BYTES] [--cudart PATH] [--shim PATH]\n",
          argv[0]);
      return 2;
    }
  }
  if (child) return Child(o);
  // Medians of the rounds: [bare 0, bare size, shim 0, shim size, in-process x4].
  std::vector<std::vector<double>> rounds(8);
  for (int r = 0; r < o.rounds; ++r) {
    std::vector<double> bare;
    std::vector<double> shim;
    if (!RunChild(o, false, &bare) || !RunChild(o, true, &shim)) {
      std::fprintf(stderr, "a measurement run failed (is %s loadable? is %s there?)\n",
                   o.cudart.c_str(), o.shim.c_str());
      return 1;
    }
    rounds[0].push_back(bare[0]);
    rounds[1].push_back(bare[1]);
    rounds[2].push_back(shim[0]);
    rounds[3].push_back(shim[1]);
    for (size_t k = 2; k < shim.size() && k < 6; ++k) rounds[2 + k].push_back(shim[k]);
  }
  std::vector<double> m(8, 0.0);
  for (size_t k = 0; k < 8; ++k) {
    if (!rounds[k].empty()) m[k] = Median(rounds[k]);
  }
  const std::string sized = std::to_string(o.size) + " B";
  std::printf("cudaMalloc+cudaFree pair, median ns (%d rounds x %ld pairs, runtime %s)\n", o.rounds,
              o.pairs, o.cudart.c_str());
  std::printf("%-26s %10s %10s %10s\n", "", "without", "with shim", "added");
  std::printf("%-26s %10.1f %10.1f %10.1f\n", "0 B, separate processes", m[0], m[2], m[2] - m[0]);
  std::printf("%-26s %10.1f %10.1f %10.1f\n", (sized + ", separate processes").c_str(), m[1], m[3],
              m[3] - m[1]);
  if (!rounds[4].empty()) {
    std::printf("%-26s %10.1f %10.1f %10.1f\n", "0 B, in-process", m[5], m[4], m[4] - m[5]);
    std::printf("%-26s %10.1f %10.1f %10.1f\n", (sized + ", in-process").c_str(), m[7], m[6],
                m[6] - m[7]);
  }
  return 0;
}
