// Engine-hook injection into Python interpreters: the one thing the shim does at load time.
//
// When the preloaded process is a Python interpreter that has not initialised yet, and
// KVCACHED_AUTOPATCH is not 0/false (nor ENABLE_KVCACHED false), the directory
// <libdir>/kvcached_python/kvcached_boot (KVCACHED_PYTHON_DIR/kvcached_boot if set) is prepended
// to PYTHONPATH. Python then imports its sitecustomize.py at start-up, which loads the engine
// hook package and chains to any other sitecustomize, so the user's site-packages are never
// touched and a system sitecustomize is never shadowed.
//
// Kept cheap and silent for every other process: two getenv calls and one failed symbol lookup;
// no file, no thread, no output.
#include <dlfcn.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "hooks/real_dlsym.h"

namespace {

bool SaysFalse(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return false;
  std::string v;
  for (const char* p = value; *p != '\0'; ++p) {
    if (std::isspace(static_cast<unsigned char>(*p)) == 0) {
      v.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(*p))));
    }
  }
  return v == "0" || v == "false" || v == "no" || v == "off";
}

void Anchor() {}

// The folder that holds kvcached_boot/ and kvcached_hook/.
std::string PythonPackagesDir() {
  const char* configured = std::getenv("KVCACHED_PYTHON_DIR");
  if (configured != nullptr && configured[0] != '\0') return configured;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&Anchor), &info) == 0 || info.dli_fname == nullptr) return {};
  // Absolute, so that a relative LD_PRELOAD path keeps working after the program changes
  // directory.
  std::array<char, PATH_MAX> resolved{};
  if (realpath(info.dli_fname, resolved.data()) == nullptr) return {};
  std::string library(resolved.data());
  const std::size_t slash = library.rfind('/');
  if (slash == std::string::npos) return {};
  return library.substr(0, slash) + "/kvcached_python";
}

bool HasEntry(std::string_view path_list, std::string_view entry) {
  while (!path_list.empty()) {
    const std::size_t colon = path_list.find(':');
    if (path_list.substr(0, colon) == entry) return true;
    if (colon == std::string_view::npos) break;
    path_list.remove_prefix(colon + 1);
  }
  return false;
}

__attribute__((constructor)) void KvcachedPythonBoot() {
  if (SaysFalse("KVCACHED_AUTOPATCH") || SaysFalse("ENABLE_KVCACHED")) return;
  // Present only in a Python interpreter (the executable or libpython); zero until Python has
  // initialised. Non-zero means the shim was dlopen'ed by a running interpreter (ctypes), where
  // PYTHONPATH no longer matters and setenv would race with the interpreter's threads.
  using IsInitializedFn = int (*)();
  auto is_initialized = reinterpret_cast<IsInitializedFn>(
      kvcached::hooks::RealDlsym()(RTLD_DEFAULT, "Py_IsInitialized"));
  if (is_initialized == nullptr || is_initialized() != 0) return;

  const std::string packages = PythonPackagesDir();
  if (packages.empty()) return;
  const std::string boot = packages + "/kvcached_boot";
  if (access((boot + "/sitecustomize.py").c_str(), R_OK) != 0) return;
  const char* current = std::getenv("PYTHONPATH");
  if (current != nullptr && HasEntry(current, boot)) return;
  std::string value = boot;
  if (current != nullptr && current[0] != '\0') value += ":" + std::string(current);
  setenv("PYTHONPATH", value.c_str(), 1);
}

}  // namespace
