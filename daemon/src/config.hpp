// Settings of the server core, filled from pasyn-writerd's flags or pasyn::ServerOptions.
#pragma once

#include <chrono>
#include <cstdint>
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
};

}  // namespace pasyn::server
