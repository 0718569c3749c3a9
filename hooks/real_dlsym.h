// The real dlsym: the definition that comes after libkvcached_shim.so (normally glibc's), which
// our own dlsym interposer forwards to and which all of the shim's own lookups use.
#pragma once

namespace kvcached::hooks {

using DlsymFn = void* (*)(void* handle, const char* name);

// Found once with dlvsym(RTLD_NEXT, "dlsym", <glibc version>), the way LLVM compiler-rt's
// interception library finds the functions it wraps: asking by version avoids picking up an
// unversioned interposer's definition by accident, and RTLD_NEXT from inside this library skips
// our own definition. Never null: if nothing is found, a stub that finds nothing is returned.
DlsymFn RealDlsym();

}  // namespace kvcached::hooks

// Read by the dlsym trampoline (assembly, hooks/dlsym_trampoline.cpp) after RealDlsym() has run
// once on the calling thread. Hidden: the trampoline addresses it PC-relative.
extern "C" __attribute__((visibility("hidden"))) void* kvcached_real_dlsym;
