// The kvctl subcommands. Each Add*Command registers one subcommand on the app; its callback
// stores the command's exit status in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace kvctl {

// Exit statuses: 0 success; 1 the command ran but failed (unknown segment or process, permission
// denied, live processes attached, doctor found a problem); 2 bad usage (unknown option, bad size).
enum ExitCode : int { kExitOk = 0, kExitFailure = 1, kExitUsage = 2 };

void AddListCommand(CLI::App& app, int& exit_code);
void AddWatchCommand(CLI::App& app, int& exit_code);
void AddKvtopCommand(CLI::App& app, int& exit_code);
void AddLimitCommand(CLI::App& app, int& exit_code);
void AddDeleteCommand(CLI::App& app, int& exit_code);
void AddDoctorCommand(CLI::App& app, int& exit_code);
void AddLaunchCommand(CLI::App& app, int& exit_code);
void AddMetricsCommand(CLI::App& app, int& exit_code);
void AddShareCommand(CLI::App& app, int& exit_code);

// Prints "kvctl: <message>" to stderr.
void PrintError(const std::string& message);

}  // namespace kvctl
