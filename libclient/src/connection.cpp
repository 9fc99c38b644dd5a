// pasyn::Connection: a direct SQLite connection with a prepared-statement cache (its statement
// helpers are in statement.cpp, its Cursor in cursor.cpp).
#include <pasyn/connection.hpp>

#include <sqlite3.h>
#include <pasyn/proto/named_params.hpp>

#include <cctype>
#include <climits>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>

#include "cursor_impl.hpp"
#include "process.hpp"
#include "statement.hpp"

namespace pasyn {
namespace {

using detail::AnyParams;
using detail::check_not_out_of_memory;
using detail::check_param_count;
using detail::check_sql_text;
using detail::holds_no_statement;
using detail::read_row;
using detail::ResetGuard;
using detail::step;
using detail::StmtPtr;
using detail::throw_db_error;
using detail::throw_misuse;

// Applications that build SQL dynamically would grow the cache without bound; starting over when
// it is full is simpler than LRU and costs only re-preparation.
constexpr std::size_t kMaxCachedStatements = 256;
constexpr int kBusyTimeoutMs = 5000;

// Lets the cache be searched with the caller's std::string_view without building a std::string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

std::vector<std::string> column_names_of(sqlite3* db, sqlite3_stmt* stmt) {
  const int count = sqlite3_column_count(stmt);
  std::vector<std::string> names;
  names.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    const char* name = sqlite3_column_name(stmt, i);
    if (name == nullptr) check_not_out_of_memory(db);
    names.emplace_back(name == nullptr ? "" : name);
  }
  return names;
}

}  // namespace

struct Connection::Impl {
  std::string path_;
  sqlite3* db_ = nullptr;  // null once closed
  std::unordered_map<std::string, sqlite3_stmt*, StringHash, std::equal_to<>> cache_;
  // The entry of cache_ used last (its key, owned by cache_), or null; reset with cache_.
  const std::string* last_sql_ = nullptr;
  sqlite3_stmt* last_stmt_ = nullptr;
  // The column names of the last query (last_column_names()), read from `names_of_` when
  // asked: most callers never ask, and reading them costs a string per column per call.
  // names_of_ is cleared before its statement is stepped again or finalized (the names are
  // read first), because a step may re-prepare it after a schema change.
  mutable std::vector<std::string> last_column_names_;
  mutable sqlite3_stmt* names_of_ = nullptr;
  // The process that opened db_ (detail::fork_count()). SQLite forbids carrying an open
  // connection across fork(): in a child, db_ is never used nor closed (closing would run
  // SQLite's unlock and WAL clean-up on files the parent is using); it is left to the parent.
  const std::uint64_t forks_ = detail::fork_count();
  // Cursors hold a weak reference: they stop working (ConnectionClosedError) once it is gone.
  std::shared_ptr<sqlite3*> alive_;
  // Each open cursor holds a copy (detail::has_open_cursors).
  std::shared_ptr<const bool> cursors_ = std::make_shared<const bool>(true);

  // Hidden: Impl is nested in an exported class, so its out-of-line members would otherwise
  // join the library's ABI (scripts/abi-check.sh).
  __attribute__((visibility("hidden"))) std::int64_t run_execute(std::string_view sql,
                                                                 AnyParams params);
  __attribute__((visibility("hidden"))) std::vector<Row> run_fetchall(std::string_view sql,
                                                                      AnyParams params);
  __attribute__((visibility("hidden"))) std::optional<Row> run_fetchone(std::string_view sql,
                                                                        AnyParams params);

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // Also runs when a Connection is move-assigned over, so closing lives here.
  ~Impl() {
    if (db_ != nullptr) close();
  }

  bool forked() const noexcept { return forks_ != detail::fork_count(); }

  static Impl& open(const std::unique_ptr<Impl>& impl) {
    if (!impl || impl->db_ == nullptr) throw ConnectionClosedError("connection is closed");
    if (impl->forked()) {
      throw ProgrammingError(
          "this Connection was opened before fork(); SQLite connections must not cross fork(): "
          "connect() again in the child",
          SQLITE_MISUSE, SQLITE_MISUSE);
    }
    return *impl;
  }

  // Returns the cached statement for `sql`, preparing it on first use; null when `sql` holds
  // no statement at all.
  sqlite3_stmt* prepare_cached(std::string_view sql) {
    // Callers mostly repeat one statement: comparing it with the last one's text costs less
    // than hashing it (a tenth of pasyn's own cost in a point SELECT, by callgrind).
    if (last_sql_ != nullptr && *last_sql_ == sql) return last_stmt_;
    if (auto it = cache_.find(sql); it != cache_.end()) {
      last_sql_ = &it->first;
      last_stmt_ = it->second;
      return it->second;
    }
    check_sql_text(sql);
    if (sql.empty()) return nullptr;  // prepare rejects a null pointer, which "" may have

    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &raw, &tail);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) throw_db_error(db_);
    const std::string_view rest(tail, static_cast<std::size_t>(sql.data() + sql.size() - tail));
    if (!holds_no_statement(rest)) {
      throw_misuse("execute() takes exactly one SQL statement; use executescript() for several");
    }
    if (!stmt) return nullptr;  // only whitespace and comments: cheap to prepare again

    if (cache_.size() >= kMaxCachedStatements) finalize_cached();
    const auto it = cache_.emplace(std::string(sql), stmt.get()).first;
    last_sql_ = &it->first;
    last_stmt_ = stmt.get();
    return stmt.release();
  }

  void finalize_cached() noexcept {
    try {
      read_pending_names();
    } catch (...) {  // out of memory: the names are lost, which only last_column_names() shows
      forget_names();
    }
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    cache_.clear();
    last_sql_ = nullptr;
  }

  // Returns sqlite3_close_v2's result code; the connection counts as closed either way.
  int close() noexcept {
    if (forked()) {    // the parent's handle: forget it without touching it (see forks_)
      cache_.clear();  // raw pointers only: nothing is finalized
      last_sql_ = nullptr;
      names_of_ = nullptr;
      db_ = nullptr;
      return SQLITE_OK;
    }
    finalize_cached();
    forget_names();
    alive_.reset();
    // What is left are open cursors' statements: reset, they end their read transactions now
    // (the handle itself lives on, closed, until the last of them is finalized).
    for (sqlite3_stmt* s = sqlite3_next_stmt(db_, nullptr); s; s = sqlite3_next_stmt(db_, s)) {
      sqlite3_reset(s);
    }
    return sqlite3_close_v2(std::exchange(db_, nullptr));
  }

  // A query ran `stmt`: its column names become the last ones (read lazily, see names_of_).
  void record_column_names(sqlite3_stmt* stmt) noexcept {
    last_column_names_.clear();
    names_of_ = stmt;
  }

  void forget_names() noexcept {
    last_column_names_.clear();
    names_of_ = nullptr;
  }

  // Before `stmt` is stepped again: keep the names it had when it was the last query.
  void keep_names_before_stepping(sqlite3_stmt* stmt) {
    if (stmt == names_of_) read_pending_names();
  }

  void read_pending_names() const {
    if (names_of_ == nullptr) return;
    last_column_names_ = column_names_of(db_, names_of_);
    names_of_ = nullptr;
  }
};

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;
Connection::~Connection() = default;  // Impl's destructor closes, swallowing errors

std::int64_t Connection::execute(std::string_view sql, const Params& params) {
  return Impl::open(impl_).run_execute(sql, AnyParams{&params, nullptr});
}
std::vector<Row> Connection::execute_fetchall(std::string_view sql, const Params& params) {
  return Impl::open(impl_).run_fetchall(sql, AnyParams{&params, nullptr});
}
std::optional<Row> Connection::execute_fetchone(std::string_view sql, const Params& params) {
  return Impl::open(impl_).run_fetchone(sql, AnyParams{&params, nullptr});
}
std::int64_t Connection::execute_named(std::string_view sql, const NamedParams& params) {
  return Impl::open(impl_).run_execute(sql, AnyParams{nullptr, &params});
}
std::vector<Row> Connection::execute_fetchall_named(std::string_view sql,
                                                    const NamedParams& params) {
  return Impl::open(impl_).run_fetchall(sql, AnyParams{nullptr, &params});
}
std::optional<Row> Connection::execute_fetchone_named(std::string_view sql,
                                                      const NamedParams& params) {
  return Impl::open(impl_).run_fetchone(sql, AnyParams{nullptr, &params});
}

std::int64_t Connection::Impl::run_execute(std::string_view sql, AnyParams params) {
  Impl& impl = *this;
  sqlite3_stmt* stmt = impl.prepare_cached(sql);
  if (stmt == nullptr) {
    check_param_count(0, params.size());
    return 0;
  }
  impl.keep_names_before_stepping(stmt);
  ResetGuard guard(stmt);
  params.bind(impl.db_, stmt);
  const sqlite3_int64 total_before = sqlite3_total_changes64(impl.db_);
  while (step(impl.db_, stmt)) {
  }
  if (sqlite3_stmt_readonly(stmt)) return 0;
  // sqlite3_changes64 still reports the last INSERT/UPDATE/DELETE after DDL such as CREATE TABLE;
  // an unchanged total shows that this statement changed nothing.
  if (sqlite3_total_changes64(impl.db_) == total_before) return 0;
  return sqlite3_changes64(impl.db_);
}

std::vector<Row> Connection::Impl::run_fetchall(std::string_view sql, AnyParams params) {
  Impl& impl = *this;
  impl.forget_names();
  sqlite3_stmt* stmt = impl.prepare_cached(sql);
  if (stmt == nullptr) {
    check_param_count(0, params.size());
    return {};
  }
  ResetGuard guard(stmt);
  params.bind(impl.db_, stmt);
  std::vector<Row> rows;
  bool has_row = step(impl.db_, stmt);
  // After the first step: if the schema changed, that step re-prepared the statement and the
  // columns (e.g. of SELECT *) may differ from those seen before it.
  impl.record_column_names(stmt);
  while (has_row) {
    rows.push_back(read_row(impl.db_, stmt));
    has_row = step(impl.db_, stmt);
  }
  return rows;
}

std::optional<Row> Connection::Impl::run_fetchone(std::string_view sql, AnyParams params) {
  Impl& impl = *this;
  impl.forget_names();
  sqlite3_stmt* stmt = impl.prepare_cached(sql);
  if (stmt == nullptr) {
    check_param_count(0, params.size());
    return std::nullopt;
  }
  ResetGuard guard(stmt);
  params.bind(impl.db_, stmt);
  const bool has_row = step(impl.db_, stmt);
  impl.record_column_names(stmt);
  if (!has_row) return std::nullopt;
  return read_row(impl.db_, stmt);
}

void Connection::executescript(std::string_view sql) {
  Impl& impl = Impl::open(impl_);
  check_sql_text(sql);
  const char* pos = sql.data();
  const char* const end = sql.data() + sql.size();
  while (pos < end) {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    // Not cached: scripts are mostly run once (schema set-up, migrations).
    const int rc = sqlite3_prepare_v2(impl.db_, pos, static_cast<int>(end - pos), &raw, &tail);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) throw_db_error(impl.db_);
    if (!stmt) break;  // only whitespace and comments were left
    while (step(impl.db_, stmt.get())) {
    }
    pos = tail;
  }
}

void Connection::begin() { execute("BEGIN"); }
void Connection::commit() { execute("COMMIT"); }
void Connection::rollback() { execute("ROLLBACK"); }

bool Connection::in_transaction() const {
  return sqlite3_get_autocommit(Impl::open(impl_).db_) == 0;
}

const std::vector<std::string>& Connection::last_column_names() const {
  const Impl& impl = Impl::open(impl_);
  impl.read_pending_names();
  return impl.last_column_names_;
}

void Connection::close() {
  if (!impl_ || impl_->db_ == nullptr) return;
  const int rc = impl_->close();
  if (rc != SQLITE_OK) throw_sqlite_error(sqlite3_errstr(rc), rc & 0xff, rc);
}

bool Connection::closed() const noexcept { return !impl_ || impl_->db_ == nullptr; }

const std::string& Connection::path() const noexcept {
  static const std::string kNoPath;  // a moved-from Connection has no Impl
  return impl_ ? impl_->path_ : kNoPath;
}

Connection connect(const std::string& path, OpenFlags flags) {
  // Each Connection is used by one thread at a time, so SQLite's own mutexes would be waste.
  int open_flags = SQLITE_OPEN_NOMUTEX;
  // The modifier bits alone: a modifier applied to flags with none of the mode bits.
  constexpr unsigned kBase = OpenFlags::readonly().bits();
  constexpr unsigned kUri = OpenFlags::readonly().uri().bits() & ~kBase;
  constexpr unsigned kMemory = OpenFlags::readonly().memory().bits() & ~kBase;
  constexpr unsigned kSharedCache = OpenFlags::readonly().shared_cache().bits() & ~kBase;
  if (flags.bits() & kUri) open_flags |= SQLITE_OPEN_URI;
  if (flags.bits() & kMemory) open_flags |= SQLITE_OPEN_MEMORY;
  if (flags.bits() & kSharedCache) open_flags |= SQLITE_OPEN_SHAREDCACHE;
  if (flags.has(OpenFlags::readonly())) {
    if (flags.has(OpenFlags::readwrite()) || flags.has(OpenFlags::create())) {
      throw_misuse("OpenFlags::readonly() cannot be combined with readwrite() or create()");
    }
    open_flags |= SQLITE_OPEN_READONLY;
  } else if (flags.has(OpenFlags::create())) {
    open_flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  } else {
    open_flags |= SQLITE_OPEN_READWRITE;
  }

  // Impl first, so that its destructor closes the handle if anything below throws.
  auto impl = std::make_unique<Connection::Impl>();
  impl->path_ = path;
  const int rc = sqlite3_open_v2(path.c_str(), &impl->db_, open_flags, nullptr);
  if (rc != SQLITE_OK) {
    if (impl->db_ == nullptr) {
      throw OperationalError("out of memory opening " + path, SQLITE_NOMEM, SQLITE_NOMEM);
    }
    const std::string message = std::string(sqlite3_errmsg(impl->db_)) + ": " + path;
    const int extended = sqlite3_extended_errcode(impl->db_);
    impl->close();
    throw_sqlite_error(message, extended & 0xff, extended);
  }
  sqlite3_extended_result_codes(impl->db_, 1);
  sqlite3_busy_timeout(impl->db_, kBusyTimeoutMs);
  impl->alive_ = std::make_shared<sqlite3*>(impl->db_);
  return Connection(std::move(impl));
}

Connection Connection::memory() { return connect(":memory:"); }

Connection Connection::shared_memory(const std::string& name) {
  // Percent-encode everything but unreserved characters, so that any name is one URI path.
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string uri = "file:";
  for (const unsigned char c : name) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      uri += static_cast<char>(c);
    } else {
      uri += '%';
      uri += kHex[c >> 4];
      uri += kHex[c & 15];
    }
  }
  uri += "?mode=memory&cache=shared";
  return connect(uri, (OpenFlags::readwrite() | OpenFlags::create()).uri());
}

std::vector<std::string> Connection::column_names(std::string_view sql) {
  Impl& impl = Impl::open(impl_);
  sqlite3_stmt* stmt = impl.prepare_cached(sql);
  if (stmt == nullptr) return {};
  return column_names_of(impl.db_, stmt);
}

std::int64_t Connection::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(Impl::open(impl_).db_);
}
std::int64_t Connection::changes() const { return sqlite3_changes64(Impl::open(impl_).db_); }
std::int64_t Connection::total_changes() const {
  return sqlite3_total_changes64(Impl::open(impl_).db_);
}

void Connection::set_busy_timeout(int milliseconds) {
  if (milliseconds < 0) throw_misuse("the busy timeout cannot be negative");
  sqlite3_busy_timeout(Impl::open(impl_).db_, milliseconds);
}

void Connection::interrupt() noexcept {
  if (impl_ && impl_->db_ != nullptr) sqlite3_interrupt(impl_->db_);
}

Cursor Cursor::open(Connection& connection, std::string_view sql, std::unique_ptr<Impl> impl) {
  Connection::Impl& conn = Connection::Impl::open(connection.impl_);
  check_sql_text(sql);
  Cursor cursor(std::move(impl));
  cursor.impl_->connection = conn.alive_;
  cursor.impl_->open_token = conn.cursors_;
  if (!sql.empty()) {
    // Not from the cache: the cursor keeps its statement mid-result between calls, while the
    // connection goes on running other (possibly the same) SQL.
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    const int rc =
        sqlite3_prepare_v2(conn.db_, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
    cursor.impl_->stmt.reset(raw);
    if (rc != SQLITE_OK) throw_db_error(conn.db_);
    const std::string_view rest(tail, static_cast<std::size_t>(sql.data() + sql.size() - tail));
    if (!holds_no_statement(rest)) throw_misuse("cursor() takes exactly one SQL statement");
  }
  if (!cursor.impl_->stmt) {
    const std::size_t given = cursor.impl_->is_named ? cursor.impl_->named.values.size()
                                                     : cursor.impl_->positional.size();
    check_param_count(0, given);
  }
  cursor.execute();
  return cursor;
}

bool detail::has_open_cursors(const Connection& connection) noexcept {
  return connection.impl_ && connection.impl_->cursors_.use_count() > 1;
}

bool detail::opened_before_fork(const Connection& connection) noexcept {
  return connection.impl_ && connection.impl_->forked();
}

Cursor Connection::cursor(std::string_view sql, const Params& params) {
  auto impl = std::make_unique<Cursor::Impl>();
  impl->positional = params;
  return Cursor::open(*this, sql, std::move(impl));
}

Cursor Connection::cursor_named(std::string_view sql, const NamedParams& params) {
  auto impl = std::make_unique<Cursor::Impl>();
  impl->named = params;
  impl->is_named = true;
  return Cursor::open(*this, sql, std::move(impl));
}

}  // namespace pasyn
