// Cursor::Impl: a cursor's own statement, its parameters and where it stands in the rows
// (connection.cpp opens it, cursor.cpp steps it). Internal to libpasyn-client. Thread-safety: as
// Cursor, one thread at a time.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <optional>
#include <pasyn/connection.hpp>
#include <string>
#include <vector>

#include "process.hpp"
#include "statement.hpp"

namespace pasyn {

struct Cursor::Impl {
  std::weak_ptr<sqlite3*> connection;
  // Counts this cursor as open on its connection (detail::has_open_cursors) until close().
  std::shared_ptr<const bool> open_token;
  // The process that opened it (see Connection::Impl::forks_): in a child its statement is
  // never used nor finalized.
  const std::uint64_t forks = detail::fork_count();
  bool closed = false;
  detail::StmtPtr stmt;  // null for SQL without a statement, and after close()
  Params positional;
  NamedParams named;
  bool is_named = false;
  bool has_row = false;  // stmt is positioned on an unread row
  bool done = true;      // the rows are exhausted (stmt reset)
  std::vector<std::string> columns;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { release(); }

  bool forked() const noexcept { return forks != detail::fork_count(); }

  // Finalizes the statement, or in a child after fork() forgets it untouched.
  void release() noexcept {
    if (forked()) {
      (void)stmt.release();
    } else {
      stmt.reset();  // finalizing also ends its read transaction
    }
  }

  sqlite3* db() const {
    if (forked()) {
      throw ProgrammingError(
          "this Cursor was opened before fork(); SQLite connections must not cross fork(): "
          "connect() again in the child",
          SQLITE_MISUSE, SQLITE_MISUSE);
    }
    if (closed) throw ProgrammingError("the cursor is closed", SQLITE_MISUSE, SQLITE_MISUSE);
    auto alive = connection.lock();
    if (!alive) throw ConnectionClosedError("connection is closed");
    return *alive;
  }

  void run() {
    sqlite3* handle = db();
    if (!stmt) return;
    sqlite3_reset(stmt.get());
    sqlite3_clear_bindings(stmt.get());
    done = true;
    has_row = false;
    if (is_named) {
      detail::bind_named(handle, stmt.get(), named);
    } else {
      detail::bind_params(handle, stmt.get(), positional);
    }
    advance(handle);
    columns.clear();
    for (int i = 0, n = sqlite3_column_count(stmt.get()); i < n; ++i) {
      const char* name = sqlite3_column_name(stmt.get(), i);
      columns.emplace_back(name == nullptr ? "" : name);
    }
  }

  // Steps to the next row; resets the statement (ending its read transaction) at the end or on
  // an error.
  void advance(sqlite3* handle) {
    try {
      has_row = detail::step(handle, stmt.get());
    } catch (...) {
      sqlite3_reset(stmt.get());
      has_row = false;
      done = true;
      throw;
    }
    done = !has_row;
    if (done) sqlite3_reset(stmt.get());
  }

  std::optional<Row> next() {
    sqlite3* handle = db();
    if (!stmt || !has_row) return std::nullopt;
    Row row = detail::read_row(handle, stmt.get());
    advance(handle);
    return row;
  }
};

}  // namespace pasyn
