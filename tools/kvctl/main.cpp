// kvctl: inspect and steer the kvcached per-GPU budgets kept in /dev/shm.
#include <unistd.h>

#include <iostream>

#include "tools/kvctl/commands.h"

#ifndef KVCTL_VERSION
#define KVCTL_VERSION "0.0.0"
#endif

namespace kvctl {
void PrintError(const std::string& message) {
  std::cerr << "kvctl: " << message << '\n';
}
}  // namespace kvctl

int main(int argc, char** argv) {
  CLI::App app{
      "kvctl: inspect and steer the kvcached per-GPU budgets (ledger segments in /dev/shm)",
      "kvctl"};
  app.set_version_flag("--version", std::string("kvctl ") + KVCTL_VERSION);
  app.require_subcommand(1);
  app.footer("\nRun `kvctl COMMAND --help` for a command's options. Docs: docs/kvctl.md\n");
  int exit_code = kvctl::kExitOk;
  kvctl::AddListCommand(app, exit_code);
  kvctl::AddWatchCommand(app, exit_code);
  kvctl::AddKvtopCommand(app, exit_code);
  kvctl::AddLimitCommand(app, exit_code);
  kvctl::AddDeleteCommand(app, exit_code);
  kvctl::AddDoctorCommand(app, exit_code);
  kvctl::AddLaunchCommand(app, exit_code);
  kvctl::AddMetricsCommand(app, exit_code);
  kvctl::AddShareCommand(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, version or the parse error
    return rc == 0 ? kvctl::kExitOk : kvctl::kExitUsage;
  } catch (const std::exception& e) {  // e.g. out of memory or an I/O error on stdout
    kvctl::PrintError(e.what());
    return kvctl::kExitFailure;
  }
  std::cout.flush();
  return exit_code;
}
