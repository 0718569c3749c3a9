// The HTTP side of `kvctl metrics`: parsing --listen, and serving GET /metrics with cpp-httplib
// until SIGINT or SIGTERM.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kvctl {

inline constexpr const char* kDefaultMetricsListen = "127.0.0.1:9400";

struct ListenAddress {
  std::string host;  // an address or host name, without IPv6 brackets
  int port = 0;      // 0: any free port (the one chosen is printed)
};

// Parses "ADDR:PORT" ("127.0.0.1:9400", "0.0.0.0:9400", "localhost:9400", "[::1]:9400").
// On failure returns nothing and sets `error` to one sentence naming the value and the fix.
std::optional<ListenAddress> ParseListen(std::string_view text, std::string& error);

// "127.0.0.1:9400", "[::1]:9400".
std::string FormatListen(const ListenAddress& address);

// Why binding `address` fails, found by trying it ("127.0.0.1:9400 is already in use ..."); an
// empty string when it can be bound now.
std::string DiagnoseBind(const ListenAddress& address);

// True when this kvctl was built with cpp-httplib (otherwise only --once works).
bool MetricsServerAvailable();

// Serves GET /metrics (the text `render` returns at each request) and a pointer page at /, on
// `address`, until SIGINT or SIGTERM. Prints one line saying where it listens. Returns the exit
// status: 0 after a signal, 1 when the address cannot be bound (message on stderr).
int ServeMetrics(const ListenAddress& address, const std::function<std::string()>& render);

}  // namespace kvctl
