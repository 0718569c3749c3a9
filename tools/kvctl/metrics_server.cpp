#include "tools/kvctl/metrics_server.h"

#include <fmt/core.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <thread>

#include "tools/kvctl/metrics_text.h"

#ifdef KVCTL_HAVE_HTTPLIB
#include <httplib.h>
#endif

namespace kvctl {
namespace {

constexpr const char* kListenExamples = "127.0.0.1:9400, 0.0.0.0:9400 or [::1]:9400";

// Closes a file descriptor on scope exit.
struct Fd {
  explicit Fd(int owned) : fd(owned) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&&) = delete;
  Fd& operator=(Fd&&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int fd;
};

}  // namespace

std::optional<ListenAddress> ParseListen(std::string_view text, std::string& error) {
  auto fail = [&](std::string_view why) {
    error = fmt::format("--listen '{}': {}; give ADDR:PORT, e.g. {}", text, why, kListenExamples);
    return std::nullopt;
  };
  ListenAddress out;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return fail("the IPv6 address has no closing ']'");
    out.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') return fail("no ':PORT' after ']'");
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("no ':PORT'");
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return fail("an IPv6 address must be written in brackets");
    }
    port = text.substr(colon + 1);
  }
  if (out.host.empty()) return fail("the address is empty (0.0.0.0 listens on every interface)");
  if (port.empty()) return fail("the port is empty");
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return fail(fmt::format("the port '{}' is not a number from 0 to 65535", port));
  }
  out.port = static_cast<int>(value);
  return out;
}

std::string FormatListen(const ListenAddress& address) {
  if (address.host.find(':') != std::string::npos) {
    return fmt::format("[{}]:{}", address.host, address.port);
  }
  return fmt::format("{}:{}", address.host, address.port);
}

std::string DiagnoseBind(const ListenAddress& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(address.port);
  const int rc = ::getaddrinfo(address.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return fmt::format("cannot resolve '{}' ({}); use an address of this host such as 127.0.0.1",
                       address.host, ::gai_strerror(rc));
  }
  int err = 0;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    Fd sock{::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol)};
    if (sock.fd < 0) {
      err = errno;
      continue;
    }
    const int yes = 1;
    ::setsockopt(sock.fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(sock.fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      err = 0;
      break;
    }
    err = errno;
  }
  ::freeaddrinfo(found);
  const std::string where = FormatListen(address);
  switch (err) {
    case 0:
      return {};
    case EADDRINUSE:
      return fmt::format(
          "{} is already in use (another kvctl metrics or exporter listens there); choose "
          "another port with --listen",
          where);
    case EADDRNOTAVAIL:
      return fmt::format(
          "{} is not an address of this host; use 127.0.0.1 or an interface's "
          "address with --listen",
          address.host);
    case EACCES:
      return fmt::format(
          "binding {} was refused (ports below 1024 need privileges); use a port "
          "such as 9400",
          where);
    default:
      return fmt::format("cannot bind {}: {}", where, std::strerror(err));
  }
}

#ifdef KVCTL_HAVE_HTTPLIB

bool MetricsServerAvailable() {
  return true;
}

int ServeMetrics(const ListenAddress& address, const std::function<std::string()>& render) {
  // SIGINT/SIGTERM are taken by one thread with sigwait (stopping the server is not
  // async-signal-safe); they are blocked before the server's threads exist, which inherit that.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigset_t old_mask;
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  ::signal(SIGPIPE, SIG_IGN);  // a scraper that hangs up mid-response must not kill us

  httplib::Server server;
  // Only SO_REUSEADDR: httplib's default adds SO_REUSEPORT, which would let a second exporter
  // share the port silently instead of being told it is in use.
  server.set_socket_options([](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.Get("/metrics", [&render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), kMetricsContentType);
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        "<!DOCTYPE html>\n<html><head><title>kvcached metrics</title></head><body>\n"
        "<h1>kvcached metrics</h1>\n"
        "<p>Prometheus metrics of every kvcached ledger segment on this host: "
        "<a href=\"/metrics\">/metrics</a>.</p>\n"
        "<p>Metric reference and dashboard: docs/metrics.md in the kvcached shim "
        "documentation.</p>\n</body></html>\n",
        "text/html; charset=utf-8");
  });

  ListenAddress bound = address;
  bool ok = false;
  if (address.port == 0) {
    bound.port = server.bind_to_any_port(address.host);
    ok = bound.port > 0;
  } else {
    ok = server.bind_to_port(address.host, address.port);
  }
  if (!ok) {
    std::string why = DiagnoseBind(address);
    if (why.empty()) why = fmt::format("cannot listen on {}", FormatListen(address));
    std::cerr << "kvctl: metrics: " << why << '\n';
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    return 1;
  }
  std::cout << fmt::format("kvctl metrics: serving http://{}/metrics (Ctrl-C or SIGTERM stops)",
                           FormatListen(bound))
            << std::endl;

  std::atomic<bool> listen_done{false};
  std::atomic<int> caught{0};
  std::thread waiter([&] {
    int sig = 0;
    ::sigwait(&stop_signals, &sig);
    caught.store(sig);
    // stop() is a no-op until the listen loop runs: repeat until it has returned.
    while (!listen_done.load()) {
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  const bool clean = server.listen_after_bind();
  listen_done.store(true);
  const int sig = caught.load();
  // Stopped by itself: wake the waiter. SIGTERM is blocked in every thread and the waiter takes
  // it with sigwait, so this ends the sigwait, not the process.
  // NOLINTNEXTLINE(bugprone-bad-signal-to-kill-thread)
  if (sig == 0) ::pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (sig != 0) {
    std::cout << fmt::format("kvctl metrics: stopped ({})", sig == SIGINT ? "SIGINT" : "SIGTERM")
              << std::endl;
    return 0;
  }
  std::cerr << "kvctl: metrics: the server on " << FormatListen(bound) << " stopped"
            << (clean ? "" : " with an error") << '\n';
  return 1;
}

#else  // built without cpp-httplib

bool MetricsServerAvailable() {
  return false;
}

int ServeMetrics(const ListenAddress& /*address*/, const std::function<std::string()>& /*render*/) {
  std::cerr << "kvctl: metrics: this kvctl was built without cpp-httplib, so it cannot serve "
               "HTTP; install libcpp-httplib-dev and rebuild, or use `kvctl metrics --once`\n";
  return 1;
}

#endif

}  // namespace kvctl
