// Lazy start of the shim: nothing happens when the library is loaded; the first interposed CUDA
// call (or C API call) reads the configuration and creates the Runtime. Implements the hooks'
// view of it (hooks/runtime_access.h) and adds what the C API needs.
#pragma once

#include "hooks/runtime_access.h"

namespace kvcached::shim {

// For the C API: like hooks::AcquireRuntime, but if another thread is starting the shim right
// now, waits for it (the caller asked for the shim explicitly). Empty = pass-through.
hooks::RuntimeRef WaitForRuntime();

// Why the shim is a pass-through ("ENABLE_KVCACHED=false", the bad variable, the failed start),
// or "" while it is active or not started.
const char* PassThroughReason();

}  // namespace kvcached::shim
