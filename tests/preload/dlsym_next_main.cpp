// dlsym(RTLD_NEXT, ...) must stay relative to the library that calls it, also when the shim
// interposes dlsym. Library A (loaded after the shim) looks up the next kvc_probe_value: it must
// get library B's (2). A dlsym wrapper that called the real dlsym from its own frame would make
// the lookup relative to the shim and return A's own definition (1).
#include <dlfcn.h>

#include <cstdio>

extern "C" int kvc_probe_value();
extern "C" int kvc_probe_next_value();

int main() {
  const int next = kvc_probe_next_value();
  auto first = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "kvc_probe_value"));
  const int by_default = first != nullptr ? first() : -1;
  void* self = dlopen(nullptr, RTLD_NOW);
  auto by_handle_fn = reinterpret_cast<int (*)()>(dlsym(self, "kvc_probe_value"));
  const int by_handle = by_handle_fn != nullptr ? by_handle_fn() : -1;
  std::printf("next=%d default=%d handle=%d direct=%d\n", next, by_default, by_handle,
              kvc_probe_value());
  return next == 2 && by_default == 1 && by_handle == 1 ? 0 : 1;
}
