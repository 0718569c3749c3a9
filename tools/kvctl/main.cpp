// kvctl: inspect and steer the kvcached per-GPU budgets kept in /dev/shm.
#include <unistd.h>

#include <iostream>
#include <string>
#include <string_view>

#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"

#ifndef KVCTL_VERSION
#define KVCTL_VERSION "0.0.0"
#endif

namespace kvctl {
void PrintError(const std::string& message) {
  std::cerr << "kvctl: " << message << '\n';
}
namespace {

// CLI11 answers a mistyped command with "A subcommand is required" (it takes the word for a
// positional argument), so the first word is checked here: one line naming it and the commands.
bool CheckCommandWord(const CLI::App& app, int argc, char** argv) {
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  if (argc < 2) {
    PrintError("a command is required: " + names + " (kvctl --help)");
    return false;
  }
  const std::string_view word = argv[1];
  if (!word.empty() && word.front() == '-') return true;  // an option: CLI11 reports it
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (word == sub->get_name()) return true;
  }
  PrintError("unknown command '" + Printable(word) + "'; the commands are " + names +
             " (kvctl --help)");
  return false;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "kvctl: inspect and steer the kvcached per-GPU budgets (ledger segments in /dev/shm)",
      "kvctl"};
  app.set_version_flag("--version", std::string("kvctl ") + KVCTL_VERSION);
  app.require_subcommand(1);
  app.footer("\nRun `kvctl COMMAND --help` for a command's options. Docs: docs/kvctl.md\n");
  int exit_code = kExitOk;
  AddListCommand(app, exit_code);
  AddWatchCommand(app, exit_code);
  AddKvtopCommand(app, exit_code);
  AddLimitCommand(app, exit_code);
  AddDeleteCommand(app, exit_code);
  AddDoctorCommand(app, exit_code);
  AddLaunchCommand(app, exit_code);
  AddMetricsCommand(app, exit_code);
  AddShareCommand(app, exit_code);
  static std::string help_flag = "--help";
  if (argc >= 2 && std::string_view(argv[1]) == "help") argv[1] = help_flag.data();
  if (!CheckCommandWord(app, argc, argv)) return kExitUsage;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, version or the parse error
    return rc == 0 ? kExitOk : kExitUsage;
  }
  std::cout.flush();
  return exit_code;
}

}  // namespace
}  // namespace kvctl

int main(int argc, char** argv) {
  // Also what the commands and the setup above them throw (e.g. out of memory, or an I/O error
  // on stdout): one line and a failure exit, not std::terminate.
  try {
    return kvctl::Run(argc, argv);
  } catch (const std::exception& e) {
    kvctl::PrintError(e.what());
  } catch (...) {
    kvctl::PrintError("unexpected exception");
  }
  return kvctl::kExitFailure;
}
