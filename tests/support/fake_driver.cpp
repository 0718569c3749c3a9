#include "tests/support/fake_driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <sstream>

#include "tests/fakecuda/fakecuda.h"

namespace kvcached::testing {
namespace {

struct FakeApi {
  void* handle = nullptr;
  std::string error;
  fakecuda_get_counts_fn get_counts = nullptr;
  fakecuda_set_faults_fn set_faults = nullptr;
  fakecuda_clear_faults_fn clear_faults = nullptr;
  fakecuda_call_count_fn call_count = nullptr;
};

template <class F>
void Sym(void* handle, const char* name, F* out) {
  *out = reinterpret_cast<F>(::dlsym(handle, name));
}

FakeApi Load() {
  FakeApi a;
  const std::string path = DriverPath();
  a.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (a.handle == nullptr) {
    a.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  if (a.handle == nullptr) {
    const char* why = ::dlerror();
    a.error = "cannot load the CUDA driver '" + path + "': " + (why != nullptr ? why : "unknown") +
              " (set KVCACHED_CUDA_DRIVER to the fake libcuda.so.1 of the build)";
    return a;
  }
  Sym(a.handle, "fakecuda_get_counts", &a.get_counts);
  Sym(a.handle, "fakecuda_set_faults", &a.set_faults);
  Sym(a.handle, "fakecuda_clear_faults", &a.clear_faults);
  Sym(a.handle, "fakecuda_call_count", &a.call_count);
  if (a.get_counts == nullptr || a.set_faults == nullptr || a.clear_faults == nullptr ||
      a.call_count == nullptr) {
    a.error = "the CUDA driver '" + path + "' is not the fake (no fakecuda_* functions)";
  }
  return a;
}

const FakeApi& Api() {
  static const FakeApi api = Load();
  return api;
}

bool RequireFake(const char* what) {
  const FakeApi& a = Api();
  if (!a.error.empty()) {
    ADD_FAILURE() << what << ": " << a.error;
    return false;
  }
  return true;
}

}  // namespace

std::string FakeCounts::ToString() const {
  std::ostringstream os;
  os << "{handles=" << handles << " mappings=" << mappings << " reservations=" << reservations
     << " allocations=" << allocations << " physical_bytes=" << physical_bytes << "}";
  return os.str();
}

void PrintTo(const FakeCounts& c, std::ostream* os) {
  *os << c.ToString();
}

std::string DriverPath() {
  const char* env = std::getenv("KVCACHED_CUDA_DRIVER");
  return env != nullptr && *env != '\0' ? env : KVCACHED_TEST_FAKE_DRIVER;
}

std::string FakeRuntimePath() {
  return KVCACHED_TEST_FAKE_RUNTIME;
}

void* DriverHandle(std::string* error) {
  const FakeApi& a = Api();
  if (error != nullptr && a.handle == nullptr) {
    *error = a.error;
  }
  return a.handle;
}

bool IsFakeDriver() {
  return Api().error.empty();
}

FakeCounts Counts() {
  FakeCounts out;
  if (!RequireFake("Counts()")) {
    return out;
  }
  fakecuda_counts c{};
  Api().get_counts(&c);
  out.handles = c.handles;
  out.mappings = c.mappings;
  out.reservations = c.reservations;
  out.allocations = c.allocations;
  out.physical_bytes = c.physical_bytes;
  return out;
}

std::uint64_t CallCount(const char* fn) {
  return RequireFake("CallCount()") ? Api().call_count(fn) : 0;
}

bool SetFaults(const std::string& spec) {
  return RequireFake("SetFaults()") && Api().set_faults(spec.c_str()) == 0;
}

void ClearFaults() {
  if (RequireFake("ClearFaults()")) {
    Api().clear_faults();
  }
}

ScopedFaults::ScopedFaults(const std::string& spec) : ok_(SetFaults(spec)) {
  if (!ok_) {
    ADD_FAILURE() << "bad fault spec '" << spec << "' (see tests/fakecuda/fakecuda.h)";
  }
}

ScopedFaults::~ScopedFaults() {
  ClearFaults();
}

::testing::AssertionResult NoLeaksSince(const FakeCounts& before) {
  const FakeCounts now = Counts();
  if (now == before) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "the fake CUDA driver holds " << now.ToString() << ", expected " << before.ToString();
}

::testing::AssertionResult NoLeaks() {
  return NoLeaksSince(FakeCounts{});
}

}  // namespace kvcached::testing
