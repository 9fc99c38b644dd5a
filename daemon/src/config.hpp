// Settings of the server core, filled from pasyn-writerd's flags or pasyn::ServerOptions.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <pasyn/proto/codec.hpp>

namespace pasyn::server {

struct Config {
  std::string database_path;
  std::string socket_path;  // empty: default_socket_path(database_path)
  bool synchronous_full = true;
  /// --batch-wait: when the writer waits for the connections of the last batch before it starts
  /// the next (batching.cpp, fill_batch). kAuto: at synchronous=full only, where a commit
  /// waits for an fsync. Off by default (measured: see fill_batch).
  enum class BatchWait { kAuto, kOn, kOff };
  BatchWait batch_wait = BatchWait::kOff;
  bool batch_wait_enabled() const {
    return batch_wait == BatchWait::kOn || (batch_wait == BatchWait::kAuto && synchronous_full);
  }
  /// --writer-io: the writer thread runs the connections' I/O while it has no batch to run,
  /// and the I/O thread takes it only while the writer is busy for long (io_baton.hpp). kAuto:
  /// at synchronous=normal only (measured: bench/RESULTS.md, twenty-second session).
  enum class WriterIo { kAuto, kOn, kOff };
  WriterIo writer_io = WriterIo::kAuto;
  bool writer_runs_io() const {
    return writer_io == WriterIo::kOn || (writer_io == WriterIo::kAuto && !synchronous_full);
  }
  /// --foreign-keys: the writer connection enforces foreign keys (SQLite's default: off).
  /// Clients cannot change it (PRAGMA foreign_keys is query-only for them).
  bool foreign_keys = false;
  std::chrono::milliseconds busy_timeout{5000};
  std::uint32_t max_frame = proto::kDefaultMaxFrame;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds drain_timeout{30000};
  /// How long a request waits for another connection's transaction; 0 fails it at once.
  std::chrono::milliseconds lock_wait{5000};
  /// An open transaction with no request for this long is rolled back.
  std::chrono::milliseconds transaction_idle_timeout{10000};

  // Limits (PROTOCOL.md §7). Each one has a flag in pasyn-writerd.
  /// Longest SQL text of one request; a longer one is answered TOO_LARGE.
  std::size_t max_sql_length = 1u << 20;
  /// Most parameters of one statement (of each row of EXECUTE_MANY); more is TOO_LARGE.
  std::uint32_t max_params = 32766;
  /// Most open client connections; one more is answered LIMIT and closed.
  std::size_t max_connections = 4096;
  /// Requests of one connection the writer has not answered yet; at this many the daemon stops
  /// reading from that connection until replies go out (backpressure, no unbounded queue).
  std::size_t max_inflight = 1024;
  /// Reply bytes waiting for one client that does not read them; beyond this the client is
  /// disconnected (and its transaction rolled back). At least max_frame.
  std::size_t max_output = 64u << 20;
  /// Bytes one connection may have queued (request payloads not yet answered, replies not yet
  /// written, the write in flight included); past it the daemon stops reading from it until
  /// they go out (backpressure). At least max_frame.
  std::size_t max_queued_bytes = 64u << 20;
  /// The same bytes over all connections; past it no connection is read from, and if clients
  /// that do not read their replies hold most of it, the largest of them is disconnected.
  /// At least max_queued_bytes.
  /// Defaults: 4 frames of 16 MiB per connection keeps a client pipelining maximal requests
  /// busy; 256 MiB in total bounds what abusive clients can make the daemon hold, while 1,000
  /// honest clients with a few small requests each in flight use a few MiB of it (SPEC §6:
  /// RSS <= 64 MiB for 1,000 writing clients).
  std::size_t max_total_bytes = 256u << 20;
  /// Size of the WAL past which the writer checkpoints with TRUNCATE (waiting at most a moment
  /// for readers) instead of SQLite's passive auto-checkpoint, so the WAL stays bounded while
  /// readers keep it busy. Not used with CheckpointMode::kExternal.
  std::size_t wal_limit = 64u << 20;
  /// Bytes of committed changes the change feed keeps for subscribers that resume
  /// (PROTOCOL.md §8).
  std::size_t feed_history = 16u << 20;
  /// --checkpoint-mode: who checkpoints the WAL (checkpointer.cpp). kInternal: the writer, as
  /// SQLite's auto-checkpoint would (passive, between batches), with TRUNCATE past wal_limit and
  /// at shutdown. kExternal: never the daemon on its own, another program does (Litestream, which
  /// must see every WAL frame before the WAL is reset): no checkpoint between batches, none at
  /// shutdown, not even SQLite's when the connection closes; wal_limit is ignored. Only an
  /// admin's explicit CHECKPOINT (or PRAGMA wal_checkpoint) runs one. SQLite's own
  /// auto-checkpoint is off on the writer connection in both modes.
  enum class CheckpointMode { kInternal, kExternal };
  CheckpointMode checkpoint_mode = CheckpointMode::kInternal;
  bool checkpoints_internally() const { return checkpoint_mode == CheckpointMode::kInternal; }
  /// Idempotency keys remembered (the most recent ones; PROTOCOL.md §6.3).
  std::size_t idempotency_keys = 100000;
  /// How long one client statement may run before it is interrupted (TIMEOUT); 0: no limit.
  std::chrono::milliseconds statement_timeout{60000};

  // Access control (PROTOCOL.md §3). Empty lists: whoever can open the socket may connect.
  /// Mode of the socket file the daemon creates.
  std::uint32_t socket_mode = 0660;
  /// Group of the socket file (-1: the daemon's).
  std::int64_t socket_gid = -1;
  /// Peers (SO_PEERCRED) allowed to connect when either list is non-empty: by uid, or by a gid
  /// the peer's user has (primary or supplementary). The daemon's own uid is always allowed.
  std::vector<std::uint32_t> allow_uids, allow_gids;
  /// Peers that may only read (Role::kReadOnly): PING, STATS, and statements the authorizer's
  /// read-only mode allows and SQLite reports as read-only; no idempotency keys.
  std::vector<std::uint32_t> read_only_uids, read_only_gids;
  /// Peers that may send SHUTDOWN, CHECKPOINT and BACKUP (by uid, or by a gid the peer's user
  /// has). Both empty: the daemon's own effective uid and root. See access_control.hpp.
  std::vector<std::uint32_t> admin_uids, admin_gids;

  /// Where BACKUP writes: a request names a file in this directory. Empty: `backups/` beside
  /// the database (created 0750 at the first BACKUP). Never the database's own directory.
  std::string backup_dir;

  /// Install SIGTERM/SIGINT handlers that stop the server (the daemon; not in-process servers).
  bool handle_signals = false;
  /// Also flock() the database file itself (paths.hpp, LockFile): pasyn-writerd only. A server
  /// in an application's process must not, because closing that descriptor when it stops would
  /// drop the POSIX locks of the application's own SQLite connections to the file.
  bool lock_database_file = false;

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
