// The writer's statement runner: preparing a client's SQL through the statement cache and the
// authorizer, binding parameters, stepping and encoding rows, scripts, and turning SQLite's
// errors into the request's failure. Runs on the writer thread only. See writer.hpp.
#include <pasyn/proto/named_params.hpp>

#include <limits>
#include <new>
#include <optional>
#include <stdexcept>

#include "log.hpp"
#include "statement_kind.hpp"
#include "writer.hpp"

namespace pasyn::server {
namespace {

constexpr std::size_t kMaxCachedStatements = 512;

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

void Writer::capture_sqlite_error() {
  const int ext = sqlite3_extended_errcode(db_);
  failure_ = {proto::ErrorDomain::kSqlite, ext & 0xff, ext, sqlite3_errmsg(db_)};
}

void Writer::set_failure(proto::PasynCode code, std::string_view message, std::int32_t extended) {
  failure_ = {proto::ErrorDomain::kPasyn, static_cast<std::int32_t>(code),
              extended != 0 ? extended : static_cast<std::int32_t>(code), std::string(message)};
}

bool Writer::run_request(Request& r) {
  // --statement-timeout bounds the whole request (all statements of a script or execute_many).
  if (config_.statement_timeout.count() > 0) deadline_ = Clock::now() + config_.statement_timeout;
  timed_out_ = false;
  // The pasyn_* names as they are before this request, when something may have changed them
  // since they were counted: a request refused below for a rename into them (undone before the
  // next request runs: a batch reruns with a savepoint per request), the key table made, or a
  // table an operator made behind the daemon's back, which would otherwise have every later
  // ALTER TABLE refused.
  if (recount_reserved_) {
    reserved_names_ = count_reserved_names();
    recount_reserved_ = false;
  }
  // The whole request, prepare and step, in the client's mode: SQLite also asks while a
  // statement runs (the PRAGMA behind a pragma_* table-valued function). Only a VACUUM's steps
  // run in Mode::kVacuum (see run_statement): its INTO expression is the client's.
  Authorizer::Scope scope(authorizer_, client_mode(r.role, in_tx_request_));
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
  // SQLite shows the authorizer only the old name of ALTER TABLE ... RENAME (and of an FTS
  // table's shadow tables): a new name in the daemon's namespace is found here, and the request
  // undone like any failed one. (Without it a client could plant pasyn_idempotency, with
  // forged replies for other clients' keys, before the daemon first made it.)
  if (ok && authorizer_.altered() && renamed_into_reserved_names()) {
    set_failure(proto::PasynCode::kPermission, kRenameReservedMessage);
    ok = false;
    recount_reserved_ = true;
  }
  const auto& denied = authorizer_.denial();
  if (!ok && denied && failure_.domain == proto::ErrorDomain::kSqlite &&
      failure_.code == SQLITE_AUTH) {
    set_failure(denied->code, denied->message,
                denied->extended);  // refused while running (VACUUM INTO's attach)
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
    proto::encode_result_counts(replies_, r.id, changes, 0);
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
    // Once for all rows, and before them: what it notes (changes the feed cannot list) holds
    // for the request whichever row fails, and a gap is never wrong (it only says less).
    if (stmt) note_client_statement(stmt);
    // Only a transaction-control statement (COMMIT, END, RELEASE...) can end the transaction
    // and succeed, and SQLite counts those read-only; a writing statement that ends it (a
    // trigger's RAISE(ROLLBACK)) fails. So the writing rows skip the check (~70 of a row's
    // ~4,300 instructions, by callgrind).
    const bool may_end_transaction = !stmt || sqlite3_stmt_readonly(stmt);
    std::int64_t changes = 0;
    proto::PayloadReader rows(r.many.bytes);  // validated by the session
    proto::ParamsView row;
    for (std::uint32_t i = 0;
         i < r.many.rows && (r.many.named ? rows.named_params_view(row) : rows.params_view(row));
         ++i) {
      const auto before = sqlite3_total_changes64(db_);
      if (!run_statement(stmt, row, nullptr)) return false;
      if (may_end_transaction && transaction_lost_midway()) return false;
      if (sqlite3_total_changes64(db_) != before) changes += sqlite3_changes64(db_);
    }
    proto::encode_result_counts(replies_, r.id, changes, 0);
    return true;
  }

  // EXECUTE, EXECUTE_ROWID, EXECUTE_FETCH: one RESULT frame. sqlite3_changes64 keeps the count
  // of the last INSERT/UPDATE/DELETE, which may be another request's: it is trusted only when
  // this statement changed something.
  // EXECUTE_ROWID answers the rowid its own statement inserted, 0 if none. While it runs the
  // value is a sentinel no insert sets in practice (the least int64: SQLite's rowids for an
  // INSERT without one are positive), and what it was before comes back when the statement
  // inserted nothing, so that last_insert_rowid() in later SQL says what SQLite would (also
  // after an explicit rowid 0).
  constexpr std::int64_t kNoInsert = std::numeric_limits<std::int64_t>::min();
  const std::int64_t rowid_before = sqlite3_last_insert_rowid(db_);
  if (r.type == MsgType::kExecuteRowid) sqlite3_set_last_insert_rowid(db_, kNoInsert);
  const auto before = sqlite3_total_changes64(db_);
  const auto changed = [&] {
    return sqlite3_total_changes64(db_) != before ? sqlite3_changes64(db_) : 0;
  };
  if (r.type != MsgType::kExecuteFetch) {  // no rows: the frame is written once it is known
    const bool ok = run_statement(stmt, r.params, nullptr);
    if (ok && stmt) note_client_statement(stmt);
    std::int64_t rowid = r.type == MsgType::kExecuteRowid ? sqlite3_last_insert_rowid(db_) : 0;
    if (r.type == MsgType::kExecuteRowid && rowid == kNoInsert) {
      sqlite3_set_last_insert_rowid(db_, rowid_before);
      rowid = 0;
    }
    if (!ok) return false;
    proto::encode_result_counts(replies_, r.id, changed(), rowid);
    return true;
  }
  // Rows are streamed straight into the frame, the counts patched in at the end.
  proto::FrameWriter w(replies_, MsgType::kResult, r.id);
  const std::size_t changes_at = w.position();
  w.i64(0);  // changes, patched below
  w.i64(0);  // last_rowid (none for a fetch)
  if (!run_statement(stmt, r.params, &w)) return false;
  if (stmt) note_client_statement(stmt);
  w.patch_u64(changes_at, static_cast<std::uint64_t>(changed()));
  w.finish();
  return true;
}

bool Writer::several_statements() {
  set_failure(proto::PasynCode::kMisuse,
              "execute() takes exactly one SQL statement; use executescript() for several");
  return false;
}

void Writer::capture_failure() {
  if (const auto& denied = authorizer_.denial()) {
    set_failure(denied->code, denied->message, denied->extended);
  } else {
    capture_sqlite_error();
  }
}

bool Writer::prepare_one(std::string_view sql, Mode mode, sqlite3_stmt*& stmt) {
  const std::size_t m = client_index(mode);
  // Most requests repeat the statement of the one before: comparing its text costs less than
  // hashing it (~150 of the writer's ~5,600 instructions per request, by callgrind).
  const Cache::value_type* entry = last_cached_[m];
  if (entry == nullptr || entry->first != sql) {
    Cache& cache = cache_[m];
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
    entry = &*it;
    last_cached_[m] = entry;
  }
  if (entry->second.several) return several_statements();
  stmt = entry->second.stmt;  // nullptr for SQL that is only whitespace or comments
  return true;
}

void Writer::clear_cache() {
  for (auto& cache : cache_) {
    for (auto& [sql, c] : cache) sqlite3_finalize(c.stmt);
    cache.clear();
  }
  last_cached_.fill(nullptr);
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
    {
      std::optional<Authorizer::Scope> vacuum;  // as in run_statement
      if (vacuum_) vacuum.emplace(authorizer_, Mode::kVacuum);
      while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      }
    }
    if (rc != SQLITE_DONE) {
      capture_failure();
      sqlite3_finalize(stmt);
      return false;
    }
    note_client_statement(stmt);
    sqlite3_finalize(stmt);
    if (transaction_lost_midway()) return false;
  }
  changes = sqlite3_total_changes64(db_) - before;
  return true;
}

bool Writer::exec_internal(sqlite3_stmt* stmt) {
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
    sqlite3_reset(stmt);
    if (stmt == begin_.get()) {
      changes_.begin();
    } else if (stmt == savepoint_.get()) {
      changes_.savepoint();
    } else if (stmt == release_.get()) {
      changes_.release();
    } else if (stmt == rollback_to_.get()) {
      changes_.rollback_to();
    } else if (stmt == rollback_.get()) {
      changes_.rollback();
    } else if (stmt == commit_.get()) {
      publish_committed();  // (the previous commit's, had a path not published it yet)
      committed_ = changes_.take_commit(feed_spares_);
    }
    return true;
  }
  sqlite3_reset(stmt);  // leaves the error code and message in place for capture_sqlite_error()
  return false;
}

bool Writer::run_statement(sqlite3_stmt* stmt, const proto::ParamsView& params,
                           proto::FrameWriter* rows) {
  // A VACUUM runs ATTACH and statements of its own inside its step, which Mode::kVacuum allows;
  // it was prepared in the client's mode, where SQLite authorizes an INTO expression's reads
  // (review19: prepared in kVacuum, a subquery there read sqlite_stmt and pasyn_* tables). Never
  // from the statement cache (run_alone clears it): a re-prepare inside this step would be
  // authorized in kVacuum.
  std::optional<Authorizer::Scope> vacuum;
  if (vacuum_) vacuum.emplace(authorizer_, Mode::kVacuum);
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
  // Whether the reply, with `more` bytes still to come, passes --max-frame (then the failure).
  const auto over_max_frame = [&](const char* advice, std::size_t more = 0) {
    if (rows->position() - rows->start() + more <= config_.max_frame) return false;
    set_failure(proto::PasynCode::kTooLarge,
                "the result does not fit in one frame (max " + std::to_string(config_.max_frame) +
                    " bytes); the statement was rolled back, " + advice);
    return true;
  };
  // The columns are read after the first step: a cached statement that another request's
  // schema change (ALTER TABLE, DROP and CREATE) made stale is prepared again by SQLite inside
  // sqlite3_step, and before it column_count and column_name describe the old schema (SELECT *
  // lost an added column, kept a dropped one as NULL, and named a renamed one by its old name).
  int rc = sqlite3_step(stmt);
  const int ncols = rows ? sqlite3_column_count(stmt) : 0;
  if (rows) {
    rows->u32(static_cast<std::uint32_t>(ncols));
    for (int c = 0; c < ncols; ++c) {
      const char* name = sqlite3_column_name(stmt, c);
      rows->string(name ? name : "");
    }
    row_count_at = rows->position();
    rows->u32(0);
    // The column names alone (a reply of no rows too).
    if (over_max_frame("select fewer or shorter-named columns")) return false;
  }
  for (;; rc = sqlite3_step(stmt)) {
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      capture_sqlite_error();
      return false;
    }
    if (!rows) continue;
    for (int c = 0; c < ncols; ++c) {
      // A text or blob that cannot fit is refused before it is copied into the reply: a
      // probe's SELECT zeroblob(900000000) took the daemon to 1.8 GB before TOO_LARGE.
      const int type = sqlite3_column_type(stmt, c);
      if ((type == SQLITE_TEXT || type == SQLITE_BLOB) &&
          over_max_frame("select fewer or smaller values",
                         static_cast<std::size_t>(sqlite3_column_bytes(stmt, c)))) {
        return false;
      }
      encode_column(*rows, stmt, c);
    }
    ++row_count;
    if (over_max_frame("select fewer rows")) return false;
  }
  if (rows) rows->patch_u32(row_count_at, row_count);
  return true;
}

void Writer::publish_committed() {
  if (!committed_) return;
  if (feed_) feed_->publish(std::move(committed_), &feed_spares_);
  committed_.reset();
}

void Writer::note_client_statement(sqlite3_stmt* stmt) {
  // Only transaction control is read-only and starts with ROLLBACK; plain ROLLBACK is refused
  // (the authorizer), so this is a ROLLBACK TO.
  if (sqlite3_stmt_readonly(stmt)) {
    if (is_rollback_sql(sqlite3_sql(stmt))) changes_.uncertain();
  } else if (is_create_table_as(sqlite3_sql(stmt))) {
    changes_.uncertain();  // its rows were written without the preupdate hook
  }
}

}  // namespace pasyn::server
