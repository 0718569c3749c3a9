// What `kvctl launch` runs for each engine: the shim to preload, the variables it sets (the same
// budget variables for every engine on one GPU), and the dry-run text.
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "core/common/status.h"
#include "tools/kvctl/launch_spec.h"

namespace kvctl {

// The explicit `shim:` path, or libkvcached_shim.so next to this kvctl (../lib in a build tree,
// ../lib/kvcached when installed). Fails with the paths tried when none exists.
kvcached::Result<std::string> ResolveShim(const LaunchSpec& spec);

// Variables the launcher sets for `engine`, in order of precedence (later wins): the file's
// env, the engine's env, then LD_PRELOAD, CUDA_VISIBLE_DEVICES, KVCACHED_LABEL and the GPU's
// budget variables. `inherited_preload` (the caller's LD_PRELOAD) is kept after the shim.
std::map<std::string, std::string> EngineEnv(const LaunchSpec& spec, const EngineSpec& engine,
                                             const std::string& shim,
                                             const std::string& inherited_preload);

// The full environment of the child: `base` (NAME=value strings) with `overrides` applied.
std::vector<std::string> MergeEnv(const std::vector<std::string>& base,
                                  const std::map<std::string, std::string>& overrides);

// A word quoted for a POSIX shell only when it needs it.
std::string ShellQuote(const std::string& word);

// Prints, per engine, a comment with its GPU, readiness, restart policy, limit and log file, and
// the command line as `env NAME=value ... COMMAND` (copy-pastable into a shell).
void PrintDryRun(const LaunchSpec& spec, const std::string& shim,
                 const std::string& inherited_preload, std::ostream& out);

}  // namespace kvctl
