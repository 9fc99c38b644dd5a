// MultiplexedClient: the thread-safe write client of pasyn-writerd.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pasyn/change_feed.hpp>
#include <pasyn/errors.hpp>
#include <pasyn/export.hpp>
#include <pasyn/value.hpp>

namespace pasyn {

/// Settings of a MultiplexedClient.
struct ClientOptions {
  /// How long connecting plus the protocol handshake may take (then TimeoutError).
  std::chrono::milliseconds connect_timeout{5000};
  /// How long a blocking call waits, for a send slot and then for its reply together (one
  /// deadline, from the call's start); zero waits until the reply arrives or the connection is
  /// lost. A call that times out throws TimeoutError; its write may still commit.
  std::chrono::milliseconds request_timeout{0};
  /// The most requests this client keeps unanswered at once, over all threads (values below 1
  /// count as 1). A call past it, `*_async` ones included, waits until a reply frees a slot
  /// (at most `request_timeout` when that is set: then TimeoutError, and nothing was sent), so
  /// a producer that outruns the daemon is slowed down instead of growing memory. Requests of
  /// an open Transaction never wait for a slot, so that it can always finish.
  std::size_t max_in_flight = 16384;
  /// When set: the uid the server must run as, checked with SO_PEERCRED at every connect
  /// (reconnects included). Another uid fails the connect with ConnectionLostError saying
  /// which uid answered; nothing is sent to it. Use it when the socket lives in a directory
  /// others can write to. (Kept the last member.)
  std::optional<std::uint32_t> expect_server_uid;
};

class Transaction;

/// Options of one write (outside a transaction).
struct WriteOptions {
  /// When not empty (at most 256 bytes): the daemon records the write's reply under this key,
  /// in the same transaction as the write, and answers a later write with the same key with
  /// that reply instead of running it. An application can then retry a write whose outcome is
  /// unknown (ConnectionLostError, TimeoutError) with the same key, even across a daemon
  /// restart, without applying it twice. The daemon remembers the most recent
  /// `--idempotency-keys` keys (100,000 by default). Only successful writes are recorded.
  std::string idempotency_key;
};

/// A bound on one blocking call, given as its last argument:
/// `client.execute(sql, params, Timeout{200ms})`. It replaces ClientOptions::request_timeout
/// for that call only (longer or shorter), with the same meaning:
/// - when it runs out before the reply, the call throws TimeoutError and the request's outcome
///   is unknown: it may still run and commit, and it is never re-sent (to retry a write safely,
///   give it an idempotency key, WriteOptions);
/// - when it runs out while the call waits for room to send (ClientOptions::max_in_flight
///   requests unanswered) or for a lost connection to be made again (also while another
///   thread is making it; reconnecting has `connect_timeout` too), the call throws
///   TimeoutError and nothing was sent;
/// - it bounds those two waits together, from the call's start (one deadline), as
///   request_timeout does;
/// - for begin(), a BEGIN given up is rolled back as soon as the daemon grants it.
/// Zero or less (and a century or more, such as milliseconds::max()) means no bound: the call
/// waits until the reply arrives or the connection is lost, even when request_timeout is set.
/// The `_async` forms take none: bound the wait on their future instead.
///
/// A value type: copy it freely.
class Timeout {
 public:
  explicit constexpr Timeout(std::chrono::milliseconds bound) noexcept : bound_(bound) {}
  constexpr std::chrono::milliseconds bound() const noexcept { return bound_; }

 private:
  std::chrono::milliseconds bound_;
};

/// While alive, the blocking calls of MultiplexedClient and Transaction made on this thread
/// (`execute*`, `executescript`, `begin`, `commit`, `rollback`, `ping`, ...) call `check(context)`
/// about every `every` while they wait for their reply. When it returns true, the call gives up
/// as at its Timeout and throws InterruptedError: the request's outcome is unknown (it may still
/// run and commit; it is never re-sent), and a BEGIN given up is rolled back as soon as the
/// daemon grants it. Waits for room to send or for a reconnect are not interrupted (each is
/// bounded by `connect_timeout` or the call's own Timeout). Made for language bindings that
/// must let a signal (Ctrl-C) end a blocking call: pasyn_sqlite_core checks Python's signals.
///
/// `check` runs on the calling thread, without any lock of the library. It may make calls of
/// its own on the client (the waiting call steps out of the reader role meanwhile, so they are
/// served), but must not close the client or end a transaction that a call of this thread is
/// running in (the waiting call still uses them). It should not throw (an exception counts as
/// true). `every` is taken between 1 ms and a day. Thread-safety: a scope belongs to the thread
/// that made it, and must end there, in reverse order of creation (the innermost applies). Not
/// copyable or movable.
class PASYN_EXPORT InterruptScope {
 public:
  InterruptScope(bool (*check)(void* context), void* context,
                 std::chrono::milliseconds every = std::chrono::milliseconds(50)) noexcept;
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  bool (*check_)(void*);
  void* context_;
  std::chrono::milliseconds every_;
  const InterruptScope* outer_;
  friend struct InterruptAccess;
};

/// Rows of a query run through the writer, with the names SQLite gives their columns (`AS`
/// aliases included), in order. `columns` is empty for a statement that returns no columns.
struct ResultSet {
  std::vector<std::string> columns;
  std::vector<Row> rows;
};

/// Named figures the daemon reports (stats(), checkpoint(), backup()), in the daemon's order.
using Report = std::vector<std::pair<std::string, Value>>;

/// A connection to pasyn-writerd shared by every thread of the process that uses it.
///
/// Thread-safety: all methods may be called concurrently from any number of threads.
/// Requests from all threads travel over one Unix socket: they are pipelined (a thread does not
/// wait for another's reply before sending), coalesced into few writes, and replies are matched
/// to callers by request id. Requests sent on one connection run in the daemon in the order
/// they were submitted. A synchronous call that finds no other thread reading replies reads its
/// own on the calling thread (and hands any other reply it reads to its caller); when its
/// request has been the client's only one for a few calls, it polls the socket for up to 25 us
/// before it sleeps, as long as the replies come within that and no other thread wants its CPU
/// (it saves the wake-up of an idle CPU: ~25 us a call on a virtual machine). Ownership:
/// owns the socket and one I/O thread, named pasyn-client-io (started with every signal
/// blocked, so that signals go to the application's threads), which writes what the socket did
/// not take at once and reads replies when only asynchronous calls wait; the destructor closes
/// both, failing calls still waiting with ConnectionLostError (their requests were sent: the
/// outcome is unknown). At most
/// `ClientOptions::max_in_flight` requests are unanswered at once; further calls wait.
///
/// fork(): a client may cross fork(). In the child, its first call leaves the parent's
/// connection and I/O thread untouched (they are abandoned, not closed: closing
/// would disturb the parent's) and connects afresh, so the child works on a connection of its
/// own; destroying the client in the child never touches the parent's either. Requests the
/// parent had in flight at the fork are not completed in the child. Transactions begun before
/// the fork belong to the parent's connection: in the child they throw ConnectionLostError.
///
/// Every write is answered only after the transaction containing it has committed, so a
/// returned call (or a ready future) means the write is durable per the daemon's
/// `--synchronous` setting. Errors are thrown as `pasyn::Error` subclasses: SqliteError
/// subclasses for SQL errors (with SQLite's codes), ConnectionLostError when the daemon goes
/// away (the outcome of the writes in flight is then unknown; nothing is re-sent silently; the
/// next call reconnects by itself, retrying at most every 25 ms doubling to 2 s while the
/// daemon stays unreachable),
/// TimeoutError when `request_timeout` (or the call's own Timeout) runs out,
/// ConnectionClosedError for calls made after close() (nothing is sent).
/// The `_async` variants return at once; their futures carry the same results and exceptions.
/// (Except after a lost connection: the call that finds it reconnects first, `_async` ones
/// too, within `connect_timeout` and `request_timeout`, and throws what that throws.)
class PASYN_EXPORT MultiplexedClient {
 public:
  /// Connects and performs the protocol handshake, within `options.connect_timeout`. Throws
  /// ConnectionLostError if the daemon cannot be reached, TimeoutError if it does not accept or
  /// answer in time, ProtocolError if it speaks another protocol version.
  explicit MultiplexedClient(const std::string& socket_path, ClientOptions options = {});
  MultiplexedClient(MultiplexedClient&&) noexcept;
  MultiplexedClient& operator=(MultiplexedClient&&) noexcept;
  MultiplexedClient(const MultiplexedClient&) = delete;
  MultiplexedClient& operator=(const MultiplexedClient&) = delete;
  ~MultiplexedClient();

  /// Runs one statement (more is ProgrammingError; SQL that is only whitespace or comments runs
  /// nothing and returns 0); returns the number of rows it changed.
  std::int64_t execute(std::string_view sql, const Params& params = {});
  /// Runs exactly one statement; returns the rowid of the row *this* request inserted
  /// (0 if it inserted none), never another client's.
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params = {});
  /// Runs one statement once per parameter list, atomically: all rows or none.
  /// Returns the total number of rows changed.
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch);
  /// Runs several statements (no parameters) atomically: all of them or none.
  void executescript(std::string_view sql);
  /// The same four writes with WriteOptions (an idempotency key).
  std::int64_t execute(std::string_view sql, const Params& params, const WriteOptions& options);
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params,
                                       const WriteOptions& options);
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch,
                            const WriteOptions& options);
  void executescript(std::string_view sql, const WriteOptions& options);
  /// Runs one statement through the writer and returns its rows (a SELECT, or a write with
  /// RETURNING). Reads that need no writer belong on a `Connection`.
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params = {});
  std::optional<Row> execute_fetchone(std::string_view sql, const Params& params = {});
  /// Round trip to the daemon; true when it answered.
  bool ping();
  /// Asks the daemon to finish queued work and exit. Returns once it has acknowledged. Admin
  /// only (see backup()); an open client transaction is rolled back, as on SIGTERM.
  void shutdown_server();

  // Operations (what the `pasyn` CLI sends); see PROTOCOL.md §5.
  /// The daemon's live figures: requests, batches, mean batch size, commit latency
  /// percentiles, queue depth, connections, open transaction age, WAL size, ...
  /// Answered by the daemon's I/O thread, so also while the writer is busy.
  Report stats();
  /// Checkpoints the WAL between batches (admin only, see backup(); it waits for an open client
  /// transaction like a write). `mode`: PASSIVE, FULL, RESTART or TRUNCATE. Reports
  /// `busy` (1 when readers kept part of the WAL), `wal_frames`, `checkpointed_frames`.
  Report checkpoint(std::string_view mode = "TRUNCATE");
  /// Copies the database, consistently (one snapshot: every write committed before the backup
  /// started), into the file `name` inside the daemon's --backup-dir: a file name, not a
  /// path (no '/', no leading '.'; else ProgrammingError). An existing file of that name is
  /// replaced atomically. Writes go on while the copy runs (STATS shows `backup_pages_done` of
  /// `backup_pages_total`). Admin only: SHUTDOWN, CHECKPOINT and BACKUP from a peer not in
  /// --admin-uid/--admin-gid throw OperationalError (PERMISSION). Reports `name`, `path`,
  /// `pages`, `bytes` and `ms`.
  Report backup(std::string_view name);

  /// Opens an exclusive transaction on the daemon and returns its handle; see Transaction.
  /// Waits while another connection's transaction is open, up to the daemon's `--lock-wait`,
  /// then throws TimeoutError. If `request_timeout` runs out first, TimeoutError is thrown and
  /// the BEGIN is abandoned: should the daemon grant it later, the client rolls it back as soon
  /// as the grant arrives, so no transaction is left open without a handle.
  ///
  /// The seed's `client.begin()` / `client.execute(...)` / `client.commit()` becomes
  /// `auto tx = client.begin(); tx.execute(...); tx.commit();` — statements belong to the
  /// transaction only when sent through its handle.
  [[nodiscard]] Transaction begin();

  std::future<std::int64_t> execute_async(std::string_view sql, const Params& params = {});
  std::future<std::int64_t> execute_returning_rowid_async(std::string_view sql,
                                                          const Params& params = {});
  std::future<std::int64_t> execute_many_async(std::string_view sql,
                                               const std::vector<Params>& params_batch);
  std::future<void> executescript_async(std::string_view sql);
  std::future<std::vector<Row>> execute_fetchall_async(std::string_view sql,
                                                       const Params& params = {});
  std::future<void> ping_async();
  std::future<std::int64_t> execute_async(std::string_view sql, const Params& params,
                                          const WriteOptions& options);
  std::future<std::int64_t> execute_returning_rowid_async(std::string_view sql,
                                                          const Params& params,
                                                          const WriteOptions& options);
  std::future<std::int64_t> execute_many_async(std::string_view sql,
                                               const std::vector<Params>& params_batch,
                                               const WriteOptions& options);
  std::future<void> executescript_async(std::string_view sql, const WriteOptions& options);

  /// Named parameters (`:name`, `@name`, `$name`), bound by name in the daemon: every parameter
  /// of the statement must be given exactly once, else ProgrammingError. Otherwise the same as
  /// the positional calls above. (A distinct name, so that `execute(sql, {})` and brace lists
  /// keep meaning positional parameters.)
  std::int64_t execute_named(std::string_view sql, const NamedParams& params);
  std::int64_t execute_returning_rowid_named(std::string_view sql, const NamedParams& params);
  std::int64_t execute_many_named(std::string_view sql,
                                  const std::vector<NamedParams>& params_batch);
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params);
  std::optional<Row> execute_fetchone_named(std::string_view sql, const NamedParams& params);
  std::future<std::int64_t> execute_named_async(std::string_view sql, const NamedParams& params);
  std::future<std::int64_t> execute_returning_rowid_named_async(std::string_view sql,
                                                                const NamedParams& params);
  std::future<std::vector<Row>> execute_fetchall_named_async(std::string_view sql,
                                                             const NamedParams& params);

  /// begin() without blocking: the future becomes ready once the daemon granted the
  /// transaction (or refused it: TimeoutError after its `--lock-wait`, ...); `request_timeout`
  /// does not apply. Never leaves a transaction without an owner: if the future is destroyed
  /// before its Transaction was taken out, the transaction is rolled back as soon as it is
  /// granted (the Transaction's destructor, run by whichever thread drops it last).
  std::future<Transaction> begin_async();

  /// execute_fetchall() with the result's column names (the daemon sends them with the rows).
  ResultSet execute_fetchall_columns(std::string_view sql, const Params& params = {});
  std::future<ResultSet> execute_fetchall_columns_async(std::string_view sql,
                                                        const Params& params = {});

  /// The blocking calls above with a bound of their own, in place of `request_timeout` (see
  /// Timeout). A write whose Timeout runs out may still commit; it is never re-sent.
  std::int64_t execute(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch,
                            Timeout timeout);
  void executescript(std::string_view sql, Timeout timeout);
  std::int64_t execute(std::string_view sql, const Params& params, const WriteOptions& options,
                       Timeout timeout);
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params,
                                       const WriteOptions& options, Timeout timeout);
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch,
                            const WriteOptions& options, Timeout timeout);
  void executescript(std::string_view sql, const WriteOptions& options, Timeout timeout);
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params, Timeout timeout);
  std::optional<Row> execute_fetchone(std::string_view sql, const Params& params, Timeout timeout);
  ResultSet execute_fetchall_columns(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_named(std::string_view sql, const NamedParams& params, Timeout timeout);
  std::int64_t execute_returning_rowid_named(std::string_view sql, const NamedParams& params,
                                             Timeout timeout);
  std::int64_t execute_many_named(std::string_view sql,
                                  const std::vector<NamedParams>& params_batch, Timeout timeout);
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params,
                                          Timeout timeout);
  std::optional<Row> execute_fetchone_named(std::string_view sql, const NamedParams& params,
                                            Timeout timeout);
  bool ping(Timeout timeout);
  void shutdown_server(Timeout timeout);
  Report stats(Timeout timeout);
  Report checkpoint(std::string_view mode, Timeout timeout);
  Report backup(std::string_view name, Timeout timeout);
  /// begin() waiting at most `timeout` for the grant (then TimeoutError; a grant that comes
  /// later is rolled back at once), whatever `request_timeout` is.
  [[nodiscard]] Transaction begin(Timeout timeout);

  /// Subscribes to the committed changes of `tables` (all tables when empty; names compared
  /// ignoring ASCII case), from the next commit on, or after commit `after_seq` of the daemon's
  /// current run while it still holds it (else the feed starts with a gap). Opens a connection
  /// of its own (see ChangeFeed); throws what connecting throws, ProgrammingError for an
  /// `after_seq` beyond the last commit, ProtocolError if the daemon has no change feed.
  ChangeFeed subscribe(std::vector<std::string> tables = {},
                       std::optional<std::uint64_t> after_seq = {});
  /// Subscribes as above, resuming after commit `after_seq` of the daemon run `epoch` (a
  /// ChangeFeed::epoch() saved with its last_seq()) only: if the daemon runs another epoch (it
  /// restarted since), the feed starts with a `reset` at the new epoch's last commit, then the
  /// commits after it. `epoch` 0 is the current epoch, as subscribe(tables, after_seq). Throws
  /// as above; ProgrammingError only for an `after_seq` beyond the last commit of the daemon's
  /// own epoch.
  ChangeFeed subscribe(std::vector<std::string> tables, std::uint64_t epoch,
                       std::uint64_t after_seq);

  /// Closes the socket. Calls still waiting fail with ConnectionLostError: their requests were
  /// sent, and the daemon runs what it read, so their outcome is unknown. Later calls (and
  /// subscribe()) throw ConnectionClosedError. Idempotent.
  void close();
  /// False after close(), or once the connection was lost until a later call reconnects. A
  /// connection nobody is reading is looked at first, so a daemon that closed it is noticed.
  bool connected() const noexcept;
  const std::string& socket_path() const noexcept;

  class Impl;  // the implementation (client.cpp); not part of the API

 private:
  friend class Transaction;
  Impl& impl() const;
  std::shared_ptr<Impl> impl_;
};

/// An exclusive write transaction, opened by MultiplexedClient::begin().
///
/// While it is open, every other write to the database — from other clients, and from threads
/// of the same client that do not use this handle — waits in the daemon's queue (it does not
/// fail) and runs after commit() or rollback(); a wait longer than the daemon's `--lock-wait`
/// fails with TimeoutError. Statements sent through the handle run at once, in order, inside
/// the transaction, and its queries read its own uncommitted writes. `SAVEPOINT`, `RELEASE`
/// and `ROLLBACK TO` may be sent through it and nest.
///
/// The transaction belongs to the client connection that began it, and every request of the
/// handle carries its number (PROTOCOL.md §6.2): no other connection, and no other handle of
/// the same client (an earlier transaction's), can act in it, commit it or roll it back. The
/// daemon rolls it back when that connection closes or dies, when it stays idle longer than
/// `--transaction-idle-timeout`, or when a statement ends it; the call that learns it, and every
/// later call through the handle, throws OperationalError (extended code SQLITE_ABORT_ROLLBACK)
/// saying why, and the handle is finished. Calls through the handle never reconnect: once the
/// connection that began it is lost, they throw ConnectionLostError and the handle is finished.
///
/// Thread-safety: not safe for concurrent use; use it from one thread at a time.
/// Ownership: shares the client's connection (the client may be destroyed first: calls then
/// throw ConnectionClosedError). Destroying an unfinished transaction rolls it back without
/// waiting for the reply (a later request of the client runs after the rollback) and without
/// reconnecting. After commit() or rollback() every call throws ProgrammingError.
class PASYN_EXPORT Transaction {
 public:
  Transaction(Transaction&&) noexcept;
  /// Rolls back this transaction if it is unfinished, then takes over `other`.
  Transaction& operator=(Transaction&& other) noexcept;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  std::int64_t execute(std::string_view sql, const Params& params = {});
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params = {});
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch);
  void executescript(std::string_view sql);
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params = {});
  std::optional<Row> execute_fetchone(std::string_view sql, const Params& params = {});

  /// Named parameters, as MultiplexedClient::execute_named.
  std::int64_t execute_named(std::string_view sql, const NamedParams& params);
  std::int64_t execute_returning_rowid_named(std::string_view sql, const NamedParams& params);
  std::int64_t execute_many_named(std::string_view sql,
                                  const std::vector<NamedParams>& params_batch);
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params);
  std::optional<Row> execute_fetchone_named(std::string_view sql, const NamedParams& params);

  /// Commits; the writes are durable per the daemon's `--synchronous` when it returns. If the
  /// commit fails, the transaction is rolled back and the error thrown. Finishes the handle.
  void commit();
  /// Rolls back. Finishes the handle.
  void rollback();
  /// True after commit() or rollback(), and once a call through the handle has learnt that the
  /// transaction ended (rolled back by the daemon, or its connection lost).
  bool finished() const noexcept;

  /// The calls above without waiting: each is sent at once, in order, inside the transaction,
  /// and its future carries the blocking form's result or exception. commit_async() and
  /// rollback_async() finish the handle at once, as commit() and rollback() do whatever the
  /// outcome. An error that ended the transaction reaches the caller through the future; the
  /// handle's next call then throws saying why (and finishes it). Throws at once, like the
  /// blocking forms, when the handle is finished or its connection was lost.
  std::future<std::int64_t> execute_async(std::string_view sql, const Params& params = {});
  std::future<std::int64_t> execute_returning_rowid_async(std::string_view sql,
                                                          const Params& params = {});
  std::future<std::int64_t> execute_many_async(std::string_view sql,
                                               const std::vector<Params>& params_batch);
  std::future<void> executescript_async(std::string_view sql);
  std::future<std::vector<Row>> execute_fetchall_async(std::string_view sql,
                                                       const Params& params = {});
  std::future<std::int64_t> execute_named_async(std::string_view sql, const NamedParams& params);
  std::future<std::int64_t> execute_returning_rowid_named_async(std::string_view sql,
                                                                const NamedParams& params);
  std::future<std::int64_t> execute_many_named_async(std::string_view sql,
                                                     const std::vector<NamedParams>& params_batch);
  std::future<std::vector<Row>> execute_fetchall_named_async(std::string_view sql,
                                                             const NamedParams& params);
  std::future<void> commit_async();
  std::future<void> rollback_async();

  /// execute_fetchall() with the result's column names, as MultiplexedClient's.
  ResultSet execute_fetchall_columns(std::string_view sql, const Params& params = {});

  /// The blocking calls above with a bound of their own, in place of the client's
  /// `request_timeout` (see Timeout). A statement whose Timeout runs out may still run inside
  /// the transaction: the handle stays open, and the next call runs after it. A commit() or
  /// rollback() whose Timeout runs out finishes the handle; the commit's outcome is unknown.
  std::int64_t execute(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch,
                            Timeout timeout);
  void executescript(std::string_view sql, Timeout timeout);
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params, Timeout timeout);
  std::optional<Row> execute_fetchone(std::string_view sql, const Params& params, Timeout timeout);
  ResultSet execute_fetchall_columns(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_named(std::string_view sql, const NamedParams& params, Timeout timeout);
  std::int64_t execute_returning_rowid_named(std::string_view sql, const NamedParams& params,
                                             Timeout timeout);
  std::int64_t execute_many_named(std::string_view sql,
                                  const std::vector<NamedParams>& params_batch, Timeout timeout);
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params,
                                          Timeout timeout);
  std::optional<Row> execute_fetchone_named(std::string_view sql, const NamedParams& params,
                                            Timeout timeout);
  void commit(Timeout timeout);
  void rollback(Timeout timeout);

 private:
  friend class MultiplexedClient;
  struct Impl;
  explicit Transaction(std::unique_ptr<Impl> impl);
  MultiplexedClient::Impl& open() const;
  template <typename Send>
  auto call(Send send);
  template <typename Send>
  auto call_async(Send send);
  void abandon() noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pasyn
