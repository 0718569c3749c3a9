#include "tests/fakecuda/fake_state.h"

#include <pthread.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "tests/fakecuda/fake_faults.h"
#include "tests/fakecuda/no_destructor.h"

namespace fakecuda {
namespace {

// Parses an environment integer in [lo, hi]; a bad value is reported and the default kept.
std::uint64_t EnvInt(const char* name, std::uint64_t fallback, std::uint64_t lo, std::uint64_t hi) {
  const char* raw = std::getenv(name);
  if (raw == nullptr || *raw == '\0') {
    return fallback;
  }
  const std::string_view text(raw);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < lo || value > hi) {
    ReportOnce("fakecuda: " + std::string(name) + "='" + std::string(text) +
               "' is not a whole number in " + std::to_string(lo) + ".." + std::to_string(hi) +
               "; using " + std::to_string(fallback));
    return fallback;
  }
  return value;
}

Config ReadConfig() {
  Config c;
  c.total_bytes = EnvInt("FAKECUDA_TOTAL_MB", 8192, 1, std::uint64_t{1} << 24) << 20;
  c.devices = static_cast<int>(EnvInt("FAKECUDA_DEVICES", 1, 0, 64));
  c.leak_check = EnvInt("FAKECUDA_LEAK_CHECK", 0, 0, 1) == 1;
  if (const char* path = std::getenv("FAKECUDA_LEAK_REPORT"); path != nullptr) {
    c.leak_report_path = path;
  }
  return c;
}

void ArmEnvFaults(State& s) {
  const char* spec = std::getenv("FAKECUDA_FAIL");
  if (spec == nullptr) {
    return;
  }
  std::string error;
  if (!ParseFaults(spec, s, &s.faults, &error)) {
    ReportOnce(error + " (from FAKECUDA_FAIL)");
  }
}

// A fork child must not inherit the lock held by a thread that does not exist in it.
void LockForFork() {
  S().mu.lock();
}
void UnlockAfterFork() {
  S().mu.unlock();
}

State& Build(State& s) {
  s.config = ReadConfig();
  ArmEnvFaults(s);
  pthread_atfork(LockForFork, UnlockAfterFork, UnlockAfterFork);
  return s;
}

}  // namespace

State& S() {
  static NoDestructor<State> state;
  static State& built = Build(*state);
  return built;
}

void ReportOnce(const std::string& message) {
  static NoDestructor<std::mutex> mu;
  static NoDestructor<std::set<std::string>> seen;
  const std::lock_guard<std::mutex> lock(*mu);
  if (seen->insert(message).second) {
    std::fprintf(stderr, "%s\n", message.c_str());
  }
}

Call::Call(Fn fn) : s_(S()), lock_(s_.mu) {
  const std::uint64_t n = ++s_.calls.at(static_cast<std::size_t>(fn));
  for (const Fault& f : s_.faults) {
    if (f.fn != fn) {
      continue;
    }
    const std::uint64_t rel = n - f.base;
    if (rel == f.nth || (f.and_later && rel > f.nth)) {
      fault_ = f.error;
      break;
    }
  }
}

CUresult RequireInit(const State& s) {
  return s.initialized ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

CUresult ValidDevice(const State& s, CUdevice dev) {
  if (!s.initialized) {
    return CUDA_ERROR_NOT_INITIALIZED;
  }
  return dev >= 0 && static_cast<std::size_t>(dev) < s.devices.size() ? CUDA_SUCCESS
                                                                      : CUDA_ERROR_INVALID_DEVICE;
}

std::vector<CUcontext>& ContextStack() {
  thread_local std::vector<CUcontext> stack;
  return stack;
}

CUcontext CurrentContext() {
  const std::vector<CUcontext>& stack = ContextStack();
  return stack.empty() ? nullptr : stack.back();
}

CUresult RequireContext(const State& s, int* device) {
  if (!s.initialized) {
    return CUDA_ERROR_NOT_INITIALIZED;
  }
  CUcontext ctx = CurrentContext();
  if (ctx == nullptr || ctx->refcount <= 0) {
    return CUDA_ERROR_INVALID_CONTEXT;  // none current, or its primary context was released
  }
  *device = ctx->device;
  return CUDA_SUCCESS;
}

CUresult ValidStream(const State& s, CUstream stream) {
  // 0, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD name the default streams.
  if (stream == nullptr || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD) {
    return CUDA_SUCCESS;
  }
  return s.streams.contains(stream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult Charge(State& s, int device, std::uint64_t bytes) {
  Device& d = s.devices.at(static_cast<std::size_t>(device));
  if (bytes > d.total - d.used) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  d.used += bytes;
  return CUDA_SUCCESS;
}

void Uncharge(State& s, int device, std::uint64_t bytes) {
  s.devices.at(static_cast<std::size_t>(device)).used -= bytes;
}

void MaybeDestroyHandle(State& s, CUmemGenericAllocationHandle h) {
  auto it = s.handles.find(h);
  if (it == s.handles.end() || it->second.refs != 0 || it->second.maps != 0) {
    return;
  }
  ::close(it->second.fd);
  Uncharge(s, it->second.prop.location.id, it->second.size);
  s.handles.erase(it);
}

}  // namespace fakecuda
