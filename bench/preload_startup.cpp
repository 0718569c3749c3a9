// preload_startup: what LD_PRELOAD=libkvcached_shim.so adds to starting a process that never
// uses CUDA (target: under 1 ms). Spawns the program (default /bin/true) many times, bare and
// preloaded alternately (so drift hits both alike), and prints the median wall time of each.
//
//   preload_startup [--runs N] [--shim PATH] [--program PATH]
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
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

std::vector<char*> Environment(std::vector<std::string>* storage, const std::string& preload) {
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) storage->emplace_back(*e);
  }
  if (!preload.empty()) storage->push_back("LD_PRELOAD=" + preload);
  std::vector<char*> envp;
  for (auto& s : *storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  return envp;
}

// Microseconds from spawn to reaped exit; negative on failure.
double SpawnOnce(const std::string& program, char* const* envp) {
  std::string argv0 = program;  // posix_spawn takes char* const argv[]
  const std::array<char*, 2> argv = {argv0.data(), nullptr};
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = 0;
  if (posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), envp) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 500;
  std::string shim = SelfDir() + "/../lib/libkvcached_shim.so";
  std::string program = "/bin/true";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::max(10, std::atoi(argv[++i]));
    } else if (arg == "--shim" && i + 1 < argc) {
      shim = argv[++i];
    } else if (arg == "--program" && i + 1 < argc) {
      program = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--runs N] [--shim PATH] [--program PATH]\n", argv[0]);
      return 2;
    }
  }
  if (access(shim.c_str(), R_OK) != 0) {
    std::fprintf(stderr, "shim not found: %s (pass --shim)\n", shim.c_str());
    return 1;
  }
  std::vector<std::string> bare_storage;
  std::vector<std::string> shim_storage;
  const std::vector<char*> bare_env = Environment(&bare_storage, "");
  const std::vector<char*> shim_env = Environment(&shim_storage, shim);
  std::vector<double> bare;
  std::vector<double> preloaded;
  for (int i = 0; i < runs + 20; ++i) {
    const double b = SpawnOnce(program, bare_env.data());
    const double s = SpawnOnce(program, shim_env.data());
    if (b < 0 || s < 0) {
      std::fprintf(stderr, "%s failed to run\n", program.c_str());
      return 1;
    }
    if (i >= 20) {  // the first runs warm the page cache
      bare.push_back(b);
      preloaded.push_back(s);
    }
  }
  const double b = Median(bare);
  const double s = Median(preloaded);
  std::printf("start-up of %s, median of %d runs\n", program.c_str(), runs);
  std::printf("bare      %9.1f us\npreloaded %9.1f us\nadded     %9.1f us (target < 1000 us)\n", b,
              s, s - b);
  return 0;
}
