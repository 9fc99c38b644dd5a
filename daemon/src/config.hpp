// Settings of the server core, filled from pasyn-writerd's flags or pasyn::ServerOptions.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include <pasyn/proto/codec.hpp>

namespace pasyn::server {

struct Config {
  std::string database_path;
  std::string socket_path;  // empty: default_socket_path(database_path)
  bool synchronous_full = true;
  std::chrono::milliseconds busy_timeout{5000};
  std::uint32_t max_frame = proto::kDefaultMaxFrame;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds drain_timeout{30000};
  /// How long a request waits for another connection's transaction; 0 fails it at once.
  std::chrono::milliseconds lock_wait{5000};
  /// An open transaction with no request for this long is rolled back.
  std::chrono::milliseconds transaction_idle_timeout{10000};
  /// Install SIGTERM/SIGINT handlers that stop the server (the daemon; not in-process servers).
  bool handle_signals = false;

  // Service manager (pasyn-writerd under systemd; see systemd.hpp). In-process servers leave
  // these empty.
  /// An already listening Unix stream socket to serve instead of binding `socket_path` (socket
  /// activation); the server owns it and leaves its path alone at shutdown. -1: bind.
  int listen_fd = -1;
  /// Receives "READY=1", "STATUS=...", "STOPPING=1" and "WATCHDOG=1" (I/O thread).
  std::function<void(const std::string&)> notify;
  /// When non-zero (and `notify` is set), "WATCHDOG=1" is sent at this interval while the
  /// writer thread makes progress; a stuck writer stops the pings.
  std::chrono::microseconds watchdog_interval{0};
  /// How often the STATUS= line is refreshed (when `notify` is set).
  std::chrono::milliseconds status_interval{2000};
};

}  // namespace pasyn::server
