// The loop of `kvctl launch`: starts the engines (staggered per GPU: an engine starts once every
// engine listed before it on the same GPU is ready), tees their output with a [label] prefix,
// probes readiness, applies limits as processes attach, restarts engines with exponential
// back-off, prints summary lines, and on SIGINT/SIGTERM stops everything (the signal to each
// engine's process group, SIGKILL after the grace period).
#pragma once

#include <ostream>
#include <string>

#include "tools/kvctl/launch_spec.h"

namespace kvctl {

// Runs until every engine has ended for good or a stop signal has been handled. Returns the
// exit status: 0 when stopped on request with every engine gone within the grace period, or
// when every engine ended with status 0 on its own; 1 otherwise.
int Supervise(const LaunchSpec& spec, const std::string& shim, std::ostream& out);

}  // namespace kvctl
