// The writer thread: its connection, queue and run loop, replies, admin requests. See
// writer.hpp for the design; the concepts it runs have files of their own: batching.cpp
// (forming batches), group_commit.cpp (running them), statement_runner.cpp,
// client_transactions.cpp, checkpointer.cpp, authorizer, idempotency, backup, statement_kind.
#include "writer.hpp"

#include <pasyn/proto/named_params.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <unordered_map>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access_control.hpp"
#include "log.hpp"
#include "paths.hpp"
#include "statement_kind.hpp"

namespace pasyn::server {
namespace {

// SQLite VM instructions between two progress ticks (the watchdog's sign of life).
constexpr int kProgressInterval = 1000;
// How long the writer watches for the next request after a lone one (serve()): about two
// thread wake-ups and a client's turnaround on the machines pasyn was measured on.
constexpr auto kLoneSpin = std::chrono::microseconds(50);
constexpr int kLoneStreak = 3;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
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
    std::string msg =
        "cannot open database " + config_.database_path + ": " + what +
        (db_ && sqlite3_errcode(db_) != SQLITE_OK ? std::string(" (") + sqlite3_errmsg(db_) + ")"
                                                  : std::string());
    // Statements first: closing with some left would leave a zombie connection holding the
    // file's descriptors and locks (the in-process server's caller may try again).
    for (auto* s :
         {&begin_, &commit_, &rollback_, &savepoint_, &release_, &rollback_to_, &data_version_}) {
      s->reset();
    }
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw StartError(StartError::Kind::kDatabase, msg);
  };
  if (rc != SQLITE_OK) fail(sqlite3_errstr(rc));
  // SQLite opens a file it may not write read-only, silently: the daemon would then serve a
  // database whose every write fails.
  if (sqlite3_db_readonly(db_, "main") == 1) {
    fail("it is read-only to this user (uid " + std::to_string(::geteuid()) +
         "): the writer must be able to write the file and its directory");
  }
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
  // Which file the WAL is, from the start (check_files_in_place): a read opens it.
  if (sqlite3_exec(db_, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    fail("cannot read the schema");
  }
  wal_path_ = sqlite3_filename_wal(sqlite3_db_filename(db_, "main"));
  if (struct stat wal{}; ::stat(wal_path_.c_str(), &wal) == 0) {
    wal_file_.emplace(wal.st_dev, wal.st_ino);
  }
  // --checkpoint-mode external: not even SQLite checkpoints (and resets the WAL) when this, the
  // last connection, closes; the program that checkpoints must see every frame first.
  if (!config_.checkpoints_internally()) {
    int no_checkpoint = 0;
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &no_checkpoint);
    if (no_checkpoint != 1) fail("cannot turn the checkpoint at close off");
  }
  const char* sync =
      config_.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL";
  if (sqlite3_exec(db_, sync, nullptr, nullptr, nullptr) != SQLITE_OK)
    fail("cannot set synchronous");
  // Hardening (SPEC §4): no way to corrupt the file through SQL, no extensions, and SQLite's own
  // bound on the parameters of a statement (also of each execute_many row).
  sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_enable_load_extension(db_, 0);  // also the SQL function load_extension()
  // fts3_tokenizer(name, pointer) installs a client's bytes as a tokenizer's function table
  // (Debian builds SQLite with SQLITE_ENABLE_FTS3_TOKENIZER); the authorizer refuses the
  // function in every form too.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, nullptr);
  // SQL functions and virtual tables in the schema (triggers, views, defaults) are limited to
  // the innocuous ones: a schema written by one client cannot run dangerous code for another.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  // The virtual table modules clients may use, an allow-list: full-text search, R*Trees, the
  // JSON table functions, and sqlite_stmt (refused by the authorizer with a message of its own;
  // it cannot be created under another name). Not dbstat, which describes every table's pages,
  // the daemon's own too (probe40), also through a table of its module made before.
  const char* modules[] = {"fts3",      "fts4",      "fts4aux",     "fts3tokenize",
                           "fts5",      "fts5vocab", "rtree",       "rtree_i32",
                           "json_each", "json_tree", "sqlite_stmt", nullptr};
  sqlite3_drop_modules(db_, modules);  // (its parameter is not const, though SQLite only reads it)
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
  data_version_.reset(prepare_internal("PRAGMA data_version"));
  if (!begin_ || !commit_ || !rollback_ || !savepoint_ || !release_ || !rollback_to_ ||
      !data_version_) {
    fail("cannot prepare transaction statements");
  }
  sqlite3_progress_handler(db_, kProgressInterval, &Writer::on_progress, this);
  changes_.install(db_);
  // Checkpoints: the hook replaces SQLite's auto-checkpoint (which is this same hook), so SQLite
  // never checkpoints on its own on this connection, in either --checkpoint-mode. With
  // `internal`, maintain_wal() runs them: passive from kAutoCheckpointFrames on, as SQLite would;
  // TRUNCATE past --wal-limit. With `external`, none (checkpointer.cpp).
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
  reserved_names_ = count_reserved_names();
}

std::int64_t Writer::count_reserved_names() {
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  sqlite3_stmt* s = nullptr;
  std::int64_t n = -1;  // unknown: refuses the ALTER rather than let a rename through
  if (sqlite3_prepare_v2(db_,
                         "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'pasyn\\_%' "
                         "ESCAPE '\\'",
                         -1, &s, nullptr) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW) {
    n = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  return n;
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
  thread_ = std::thread([this] {
    run();
    if (baton_) baton_->writer_done();  // the I/O thread runs the rest of the shutdown
  });
}

bool Writer::submit(std::vector<Request>& requests, PayloadBuffers* spare) {
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
    wake = waiting_ && queue_.size() >= wake_at_;
    queued_count_.store(queue_.size(), std::memory_order_relaxed);
    queued_.store(true, std::memory_order_release);
    if (spare && spare->empty()) spare->swap(free_payloads_);
  }
  requests.clear();
  if (wake) cv_.notify_one();
  return true;
}

void Writer::nudge() {
  { std::lock_guard lk(mu_); }  // a wait that began before this sees the notification
  cv_.notify_one();
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
  if (db_ && !closing_) sqlite3_interrupt(db_);
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

void Writer::record_commit(Clock::duration took, std::size_t batch_size, std::size_t batch_bytes) {
  last_commit_ = took;
  const auto us = static_cast<std::uint32_t>(std::min<std::int64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(took).count(), UINT32_MAX));
  std::lock_guard lk(stats_mu_);
  ++stats_.batches;
  stats_.batched_requests += batch_size;
  stats_.batch_size.observe(batch_size);
  stats_.batch_bytes_max = std::max<std::uint64_t>(stats_.batch_bytes_max, batch_bytes);
  stats_.commit_us.observe(us);
  if (commit_us_.size() < kCommitWindow) {
    commit_us_.push_back(us);
  } else {
    commit_us_[commit_next_] = us;
  }
  commit_next_ = (commit_next_ + 1) % kCommitWindow;
}

void Writer::run() {
  RequestQueue work;
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
    tx_owner_.store(nullptr, std::memory_order_release);
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

void Writer::serve(RequestQueue& work, std::vector<Request>& incoming) {
  for (;;) {
    bool stopping = false;
    // After lone requests (one caller waiting for each ack, the idle round trip), the next one
    // usually comes within tens of µs: the writer watches for it for up to kLoneSpin before it
    // sleeps, so that the I/O thread's submit() needs no wake-up, which costs both threads a
    // system call and the caller the scheduler's latency. Measured (pasyn-bench idle_round_trip,
    // idle machine, 3 alternations): p50 46-52 -> 26-28 us, p99 71-77 -> 44 us. Only after
    // kLoneStreak lone batches in a row: after a batch of several requests, or a lone one among
    // them (a pipelining client), the CPU it would burn is the clients' and the I/O thread's
    // (spinning after every lone batch cost inflight1000 a fifth of its throughput on 2 cores).
    if (drives_io()) {
      // Every read that is ready first: its requests join this batch. After lone batches the
      // writer polls its sockets for kLoneSpin, so that its CPU is awake when the request comes.
      io_ended_ = !baton_->writer_run(false, std::nullopt);
      if (lone_streak_ >= kLoneStreak) {
        const auto until = Clock::now() + kLoneSpin;
        while (!io_ended_ && !queued_.load(std::memory_order_acquire) && Clock::now() < until) {
          io_ended_ = !baton_->writer_run(false, std::nullopt);
        }
      }
    } else if (lone_streak_ >= kLoneStreak) {
      const auto until = Clock::now() + kLoneSpin;
      while (!queued_.load(std::memory_order_acquire) && Clock::now() < until) {
        cpu_relax();
      }
    }
    {
      std::unique_lock lk(mu_);
      while (queue_.empty() && work.empty() && !stopping_) {
        auto deadline = next_deadline();
        if (const auto flush = feed_ ? feed_->next_flush() : std::nullopt) {
          if (!deadline || *flush < *deadline) deadline = flush;
        }
        idle_.store(true, std::memory_order_relaxed);
        bool timed_out = false;
        if (drives_io()) {  // the requests come from handlers this thread runs (io_baton.hpp)
          lk.unlock();
          io_ended_ = !baton_->writer_run(true, deadline);
          lk.lock();
          timed_out = !io_ended_ && deadline && Clock::now() >= *deadline;
        } else {
          waiting_ = true;
          timed_out = deadline ? cv_.wait_until(lk, *deadline) == std::cv_status::timeout
                               : (cv_.wait(lk), false);
          waiting_ = false;
        }
        idle_.store(false, std::memory_order_relaxed);
        if (timed_out) break;
      }
      incoming.swap(queue_);
      // What the queue held now counts as work (set first: backlog() never reads it low).
      work_count_.store(work.size() + incoming.size(), std::memory_order_relaxed);
      queued_count_.store(0, std::memory_order_relaxed);
      if (free_payloads_.empty()) {
        free_payloads_.swap(spent_payloads_);
      } else {  // the I/O thread has not taken the last ones yet: add to them, within capacity
        while (!spent_payloads_.empty() && free_payloads_.size() < free_payloads_.capacity()) {
          free_payloads_.push_back(std::move(spent_payloads_.back()));
          spent_payloads_.pop_back();
        }
      }
      spent_payloads_.clear();
      if (!stopping_ && work.empty()) fill_batch(lk, incoming);  // not with batches left to run
      queued_.store(false, std::memory_order_relaxed);           // queue_ is empty now
      const bool lone = incoming.size() == 1 && !incoming.front().disconnect;
      lone_streak_ = lone ? std::min(lone_streak_ + 1, kLoneStreak) : 0;  // saturates: no overflow
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
    work.append(incoming);
    work_count_.store(work.size(), std::memory_order_relaxed);
    if (incoming.capacity() > kKeptRequests) std::vector<Request>().swap(incoming);  // a burst
    expire(Clock::now(), work);
    if (stopping && tx_) end_transaction(work, "the daemon is shutting down");
    if (aborted_) {
      std::vector<Request> rest(std::make_move_iterator(work.begin()),
                                std::make_move_iterator(work.end()));
      for (auto& r : deferred_) rest.push_back(std::move(r));
      work.clear();
      work_count_.store(0, std::memory_order_relaxed);
      deferred_.clear();
      std::erase_if(rest, [](const Request& r) { return r.disconnect; });
      finish_pending_with(rest, proto::PasynCode::kShuttingDown, kNotExecuted);
    } else {
      process(work);
      publish_committed();  // every commit's replies are out by now
      if (feed_) feed_->flush_due(stopping);
      // Between batches (their replies are out), never inside a client transaction.
      if (!tx_ && !aborted_) maintain_wal();
      if (files_check_owed_) check_files_in_place();
    }
    if (stopping && work.empty() && deferred_.empty() && !tx_) {
      std::unique_lock lk(mu_);
      if (queue_.empty()) {  // everything queued before stop() has run
        lk.unlock();
        check_files_in_place(true);  // the last commit's look, before exit 0
        break;
      }
    }
  }
}

void Writer::reply(Request& r, std::vector<std::uint8_t> frames) {
  count_answered(1);
  if (r.sink) r.sink->deliver(frames, 1);
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
  const bool vacuum = vacuum_;
  alone_ = vacuum_ = false;
  // No VACUUM statement stays cached: reused after a schema change, it would be prepared again
  // inside its step, in Mode::kVacuum (see run_statement). (A VACUUM is rare and makes every
  // cached statement prepare again anyway.)
  if (vacuum) clear_cache();
  // VACUUM commits its own transaction: an I/O error (a failed fsync of its COMMIT) leaves its
  // outcome unknown, as for a batch (WAL recovery may bring it back), so no error reply.
  if (!ok && vacuum && failure_.domain == proto::ErrorDomain::kSqlite &&
      (failure_.extended_code & 0xff) == SQLITE_IOERR) {
    fail_stop_unless_definite("VACUUM");
  }
  if (!ok) {
    replies_.clear();
    proto::encode_error(replies_, r.id, failure_);
  }
  if (ok && vacuum) check_files_in_place();  // it committed: as after a batch's COMMIT
  reply(r, std::move(replies_));
  replies_ = {};
  // A VACUUM renumbers the rowids of tables without an INTEGER PRIMARY KEY, copying them
  // without the preupdate hook (probe23); other rows changed outside any transaction of ours
  // are unknown too: a gap, now.
  if (ok && vacuum) changes_.unknown();
  if (changes_.stray()) {
    publish_committed();
    committed_ = changes_.take_commit(feed_spares_);
    publish_committed();
  }
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

void Writer::checkpoint_and_close() { close_database(config_.checkpoints_internally()); }

}  // namespace pasyn::server
