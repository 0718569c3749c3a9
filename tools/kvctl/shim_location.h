// Where kvctl looks for the shim library when it is not told: beside kvctl's own folder, in the
// build tree's layout (build/bin/kvctl, build/lib/) and the installed one (/usr/lib/kvcached/).
#pragma once

#include <string>
#include <vector>

namespace kvctl {

// The folder of the running kvctl binary ("." when /proc/self/exe cannot be read).
std::string ExeDir();

// The shim library's default paths, in the order they are tried.
std::vector<std::string> DefaultShimCandidates();

}  // namespace kvctl
