// A stand-in for the real libcudart.so.13, whose symbols carry the version node
// "libcudart.so.13" (the fake runtime's do not). Programs linked against it reference
// cudaMalloc@libcudart.so.13; the shim's unversioned definition must still win.
#include <cstddef>

extern "C" __attribute__((visibility("default"))) int cudaMalloc(void** p, size_t /*size*/) {
  *p = nullptr;
  return 999;
}
