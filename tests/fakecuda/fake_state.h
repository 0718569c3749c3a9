// The fake driver's process-wide state: devices, contexts, VMM objects, call counters and armed
// faults, all behind one mutex (the fake favours obviously-correct over fast).
#pragma once

#include <cuda.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fakecuda/fake_functions.h"

// cuda.h leaves these opaque; the fake gives them a body (a CUcontext points at one of these).
struct CUctx_st {
  int device = 0;
  int refcount = 0;  // primary-context retains; the context is usable while > 0
};
struct CUstream_st {
  int device = 0;
};

namespace fakecuda {

inline constexpr std::size_t kGranularity = std::size_t{2} << 20;  // 2 MiB, as on an H100
inline constexpr int kDriverVersion = 13000;

struct Config {
  std::uint64_t total_bytes = std::uint64_t{8192} << 20;
  int devices = 1;
  bool leak_check = false;
  std::string leak_report_path;
};

struct Device {
  std::uint64_t total = 0;
  std::uint64_t used = 0;  // physical bytes charged (cuMemCreate + cuMemAlloc)
  CUctx_st primary;
};

// A cuMemCreate handle: a memfd whose pages are the "device memory".
struct Handle {
  int fd = -1;
  std::size_t size = 0;
  CUmemAllocationProp prop{};
  std::uint64_t refs = 0;  // 1 at create, +1 per cuMemRetainAllocationHandle, -1 per release
  std::uint64_t maps = 0;  // live mappings using it: the memory lives while refs or maps
};

struct Mapping {
  std::size_t size = 0;
  CUmemGenericAllocationHandle handle = 0;
  // Access flags per 2 MiB granule (cuMemSetAccess may cover part of a mapping).
  std::vector<unsigned char> access;
};

struct Allocation {         // cuMemAlloc
  std::size_t size = 0;     // as requested
  std::size_t charged = 0;  // rounded up to the granularity, as the device pages it
  std::size_t mapped = 0;   // bytes of host VA behind it
  int device = 0;
};

struct Fault {
  Fn fn = Fn::kCount;
  std::uint64_t nth = 0;   // 1-based, counted from `base`
  bool and_later = false;  // "N+"
  CUresult error = CUDA_ERROR_UNKNOWN;
  std::uint64_t base = 0;  // call count of fn when the fault was armed
};

struct State {
  std::mutex mu;
  Config config;
  bool initialized = false;
  std::deque<Device> devices;  // deque: CUcontext pointers into it stay valid
  std::map<CUmemGenericAllocationHandle, Handle> handles;
  CUmemGenericAllocationHandle next_handle = 0x1000;
  std::map<std::uintptr_t, Mapping> mappings;          // by start address
  std::map<std::uintptr_t, std::size_t> reservations;  // start -> size
  std::map<std::uintptr_t, Allocation> allocations;    // start -> allocation
  std::map<CUstream, std::unique_ptr<CUstream_st>> streams;
  std::array<std::uint64_t, kFnCount> calls{};
  std::vector<Fault> faults;
};

// The one State; never destroyed, so the exit-time leak check can still read it after static
// destructors have run.
State& S();

// Every exported driver function starts with one of these: it takes the lock, counts the call
// and applies an armed fault. `fault` is CUDA_SUCCESS unless this call must fail.
class Call {
 public:
  explicit Call(Fn fn);
  [[nodiscard]] CUresult fault() const { return fault_; }
  State& state() { return s_; }

 private:
  State& s_;
  std::unique_lock<std::mutex> lock_;
  CUresult fault_ = CUDA_SUCCESS;
};

// Real-driver preconditions shared by many entry points (call with the lock held).
CUresult RequireInit(const State& s);
CUresult ValidDevice(const State& s, CUdevice dev);
// The calling thread's current context, or nullptr.
CUcontext CurrentContext();
// CUDA_SUCCESS and the device of the current context, or INVALID_CONTEXT / NOT_INITIALIZED.
CUresult RequireContext(const State& s, int* device);
CUresult ValidStream(const State& s, CUstream stream);

// Per-thread context stack (cuCtxPush/Pop; cuCtxSetCurrent replaces the top).
std::vector<CUcontext>& ContextStack();

// Physical accounting of one device.
CUresult Charge(State& s, int device, std::uint64_t bytes);
void Uncharge(State& s, int device, std::uint64_t bytes);

// Frees a handle's memory once it is neither referenced nor mapped.
void MaybeDestroyHandle(State& s, CUmemGenericAllocationHandle h);

// Reports a bad environment value or spec on stderr (each distinct message once).
void ReportOnce(const std::string& message);

}  // namespace fakecuda

// Opens an exported driver function: counts the call and returns an injected fault, if armed.
#define FAKECUDA_ENTER(call, fn)                 \
  ::fakecuda::Call call(::fakecuda::Fn::k_##fn); \
  if ((call).fault() != CUDA_SUCCESS) return (call).fault()
