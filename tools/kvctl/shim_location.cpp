#include "tools/kvctl/shim_location.h"

#include <unistd.h>

#include <array>
#include <climits>

namespace kvctl {

std::string ExeDir() {
  std::array<char, PATH_MAX> buf{};
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return ".";
  std::string path(buf.data(), static_cast<std::size_t>(n));
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::vector<std::string> DefaultShimCandidates() {
  const std::string dir = ExeDir();
  return {dir + "/../lib/libkvcached_shim.so", dir + "/../lib/kvcached/libkvcached_shim.so"};
}

}  // namespace kvctl
