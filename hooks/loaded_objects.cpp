#include "hooks/loaded_objects.h"

#include <dlfcn.h>
#include <link.h>

#include <cstring>
#include <string>
#include <vector>

namespace kvcached::hooks {
namespace {

struct Collect {
  const char* prefix;
  std::vector<std::string> paths;
};

int CollectMatching(dl_phdr_info* info, size_t /*size*/, void* data) {
  auto* collect = static_cast<Collect*>(data);
  const char* path = info->dlpi_name;
  if (path == nullptr || path[0] == '\0') return 0;
  const char* slash = std::strrchr(path, '/');
  const char* base = slash != nullptr ? slash + 1 : path;
  if (std::strncmp(base, collect->prefix, std::strlen(collect->prefix)) == 0) {
    collect->paths.emplace_back(path);
  }
  return 0;
}

}  // namespace

void* FindLoadedObject(const char* prefix, LoadedVisitor visit, void* context) {
  // Names are collected first and opened after the walk: dl_iterate_phdr holds the loader's
  // list lock, and dlopen must not run under it.
  Collect collect{prefix, {}};
  dl_iterate_phdr(&CollectMatching, &collect);
  for (const std::string& path : collect.paths) {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) continue;
    if (visit(handle, context)) return handle;
    dlclose(handle);  // only drops the reference RTLD_NOLOAD added
  }
  return nullptr;
}

}  // namespace kvcached::hooks
