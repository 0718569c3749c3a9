// kvctl metrics: a Prometheus exporter of every ledger segment on the host (read-only, like
// `kvctl list`), served over HTTP or printed once.
#include <iostream>
#include <memory>
#include <string>

#include "tools/kvctl/commands.h"
#include "tools/kvctl/metrics_scan.h"
#include "tools/kvctl/metrics_server.h"
#include "tools/kvctl/metrics_text.h"

namespace kvctl {
namespace {

struct MetricsOptions {
  std::string listen = kDefaultMetricsListen;
  bool once = false;
};

std::string Render() {
  return RenderMetrics(ScanForMetrics());
}

int RunMetrics(const MetricsOptions& o) {
  if (o.once) {
    std::cout << Render();
    return kExitOk;
  }
  std::string error;
  const std::optional<ListenAddress> address = ParseListen(o.listen, error);
  if (!address) {
    PrintError(error);
    return kExitUsage;
  }
  return ServeMetrics(*address, Render) == 0 ? kExitOk : kExitFailure;
}

}  // namespace

void AddMetricsCommand(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "metrics",
      "Serve Prometheus metrics of every segment and process at http://ADDR:PORT/metrics "
      "(read-only; docs/metrics.md), until Ctrl-C or SIGTERM");
  auto o = std::make_shared<MetricsOptions>();
  cmd->add_option("--listen", o->listen,
                  "ADDR:PORT to listen on (port 0 picks a free one and prints it); 0.0.0.0:PORT "
                  "serves every interface")
      ->type_name("ADDR:PORT")
      ->capture_default_str();
  cmd->add_flag("--once", o->once, "Print the metrics text once to stdout and exit");
  cmd->callback([o, &exit_code] { exit_code = RunMetrics(*o); });
}

}  // namespace kvctl
