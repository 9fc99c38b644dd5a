// Running the writer server inside the calling process: the same core as pasyn-writerd.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <pasyn/export.hpp>

namespace pasyn {

/// `PRAGMA synchronous` on the writer connection. See README "Durability".
enum class Synchronous { kFull, kNormal };

/// Settings of an in-process writer server; pasyn-writerd exposes the same as flags.
struct ServerOptions {
  /// Unix socket to listen on; empty means `default_socket_path(database_path)`.
  std::string socket_path;
  Synchronous synchronous = Synchronous::kFull;
  /// SQLite busy timeout of the writer connection (other processes writing the file directly).
  std::chrono::milliseconds busy_timeout{5000};
  /// Largest frame accepted or sent, in bytes (header included).
  std::uint32_t max_frame = 16u << 20;
  /// A connection that has not completed the handshake by then is closed.
  std::chrono::milliseconds handshake_timeout{10000};
  /// On shutdown, how long to wait for queued work and unsent replies before closing anyway.
  std::chrono::milliseconds drain_timeout{30000};
  /// How long a write waits for another connection's transaction before it fails with
  /// TimeoutError; zero fails it at once.
  std::chrono::milliseconds lock_wait{5000};
  /// An open transaction that sends no request for this long is rolled back.
  std::chrono::milliseconds transaction_idle_timeout{10000};
  /// The writer connection enforces foreign key constraints (pasyn-writerd --foreign-keys on).
  /// Clients cannot change it: PRAGMA foreign_keys is query-only through the server.
  bool foreign_keys = false;
};

/// Owns a running writer server: an I/O thread serving the socket and a writer thread owning
/// the database's only read-write connection.
///
/// Thread-safety: `shutdown()` may be called from any thread, including concurrently;
/// the other methods must not race with each other or with destruction.
/// Ownership: the destructor stops the server and waits for it (like `stop()`). The server's
/// threads block every signal. In a fork()ed child the server keeps running in the parent
/// only: there `shutdown()` does nothing, `join()` throws ProgrammingError, and the destructor
/// leaves the parent's threads, socket and database untouched.
class PASYN_EXPORT WriterServerHandle {
 public:
  WriterServerHandle(WriterServerHandle&&) noexcept;
  WriterServerHandle& operator=(WriterServerHandle&&) noexcept;
  WriterServerHandle(const WriterServerHandle&) = delete;
  WriterServerHandle& operator=(const WriterServerHandle&) = delete;
  ~WriterServerHandle();

  /// The socket clients connect to.
  const std::string& socket_path() const noexcept;
  /// Asks the server to stop: no new connections, queued work finishes, the WAL is
  /// checkpointed, the socket removed. Returns at once.
  void shutdown() noexcept;
  /// Waits until the server has stopped (after shutdown() or a client's shutdown_server()).
  /// Throws OperationalError (with SQLite's code, e.g. SQLITE_IOERR_FSYNC) once if the server
  /// stopped on its own because the outcome of a commit is unknown (an I/O error or a failed
  /// fsync at COMMIT): the clients of that batch got ConnectionLostError, and the next open of
  /// the database decides, through WAL recovery, what was committed.
  void join();
  /// shutdown() then join() (so it may throw like join()).
  void stop();
  /// False once the server has fully stopped.
  bool running() const noexcept;

 private:
  struct Impl;
  explicit WriterServerHandle(std::unique_ptr<Impl> impl);
  friend PASYN_EXPORT WriterServerHandle start_writer_server(const std::string&,
                                                             const ServerOptions&);
  std::unique_ptr<Impl> impl_;
};

/// Opens (creating if needed) the database in WAL mode and starts serving it on `socket_path`
/// (empty: `default_socket_path(database_path)`). Returns once the socket accepts connections.
/// Throws OperationalError if the database cannot be opened or another server holds it, and
/// Error if the socket path is taken by something that is not a stale socket.
/// The administrative requests (a client's shutdown_server(), checkpoint(), backup()) are
/// accepted only from this process's own user and root; backup() writes into `backups/` beside
/// the database (SECURITY.md).
PASYN_EXPORT WriterServerHandle start_writer_server(const std::string& database_path,
                                                    const std::string& socket_path = {});
PASYN_EXPORT WriterServerHandle start_writer_server(const std::string& database_path,
                                                    const ServerOptions& options);

/// The socket a server for `database_path` listens on by default: the absolute database path
/// plus "-pasyn.sock", or, when that is too long for a Unix socket address or the database's
/// directory is writable by all (/tmp: another user could bind the name first),
/// "/tmp/pasyn-<euid>/<hash of the absolute path>.sock" (the same for the daemon and the
/// client of one user). That directory is created with mode 0700 if missing; if it is not a
/// directory owned by the caller's effective uid with mode 0700 (another user could plant a
/// socket there), Error is thrown. A client of another user than the daemon's must be given
/// the socket path.
PASYN_EXPORT std::string default_socket_path(const std::string& database_path);

}  // namespace pasyn
