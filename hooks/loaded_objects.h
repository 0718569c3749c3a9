// Finding a library that is already loaded but not in the global lookup scope.
//
// PyTorch's CUDA extension pulls in libcudart.so.13 with RTLD_LOCAL (Python loads extension
// modules that way), so dlsym(RTLD_NEXT, "cudaMalloc") from the shim finds nothing even though
// the engine calls cudaMalloc all the time (its references bind to our exported hook, because
// the global scope -- where the preloaded shim lives -- is searched before the local one).
// Walking the loaded objects and re-opening the library with RTLD_NOLOAD gives a handle to it.
#pragma once

namespace kvcached::hooks {

// Handles (RTLD_NOLOAD, kept open so the library stays pinned while we hold pointers into it)
// to every loaded object whose file name starts with `prefix` ("libcudart.so"), in load order.
// Calls `visit(handle)` for each until it returns true; returns that handle, or null.
using LoadedVisitor = bool (*)(void* handle, void* context);
void* FindLoadedObject(const char* prefix, LoadedVisitor visit, void* context);

}  // namespace kvcached::hooks
