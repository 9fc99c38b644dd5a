// The server core shared by pasyn-writerd and pasyn::start_writer_server.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "config.hpp"

namespace pasyn::server {

/// Thrown by Server::run() when the writer stopped serving because the outcome of a commit is
/// unknown (an I/O error or a failed fsync at COMMIT, corruption; PROTOCOL.md §6.1). By then
/// the connections are closed (the requests of the batch unanswered), the database is closed
/// without a checkpoint, the socket removed: WAL recovery at the next start decides.
class StorageError : public std::runtime_error {
 public:
  StorageError(const std::string& message, int sqlite_code)
      : std::runtime_error(message), sqlite_code_(sqlite_code) {}
  /// SQLite's extended result code (e.g. SQLITE_IOERR_FSYNC).
  int sqlite_code() const noexcept { return sqlite_code_; }

 private:
  int sqlite_code_;
};

/// pasyn-writerd's exit status after a StorageError: sysexits.h's EX_IOERR. The systemd unit
/// lists it in RestartPreventExitStatus=, so a failing disk leaves one failed unit rather than
/// a restart loop.
inline constexpr int kExitStorageFailure = 74;

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
  /// Throws StorageError if it stopped because a commit's outcome is unknown.
  void run();
  void request_stop();
  const std::string& socket_path() const noexcept;

  class Impl;  // public only so that server.cpp's Session can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pasyn::server
