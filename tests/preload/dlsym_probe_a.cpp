// Test library A for the dlsym RTLD_NEXT test: loaded after the shim, it defines
// kvc_probe_value and asks dlsym(RTLD_NEXT) for the *next* definition, which is library B's.
#include <dlfcn.h>

extern "C" __attribute__((visibility("default"))) int kvc_probe_value() {
  return 1;
}

extern "C" __attribute__((visibility("default"))) int kvc_probe_next_value() {
  auto next = reinterpret_cast<int (*)()>(dlsym(RTLD_NEXT, "kvc_probe_value"));
  return next != nullptr ? next() : -1;
}
