// The writer: owns the database's only read-write connection and group-commits queued requests.
//
// Design (LevelDB's BuildBatchGroup, adapted to a dedicated thread):
//  * Sessions on the I/O thread parse requests and submit() them; the queue is the only state
//    shared between the I/O thread and the writer thread, guarded by mu_.
//  * The writer thread takes everything queued (up to kMaxBatch requests), opens one
//    `BEGIN IMMEDIATE` transaction, and runs the requests one after the other. If one fails,
//    the attempt is rolled back and the batch runs again with each request inside its own
//    savepoint: the failing one is rolled back to its savepoint and answered with its own
//    error, the others stay. (Savepoints cost two statements per request, so they are paid
//    only by batches that need them.) Then it commits once and only then hands the replies to each
//    request's ReplySink, one buffer per sink per batch (so a connection gets one coalesced write
//    per batch).
//  * If the commit fails, every request of the batch gets that error: a success reply always
//    means committed.
//  * Transaction-control SQL from clients (BEGIN, COMMIT, ROLLBACK; SAVEPOINT and RELEASE outside
//    a client transaction) is refused at prepare time by an authorizer, so no client statement
//    can end the batch transaction. As a backstop (INSERT OR ROLLBACK, RAISE(ROLLBACK), I/O
//    errors), the writer checks after each request that the transaction is still open; if it is
//    not, that request fails and the rest of the batch is run again in a new transaction.
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

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <pasyn/proto/codec.hpp>

#include "config.hpp"
#include "histogram.hpp"

namespace pasyn::server {

/// Where a request's reply goes. deliver() is called on the writer thread with one or more
/// complete frames; implementations hand them to their own thread.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  /// `frames` holds the replies of `replies` requests.
  virtual void deliver(std::vector<std::uint8_t> frames, std::size_t replies) = 0;
  /// False once the connection behind the sink has closed. Thread-safe.
  virtual bool alive() const noexcept = 0;
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
  bool disconnect = false;  // not a request: the notice that `sink`'s connection closed
  bool read_only = false;   // from a read-only peer: run only if SQLite deems it read-only
  std::uint64_t id = 0;
  std::shared_ptr<ReplySink> sink;
  Clock::time_point arrived;          // set by submit(); for the lock wait
  std::vector<std::uint8_t> payload;  // the frame's payload; the views below point into it
  std::string_view sql;
  std::string_view key;      // idempotency key; empty: none (PROTOCOL.md §6.3)
  proto::ParamsView params;  // EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH
  proto::ManyView many;      // EXECUTE_MANY
};

/// True for SQL that SQLite cannot run inside a transaction (VACUUM, PRAGMA journal_mode, ...),
/// judged from its first statement's leading keywords.
bool must_run_alone(std::string_view sql);
/// True when `sql` holds at most one statement (judged from its text: quotes and comments are
/// skipped, the first top-level ';' ends the statement).
bool is_single_statement(std::string_view sql);
/// True when the first keyword of `sql` is SAVEPOINT, RELEASE or ROLLBACK (TO).
bool is_savepoint_sql(std::string_view sql);
/// True when the first keyword of `sql` is VACUUM.
bool is_vacuum(std::string_view sql);

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
  // Since the start (cumulative, for STATS and Prometheus): requests per batch, COMMIT
  // duration (µs), and the time requests waited in the queue before the writer took them (µs).
  Histogram batch_size{kBatchSizeBounds};
  Histogram commit_us{kMicrosecondBounds};
  Histogram queue_wait_us{kMicrosecondBounds};
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
  /// called, the queue is empty, the WAL is checkpointed and the database closed.
  void start(std::function<void()> on_shutdown_request, std::function<void()> on_drained);

  /// Queues requests; false (nothing queued) once stop() was called.
  /// Thread-safe.
  bool submit(std::vector<Request>& requests);

  /// Finish what is queued, then checkpoint, close, and call on_drained. Thread-safe.
  void stop();
  /// Interrupt the statement running now and fail what is still queued (drain timeout).
  /// Thread-safe.
  void abort();
  void join();

  /// Thread-safe.
  WriterStats stats() const;
  /// For the watchdog: true if the writer thread is waiting for work or has made progress
  /// (finished a step of its loop, or run SQLite VM instructions) since the previous call.
  /// Called from one thread (the I/O thread).
  bool made_progress();

  static constexpr std::size_t kCommitWindow = 1024;

 private:
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool several = false;  // the SQL holds more than one statement
  };
  struct Outcome {
    std::size_t offset = 0;  // of this request's reply frame in replies_
    bool ok = false;
  };

  void run();
  void process(std::deque<Request>& work);
  void run_batch(std::vector<Request>& batch);
  void run_alone(Request& r);
  /// CHECKPOINT and BACKUP: run between batches, outside any transaction.
  void run_admin(Request& r);
  bool checkpoint(std::string_view mode, proto::Report& report);
  bool backup(const std::string& path, proto::Report& report);
  void count_answered(std::size_t n);
  /// Truncating checkpoint once the WAL passed --wal-limit (see writer.cpp).
  void bound_wal();
  void record_commit(Clock::duration took, std::size_t batch_size);
  void begin_transaction(Request& r);
  void run_in_transaction(Request& r, std::deque<Request>& work);
  /// Rolls back the open transaction (if SQLite has not already), tells its owner `reason` on
  /// its next transaction request (none: it ended normally), and puts the deferred requests
  /// back at the front of `work`.
  void end_transaction(std::deque<Request>& work, std::optional<std::string> reason);
  /// Answers `r` with TRANSACTION_ENDED (`why`) and ends the transaction.
  void fail_transaction(Request& r, std::deque<Request>& work, const std::string& why);
  void refuse_transaction_request(Request& r);
  void defer(Request& r);
  void expire(Clock::time_point now, std::deque<Request>& work);
  std::optional<Clock::time_point> next_deadline() const;
  void reply(Request& r, std::vector<std::uint8_t> frames);
  void reply_error(Request& r, proto::PasynCode code, std::string_view message);
  /// One attempt at a batch: returns the index of a request that ended the batch transaction,
  /// batch.size() when the attempt is over (committed, or a batch of one that failed), or
  /// kRetryWithSavepoints when a request failed without savepoints (everything rolled back).
  std::size_t attempt(std::vector<Request>& batch, std::vector<Outcome>& outcomes, bool savepoints);
  // The run_* helpers return false on failure, with the error in failure_.
  bool run_request(Request& r);
  bool run_request_body(Request& r);
  bool run_statement(sqlite3_stmt* stmt, const proto::ParamsView& params, proto::FrameWriter* rows);
  bool run_script(std::string_view sql, std::int64_t& changes);
  bool prepare_one(std::string_view sql, sqlite3_stmt*& stmt);
  bool several_statements();
  bool bind(sqlite3_stmt* stmt, const proto::ParamsView& params);
  void capture_sqlite_error();
  void set_failure(proto::PasynCode code, std::string_view message);
  void deliver(std::vector<Request>& batch, const std::vector<Outcome>& outcomes);
  void finish_pending_with(std::vector<Request>& batch, proto::PasynCode code,
                           std::string_view message);

  // Idempotency keys (PROTOCOL.md §6.3), kept in the table pasyn_idempotency of the database
  // itself, written in the same transaction as the request they answer.
  /// If `r`'s key was seen, appends its recorded reply (with r's id) to replies_: true.
  bool replay(Request& r);
  /// Records the reply of `r` (the frame at `offset` in replies_) under its key.
  bool record(const Request& r, std::size_t offset);
  bool prepare_idempotency();

  bool exec_internal(sqlite3_stmt* stmt);
  sqlite3_stmt* prepare_internal(const char* sql);
  void clear_cache();
  void checkpoint_and_close();

  static int on_progress(void* self);
  static int on_wal_commit(void* self, sqlite3* db, const char* schema, int frames);
  static int authorize(void* self, int action, const char* a, const char* b, const char* c,
                       const char* d);

  Config config_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  sqlite3_stmt* savepoint_ = nullptr;
  sqlite3_stmt* release_ = nullptr;
  sqlite3_stmt* rollback_to_ = nullptr;
  sqlite3_stmt* key_table_ = nullptr;  // CREATE TABLE IF NOT EXISTS pasyn_idempotency
  sqlite3_stmt* key_lookup_ = nullptr;
  sqlite3_stmt* key_insert_ = nullptr;
  sqlite3_stmt* key_prune_ = nullptr;
  std::uint64_t keys_recorded_ = 0;

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::unordered_map<std::string, Cached, StringHash, std::equal_to<>> cache_;

  // Writer-thread state.
  bool internal_ = false;            // our own control statements are being prepared/run
  bool in_tx_request_ = false;       // running a request inside a client transaction
  bool alone_ = false;               // running a statement alone, outside any transaction
  bool vacuum_ = false;              // running VACUUM (alone): see authorize()
  bool saw_savepoint_ = false;       // the last prepare authorized a savepoint statement
  sqlite3_stmt* oneshot_ = nullptr;  // a statement not to cache (savepoints: see authorize)
  const char* denied_ = nullptr;     // what the authorizer refused last
  proto::PasynCode denied_code_ = proto::PasynCode::kMisuse;
  // --statement-timeout: the running client statement's deadline, checked by on_progress.
  std::optional<Clock::time_point> deadline_;
  bool timed_out_ = false;  // on_progress interrupted the statement
  // A request that timed out in a batch's first attempt is not run again in its rerun.
  std::size_t timed_out_at_ = static_cast<std::size_t>(-1);
  proto::ErrorReply timed_out_failure_;
  int wal_limit_frames_ = 0;  // config_.wal_limit in WAL frames (pages)
  int wal_frames_ = 0;        // frames in the WAL after the last commit (on_wal_commit)
  std::chrono::milliseconds truncate_wait_{100};  // see bound_wal()
  Clock::time_point next_truncate_{};

  struct OpenTransaction {
    std::shared_ptr<ReplySink> owner;
    Clock::time_point last_activity;
  };
  std::optional<OpenTransaction> tx_;
  std::deque<Request> deferred_;  // waiting for tx_ to end, in arrival order
  // Connections whose transaction the daemon ended, and why; told on their next request.
  std::unordered_map<ReplySink*, std::string> ended_;
  std::vector<std::uint8_t> replies_;  // reply frames of the current batch attempt
  proto::ErrorReply failure_;          // the error of the last failed run_* call

  std::function<void()> on_shutdown_request_;
  std::function<void()> on_drained_;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Request> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;       // GUARDED_BY(mu_)
  bool waiting_ = false;        // GUARDED_BY(mu_): the writer sleeps on cv_
  std::atomic<bool> aborted_{false};

  // Watchdog: the writer thread bumps progress_; idle_ is set while it waits for work.
  std::atomic<std::uint64_t> progress_{0};
  std::atomic<bool> idle_{false};
  std::uint64_t progress_seen_ = 0;  // I/O thread: progress_ at the previous made_progress()

  mutable std::mutex stats_mu_;
  WriterStats stats_;                     // GUARDED_BY(stats_mu_), without the live fields
  std::vector<std::uint32_t> commit_us_;  // GUARDED_BY(stats_mu_): ring of the last commits
  std::size_t commit_next_ = 0;           // GUARDED_BY(stats_mu_)
  std::atomic<std::size_t> deferred_count_{0};
  std::atomic<std::int64_t> tx_started_ns_{0};  // steady clock; 0: no transaction open
};

}  // namespace pasyn::server
