// The writer thread: batching, savepoints, commit, replies. See writer.hpp for the design.
// Size: ~1,200 lines, over the ~600 guideline. The statement cache, executor, client
// transactions and checkpointer move to their own files in issue 11's rework (group commit,
// authorizer, idempotency and backup already have theirs).
#include "writer.hpp"

#include <pasyn/proto/named_params.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <new>
#include <stdexcept>
#include <unordered_map>

#include <sys/stat.h>

#include "access_control.hpp"
#include "log.hpp"
#include "paths.hpp"

namespace pasyn::server {
namespace {

constexpr std::size_t kMaxCachedStatements = 512;
// SQLite VM instructions between two progress ticks (the watchdog's sign of life).
constexpr int kProgressInterval = 1000;
// WAL frames from which each commit runs a passive checkpoint (SQLite's default).
constexpr int kAutoCheckpointFrames = 1000;
// A TRUNCATE checkpoint past --wal-limit (see bound_wal) first waits this long for readers...
constexpr std::chrono::milliseconds kTruncateWait{100};
// ...doubling after each failed try up to this (or --busy-timeout if shorter): the longest
// pause of writes that one try may cause.
constexpr std::chrono::milliseconds kTruncateWaitMax{1000};
// How often the checkpoint looks again whether the readers it waits for are done.
constexpr std::chrono::milliseconds kTruncatePoll{1};
// After this many failed tries at the longest wait, writes go on kTruncateBackoff before the next.
constexpr int kTriesAtLongest = 3;
constexpr std::chrono::seconds kTruncateBackoff{60};

/// Resets a statement when the scope ends, on every path, so no statement keeps a read snapshot
/// or a write cursor open. With `clear_bindings`, also drops its bindings, which point into a
/// request's payload (done once per request, not per execute_many row).
class ResetGuard {
 public:
  explicit ResetGuard(sqlite3_stmt* s, bool clear_bindings = false)
      : s_(s), clear_(clear_bindings) {}
  ~ResetGuard() {
    if (!s_) return;
    sqlite3_reset(s_);
    if (clear_) sqlite3_clear_bindings(s_);
  }
  ResetGuard(const ResetGuard&) = delete;
  ResetGuard& operator=(const ResetGuard&) = delete;

 private:
  sqlite3_stmt* s_;
  bool clear_;
};

bool only_space_or_comments(const char* p, const char* end);

const char* skip_space_and_comments(const char* p, const char* end) {
  while (p < end) {
    if (std::isspace(static_cast<unsigned char>(*p))) {
      ++p;
    } else if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
      while (p < end && *p != '\n') ++p;
    } else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
      p += 2;
      while (end - p >= 2 && !(p[0] == '*' && p[1] == '/')) ++p;
      p = end - p >= 2 ? p + 2 : end;
    } else {
      break;
    }
  }
  return p;
}

// Reads an identifier at `p`, lower-cased (ASCII), advancing `p` past it. Runs for every request,
// so it allocates nothing: only short keywords matter, and a longer word matches none of them.
class Word {
 public:
  Word(const char*& p, const char* end) {
    for (; p < end && (std::isalnum(static_cast<unsigned char>(*p)) || *p == '_'); ++p) {
      if (n_ < sizeof buf_) buf_[n_] = static_cast<char>(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
      ++n_;
    }
  }
  bool operator==(std::string_view keyword) const {
    return n_ <= sizeof buf_ && std::string_view(buf_, n_) == keyword;
  }

 private:
  char buf_[16];
  std::size_t n_ = 0;
};

}  // namespace

bool is_single_statement(std::string_view sql) {
  const char* p = sql.data();
  const char* end = p + sql.size();
  while (p < end && *p != ';') {  // find the end of the first statement
    const char c = *p;
    if (c == '\'' || c == '"' || c == '`' || c == '[') {
      const char close = c == '[' ? ']' : c;
      for (++p; p < end && *p != close; ++p) {
      }
    } else if (end - p >= 2 && ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*'))) {
      p = skip_space_and_comments(p, end);
      continue;
    }
    if (p < end) ++p;
  }
  return only_space_or_comments(p, end);
}

bool is_savepoint_sql(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  const Word first(p, end);
  return first == "savepoint" || first == "release" || first == "rollback";
}

bool is_vacuum(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  return Word(p, end) == "vacuum";
}

bool must_run_alone(std::string_view sql) {
  const char* end = sql.data() + sql.size();
  const char* p = skip_space_and_comments(sql.data(), end);
  const Word first(p, end);
  if (first == "vacuum") return true;
  if (first != "pragma") return false;
  p = skip_space_and_comments(p, end);
  Word name(p, end);
  p = skip_space_and_comments(p, end);
  if (p < end && *p == '.') {  // schema.pragma
    p = skip_space_and_comments(p + 1, end);
    name = Word(p, end);
  }
  static constexpr std::string_view kAlone[] = {"journal_mode", "foreign_keys", "locking_mode",
                                                "page_size",    "auto_vacuum",  "wal_checkpoint"};
  for (auto n : kAlone) {
    if (name == n) return true;
  }
  return false;
}

namespace {

bool only_space_or_comments(const char* p, const char* end) {
  for (;;) {  // empty statements (a stray ';') count as nothing too
    p = skip_space_and_comments(p, end);
    if (p == end) return true;
    if (*p != ';') return false;
    ++p;
  }
}

void encode_column(proto::FrameWriter& w, sqlite3_stmt* stmt, int col) {
  switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER:
      w.u8(static_cast<std::uint8_t>(ValueType::kInteger));
      w.i64(sqlite3_column_int64(stmt, col));
      break;
    case SQLITE_FLOAT:
      w.u8(static_cast<std::uint8_t>(ValueType::kReal));
      w.f64(sqlite3_column_double(stmt, col));
      break;
    case SQLITE_TEXT: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, col));
      w.u8(static_cast<std::uint8_t>(ValueType::kText));
      w.string({p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(stmt, col))});
      break;
    }
    case SQLITE_BLOB: {
      const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt, col));
      w.u8(static_cast<std::uint8_t>(ValueType::kBlob));
      w.bytes({p, static_cast<std::size_t>(sqlite3_column_bytes(stmt, col))});
      break;
    }
    default:
      w.u8(static_cast<std::uint8_t>(ValueType::kNull));
      break;
  }
}

}  // namespace

std::uint32_t frame_size_at(const std::vector<std::uint8_t>& buf, std::size_t offset) {
  std::uint32_t length;
  std::memcpy(&length, buf.data() + offset, sizeof length);
  return length + static_cast<std::uint32_t>(proto::kLengthFieldSize);
}

Writer::Writer(const Config& config) : config_(config) {
  const int rc =
      sqlite3_open_v2(config_.database_path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto fail = [&](const std::string& what) {
    std::string msg = "cannot open database " + config_.database_path + ": " + what +
                      (db_ ? std::string(" (") + sqlite3_errmsg(db_) + ")" : std::string());
    // Statements first: closing with some left would leave a zombie connection holding the
    // file's descriptors and locks (the in-process server's caller may try again).
    for (auto* s : {&begin_, &commit_, &rollback_, &savepoint_, &release_, &rollback_to_}) {
      s->reset();
    }
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw StartError(StartError::Kind::kDatabase, msg);
  };
  if (rc != SQLITE_OK) fail(sqlite3_errstr(rc));
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, static_cast<int>(config_.busy_timeout.count()));
  // From here on, client SQL is checked against the allow-list; the daemon's own runs as
  // Mode::kInternal (this scope, exec_internal, prepare_internal).
  authorizer_.install(db_);
  Authorizer::Scope internal(authorizer_, Mode::kInternal);

  sqlite3_stmt* mode = nullptr;
  if (sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &mode, nullptr) != SQLITE_OK ||
      sqlite3_step(mode) != SQLITE_ROW) {
    sqlite3_finalize(mode);
    fail("cannot switch to WAL mode");
  }
  const std::string journal = reinterpret_cast<const char*>(sqlite3_column_text(mode, 0));
  sqlite3_finalize(mode);
  if (journal != "wal") fail("journal mode is " + journal + ", WAL is required");
  // Keep -wal (truncated) and -shm when the writer closes: a read-only reader needs both to exist
  // (SQLite wal.html, "Read-Only Databases") and may not create them in a directory it cannot
  // write (/var/lib/pasyn is 0750), so without this readers fail after the daemon stops.
  int persist_wal = 1;
  if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal) != SQLITE_OK)
    fail("cannot keep the WAL files (SQLITE_FCNTL_PERSIST_WAL)");
  const char* sync =
      config_.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL";
  if (sqlite3_exec(db_, sync, nullptr, nullptr, nullptr) != SQLITE_OK)
    fail("cannot set synchronous");
  // Hardening (SPEC §4): no way to corrupt the file through SQL, no extensions, and SQLite's own
  // bound on the parameters of a statement (also of each execute_many row).
  sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_enable_load_extension(db_, 0);  // also the SQL function load_extension()
  // SQL functions and virtual tables in the schema (triggers, views, defaults) are limited to
  // the innocuous ones: a schema written by one client cannot run dangerous code for another.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  // --foreign-keys: clients cannot set it (it is connection state, shared by all of them).
  int fk = -1;
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_FKEY, config_.foreign_keys ? 1 : 0, &fk);
  if (fk != (config_.foreign_keys ? 1 : 0)) fail("cannot set foreign key enforcement");
  // (Not SQLITE_LIMIT_SQL_LENGTH: SQLite's own nested statements for DDL count against it; the
  // session checks --max-sql-length on what clients send.)
  sqlite3_limit(db_, SQLITE_LIMIT_VARIABLE_NUMBER, static_cast<int>(config_.max_params));

  begin_.reset(prepare_internal("BEGIN IMMEDIATE"));
  commit_.reset(prepare_internal("COMMIT"));
  rollback_.reset(prepare_internal("ROLLBACK"));
  savepoint_.reset(prepare_internal("SAVEPOINT pasyn_request"));
  release_.reset(prepare_internal("RELEASE pasyn_request"));
  rollback_to_.reset(prepare_internal("ROLLBACK TO pasyn_request"));
  if (!begin_ || !commit_ || !rollback_ || !savepoint_ || !release_ || !rollback_to_) {
    fail("cannot prepare transaction statements");
  }
  sqlite3_progress_handler(db_, kProgressInterval, &Writer::on_progress, this);
  // Checkpoints (replaces SQLite's auto-checkpoint, which is this same hook): passive from
  // kAutoCheckpointFrames on, as SQLite would; TRUNCATE past --wal-limit.
  int page_size = 4096;
  if (sqlite3_stmt* ps = prepare_internal("PRAGMA page_size")) {
    if (sqlite3_step(ps) == SQLITE_ROW) page_size = sqlite3_column_int(ps, 0);
    sqlite3_finalize(ps);
  }
  wal_limit_frames_ = static_cast<int>(std::min<std::size_t>(
      config_.wal_limit / static_cast<std::size_t>(page_size > 0 ? page_size : 4096), INT32_MAX));
  sqlite3_wal_hook(db_, &Writer::on_wal_commit, this);
  commit_us_.reserve(kCommitWindow);
  keys_.emplace(db_, authorizer_, config_.idempotency_keys);
}

Writer::~Writer() {
  if (thread_.joinable()) {
    stop();
    thread_.join();
  } else if (db_) {
    checkpoint_and_close();
  }
}

sqlite3_stmt* Writer::prepare_internal(const char* sql) {
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  return stmt;
}

int Writer::on_wal_commit(void* self, sqlite3* db, const char* schema, int frames) {
  auto* w = static_cast<Writer*>(self);
  w->wal_frames_ = frames;
  if (frames >= kAutoCheckpointFrames) {  // what SQLite's auto-checkpoint would do
    sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }
  return SQLITE_OK;
}

void Writer::bound_wal() {
  // Past --wal-limit. A passive checkpoint cannot reset a WAL that readers keep using, so this
  // one (TRUNCATE) waits for them: while it holds the write lock no frame is added, new readers
  // read from the database file, and it succeeds once the readers already running are done. (It
  // runs here, between batches, not in the WAL hook: there the writer still holds its own read
  // lock and would wait for itself.)
  //
  // Writes wait while it waits, so each call makes ONE try, bounded, and the run loop calls it
  // once per batch, never back to back: between two tries the next batch runs (the WAL grows by
  // at most one batch per failed try), and stop(), expiries and aborts are seen. The first try
  // waits kTruncateWait (a query is usually shorter); each failure doubles the next try's wait up
  // to kTruncateWaitMax (or --busy-timeout if shorter): no pause of writes is longer than that.
  // After kTriesAtLongest failed tries at the longest wait (a reader keeping one snapshot, a long
  // read transaction), the writer backs off for kTruncateBackoff: the WAL grows past the limit
  // meanwhile, the price of not pausing writes for that reader's whole life.
  if (wal_frames_ < wal_limit_frames_) return;
  const auto now = Clock::now();
  if (now < next_truncate_) return;
  struct Wait {
    Clock::time_point deadline;
  } wait{now + truncate_wait_};
  // SQLite's own busy handler sleeps ever longer between tries and misses the short gaps between
  // a busy reader's queries; this one looks again every kTruncatePoll until the deadline.
  sqlite3_busy_handler(
      db_,
      [](void* arg, int) {
        if (Clock::now() >= static_cast<Wait*>(arg)->deadline) return 0;
        std::this_thread::sleep_for(kTruncatePoll);
        return 1;
      },
      &wait);
  const int rc =
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  sqlite3_busy_timeout(db_, static_cast<int>(config_.busy_timeout.count()));
  const auto done = Clock::now();
  if (rc == SQLITE_OK) {
    wal_frames_ = 0;
    truncate_wait_ = kTruncateWait;
    tries_at_longest_ = 0;
    next_truncate_ = {};
    return;
  }
  const auto longest = std::max(
      kTruncateWait, std::min<std::chrono::milliseconds>(kTruncateWaitMax, config_.busy_timeout));
  if (truncate_wait_ >= longest && ++tries_at_longest_ >= kTriesAtLongest) {
    log().warn(
        "the WAL is over --wal-limit ({} frames) and readers kept their snapshots through {} "
        "waits of {} ms; trying again in {} s",
        wal_frames_, tries_at_longest_, truncate_wait_.count(), kTruncateBackoff.count());
    truncate_wait_ = kTruncateWait;
    tries_at_longest_ = 0;
    next_truncate_ = done + kTruncateBackoff;
    return;
  }
  log().debug("WAL over --wal-limit ({} frames): readers outlasted a {} ms wait ({})", wal_frames_,
              truncate_wait_.count(), sqlite3_errstr(rc));
  truncate_wait_ = std::min(2 * truncate_wait_, longest);
}

int Writer::on_progress(void* self) {
  auto* w = static_cast<Writer*>(self);
  w->progress_.fetch_add(1, std::memory_order_relaxed);
  if (w->deadline_ && Clock::now() >= *w->deadline_) {
    w->timed_out_ = true;
    return 1;  // interrupts the statement: SQLITE_INTERRUPT, turned into TIMEOUT by run_request
  }
  return 0;
}

void Writer::start(std::function<void()> on_shutdown_request, std::function<void()> on_drained) {
  on_shutdown_request_ = std::move(on_shutdown_request);
  on_drained_ = std::move(on_drained);
  thread_ = std::thread([this] { run(); });
}

bool Writer::submit(std::vector<Request>& requests) {
  if (requests.empty()) return true;
  bool wake = false;
  const auto now = Clock::now();
  for (auto& r : requests) r.arrived = now;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return false;
    if (queue_.empty()) {
      queue_.swap(requests);
    } else {
      for (auto& r : requests) queue_.push_back(std::move(r));
    }
    wake = waiting_;
  }
  requests.clear();
  if (wake) cv_.notify_one();
  return true;
}

void Writer::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
}

void Writer::abort() {
  aborted_ = true;
  backup_.cancel();
  std::lock_guard lk(mu_);
  if (db_) sqlite3_interrupt(db_);
}

void Writer::join() {
  if (thread_.joinable()) thread_.join();
}

WriterStats Writer::stats() const {
  WriterStats s;
  std::vector<std::uint32_t> commits;
  {
    std::lock_guard lk(stats_mu_);
    s = stats_;
    commits = commit_us_;
  }
  if (!commits.empty()) {
    std::sort(commits.begin(), commits.end());
    const auto at = [&](double q) {
      return commits[std::min(commits.size() - 1, static_cast<std::size_t>(q * commits.size()))];
    };
    s.commit_p50_us = at(0.50);
    s.commit_p99_us = at(0.99);
    s.commit_max_us = commits.back();
  }
  {
    std::lock_guard lk(mu_);
    s.queue_depth = queue_.size();
  }
  s.waiting = deferred_count_.load(std::memory_order_relaxed);
  if (const auto started = tx_started_ns_.load(std::memory_order_relaxed); started != 0) {
    const auto now = Clock::now().time_since_epoch();
    s.transaction_age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               now - std::chrono::nanoseconds(started))
                               .count();
  }
  s.backup_pages_done = backup_.pages_done();
  s.backup_pages_total = backup_.pages_total();
  return s;
}

bool Writer::made_progress() {
  const auto now = progress_.load(std::memory_order_relaxed);
  const bool moved = now != progress_seen_;
  progress_seen_ = now;
  return moved || idle_.load(std::memory_order_relaxed);
}

std::optional<StorageFailure> Writer::storage_failure() const {
  std::lock_guard lk(mu_);
  return storage_failure_;
}

void Writer::count_answered(std::size_t n) {
  std::lock_guard lk(stats_mu_);
  stats_.requests += n;
}

void Writer::record_commit(Clock::duration took, std::size_t batch_size) {
  const auto us = static_cast<std::uint32_t>(std::min<std::int64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(took).count(), UINT32_MAX));
  std::lock_guard lk(stats_mu_);
  ++stats_.batches;
  stats_.batched_requests += batch_size;
  stats_.batch_size.observe(batch_size);
  stats_.commit_us.observe(us);
  if (commit_us_.size() < kCommitWindow) {
    commit_us_.push_back(us);
  } else {
    commit_us_[commit_next_] = us;
  }
  commit_next_ = (commit_next_ + 1) % kCommitWindow;
}

void Writer::run() {
  std::deque<Request> work;
  std::vector<Request> incoming;
  try {
    serve(work, incoming);
  } catch (const FailStop& stop) {
    // Nothing more is answered: what was taken from the queue is dropped, and its connections
    // are closed by the server's shutdown, so clients see ConnectionLostError (outcome unknown),
    // never a false failure. No checkpoint on close: WAL recovery at the next start decides
    // what the last commit wrote.
    log().critical(
        "{}; stopping: pasyn-writerd serves no more requests, so that no client is told its "
        "write failed while WAL recovery may still bring it back",
        stop.failure.message);
    {
      std::lock_guard lk(mu_);
      storage_failure_ = stop.failure;
      stopping_ = true;  // submit() refuses from now on
      queue_.clear();
    }
    work.clear();
    deferred_.clear();
    deferred_count_.store(0, std::memory_order_relaxed);
    tx_.reset();
    tx_started_ns_.store(0, std::memory_order_relaxed);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    backup_.cancel();  // its own connection; nothing of it is published
    backup_.join();
    close_database(false);
    if (on_shutdown_request_) on_shutdown_request_();  // the server stops accepting
    if (on_drained_) on_drained_();
    return;
  }
  backup_.join();  // a running BACKUP is queued work too (abort() cancels it)
  checkpoint_and_close();
  if (on_drained_) on_drained_();
}

void Writer::serve(std::deque<Request>& work, std::vector<Request>& incoming) {
  for (;;) {
    bool stopping = false;
    {
      std::unique_lock lk(mu_);
      while (queue_.empty() && !stopping_) {
        const auto deadline = next_deadline();
        idle_.store(true, std::memory_order_relaxed);
        waiting_ = true;
        const bool timed_out = deadline ? cv_.wait_until(lk, *deadline) == std::cv_status::timeout
                                        : (cv_.wait(lk), false);
        waiting_ = false;
        idle_.store(false, std::memory_order_relaxed);
        if (timed_out) break;
      }
      incoming.swap(queue_);
      stopping = stopping_;
    }
    progress_.fetch_add(1, std::memory_order_relaxed);
    const auto taken = Clock::now();
    if (!incoming.empty()) {
      std::lock_guard lk(stats_mu_);
      for (const auto& r : incoming) {
        if (r.disconnect) continue;
        stats_.queue_wait_us.observe(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(taken - r.arrived).count()));
      }
    }
    for (auto& r : incoming) work.push_back(std::move(r));
    incoming.clear();
    expire(Clock::now(), work);
    if (stopping && tx_) end_transaction(work, "the daemon is shutting down");
    if (aborted_) {
      std::vector<Request> rest(std::make_move_iterator(work.begin()),
                                std::make_move_iterator(work.end()));
      for (auto& r : deferred_) rest.push_back(std::move(r));
      work.clear();
      deferred_.clear();
      std::erase_if(rest, [](const Request& r) { return r.disconnect; });
      finish_pending_with(rest, proto::PasynCode::kShuttingDown,
                          "pasyn-writerd is shutting down; the request was not executed");
    } else {
      process(work);
      // Between batches, never inside a client transaction: one bounded try (see bound_wal).
      if (!tx_ && !aborted_) bound_wal();
    }
    if (stopping && work.empty() && deferred_.empty() && !tx_) {
      std::lock_guard lk(mu_);
      if (queue_.empty()) break;  // everything queued before stop() has run
    }
  }
}

void Writer::reply(Request& r, std::vector<std::uint8_t> frames) {
  count_answered(1);
  if (r.sink) r.sink->deliver(std::move(frames), 1);
}

void Writer::reply_error(Request& r, proto::PasynCode code, std::string_view message) {
  std::vector<std::uint8_t> frame;
  proto::encode_pasyn_error(frame, r.id, code, message);
  reply(r, std::move(frame));
}

void Writer::run_alone(Request& r) {
  replies_.clear();
  // VACUUM runs ATTACH and BEGIN of its own inside SQLite; see authorize().
  vacuum_ = r.role != Role::kReadOnly && is_vacuum(r.sql);
  alone_ = true;
  const bool ok = run_request(r);
  alone_ = vacuum_ = false;
  if (!ok) {
    replies_.clear();
    proto::encode_error(replies_, r.id, failure_);
  }
  reply(r, std::move(replies_));
  replies_ = {};
}

void Writer::run_admin(Request& r) {
  proto::Report report;
  const bool ok = checkpoint(r.sql, report);
  std::vector<std::uint8_t> frame;
  if (ok) {
    proto::encode_report(frame, r.id, report);
  } else {
    proto::encode_error(frame, r.id, failure_);
  }
  reply(r, std::move(frame));
}

bool Writer::checkpoint(std::string_view mode, proto::Report& report) {
  static constexpr std::pair<std::string_view, int> kModes[] = {
      {"PASSIVE", SQLITE_CHECKPOINT_PASSIVE},
      {"FULL", SQLITE_CHECKPOINT_FULL},
      {"RESTART", SQLITE_CHECKPOINT_RESTART},
      {"TRUNCATE", SQLITE_CHECKPOINT_TRUNCATE}};
  const auto* found = std::find_if(std::begin(kModes), std::end(kModes), [&](const auto& m) {
    return m.first.size() == mode.size() &&
           std::equal(mode.begin(), mode.end(), m.first.begin(), [](char a, char b) {
             return std::toupper(static_cast<unsigned char>(a)) == b;
           });
  });
  if (found == std::end(kModes)) {
    set_failure(proto::PasynCode::kMisuse, "unknown checkpoint mode '" + std::string(mode) +
                                               "' (PASSIVE, FULL, RESTART or TRUNCATE)");
    return false;
  }
  int wal_frames = 0, checkpointed = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, found->second, &wal_frames, &checkpointed);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    capture_sqlite_error();
    return false;
  }
  // SQLITE_BUSY: readers kept part of the WAL from being copied back; the counts tell how much.
  report = {{"mode", std::string(found->first)},
            {"busy", std::int64_t{rc == SQLITE_BUSY}},
            {"wal_frames", std::int64_t{wal_frames}},
            {"checkpointed_frames", std::int64_t{checkpointed}}};
  return true;
}

void Writer::start_backup(Request& r) {
  if (auto why = invalid_backup_name(r.sql)) {
    reply_error(r, proto::PasynCode::kMisuse, *why);
    return;
  }
  log().info("BACKUP to {} in {}", r.sql, backup_directory(config_));
  // Requests are move-only; the callback (a std::function) must be copyable.
  auto request = std::make_shared<Request>(std::move(r));
  const bool started = backup_.start(
      std::string(request->sql),
      [this, request](bool ok, const proto::Report& report, const proto::ErrorReply& failure) {
        std::vector<std::uint8_t> frame;
        if (ok) {
          proto::encode_report(frame, request->id, report);
        } else {
          proto::encode_error(frame, request->id, failure);
        }
        reply(*request, std::move(frame));  // on the backup's thread: reply() is thread-safe
      });
  if (!started) {
    reply_error(*request, proto::PasynCode::kLimit,
                "a backup is running already (one at a time); try again when it has finished");
  }
}

void Writer::begin_transaction(Request& r) {
  if (!r.sink || !r.sink->alive()) return;  // its connection is gone: nobody to own it
  if (!exec_internal(begin_)) {
    capture_sqlite_error();
    fail_stop_unless_definite("BEGIN");
    std::vector<std::uint8_t> frame;
    proto::encode_error(frame, r.id, failure_);
    reply(r, std::move(frame));
    return;
  }
  tx_ = OpenTransaction{r.sink, Clock::now(), r.id};
  tx_started_ns_.store(tx_->last_activity.time_since_epoch().count(), std::memory_order_relaxed);
  std::vector<std::uint8_t> frame;
  proto::encode_empty(frame, proto::MsgType::kOk, r.id);
  reply(r, std::move(frame));
}

// A transaction request that names no transaction open on its connection: the connection's
// own earlier transaction (a stale handle), or none at all. Nothing in the answer depends on
// another connection.
void Writer::refuse_transaction_request(Request& r) {
  const bool owner = tx_ && tx_->owner.get() == r.sink.get();
  auto it = ended_.find(r.sink.get());
  if (!owner && it == ended_.end()) {
    reply_error(r, proto::PasynCode::kMisuse, "no transaction is open on this connection");
    return;
  }
  if (r.type == proto::MsgType::kRollback) {  // rolling back what has already ended
    std::vector<std::uint8_t> frame;
    proto::encode_empty(frame, proto::MsgType::kOk, r.id);
    reply(r, std::move(frame));
    return;
  }
  const bool known = it != ended_.end() && it->second.number == r.transaction;
  reply_error(r, proto::PasynCode::kTransactionEnded,
              known ? "the transaction was rolled back: " + it->second.reason
                    : std::string("the transaction has ended"));
}

void Writer::run_in_transaction(Request& r, std::deque<Request>& work) {
  tx_->last_activity = Clock::now();
  std::vector<std::uint8_t> frame;
  if (r.type == proto::MsgType::kCommit || r.type == proto::MsgType::kRollback) {
    const bool commit = r.type == proto::MsgType::kCommit;
    if (exec_internal(commit ? commit_ : rollback_)) {
      proto::encode_empty(frame, proto::MsgType::kOk, r.id);
    } else {
      capture_sqlite_error();
      if (commit) fail_stop_unless_definite("COMMIT of a client transaction");
      failure_.message =
          (commit ? "commit failed, the transaction was rolled back: " : "rollback failed: ") +
          failure_.message;
      proto::encode_error(frame, r.id, failure_);
    }
    end_transaction(work, std::nullopt);  // rolls back if the commit failed
    reply(r, std::move(frame));
    return;
  }
  if (must_run_alone(r.sql)) {
    reply_error(r, proto::PasynCode::kMisuse,
                "this statement cannot run inside a transaction; send it outside one");
    return;
  }
  // Every request runs inside its own savepoint, so a failing one is undone whole, even a single
  // statement that fails half-way (OR FAIL, RAISE(FAIL), a RETURNING reply too large to send).
  // Only a client's own SAVEPOINT / RELEASE / ROLLBACK TO must not be wrapped: releasing ours
  // would release theirs.
  const bool wrap = r.type == proto::MsgType::kExecuteMany ||
                    r.type == proto::MsgType::kExecuteScript || !is_savepoint_sql(r.sql);
  if (wrap && !exec_internal(savepoint_)) {
    capture_sqlite_error();
    proto::encode_error(frame, r.id, failure_);
    reply(r, std::move(frame));
    return;
  }
  replies_.clear();
  in_tx_request_ = true;
  const bool ok = run_request(r);
  in_tx_request_ = false;
  if (!ok) {
    replies_.clear();
    proto::encode_error(replies_, r.id, failure_);
  }
  if (sqlite3_get_autocommit(db_)) {
    // The statement ended the transaction (INSERT OR ROLLBACK, RAISE(ROLLBACK), I/O error).
    return fail_transaction(r, work,
                            "a statement ended it (" +
                                (ok ? std::string("no error reported") : failure_.message) + ")");
  }
  if (wrap && !((ok || exec_internal(rollback_to_)) && exec_internal(release_))) {
    // The request released our savepoint itself (RELEASE of a savepoint opened before it):
    // its effects can no longer be undone alone, so the transaction cannot go on.
    return fail_transaction(r, work, "a request released the savepoint that made it atomic");
  }
  tx_->last_activity = Clock::now();  // idle time counts from the end of the last request
  reply(r, std::move(replies_));
  replies_ = {};
}

void Writer::fail_transaction(Request& r, std::deque<Request>& work, const std::string& why) {
  std::vector<std::uint8_t> frame;
  proto::encode_pasyn_error(frame, r.id, proto::PasynCode::kTransactionEnded,
                            "the transaction was rolled back: " + why);
  reply(r, std::move(frame));
  end_transaction(work, why);
}

void Writer::end_transaction(std::deque<Request>& work, std::optional<std::string> reason) {
  rollback_all();
  if (reason) ended_[tx_->owner.get()] = EndedTransaction{tx_->number, *reason};
  tx_.reset();
  tx_started_ns_.store(0, std::memory_order_relaxed);
  work.insert(work.begin(), std::make_move_iterator(deferred_.begin()),
              std::make_move_iterator(deferred_.end()));
  deferred_.clear();
  deferred_count_.store(0, std::memory_order_relaxed);
}

void Writer::defer(Request& r) {
  if (config_.lock_wait.count() == 0) {
    reply_error(r, proto::PasynCode::kTimeout,
                "the database is locked by another connection's transaction and --lock-wait is "
                "0; the request was not executed");
    return;
  }
  deferred_.push_back(std::move(r));
  deferred_count_.store(deferred_.size(), std::memory_order_relaxed);
}

void Writer::expire(Clock::time_point now, std::deque<Request>& work) {
  while (!deferred_.empty() && deferred_.front().arrived + config_.lock_wait <= now) {
    Request r = std::move(deferred_.front());
    deferred_.pop_front();
    deferred_count_.store(deferred_.size(), std::memory_order_relaxed);
    if (r.type == proto::MsgType::kCheckpoint) {
      log().warn("CHECKPOINT waited {} ms (--lock-wait) for a client transaction; not run",
                 config_.lock_wait.count());
    }
    reply_error(r, proto::PasynCode::kTimeout,
                "waited " + std::to_string(config_.lock_wait.count()) +
                    " ms (--lock-wait) for another connection's transaction; the request was "
                    "not executed");
  }
  const auto owner_waiting = [&] {
    return std::any_of(work.begin(), work.end(),
                       [&](const Request& r) { return r.sink.get() == tx_->owner.get(); });
  };
  if (tx_ && tx_->last_activity + config_.transaction_idle_timeout <= now && !owner_waiting()) {
    log().warn("rolling back a transaction idle for {} ms",
               config_.transaction_idle_timeout.count());
    end_transaction(work, "it was idle for more than " +
                              std::to_string(config_.transaction_idle_timeout.count()) +
                              " ms (--transaction-idle-timeout)");
  }
}

std::optional<Clock::time_point> Writer::next_deadline() const {
  std::optional<Clock::time_point> next;
  if (!deferred_.empty()) next = deferred_.front().arrived + config_.lock_wait;
  if (tx_) {
    const auto idle = tx_->last_activity + config_.transaction_idle_timeout;
    if (!next || idle < *next) next = idle;
  }
  return next;
}

void Writer::capture_sqlite_error() {
  const int ext = sqlite3_extended_errcode(db_);
  failure_ = {proto::ErrorDomain::kSqlite, ext & 0xff, ext, sqlite3_errmsg(db_)};
}

void Writer::set_failure(proto::PasynCode code, std::string_view message) {
  failure_ = {proto::ErrorDomain::kPasyn, static_cast<std::int32_t>(code),
              static_cast<std::int32_t>(code), std::string(message)};
}

bool Writer::run_request(Request& r) {
  // --statement-timeout bounds the whole request (all statements of a script or execute_many).
  if (config_.statement_timeout.count() > 0) deadline_ = Clock::now() + config_.statement_timeout;
  timed_out_ = false;
  // The whole request, prepare and step, in its mode: SQLite also asks while a statement runs
  // (VACUUM's attach, the PRAGMA behind a pragma_* table-valued function).
  Authorizer::Scope scope(authorizer_, mode_of(r));
  authorizer_.clear_denial();
  bool ok = false;
  try {
    ok = run_request_body(r);
  } catch (const std::bad_alloc&) {
    // The reply (or a copy of the request) needed more memory than there is: this request
    // fails, the daemon goes on. Its statement was reset on the way out (ResetGuard); the
    // caller drops its partial reply and undoes its effects like any failure's.
    out_of_memory("the reply needed more memory than pasyn-writerd could allocate");
  } catch (const std::length_error&) {
    out_of_memory("the reply is larger than pasyn-writerd can hold");
  }
  deadline_.reset();
  const auto& denied = authorizer_.denial();
  if (!ok && denied && failure_.domain == proto::ErrorDomain::kSqlite &&
      failure_.code == SQLITE_AUTH) {
    set_failure(denied->code, denied->message);  // refused while running (VACUUM INTO's attach)
  }
  if (!ok && timed_out_) {
    r.timed_out = true;  // a rerun of its batch answers this at once
    set_timeout_failure();
  }
  return ok;
}

void Writer::set_timeout_failure() {
  set_failure(proto::PasynCode::kTimeout,
              "the request ran longer than --statement-timeout (" +
                  std::to_string(config_.statement_timeout.count()) +
                  " ms) and was interrupted; nothing of it was written");
}

void Writer::out_of_memory(std::string_view what) {
  failure_ = {proto::ErrorDomain::kSqlite, SQLITE_NOMEM, SQLITE_NOMEM,
              std::string(what) + "; nothing of the request was written"};
}

bool Writer::transaction_lost_midway() {
  // Inside a batch or a client transaction, a statement that ended the transaction must be the
  // last one of its request: the next would run (and commit) alone, in autocommit mode.
  if (alone_ || in_write_transaction()) return false;
  set_failure(proto::PasynCode::kMisuse,
              "a statement ended the daemon's transaction; the rest of the request was not run "
              "and nothing of it was written");
  return true;
}

bool Writer::run_request_body(Request& r) {
  using proto::MsgType;
  if (r.type == MsgType::kExecuteScript) {
    std::int64_t changes = 0;
    if (!run_script(r.sql, changes)) return false;
    proto::encode_result(replies_, r.id, proto::Result{changes, 0, {}, {}});
    return true;
  }
  sqlite3_stmt* stmt = nullptr;
  if (!prepare_one(r.sql, client_mode(r.role, in_tx_request_), stmt)) return false;
  ResetGuard clear(stmt, true);
  // A second line behind the authorizer's read-only mode (VACUUM asks it nothing at prepare).
  if (r.role == Role::kReadOnly && stmt && !sqlite3_stmt_readonly(stmt)) {
    set_failure(proto::PasynCode::kPermission,
                "this connection may only read (--read-only-uid/--read-only-gid): the statement "
                "writes");
    return false;
  }
  if (r.type == MsgType::kExecuteMany) {
    std::int64_t changes = 0;
    proto::PayloadReader rows(r.many.bytes);  // validated by the session
    proto::ParamsView row;
    for (std::uint32_t i = 0;
         i < r.many.rows && (r.many.named ? rows.named_params_view(row) : rows.params_view(row));
         ++i) {
      const auto before = sqlite3_total_changes64(db_);
      if (!run_statement(stmt, row, nullptr)) return false;
      if (transaction_lost_midway()) return false;
      if (sqlite3_total_changes64(db_) != before) changes += sqlite3_changes64(db_);
    }
    proto::encode_result(replies_, r.id, proto::Result{changes, 0, {}, {}});
    return true;
  }

  // EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH: one RESULT frame; rows are streamed straight into it.
  proto::FrameWriter w(replies_, MsgType::kResult, r.id);
  const std::size_t changes_at = w.position();
  w.i64(0);  // changes, patched below
  w.i64(0);  // last_rowid, patched below
  const bool fetch = r.type == MsgType::kExecuteFetch;
  if (r.type == MsgType::kExecuteRowid) sqlite3_set_last_insert_rowid(db_, 0);
  const auto before = sqlite3_total_changes64(db_);
  if (!run_statement(stmt, r.params, fetch ? &w : nullptr)) return false;
  if (!fetch) {
    w.u32(0);  // no columns
    w.u32(0);  // no rows
  }
  // sqlite3_changes64 keeps the count of the last INSERT/UPDATE/DELETE, which may be another
  // request's: trust it only when this statement changed something.
  const std::int64_t changes = sqlite3_total_changes64(db_) != before ? sqlite3_changes64(db_) : 0;
  w.patch_u64(changes_at, static_cast<std::uint64_t>(changes));
  if (r.type == MsgType::kExecuteRowid) {
    w.patch_u64(changes_at + 8, static_cast<std::uint64_t>(sqlite3_last_insert_rowid(db_)));
  }
  w.finish();
  return true;
}

bool Writer::several_statements() {
  set_failure(proto::PasynCode::kMisuse,
              "execute() takes exactly one SQL statement; use executescript() for several");
  return false;
}

Mode Writer::mode_of(const Request& r) const {
  return vacuum_ ? Mode::kVacuum : client_mode(r.role, in_tx_request_);
}

void Writer::capture_failure() {
  if (const auto& denied = authorizer_.denial()) {
    set_failure(denied->code, denied->message);
  } else {
    capture_sqlite_error();
  }
}

bool Writer::prepare_one(std::string_view sql, Mode mode, sqlite3_stmt*& stmt) {
  Cache& cache = cache_[client_index(mode)];
  auto it = cache.find(sql);
  if (it == cache.end()) {
    std::size_t cached = 0;
    for (const auto& c : cache_) cached += c.size();
    if (cached >= kMaxCachedStatements) clear_cache();
    Cached c;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &c.stmt, &tail);
    if (rc != SQLITE_OK) {
      capture_failure();
      return false;
    }
    c.several = !only_space_or_comments(tail, sql.data() + sql.size());
    it = cache.emplace(std::string(sql), c).first;
  }
  if (it->second.several) return several_statements();
  stmt = it->second.stmt;  // nullptr for SQL that is only whitespace or comments
  return true;
}

void Writer::clear_cache() {
  for (auto& cache : cache_) {
    for (auto& [sql, c] : cache) sqlite3_finalize(c.stmt);
    cache.clear();
  }
}

bool Writer::bind(sqlite3_stmt* stmt, const proto::ParamsView& params) {
  const int expected = sqlite3_bind_parameter_count(stmt);
  if (static_cast<std::uint32_t>(expected) != params.count) {
    failure_ = {proto::ErrorDomain::kSqlite, SQLITE_RANGE, SQLITE_RANGE,
                "the statement takes " + std::to_string(expected) + " parameters, " +
                    std::to_string(params.count) + " were given"};
    return false;
  }
  // Values are bound in place, from the request's payload, which outlives the statement's use.
  proto::PayloadReader reader(params.bytes);
  proto::ValueView v;
  std::vector<bool> bound(params.named ? static_cast<std::size_t>(expected) + 1 : 0, false);
  std::string_view name;
  for (int n = 1; n <= expected && (!params.named || reader.string(name)) && reader.value_view(v);
       ++n) {
    int i = n;
    if (params.named) {  // PROTOCOL.md §4.1: by name, each parameter exactly once
      i = stmt ? proto::named_parameter_index(stmt, name) : 0;
      if (i == 0 || bound[static_cast<std::size_t>(i)]) {
        failure_ = {proto::ErrorDomain::kSqlite, SQLITE_RANGE, SQLITE_RANGE,
                    i == 0 ? "the statement has no parameter named '" + std::string(name) + "'"
                           : "parameter '" + std::string(name) + "' is given twice"};
        return false;
      }
      bound[static_cast<std::size_t>(i)] = true;
    }
    int rc = SQLITE_OK;
    switch (v.type) {
      case ValueType::kNull:
        rc = sqlite3_bind_null(stmt, i);
        break;
      case ValueType::kInteger:
        rc = sqlite3_bind_int64(stmt, i, v.integer);
        break;
      case ValueType::kReal:
        rc = sqlite3_bind_double(stmt, i, v.real);
        break;
      case ValueType::kText:
        rc = sqlite3_bind_text64(stmt, i, reinterpret_cast<const char*>(v.bytes.data()),
                                 v.bytes.size(), SQLITE_STATIC, SQLITE_UTF8);
        break;
      case ValueType::kBlob:
        rc = v.bytes.empty()
                 ? sqlite3_bind_zeroblob(stmt, i, 0)
                 : sqlite3_bind_blob64(stmt, i, v.bytes.data(), v.bytes.size(), SQLITE_STATIC);
        break;
    }
    if (rc != SQLITE_OK) {
      capture_sqlite_error();
      return false;
    }
  }
  return true;
}

bool Writer::run_statement(sqlite3_stmt* stmt, const proto::ParamsView& params,
                           proto::FrameWriter* rows) {
  if (!stmt) {  // SQL that is only whitespace or comments: nothing to run
    if (!bind(stmt, params)) return false;  // takes 0 parameters
    if (rows) {
      rows->u32(0);
      rows->u32(0);
    }
    return true;
  }
  ResetGuard guard(stmt);
  if (!bind(stmt, params)) return false;
  std::size_t row_count_at = 0;
  std::uint32_t row_count = 0;
  const int ncols = rows ? sqlite3_column_count(stmt) : 0;
  if (rows) {
    rows->u32(static_cast<std::uint32_t>(ncols));
    for (int c = 0; c < ncols; ++c) {
      const char* name = sqlite3_column_name(stmt, c);
      rows->string(name ? name : "");
    }
    row_count_at = rows->position();
    rows->u32(0);
  }
  for (;;) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      capture_sqlite_error();
      return false;
    }
    if (!rows) continue;
    for (int c = 0; c < ncols; ++c) encode_column(*rows, stmt, c);
    ++row_count;
    if (rows->position() - rows->start() > config_.max_frame) {
      set_failure(proto::PasynCode::kTooLarge,
                  "the result does not fit in one frame (max " + std::to_string(config_.max_frame) +
                      " bytes); the statement was rolled back, select fewer rows");
      return false;
    }
  }
  if (rows) rows->patch_u32(row_count_at, row_count);
  return true;
}

bool Writer::run_script(std::string_view sql, std::int64_t& changes) {
  const auto before = sqlite3_total_changes64(db_);
  const char* p = sql.data();
  const char* end = sql.data() + sql.size();
  while (p < end) {
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(db_, p, static_cast<int>(end - p), &stmt, &tail) != SQLITE_OK) {
      capture_failure();
      return false;
    }
    if (!stmt && tail == p) {  // SQLite read nothing (it stops at a NUL byte): no progress
      set_failure(proto::PasynCode::kMisuse, "the SQL text contains a NUL byte");
      return false;
    }
    p = tail;
    if (!stmt) continue;  // whitespace or a comment
    if (!alone_ && must_run_alone(sqlite3_sql(stmt))) {
      sqlite3_finalize(stmt);
      set_failure(proto::PasynCode::kMisuse,
                  "VACUUM and pragmas such as journal_mode cannot be part of an atomic script; "
                  "send them alone with execute()");
      return false;
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) {
      capture_failure();
      sqlite3_finalize(stmt);
      return false;
    }
    sqlite3_finalize(stmt);
    if (transaction_lost_midway()) return false;
  }
  changes = sqlite3_total_changes64(db_) - before;
  return true;
}

bool Writer::answered_by_key(Request& r, const RequestDigest& digest, bool& error) {
  error = false;
  switch (keys_->replay(r.uid, r.key, digest, r.id, replies_)) {
    case IdempotencyStore::Lookup::kNew:
      return false;
    case IdempotencyStore::Lookup::kReplayed:  // seen before: its recorded outcome
      return true;
    case IdempotencyStore::Lookup::kOtherRequest:
      set_failure(proto::PasynCode::kMisuse,
                  "this idempotency key was already used by this user for a different request "
                  "(another type, SQL or parameters); nothing was executed");
      break;
    case IdempotencyStore::Lookup::kError:
      capture_sqlite_error();
      failure_.message = "cannot look the idempotency key up: " + failure_.message;
      break;
  }
  error = true;
  return false;
}

bool Writer::exec_internal(sqlite3_stmt* stmt) {
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
    sqlite3_reset(stmt);
    return true;
  }
  sqlite3_reset(stmt);  // leaves the error code and message in place for capture_sqlite_error()
  return false;
}

void Writer::checkpoint_and_close() { close_database(true); }

void Writer::close_database(bool checkpoint) {
  clear_cache();
  if (keys_) keys_->close();
  for (auto* s : {&begin_, &commit_, &rollback_, &savepoint_, &release_, &rollback_to_}) {
    s->reset();
  }
  if (checkpoint) {
    int wal_frames = 0, checkpointed = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &wal_frames,
                                             &checkpointed);
    if (rc != SQLITE_OK) {
      log().warn("final checkpoint incomplete: {} (readers may still hold the WAL)",
                 sqlite3_errmsg(db_));
    }
  }
  std::lock_guard lk(mu_);  // abort() may call sqlite3_interrupt concurrently
  if (sqlite3_close_v2(db_) != SQLITE_OK) log().error("closing the database failed");
  db_ = nullptr;
}

}  // namespace pasyn::server
