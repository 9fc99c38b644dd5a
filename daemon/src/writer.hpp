// The writer: owns the database's only read-write connection and group-commits queued requests.
// (Over 600 lines: the design below and the class's state, each member with what guards it, are
// read together; the code is split by concept across writer.cpp, batching.cpp, group_commit.cpp,
// client_transactions.cpp, statement_runner.cpp, checkpointer.cpp and io_baton.hpp.)
//
// Design (LevelDB's BuildBatchGroup, adapted to a dedicated thread):
//  * Sessions on the I/O thread parse requests and submit() them; the queue is the only state
//    shared between the I/O thread and the writer thread, guarded by mu_. With --writer-io
//    (drive(), io_baton.hpp) the writer thread runs those sessions' handlers itself between
//    batches: it waits for requests in the io_context instead of on cv_, so they reach the
//    queue through the same submit(), from its own thread.
//  * The writer thread takes everything queued (up to 4,096 requests and 1 MiB of request
//    payload, after a brief bounded wait for the connections of the previous batch: fill_batch
//    in batching.cpp), opens one `BEGIN IMMEDIATE` transaction, and runs the requests one
//    after the other. If one fails, the attempt is rolled back and the batch runs again with
//    each request inside its own savepoint: the failing one is rolled back to its savepoint and
//    answered with its own error, the others stay. (Savepoints cost two statements per request,
//    so they are paid only by batches that need them.) Then it commits once and only then hands
//    the replies to each request's ReplySink, one buffer per sink per batch, which sends it to
//    the client's socket from the writer thread itself when no write of that connection is in
//    flight (server.cpp, Session::send); only what the socket refuses goes to the I/O thread.
//  * If the commit fails definitely (commit_failure_is_definite), every request of the batch gets
//    that error: a success reply always means committed. If its outcome is unknown (an I/O
//    error, a failed fsync), the writer fails stop: nothing of the batch is answered, the
//    database is closed without a checkpoint, and the server stops (StorageFailure), so WAL
//    recovery at the next start decides what committed and clients see their connection drop.
//  * After each of its own statements (BEGIN, SAVEPOINT, RELEASE, ROLLBACK TO, the idempotency
//    record) and each request, the writer checks that the batch transaction is still open; it
//    never runs a statement in autocommit mode inside a batch, so a transaction that vanished
//    committed nothing. A request that ended it gets its error; if one of the writer's own
//    statements lost it, nobody is blamed and the batch runs again.
//  * An allocation failure while running a request fails that request; one elsewhere in a
//    batch fails that batch (or, after its commit, closes its connections unanswered). The
//    writer keeps serving. The code lives in group_commit.cpp.
//  * Client SQL is checked at prepare time by an allow-list authorizer (authorizer.hpp): among
//    others, transaction-control SQL (BEGIN, COMMIT, ROLLBACK; SAVEPOINT and RELEASE outside a
//    client transaction) is refused, so no client statement can end the batch transaction. As a
//    backstop (INSERT OR ROLLBACK, RAISE(ROLLBACK), I/O errors), the writer checks after each
//    request that the transaction is still open; if it is not, that request fails and the rest of
//    the batch is run again in a new transaction.
//  * Statements SQLite cannot run in a transaction (VACUUM, some pragmas) run alone, between
//    batches, in autocommit mode.
//
// Client transactions (PROTOCOL.md §6.2) are a state of this same loop: BEGIN from connection C
// commits the batch before it and opens `BEGIN IMMEDIATE` for C. From then on the loop runs C's
// transaction requests (and its COMMIT/ROLLBACK) at once, one by one, each inside its own
// savepoint so that a failing one is undone whole (C's own SAVEPOINT/RELEASE/ROLLBACK TO run
// bare, or releasing ours would release theirs), replying to each, and
// moves every other request to `deferred_`, in arrival order. When the transaction ends, the
// deferred requests go back to the front of the work, ahead of anything that arrived later, and
// group commit resumes. The loop wakes up on its own for the two deadlines: a deferred request
// that has waited `lock_wait` is answered TIMEOUT, and a transaction idle for
// `transaction_idle_timeout` is rolled back (its owner is told on its next transaction request).
// A connection that closes sends a disconnect notice through the queue, which rolls back its
// transaction at once.
#pragma once

#include <sqlite3.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <pasyn/proto/codec.hpp>

#include "authorizer.hpp"
#include "backup.hpp"
#include "change_feed.hpp"
#include "config.hpp"
#include "fifo.hpp"
#include "histogram.hpp"
#include "idempotency.hpp"
#include "io_baton.hpp"
#include "memory_budget.hpp"
#include "sqlite_util.hpp"

namespace pasyn::server {

/// Where a request's reply goes. deliver() is called on the writer thread (or the backup's)
/// with one or more complete frames; the session sends them from that thread when it can
/// without blocking, and hands the rest to its I/O thread, keeping the connection's order.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  /// `frames` holds the replies of `replies` requests; the sink copies what it cannot send at
  /// once, so the caller keeps (and reuses) the buffer.
  virtual void deliver(std::span<const std::uint8_t> frames, std::size_t replies) = 0;
  /// False once the connection behind the sink has closed. Thread-safe.
  virtual bool alive() const noexcept = 0;
  /// Closes the connection without a reply to the requests the writer still owes it (their
  /// outcome is unknown to the writer's caller, so the client sees ConnectionLostError); replies
  /// delivered before are flushed first. Called on the writer thread. Thread-safe.
  virtual void abandon() noexcept = 0;

 private:
  friend class Writer;
  // Writer thread only: this sink's entry among the per-connection reply buffers of the batch
  // being delivered (Writer::deliver), so that grouping replies needs no map. Stale between
  // batches: Writer::deliver trusts it only if that entry names this sink.
  std::size_t batch_slot_ = 0;
  // Writer thread only: the reply bytes this sink's requests produced in the current batch
  // attempt (Writer::attempt_), held under --max-output (run_batched). Stale when attempt_of_
  // is not the writer's attempt number.
  std::size_t attempt_reply_bytes_ = 0;
  std::uint64_t attempt_of_ = 0;
  // Writer thread only: the connection has had a client transaction, so a transaction request
  // naming none that is open is stale (TRANSACTION_ENDED), not MISUSE (PROTOCOL.md §6.2).
  bool had_transaction_ = false;
  // Writer thread only: what last_insert_rowid() says to this connection's SQL, as on a
  // connection of its own (the writer's is shared): the value its last committed request left
  // (last_rowid_), and in batch attempt rowid_attempt_of_ the one its last request there left.
  // Writer::own_rowid() picks; the batch's COMMIT makes the attempt's value the committed one.
  std::int64_t last_rowid_ = 0;
  std::int64_t attempt_rowid_ = 0;
  std::uint64_t rowid_attempt_of_ = 0;
};

using Clock = std::chrono::steady_clock;

/// One parsed request for the writer. Only the fields of its type are used. It owns its frame's
/// payload and refers to the SQL and the parameters in place (no per-value copies), so it can
/// be moved but not copied.
struct Request {
  Request() = default;
  Request(Request&&) noexcept = default;
  Request& operator=(Request&&) noexcept = default;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  proto::MsgType type = proto::MsgType::kExecute;  // without the transaction bit
  bool in_tx = false;                              // the frame carried proto::kInTransaction
  std::uint64_t transaction = 0;  // in_tx, COMMIT, ROLLBACK: the transaction number it names
  bool disconnect = false;        // not a request: the notice that `sink`'s connection closed
  Role role = Role::kWriter;      // of the peer, fixed at accept: selects the authorizer's mode
  std::uint32_t uid = 0;          // the peer's uid (SO_PEERCRED): idempotency keys are per uid
  // Set by the writer when the request ran into --statement-timeout in an attempt of its batch:
  // a rerun answers TIMEOUT at once instead of running it again. On the request itself, so it
  // cannot move to another request when the batch shrinks.
  bool timed_out = false;
  std::uint64_t id = 0;
  std::shared_ptr<ReplySink> sink;
  Clock::time_point arrived;          // set by submit(); for the lock wait
  std::vector<std::uint8_t> payload;  // the frame's payload; the views below point into it
  // Or, for a large frame, the buffer it was received in, taken over from the connection's
  // decoder instead of copied (payload then stays empty), and that buffer's size (at most twice
  // the frame's; charged to the connection).
  proto::FrameDecoder::Buffer frame;
  std::size_t frame_bytes = 0;
  /// The bytes of the request's payload, or of the buffer that holds it.
  std::size_t bytes() const noexcept { return payload.size() + frame_bytes; }
  std::string_view sql;
  // must_run_alone(sql), for the statements (EXECUTE*, EXECUTE_MANY, EXECUTE_SCRIPT): judged by
  // the session that parsed it, off the writer thread.
  bool must_run_alone = false;
  std::string_view key;      // idempotency key; empty: none (PROTOCOL.md §6.3)
  proto::ParamsView params;  // EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH
  proto::ManyView many;      // EXECUTE_MANY
  ByteCharge charge;         // the bytes it costs its connection until dropped (memory_budget.hpp)
};

/// The writer's work list: requests taken from the queue and not yet run, in order.
using RequestQueue = Fifo<Request>;

/// The size of the reply frame at `offset` in `buf` (length field included).
std::uint32_t frame_size_at(const std::vector<std::uint8_t>& buf, std::size_t offset);

/// Figures of the writer for STATS and the service status line.
struct WriterStats {
  std::uint64_t requests = 0;          // requests answered (writes, transactions, admin)
  std::uint64_t batches = 0;           // batch transactions committed
  std::uint64_t batched_requests = 0;  // requests in those batches
  std::uint64_t commit_p50_us = 0;     // duration of COMMIT over the last kCommitWindow batches
  std::uint64_t commit_p99_us = 0;
  std::uint64_t commit_max_us = 0;
  std::size_t queue_depth = 0;           // submitted, not yet taken by the writer thread
  std::size_t waiting = 0;               // taken, waiting for another connection's transaction
  std::int64_t transaction_age_ms = -1;  // age of the open client transaction; -1: none
  std::int64_t backup_pages_done = -1;   // of the running BACKUP; -1: none runs
  std::int64_t backup_pages_total = -1;
  // Since the start (cumulative, for STATS and Prometheus): requests per batch, COMMIT
  // duration (µs), and the time requests waited in the queue before the writer took them (µs).
  Histogram batch_size{kBatchSizeBounds};
  // The batching policy (batching.cpp, fill_batch): how often the writer waited to fill a
  // batch, and the largest batch by request bytes (never above kMaxBatchBytes unless one
  // request alone is larger).
  std::uint64_t batch_waits = 0;
  std::uint64_t batch_bytes_max = 0;
  Histogram commit_us{kMicrosecondBounds};
  Histogram queue_wait_us{kMicrosecondBounds};
};

/// Why the writer stopped serving: the outcome of a commit is unknown (PROTOCOL.md §6.1).
struct StorageFailure {
  std::string message;
  int sqlite_code = 0;  // SQLite's extended result code
};

class Writer {
 public:
  /// Opens the database read-write (creating it), in WAL mode with the configured synchronous
  /// level. Throws StartError(kDatabase) with SQLite's message if it cannot.
  explicit Writer(const Config& config);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  /// Starts the writer thread. `on_shutdown_request` runs (on the writer thread) after a
  /// SHUTDOWN request was answered; `on_drained` runs (on the writer thread) once stop() was
  /// called, the queue is empty, the WAL is checkpointed (--checkpoint-mode internal) and the
  /// database closed.
  void start(std::function<void()> on_shutdown_request, std::function<void()> on_drained);

  /// Queues requests; false (nothing queued) once stop() was called. If `spare` is given and
  /// empty, it receives payload buffers of requests the writer has finished with, for the
  /// caller's next requests (Request::payload): the I/O thread reuses them instead of
  /// allocating buffers that the writer thread frees. Thread-safe.
  using PayloadBuffers = std::vector<std::vector<std::uint8_t>>;
  /// The request vectors submit() exchanges (the caller's, the queue, the writer's) keep room
  /// for at most this many requests once emptied: a burst's larger buffer is let go.
  static constexpr std::size_t kKeptRequests = 4096;
  bool submit(std::vector<Request>& requests, PayloadBuffers* spare = nullptr);

  /// Finish what is queued, then checkpoint (--checkpoint-mode internal), close, and call
  /// on_drained. Thread-safe.
  void stop();
  /// Makes a sleeping writer look again when it must next wake (a new subscriber may be behind:
  /// FeedHub::next_flush). Thread-safe.
  void nudge();
  /// Interrupt the statement running now and fail what is still queued (drain timeout).
  /// Thread-safe.
  void abort();
  void join();
  /// Before start(): the writer thread runs the server's I/O while it has no batch to run
  /// (--writer-io; io_baton.hpp). Without it the writer sleeps on its condition variable.
  void drive(IoBaton* baton) { baton_ = baton; }

  /// Publishes every commit's changes to `hub` (the change feed). Before start(); `hub` must
  /// outlive the writer thread.
  void attach_feed(FeedHub& hub) noexcept { feed_ = &hub; }

  /// Thread-safe: whether `sink`'s connection holds the open client transaction (BEGIN
  /// answered, not ended yet). Exact once every request of that connection has been answered.
  /// Requests waiting for the writer: queued by submit() and not yet taken, plus taken and not
  /// yet run (the work list), as the writer last published them (gauges set, never added to:
  /// they cannot drift). Read by the I/O thread for the fair share (Session::reading_blocked).
  /// Thread-safe.
  std::size_t backlog() const noexcept {
    return queued_count_.load(std::memory_order_relaxed) +
           work_count_.load(std::memory_order_relaxed);
  }
  /// Fair share under load: while the backlog is at least kFairBacklog requests, a connection
  /// with kFairShare or more of them in the writer is read no further until its own fall below
  /// that (its replies wake it). A connection that sent a few requests then waits behind at
  /// most about kFairBacklog others, not behind all that flooding connections queued (200
  /// connections pipelining 1,024 requests each held another client's write ~0.9 s at p99;
  /// probe31). 16,384: four full batches, so the writer always has full batches to run; no
  /// benchmark row reaches it (one connection keeps at most 1,000 in flight there).
  static constexpr std::size_t kFairBacklog = 4 * 4096;
  static constexpr std::size_t kFairShare = 64;

  bool holds_transaction(const ReplySink* sink) const noexcept {
    return tx_owner_.load(std::memory_order_acquire) == sink;
  }

  /// Thread-safe.
  WriterStats stats() const;
  /// Set (before on_drained runs) when the writer stopped because a commit's outcome is
  /// unknown; the server then stops too. Thread-safe.
  std::optional<StorageFailure> storage_failure() const;
  /// For the watchdog: true if the writer thread is waiting for work or has made progress
  /// (finished a step of its loop, or run SQLite VM instructions) since the previous call.
  /// Called from one thread (the I/O thread).
  bool made_progress();

  static constexpr std::size_t kCommitWindow = 1024;

  /// The reply to a request not run because the daemon is stopping (the drain timeout, or a
  /// request read after the stop began: Session::refuse).
  static constexpr const char* kNotExecuted =
      "pasyn-writerd is shutting down; the request was not executed";

 private:
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool several = false;  // the SQL holds more than one statement
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using Cache = std::unordered_map<std::string, Cached, StringHash, std::equal_to<>>;
  struct Outcome {
    std::size_t offset = 0;  // of this request's reply frame in replies_
    bool ok = false;
  };
  /// How one attempt at a batch ended (group_commit.cpp).
  struct AttemptEnd {
    enum Kind {
      kDone,  // committed, or definitely not (a batch of one that failed, BEGIN or COMMIT
              // failed): every outcome is final
      kRetryWithSavepoints,  // a request failed without savepoints: everything rolled back
      kEndedBy,  // request `index` ended the transaction (nothing committed): it gets its
                 // outcome, the others run again
      kLost,     // one of the writer's own statements lost the transaction (nothing
                 // committed): nobody is blamed, everything runs again
      kAborted,  // the drain timeout ran out: rolled back, nothing of it runs
    } kind;
    std::size_t index = 0;
  };
  /// Thrown on the writer thread to stop serving (see StorageFailure); deliberately not a
  /// std::exception, so no barrier for allocation failures can catch it.
  struct FailStop {
    StorageFailure failure;
  };

  void run();
  void process(RequestQueue& work);
  void run_batch(std::vector<Request>& batch);
  void run_batch_attempts(std::vector<Request>& batch);
  void run_alone(Request& r);
  /// CHECKPOINT: runs between batches, outside any transaction.
  void run_admin(Request& r);
  bool checkpoint(std::string_view mode, proto::Report& report);
  /// BACKUP: hands the request to backup_ (its own thread and connection); answered from there.
  void start_backup(Request& r);
  void count_answered(std::size_t n);
  /// Truncating checkpoint once the WAL passed --wal-limit (see checkpointer.cpp).
  // Between batches and after each client transaction (never inside one): the passive
  // checkpoint from kAutoCheckpointFrames on, then bound_wal(); nothing with --checkpoint-mode
  // external.
  void maintain_wal();
  void bound_wal();
  /// --checkpoint-mode external: leaves the write lock free for a moment when another program
  /// just checkpointed or reset the WAL, or when the WAL is large, so the program that
  /// checkpoints can take it (see checkpointer.cpp).
  void yield_to_checkpointer();
  // --checkpoint-mode external: warns when the WAL passes --wal-limit, and each time it doubles
  // after, without another program resetting it (a probe's daemon grew a 2 GB WAL beside a
  // stopped Litestream and logged nothing).
  void warn_unless_checkpointed();
  /// What the WAL-index tells of checkpoints (checkpointer.cpp): `progress` (nBackfill,
  /// nBackfillAttempted) changes when anyone checkpoints; `running`: another connection holds
  /// the checkpoint lock. Both 0 if the WAL-index is not mapped.
  struct Checkpointer {
    std::uint64_t progress = 0;
    bool running = false;
  };
  Checkpointer checkpointer();
  void record_commit(Clock::duration took, std::size_t batch_size, std::size_t batch_bytes);
  // After a commit: throws FailStop if the database file or its WAL is no longer the file at
  // its path (deleted, replaced, renamed). Looks at most every kFilesCheckEvery; a commit inside
  // that interval owes a look, which serve() makes when the interval ends (next_deadline), and
  // `now` (the last one, before the daemon exits) makes it at once.
  void check_files_in_place(bool now = false);
  std::string save_open_wal(sqlite3_file& wal, bool take_the_path);
  /// The batching policy (batching.cpp): with `lk` held and `incoming` just taken from
  /// queue_, may wait briefly for more requests to arrive; appends them to `incoming`.
  void fill_batch(std::unique_lock<std::mutex>& lk, std::vector<Request>& incoming);
  void begin_transaction(Request& r);
  void run_in_transaction(Request& r, RequestQueue& work);
  /// Rolls back the open transaction (if SQLite has not already), tells its owner `reason` on
  /// its next transaction request (none: it ended normally), and puts the deferred requests
  /// back at the front of `work`.
  void end_transaction(RequestQueue& work, std::optional<std::string> reason);
  /// Answers `r` with TRANSACTION_ENDED (`why`) and ends the transaction.
  void fail_transaction(Request& r, RequestQueue& work, const std::string& why);
  void refuse_transaction_request(Request& r);
  void defer(Request& r);
  void expire(Clock::time_point now, RequestQueue& work);
  std::optional<Clock::time_point> next_deadline() const;
  void reply(Request& r, std::vector<std::uint8_t> frames);
  void reply_error(Request& r, proto::PasynCode code, std::string_view message);
  /// One attempt at a batch, in one transaction; see AttemptEnd.
  AttemptEnd attempt(std::vector<Request>& batch, std::vector<Outcome>& outcomes, bool savepoints);
  /// Who lost the transaction during one request of an attempt.
  enum class Lost { kNo, kByRequest, kByWriter };
  /// Runs request `r` of a batch attempt (idempotency lookup, the request, the record); its
  /// reply frame or error goes to replies_ at out.offset.
  Lost run_batched(Request& r, Outcome& out);
  /// Whether the open transaction has deferred foreign-key violations (SQLite's count).
  bool deferred_violations();
  /// Whether a BEGIN of `sink` waits in deferred_ (client_transactions.cpp).
  bool begin_waits(const ReplySink* sink) const;
  /// What last_insert_rowid() says to `sink`'s SQL in the current batch attempt (see
  /// ReplySink::last_rowid_).
  std::int64_t own_rowid(const ReplySink& sink) const noexcept {
    return sink.rowid_attempt_of_ == attempt_ ? sink.attempt_rowid_ : sink.last_rowid_;
  }
  /// Runs one of the writer's own statements inside the batch transaction.
  enum class Step { kOk, kFailed, kLost };
  Step step(const Stmt& stmt);
  /// Rolls the open transaction back, if SQLite has not already; fails stop if that leaves it
  /// open (every later BEGIN would fail).
  void rollback_all();
  /// Throws FailStop after a failed BEGIN or COMMIT whose failure_ is not definite.
  void fail_stop_unless_definite(const char* what);
  /// After a batch's exception barrier caught `e`: answers the batch or closes its connections.
  void fail_batch(std::vector<Request>& batch, const std::exception& e);
  void abandon(std::vector<Request>& batch) noexcept;
  // The run_* helpers return false on failure, with the error in failure_.
  bool run_request(Request& r);
  bool run_request_body(Request& r);
  /// Schema objects named pasyn_* (any case): the daemon's own, counted at open and again before
  /// a request when they may have changed (reserved_names_, recount_reserved_). More after a
  /// client's ALTER TABLE means it renamed a table into them.
  std::int64_t count_reserved_names();
  bool renamed_into_reserved_names() { return count_reserved_names() != reserved_names_; }
  bool run_statement(sqlite3_stmt* stmt, const proto::ParamsView& params, proto::FrameWriter* rows);
  bool run_script(std::string_view sql, std::int64_t& changes);
  bool prepare_one(std::string_view sql, Mode mode, sqlite3_stmt*& stmt);
  /// After a failed prepare or step: the authorizer's refusal if it refused, else SQLite's error.
  void capture_failure();
  bool several_statements();
  bool bind(sqlite3_stmt* stmt, const proto::ParamsView& params);
  void capture_sqlite_error();
  void set_timeout_failure();
  /// failure_ for an allocation failure while running a request (SQLITE_NOMEM).
  void out_of_memory(std::string_view what);
  /// True (with failure_ set) when the statement just run ended the batch or client
  /// transaction, so the request must stop before its next statement.
  bool transaction_lost_midway();
  void set_failure(proto::PasynCode code, std::string_view message, std::int32_t extended = 0);
  void deliver(std::vector<Request>& batch, const std::vector<Outcome>& outcomes);
  void finish_pending_with(std::vector<Request>& batch, proto::PasynCode code,
                           std::string_view message);

  /// Idempotency keys (PROTOCOL.md §6.3): if `r` has a key that was recorded, its reply (or
  /// MISUSE for a key recorded with another request) is appended to replies_: true, nothing to
  /// run. False: run `r` (or, with failure_ set and `error`, fail it).
  bool answered_by_key(Request& r, const RequestDigest& digest, bool& error);

  // Runs one of the writer's own statements; the transaction statements among them (begin_,
  // commit_, rollback_, savepoint_, release_, rollback_to_) also keep changes_ in step, and a
  // successful commit_ takes the committed changes for publish_committed().
  bool exec_internal(sqlite3_stmt* stmt);
  bool exec_internal(const Stmt& stmt) { return exec_internal(stmt.get()); }
  // Publishes the last COMMIT's changes (held in committed_ until its replies are out).
  void publish_committed();
  // After a client statement ran: a client's own ROLLBACK TO undid changes the feed cannot
  // name (change_feed.hpp).
  void note_client_statement(sqlite3_stmt* stmt);
  bool in_write_transaction() const { return server::in_write_transaction(db_); }
  sqlite3_stmt* prepare_internal(const char* sql);
  void clear_cache();
  void checkpoint_and_close();
  /// Finalizes every statement and closes the connection, after a TRUNCATE checkpoint when
  /// `checkpoint` (not after a storage failure: see run()).
  void close_database(bool checkpoint);
  /// The loop of run(), until stop() and the queue is drained; throws FailStop.
  void serve(RequestQueue& work, std::vector<Request>& incoming);

  static int on_progress(void* self);
  static int on_wal_commit(void* self, sqlite3* db, const char* schema, int frames);

  Config config_;
  sqlite3* db_ = nullptr;
  Stmt begin_;
  Stmt commit_;
  Stmt rollback_;
  Stmt savepoint_;
  Stmt release_;
  Stmt rollback_to_;
  Authorizer authorizer_;
  // The change feed: the open transaction's changes (kept in step by exec_internal and
  // rollback_all), published to feed_ after each COMMIT. Writer thread.
  ChangeLog changes_;
  FeedHub* feed_ = nullptr;
  // The last COMMIT's changes until its replies are out (publish_committed), and the spent
  // commits the hub let go, for the next ones.
  std::shared_ptr<CommittedChanges> committed_;
  SpareCommits feed_spares_;
  std::optional<IdempotencyStore> keys_;
  std::int64_t reserved_names_ = 0;  // count_reserved_names() at open, or before a request
  bool recount_reserved_ = false;    // reserved_names_ may be stale: count before the next request
  // Prepared client statements, one cache per client mode (client_index): a statement is
  // authorized when it is prepared, so one authorized for a role (or inside a transaction) is
  // never found by a request of another.
  std::array<Cache, kClientModes> cache_;
  // Per cache, the entry prepare_one() returned last (owned by cache_), or null; clear_cache()
  // resets them.
  std::array<const Cache::value_type*, kClientModes> last_cached_{};

  // Writer-thread state.
  bool in_tx_request_ = false;  // running a request inside a client transaction
  bool alone_ = false;          // running a statement alone, outside any transaction
  bool vacuum_ = false;         // running VACUUM (alone): Mode::kVacuum
  // --statement-timeout: the running client statement's deadline, checked by on_progress.
  std::optional<Clock::time_point> deadline_;
  bool timed_out_ = false;               // on_progress interrupted the statement
  bool batch_committed_ = false;         // the current batch's COMMIT succeeded (group_commit.cpp)
  std::uint64_t attempt_ = 0;            // numbers the batch attempts (ReplySink::attempt_of_)
  std::size_t attempt_reply_bytes_ = 0;  // the current attempt's replies (run_batched)
  bool delivering_ = false;              // the current batch's replies are being handed out
  int lost_attempts_ = 0;                // attempts of the current batch lost by our own statements
  // The batching policy's memory of the last batch (fill_batch): how many replies it sent to
  // each connection (by address, only compared: the session may be gone), and the duration of
  // its COMMIT.
  std::unordered_map<const ReplySink*, std::size_t> last_batch_replies_;
  Clock::duration last_commit_{};
  Clock::time_point next_files_check_{};  // check_files_in_place
  bool files_check_owed_ = false;         // a commit since its last look
  // The WAL's file when it was first seen open (SQLite answers SQLITE_FCNTL_HAS_MOVED for the
  // database file only: it opens its WAL without the inode bookkeeping that needs).
  std::optional<std::pair<dev_t, ino_t>> wal_file_;
  std::string wal_path_;          // as SQLite names it (after the path with its symlinks resolved)
  int wal_limit_frames_ = 0;      // config_.wal_limit in WAL frames (pages)
  int wal_warned_frames_ = 0;     // warn_unless_checkpointed()'s next threshold
  int wal_frames_ = 0;            // frames in the WAL after the last commit (on_wal_commit)
  int passive_at_frames_ = -1;    // wal_frames_ when maintain_wal() last ran a passive checkpoint
  bool passive_failing_ = false;  // the last passive checkpoint failed (logged once, maintain_wal)
  Clock::time_point next_passive_{};         // while it fails: not before this
  std::chrono::seconds passive_backoff_{1};  // and the wait after the next failure
  bool truncate_failing_ = false;  // the last TRUNCATE past --wal-limit failed on the disk
  std::chrono::seconds truncate_error_backoff_{1};  // before the next try after such a failure
  std::chrono::milliseconds truncate_wait_{100};    // see bound_wal()
  Clock::time_point next_truncate_{};
  int tries_at_longest_ = 0;  // failed bound_wal() tries at the longest wait since the last success
  Clock::time_point next_yield_{};         // see yield_to_checkpointer()
  bool wal_restarted_ = false;             // on_wal_commit saw fewer frames than before: a reset
  std::uint64_t checkpoint_progress_ = 0;  // checkpointer().progress after the last pause or batch
  Stmt data_version_;                      // PRAGMA data_version: another connection committed

  struct OpenTransaction {
    std::shared_ptr<ReplySink> owner;
    Clock::time_point last_activity;
    std::uint64_t number = 0;  // the request id of its BEGIN (PROTOCOL.md §6.2)
  };
  std::optional<OpenTransaction> tx_;
  std::deque<Request> deferred_;  // waiting for tx_ to end, in arrival order
  // The last transaction the daemon ended on each connection, and why; kept until the
  // connection closes, so that any later request naming it is told.
  struct EndedTransaction {
    std::uint64_t number = 0;
    std::string reason;
  };
  std::unordered_map<ReplySink*, EndedTransaction> ended_;
  std::vector<std::uint8_t> replies_;  // reply frames of the current batch attempt
  // Reused batch after batch, so that a request costs the writer no allocation of its own in
  // the steady state: the batch being built (process), its outcomes (run_batch_attempts), and
  // the replies grouped per connection (deliver; `used` of them in the current batch).
  std::vector<Request> batch_;
  std::vector<Outcome> outcomes_;
  struct SinkReplies {
    ReplySink* sink = nullptr;  // only compared (ReplySink::batch_slot_); null after delivery
    std::vector<std::uint8_t> bytes;
    std::size_t count = 0;
  };
  std::vector<SinkReplies> per_sink_;
  // Payload buffers of answered batch requests (recycle_payloads), handed to free_payloads_
  // when serve() next takes the queue, and from there to the I/O thread by submit(). At most
  // kPooledPayloads of them, each of at most kPooledPayloadCapacity bytes, in each list.
  PayloadBuffers spent_payloads_;
  void recycle_payloads(std::vector<Request>& batch) noexcept;
  proto::ErrorReply failure_;  // the error of the last failed run_* call

  std::function<void()> on_shutdown_request_;
  std::function<void()> on_drained_;
  std::thread thread_;
  // Set by drive(): the writer waits for requests in the io_context (writer thread only, once
  // set). io_ended_: that io_context stopped, so the writer waits on cv_ from then on.
  IoBaton* baton_ = nullptr;
  bool io_ended_ = false;
  bool drives_io() const { return baton_ && !io_ended_; }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Request> queue_;    // GUARDED_BY(mu_)
  PayloadBuffers free_payloads_;  // GUARDED_BY(mu_): see spent_payloads_
  bool stopping_ = false;         // GUARDED_BY(mu_)
  bool waiting_ = false;          // GUARDED_BY(mu_): the writer sleeps on cv_
  bool closing_ = false;          // GUARDED_BY(mu_): the final checkpoint began; abort() waits
  // GUARDED_BY(mu_): submit() wakes the sleeping writer once queue_ holds this many requests
  // (1, or more while fill_batch() waits for a batch to fill).
  std::size_t wake_at_ = 1;
  // Set by submit() (under mu_) and cleared when serve() takes the queue: what the writer
  // watches, without the lock, while it spins after a lone request (serve()).
  std::atomic<bool> queued_{false};
  // backlog(): queue_.size(), set under mu_ by submit() and when serve() takes the queue; the
  // work list's size, set by the writer thread when it changes by a batch.
  std::atomic<std::size_t> queued_count_{0};
  std::atomic<std::size_t> work_count_{0};
  int lone_streak_ = 0;  // writer thread: how many batches in a row held one request
  std::atomic<bool> aborted_{false};
  std::optional<StorageFailure> storage_failure_;  // GUARDED_BY(mu_)

  // Watchdog: the writer thread bumps progress_; idle_ is set while it waits for work.
  std::atomic<std::uint64_t> progress_{0};
  std::atomic<bool> idle_{false};
  std::uint64_t progress_seen_ = 0;  // I/O thread: progress_ at the previous made_progress()

  mutable std::mutex stats_mu_;
  WriterStats stats_;                     // GUARDED_BY(stats_mu_), without the live fields
  std::vector<std::uint32_t> commit_us_;  // GUARDED_BY(stats_mu_): ring of the last commits
  std::size_t commit_next_ = 0;           // GUARDED_BY(stats_mu_)
  std::atomic<std::size_t> deferred_count_{0};
  std::atomic<std::int64_t> tx_started_ns_{0};       // steady clock; 0: no transaction open
  std::atomic<const ReplySink*> tx_owner_{nullptr};  // tx_->owner, for holds_transaction()

  // Last, so that it is destroyed first: a running backup answers through reply().
  BackupRunner backup_{config_};
};

}  // namespace pasyn::server
