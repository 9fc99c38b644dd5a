// Direct SQLite connections for reads (and, when opened read-write, ordinary local use).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pasyn/errors.hpp>
#include <pasyn/export.hpp>
#include <pasyn/value.hpp>

namespace pasyn {

/// How `connect` opens the database file. Combine with `|`:
/// `OpenFlags::readwrite() | OpenFlags::create()` is the default.
class OpenFlags {
 public:
  /// SQLITE_OPEN_READONLY: any write through the connection fails with OperationalError.
  static constexpr OpenFlags readonly() noexcept { return OpenFlags(kReadOnly); }
  /// SQLITE_OPEN_READWRITE.
  static constexpr OpenFlags readwrite() noexcept { return OpenFlags(kReadWrite); }
  /// SQLITE_OPEN_CREATE: create the file if missing (implies read-write).
  static constexpr OpenFlags create() noexcept { return OpenFlags(kCreate); }

  constexpr OpenFlags operator|(OpenFlags other) const noexcept {
    return OpenFlags(bits_ | other.bits_);
  }
  constexpr bool has(OpenFlags other) const noexcept {
    return (bits_ & other.bits_) == other.bits_;
  }
  constexpr unsigned bits() const noexcept { return bits_; }

 private:
  static constexpr unsigned kReadOnly = 1, kReadWrite = 2, kCreate = 4;
  constexpr explicit OpenFlags(unsigned bits) noexcept : bits_(bits) {}
  unsigned bits_;
};

/// A direct SQLite connection in the caller's thread; reads never cross a socket.
///
/// Thread-safety: not safe for concurrent use. Use one Connection per thread (it may be moved
/// to another thread between calls). Ownership: owns its `sqlite3*` and its prepared statements;
/// they are released by `close()` or the destructor.
///
/// Prepared statements are cached by SQL text. Every statement is reset before the call that ran
/// it returns, so a read connection never holds a WAL snapshot between calls and never blocks the
/// daemon's checkpoints.
///
/// All methods throw `ConnectionClosedError` after `close()`, and a `SqliteError` subclass when
/// SQLite reports an error.
///
/// fork(): SQLite connections must not cross fork(). In a child, every method throws
/// `ProgrammingError` saying so; `close()` and the destructor forget the handle without
/// touching it (closing it there would run SQLite's unlocking and WAL clean-up on files the
/// parent is using). Open a new Connection in the child.
class PASYN_EXPORT Connection {
 public:
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  /// Closes the connection (errors on close are swallowed; call close() to see them).
  ~Connection();

  /// Runs one statement to completion and returns the number of rows it changed.
  /// More than one statement in `sql` is a ProgrammingError; use executescript.
  std::int64_t execute(std::string_view sql, const Params& params = {});
  /// Runs one statement and returns every row it produced.
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params = {});
  /// Runs one statement and returns its first row, or nullopt if it produced none.
  std::optional<Row> execute_fetchone(std::string_view sql, const Params& params = {});
  /// Runs every statement in `sql`, in order, without parameters.
  void executescript(std::string_view sql);

  /// `BEGIN` / `COMMIT` / `ROLLBACK` on this connection. On a read-only connection `begin()`
  /// opens a read transaction: every query until `commit()`/`rollback()` sees one snapshot.
  void begin();
  void commit();
  void rollback();
  /// True between begin() and commit()/rollback().
  bool in_transaction() const;

  /// Column names of the statement most recently run by execute_fetchall/execute_fetchone.
  const std::vector<std::string>& last_column_names() const;

  /// Releases the SQLite connection. Idempotent.
  void close();
  bool closed() const noexcept;
  const std::string& path() const noexcept;

 private:
  struct Impl;
  explicit Connection(std::unique_ptr<Impl> impl);
  friend PASYN_EXPORT Connection connect(const std::string& path, OpenFlags flags);
  std::unique_ptr<Impl> impl_;
};

/// Opens `path` directly. Throws OperationalError (SQLITE_CANTOPEN, ...) when it cannot.
PASYN_EXPORT Connection connect(const std::string& path,
                                OpenFlags flags = OpenFlags::readwrite() | OpenFlags::create());

}  // namespace pasyn
