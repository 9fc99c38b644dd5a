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
  /// SQLITE_OPEN_READONLY: any write to the database file fails with OperationalError (a
  /// TEMP table lives in the connection's own memory and can be written, as in SQLite).
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

  /// These flags plus SQLITE_OPEN_URI: `path` may be a `file:` URI.
  constexpr OpenFlags uri() const noexcept { return OpenFlags(bits_ | kUri); }
  /// These flags plus SQLITE_OPEN_MEMORY: the database lives in memory (named by a URI with
  /// shared_cache() to share it between connections of this process).
  constexpr OpenFlags memory() const noexcept { return OpenFlags(bits_ | kMemory); }
  /// These flags plus SQLITE_OPEN_SHAREDCACHE.
  constexpr OpenFlags shared_cache() const noexcept { return OpenFlags(bits_ | kSharedCache); }

 private:
  // Appended only: the values are inline in applications built against older headers.
  static constexpr unsigned kReadOnly = 1, kReadWrite = 2, kCreate = 4, kUri = 8, kMemory = 16,
                            kSharedCache = 32;
  constexpr explicit OpenFlags(unsigned bits) noexcept : bits_(bits) {}
  unsigned bits_;
};

class Cursor;
class Connection;

namespace detail {
/// Internal (not exported): true while a Cursor opened on `connection` is not closed.
/// ReadPool does not reuse such a connection.
bool has_open_cursors(const Connection& connection) noexcept;
/// Internal (not exported): true when `connection` was opened before a fork() in this process,
/// closed since or not (see Connection). ReadPool drops such a connection.
bool opened_before_fork(const Connection& connection) noexcept;
}  // namespace detail

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
/// parent is using). Open a new Connection in the child, and fork while no read of the process
/// is in progress: SQLite keeps one record per process of the locks held on a database file,
/// which the child inherits without the POSIX locks themselves, so a read in progress at fork()
/// leaves the child's new connections to that file without their read locks (a checkpoint may
/// then reset the WAL under them; probe26).
///
/// A Cursor or a `begin()` left unfinished holds the connection's read transaction: the
/// connection's other reads see its snapshot, not writes acknowledged since, until it ends.
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

  /// Named parameters (`:name`, `@name`, `$name`, each given with its prefix or without it),
  /// bound by name: every parameter of the statement must be given exactly once, else
  /// ProgrammingError. The same as execute/execute_fetchall/execute_fetchone otherwise.
  std::int64_t execute_named(std::string_view sql, const NamedParams& params);
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params);
  std::optional<Row> execute_fetchone_named(std::string_view sql, const NamedParams& params);

  /// A cursor over the rows of one statement that steps them on demand (see Cursor).
  Cursor cursor(std::string_view sql, const Params& params = {});
  Cursor cursor_named(std::string_view sql, const NamedParams& params);
  /// The result column names of `sql` (prepared, not run).
  std::vector<std::string> column_names(std::string_view sql);

  /// sqlite3_last_insert_rowid, sqlite3_changes64, sqlite3_total_changes64 of this connection.
  std::int64_t last_insert_rowid() const;
  std::int64_t changes() const;
  std::int64_t total_changes() const;
  /// How long a statement waits for a lock held by another connection (default 5000 ms).
  void set_busy_timeout(int milliseconds);
  /// Makes the statement running on this connection fail with OperationalError
  /// (SQLITE_INTERRUPT) at its next step. The one method that may be called from another
  /// thread while a call runs; it must not race with close() or destruction.
  void interrupt() noexcept;

  /// A private in-memory database (":memory:"), read-write.
  static Connection memory();
  /// An in-memory database shared by every connection of this process opened with the same
  /// `name` (a `file:` URI with `mode=memory&cache=shared`); it lives while one is open.
  static Connection shared_memory(const std::string& name);

  /// Releases the SQLite connection. Idempotent. Its open cursors stop: their read
  /// transactions end now, and their calls throw ConnectionClosedError.
  void close();
  bool closed() const noexcept;
  const std::string& path() const noexcept;

 private:
  struct Impl;
  explicit Connection(std::unique_ptr<Impl> impl);
  friend PASYN_EXPORT Connection connect(const std::string& path, OpenFlags flags);
  friend class Cursor;
  friend bool detail::has_open_cursors(const Connection& connection) noexcept;
  friend bool detail::opened_before_fork(const Connection& connection) noexcept;
  std::unique_ptr<Impl> impl_;
};

/// Rows of one statement, stepped one at a time: the result is never materialised.
///
/// The cursor owns its own prepared statement and a copy of its parameters. While it has rows
/// left it holds a read transaction (a WAL snapshot) on its connection; it releases it when the
/// rows run out, on close(), and on destruction. Once the connection is closed every call
/// throws ConnectionClosedError; after the cursor's own close(), execute() and the fetches
/// throw ProgrammingError; in a child after fork(), every call throws ProgrammingError (as the
/// Connection's do).
/// Thread-safety: as its Connection (one thread at a time, the same thread as the connection).
class PASYN_EXPORT Cursor {
 public:
  Cursor(Cursor&&) noexcept;
  Cursor& operator=(Cursor&&) noexcept;
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor();

  /// Runs the statement again from its first row (the first call is implicit).
  void execute();
  /// The next row, or nullopt once the rows are exhausted.
  std::optional<Row> fetchone();
  /// Up to `size` next rows.
  std::vector<Row> fetchmany(std::size_t size);
  /// Every remaining row.
  std::vector<Row> fetchall();
  /// The result column names.
  const std::vector<std::string>& column_names() const noexcept;
  /// Releases the statement. Idempotent.
  void close() noexcept;

 private:
  friend class Connection;
  struct Impl;
  explicit Cursor(std::unique_ptr<Impl> impl);
  static Cursor open(Connection& connection, std::string_view sql, std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Opens `path` directly. Throws OperationalError (SQLITE_CANTOPEN, ...) when it cannot.
PASYN_EXPORT Connection connect(const std::string& path,
                                OpenFlags flags = OpenFlags::readwrite() | OpenFlags::create());

}  // namespace pasyn
