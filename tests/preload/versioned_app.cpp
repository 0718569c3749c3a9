// Prints which library the program's reference cudaMalloc@libcudart.so.13 bound to.
#include <dlfcn.h>

#include <cstddef>
#include <cstdio>
#include <cstring>

extern "C" int cudaMalloc(void** p, size_t size);

int main() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cudaMalloc), &info) == 0 || info.dli_fname == nullptr) {
    return 1;
  }
  std::printf("%s\n",
              std::strstr(info.dli_fname, "libkvcached_shim") != nullptr ? "shim" : "library");
  return 0;
}
