// The statement helpers Connection and Cursor share (connection.cpp, cursor.cpp): binding
// parameters, stepping, reading rows, and the checks and errors around them. Internal to
// libpasyn-client (hidden symbols). Stateless functions: thread-safe as far as the sqlite3 handle
// passed to them is used by one thread at a time.
#pragma once

#include <sqlite3.h>

#include <cstddef>
#include <memory>
#include <pasyn/connection.hpp>
#include <string>
#include <string_view>

namespace pasyn::detail {

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Resets the statement however the call that ran it ends: a statement left mid-result would keep
// its read transaction (a WAL snapshot that blocks checkpoints), and its bindings point into the
// caller's Params, which do not outlive the call.
class ResetGuard {
 public:
  explicit ResetGuard(sqlite3_stmt* stmt) noexcept : stmt_(stmt) {}
  ResetGuard(const ResetGuard&) = delete;
  ResetGuard& operator=(const ResetGuard&) = delete;
  ~ResetGuard() {
    // reset() repeats the error of the last step, which has already been thrown if it mattered.
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3_stmt* stmt_;
};

// Throws the typed error (errors.hpp) of `db`'s last failure, with SQLite's message and codes.
[[noreturn]] void throw_db_error(sqlite3* db);

// Throws ProgrammingError with SQLITE_MISUSE.
[[noreturn]] void throw_misuse(const std::string& message);

// prepare_v2/v3 take the length as an int, and SQLite stops at a NUL byte, which would silently
// drop the rest of the text; both are rejected before SQLite sees them.
void check_sql_text(std::string_view sql);

// True when `rest` holds no further statement: only whitespace, comments, and the empty
// statements `;` that SQLite itself skips.
bool holds_no_statement(std::string_view rest);

// ProgrammingError (SQLITE_RANGE) unless `given` parameters are what the statement uses.
void check_param_count(int expected, std::size_t given);

// Bind every parameter, by position or by name (one of each name, all of them). The values are
// bound SQLITE_STATIC: they must outlive the statement's use of them (see ResetGuard).
void bind_params(sqlite3* db, sqlite3_stmt* stmt, const Params& params);

void bind_named(sqlite3* db, sqlite3_stmt* stmt, const NamedParams& params);

// Positional or named parameters, whichever the call was given.
struct AnyParams {
  const Params* positional = nullptr;
  const NamedParams* named = nullptr;
  std::size_t size() const { return named ? named->values.size() : positional->size(); }
  void bind(sqlite3* db, sqlite3_stmt* stmt) const {
    if (named) {
      bind_named(db, stmt, *named);
    } else {
      bind_params(db, stmt, *positional);
    }
  }
};

// Steps once: true for a row, false when the statement is done.
bool step(sqlite3* db, sqlite3_stmt* stmt);

// Column accessors return null both for an empty value and when out of memory; only the error
// code tells them apart.
void check_not_out_of_memory(sqlite3* db);

// The current row's values, copied.
Row read_row(sqlite3* db, sqlite3_stmt* stmt);

}  // namespace pasyn::detail
