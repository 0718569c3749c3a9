// How the hooks and the C API reach the process's Runtime. Its lifetime is kept here
// (hooks/runtime_access.cpp, through a RuntimeGate: created on the first interposed CUDA call,
// dropped in a fork child, destroyed at exit when nothing uses it); callers only borrow it for
// the length of one call.
#pragma once

#include <utility>

namespace kvcached {
class Runtime;
}

namespace kvcached::hooks {

// A borrowed Runtime for the length of one hook call (counted, so that the exit handler never
// destroys a Runtime that another thread is still using). Empty = pass straight through.
class RuntimeRef {
 public:
  RuntimeRef() = default;
  explicit RuntimeRef(Runtime* runtime) noexcept : runtime_(runtime) {}
  RuntimeRef(RuntimeRef&& other) noexcept : runtime_(std::exchange(other.runtime_, nullptr)) {}
  RuntimeRef& operator=(RuntimeRef&&) = delete;
  RuntimeRef(const RuntimeRef&) = delete;
  RuntimeRef& operator=(const RuntimeRef&) = delete;
  ~RuntimeRef();

  explicit operator bool() const { return runtime_ != nullptr; }
  Runtime* operator->() const { return runtime_; }
  Runtime& operator*() const { return *runtime_; }
  [[nodiscard]] Runtime* get() const { return runtime_; }

 private:
  Runtime* runtime_ = nullptr;
};

// The Runtime, starting it on the first call. Never waits: while another thread is starting it
// (or when called re-entrantly from inside the start), returns empty, and the caller passes the
// call through unchanged. Empty as well when the shim is a pure pass-through (ENABLE_KVCACHED=
// false, a bad KVCACHED_* value, or a start that failed).
RuntimeRef AcquireRuntime() noexcept;

// False once the shim is known to be a pure pass-through: then dlsym / cuGetProcAddress hand
// out the real functions instead of our hooks. Starts the shim if nobody has yet.
bool SubstitutionAllowed() noexcept;

// Called by ~RuntimeRef.
void ReleaseRuntimeRef() noexcept;

// For the C API: like AcquireRuntime, but if another thread is starting the shim right now,
// waits for it (the caller asked for the shim explicitly). Empty = pass-through.
RuntimeRef WaitForRuntime() noexcept;

// Why the shim is a pass-through ("ENABLE_KVCACHED=false", the bad variable, the failed start,
// the exit), or "" while it is active or not started.
const char* PassThroughReason() noexcept;

inline RuntimeRef::~RuntimeRef() {
  if (runtime_ != nullptr) ReleaseRuntimeRef();
}

}  // namespace kvcached::hooks
