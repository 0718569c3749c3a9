// Leak accounting: fakecuda_get_counts, and the exit-time FAKECUDA_LEAK_REPORT /
// FAKECUDA_LEAK_CHECK. The check runs as an ELF destructor of the fake, i.e. after the
// program's and other libraries' static destructors and atexit handlers, so that objects
// released during normal teardown are not reported.
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <string>

#include "tests/fakecuda/fake_state.h"
#include "tests/fakecuda/fakecuda.h"

namespace fakecuda {
namespace {

fakecuda_counts CountsLocked(const State& s) {
  fakecuda_counts c{};
  for (const auto& [id, h] : s.handles) {
    c.handles += h.refs > 0 ? 1 : 0;
  }
  c.mappings = s.mappings.size();
  c.reservations = s.reservations.size();
  c.allocations = s.allocations.size();
  for (const Device& d : s.devices) {
    c.physical_bytes += d.used;
  }
  return c;
}

std::string Format(const fakecuda_counts& c) {
  char line[256];
  std::snprintf(line, sizeof(line),
                "handles=%" PRIu64 " mappings=%" PRIu64 " reservations=%" PRIu64
                " allocations=%" PRIu64 " physical_bytes=%" PRIu64,
                c.handles, c.mappings, c.reservations, c.allocations, c.physical_bytes);
  return line;
}

bool Any(const fakecuda_counts& c) {
  return c.handles != 0 || c.mappings != 0 || c.reservations != 0 || c.allocations != 0 ||
         c.physical_bytes != 0;
}

__attribute__((destructor)) void CheckLeaksAtExit() {
  State& s = S();
  fakecuda_counts counts{};
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    counts = CountsLocked(s);
  }
  const std::string line = Format(counts);
  if (!s.config.leak_report_path.empty()) {
    if (std::FILE* f = std::fopen(s.config.leak_report_path.c_str(), "w"); f != nullptr) {
      std::fprintf(f, "%s\n", line.c_str());
      std::fclose(f);
    } else {
      std::fprintf(stderr, "fakecuda: cannot write FAKECUDA_LEAK_REPORT=%s\n",
                   s.config.leak_report_path.c_str());
    }
  }
  if (s.config.leak_check && Any(counts)) {
    std::fprintf(stderr, "fakecuda: leaked at exit: %s\n", line.c_str());
    std::fflush(stderr);
    ::_exit(FAKECUDA_LEAK_EXIT_CODE);
  }
}

}  // namespace
}  // namespace fakecuda

extern "C" __attribute__((visibility("default"))) void fakecuda_get_counts(
    struct fakecuda_counts* out) {
  if (out == nullptr) {
    return;
  }
  fakecuda::State& s = fakecuda::S();
  const std::lock_guard<std::mutex> lock(s.mu);
  *out = fakecuda::CountsLocked(s);
}
