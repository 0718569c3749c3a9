// Reentrancy guard for the interposed allocation functions.
//
// When our cudaMalloc hook calls the real cudaMalloc, the runtime reaches the driver's cuMemAlloc
// through the pointer our cuGetProcAddress hook handed it, so the driver hook runs inside the
// runtime hook. The inner hook must pass straight through: the outer one already applied the
// policy and counts the allocation. The guard is per thread, so other threads are unaffected.
#pragma once

namespace kvcached::hooks {

// True while this thread is inside a real CUDA call made by one of our hooks.
bool InRealCall();

class RealCallScope {
 public:
  RealCallScope();
  ~RealCallScope();
  RealCallScope(const RealCallScope&) = delete;
  RealCallScope& operator=(const RealCallScope&) = delete;
  RealCallScope(RealCallScope&&) = delete;
  RealCallScope& operator=(RealCallScope&&) = delete;
};

}  // namespace kvcached::hooks
