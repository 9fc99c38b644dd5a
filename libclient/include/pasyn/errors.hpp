// The exceptions libpasyn-client throws. Catching pasyn::Error catches every one of them.
//
// The hierarchy follows Python's sqlite3 module, which the seed API re-exported:
//
//   Error
//   ├── SqliteError            SQLite said no; carries the primary and extended result code
//   │   ├── IntegrityError     constraint violations, type mismatch (SQLITE_CONSTRAINT, _MISMATCH)
//   │   ├── OperationalError   the database could not do it now (BUSY, LOCKED, IOERR, FULL, ...)
//   │   │                      and most SQL errors (SQLITE_ERROR: no such table, syntax error)
//   │   ├── ProgrammingError   misuse of the API or of SQL (wrong number of statements,
//   │   │   │                  SQLITE_MISUSE, SQLITE_RANGE)
//   │   │   └── TransactionError         a transaction used when it is finished
//   │   │       └── TransactionCommandError  a transaction command out of place: raw
//   │   │                                    BEGIN/COMMIT as SQL, commit() with none open
//   │   ├── DataError          a value too big or out of range (SQLITE_TOOBIG)
//   │   ├── InternalError      SQLITE_INTERNAL, SQLITE_NOTFOUND
//   │   └── NotSupportedError  an operation this build or server does not support
//   ├── ConnectionClosedError  the object was closed by its owner (or the server is stopping)
//   ├── ConnectionLostError    the daemon could not be reached or the connection dropped;
//   │                          the outcome of a write in flight is unknown
//   ├── TimeoutError           a call or a wait inside the daemon ran out of time
//   ├── InterruptedError       a blocking call given up at its thread's InterruptScope's word
//   ├── ProtocolError          the peer sent something that breaks proto/PROTOCOL.md
//   └── PoolError
//       └── PoolClosedError
//
// All classes are exported from the shared library so that `catch` works across its boundary.
// Thread-safety and ownership: exceptions are immutable values that own their message; they may
// be copied and rethrown on any thread (the client hands them from its I/O thread to callers).
#pragma once

#include <stdexcept>
#include <string>

#include <pasyn/export.hpp>

namespace pasyn {

/// Base of every exception the library throws.
class PASYN_EXPORT Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message);
  ~Error() override;
};

/// An error reported by SQLite, locally or inside the daemon.
class PASYN_EXPORT SqliteError : public Error {
 public:
  /// `code` is SQLite's primary result code (e.g. 19, SQLITE_CONSTRAINT) and `extended_code`
  /// its extended code (e.g. 2067, SQLITE_CONSTRAINT_UNIQUE); equal when there is no extension.
  SqliteError(const std::string& message, int code, int extended_code);
  ~SqliteError() override;
  int code() const noexcept { return code_; }
  int extended_code() const noexcept { return extended_code_; }

 private:
  int code_;
  int extended_code_;
};

#define PASYN_DECLARE_SQLITE_ERROR(Name)                           \
  class PASYN_EXPORT Name : public SqliteError {                   \
   public:                                                         \
    Name(const std::string& message, int code, int extended_code); \
    ~Name() override;                                              \
  }
PASYN_DECLARE_SQLITE_ERROR(IntegrityError);
PASYN_DECLARE_SQLITE_ERROR(OperationalError);
PASYN_DECLARE_SQLITE_ERROR(ProgrammingError);
PASYN_DECLARE_SQLITE_ERROR(DataError);
PASYN_DECLARE_SQLITE_ERROR(InternalError);
PASYN_DECLARE_SQLITE_ERROR(NotSupportedError);
#undef PASYN_DECLARE_SQLITE_ERROR

/// A transaction used out of place (SQLITE_MISUSE): a call through a `Transaction` that is
/// already committed or rolled back. The seed's `TransactionError`; in Python also
/// `sqlite3.ProgrammingError`.
class PASYN_EXPORT TransactionError : public ProgrammingError {
 public:
  TransactionError(const std::string& message, int code, int extended_code);
  ~TransactionError() override;
};

/// A transaction command out of place (SQLITE_MISUSE): `BEGIN`, `COMMIT`, `ROLLBACK` or `END`
/// sent as SQL, or `SAVEPOINT`/`RELEASE`/`ROLLBACK TO` outside a transaction (the daemon refuses
/// them, PROTOCOL.md §5 `MISUSE`); `ThreadTransactions::begin()` on a thread that has one open,
/// `commit()` or `rollback()` on a thread that has none. The seed's `TransactionCommandError`.
class PASYN_EXPORT TransactionCommandError : public TransactionError {
 public:
  TransactionCommandError(const std::string& message, int code, int extended_code);
  ~TransactionCommandError() override;
};

#define PASYN_DECLARE_ERROR(Name, Base)        \
  class PASYN_EXPORT Name : public Base {      \
   public:                                     \
    explicit Name(const std::string& message); \
    ~Name() override;                          \
  }
PASYN_DECLARE_ERROR(ConnectionClosedError, Error);
PASYN_DECLARE_ERROR(ConnectionLostError, Error);
PASYN_DECLARE_ERROR(TimeoutError, Error);
/// A blocking call given up because its thread's InterruptScope said so: as at a timeout, the
/// request's outcome is unknown.
PASYN_DECLARE_ERROR(InterruptedError, Error);
PASYN_DECLARE_ERROR(ProtocolError, Error);
PASYN_DECLARE_ERROR(PoolError, Error);
PASYN_DECLARE_ERROR(PoolClosedError, PoolError);
#undef PASYN_DECLARE_ERROR

/// Throws the SqliteError subclass that matches SQLite's result code.
[[noreturn]] PASYN_EXPORT void throw_sqlite_error(const std::string& message, int code,
                                                  int extended_code);

}  // namespace pasyn
