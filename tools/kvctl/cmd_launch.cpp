// kvctl launch FILE.yaml: starts and watches the engines a file lists, each under the shim, one
// budget per GPU (docs/launch.md).
#include <unistd.h>

#include <iostream>
#include <memory>

#include "tools/kvctl/commands.h"
#include "tools/kvctl/launch_plan.h"
#include "tools/kvctl/launch_spec.h"
#include "tools/kvctl/launch_supervisor.h"

namespace kvctl {
namespace {

struct LaunchOptions {
  std::string file;
  bool dry_run = false;
};

int RunLaunch(const LaunchOptions& o) {
  auto spec = LoadLaunchFile(o.file);
  if (!spec.ok()) {
    PrintError(spec.status().message());
    return kExitUsage;
  }
  auto shim = ResolveShim(spec.value());
  if (!shim.ok()) {
    PrintError(shim.status().message());
    return kExitFailure;
  }
  const char* inherited = std::getenv("LD_PRELOAD");
  if (o.dry_run) {
    PrintDryRun(spec.value(), shim.value(), inherited != nullptr ? inherited : "", std::cout);
    return kExitOk;
  }
  return Supervise(spec.value(), shim.value(), std::cout) == 0 ? kExitOk : kExitFailure;
}

}  // namespace

void AddLaunchCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<LaunchOptions>();
  auto* cmd = app.add_subcommand(
      "launch",
      "Start the engines FILE.yaml lists, each under the shim (one budget per GPU, started one "
      "after another per GPU as each becomes ready), tee their output, restart them if asked, "
      "and stop them all on SIGINT/SIGTERM. See docs/launch.md");
  cmd->add_option("FILE", o->file, "the launch file (YAML)")->required();
  cmd->add_flag("--dry-run", o->dry_run,
                "Print the environment and command of each engine; start nothing");
  cmd->callback([o, &exit_code] { exit_code = RunLaunch(*o); });
}

}  // namespace kvctl
