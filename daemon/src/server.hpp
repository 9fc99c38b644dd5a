// The server core shared by pasyn-writerd and pasyn::start_writer_server.
#pragma once

#include <memory>
#include <string>

#include "config.hpp"

namespace pasyn::server {

/// One writer server: the database lock, the writer connection and the listening socket.
///
/// Thread-safety: run() is called once, from the thread that becomes the I/O thread;
/// request_stop() may be called from any thread at any time after construction.
class Server {
 public:
  /// Takes the database lock, opens the database and starts listening; connections are accepted
  /// into the backlog from here on. Throws StartError with an operator-facing message.
  explicit Server(Config config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Serves until stopped (request_stop(), a SHUTDOWN request, or SIGTERM/SIGINT when
  /// config.handle_signals): then finishes queued work, checkpoints, removes the socket.
  void run();
  void request_stop();
  const std::string& socket_path() const noexcept;

  class Impl;  // public only so that server.cpp's Session can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pasyn::server
