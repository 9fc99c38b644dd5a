// Out-of-line members of the exception classes (anchoring their vtables in the library) and the
// mapping from SQLite result codes to them.
#include <pasyn/errors.hpp>

#include <sqlite3.h>

namespace pasyn {

Error::Error(const std::string& message) : std::runtime_error(message) {}
Error::~Error() = default;

SqliteError::SqliteError(const std::string& message, int code, int extended_code)
    : Error(message), code_(code), extended_code_(extended_code) {}
SqliteError::~SqliteError() = default;

#define PASYN_DEFINE_SQLITE_ERROR(Name)                               \
  Name::Name(const std::string& message, int code, int extended_code) \
      : SqliteError(message, code, extended_code) {}                  \
  Name::~Name() = default
PASYN_DEFINE_SQLITE_ERROR(IntegrityError);
PASYN_DEFINE_SQLITE_ERROR(OperationalError);
PASYN_DEFINE_SQLITE_ERROR(ProgrammingError);
PASYN_DEFINE_SQLITE_ERROR(DataError);
PASYN_DEFINE_SQLITE_ERROR(InternalError);
PASYN_DEFINE_SQLITE_ERROR(NotSupportedError);
#undef PASYN_DEFINE_SQLITE_ERROR

TransactionError::TransactionError(const std::string& message, int code, int extended_code)
    : ProgrammingError(message, code, extended_code) {}
TransactionError::~TransactionError() = default;
TransactionCommandError::TransactionCommandError(const std::string& message, int code,
                                                 int extended_code)
    : TransactionError(message, code, extended_code) {}
TransactionCommandError::~TransactionCommandError() = default;

#define PASYN_DEFINE_ERROR(Name, Base)                      \
  Name::Name(const std::string& message) : Base(message) {} \
  Name::~Name() = default
PASYN_DEFINE_ERROR(ConnectionClosedError, Error);
PASYN_DEFINE_ERROR(ConnectionLostError, Error);
PASYN_DEFINE_ERROR(TimeoutError, Error);
PASYN_DEFINE_ERROR(InterruptedError, Error);
PASYN_DEFINE_ERROR(ProtocolError, Error);
PASYN_DEFINE_ERROR(PoolError, Error);
PASYN_DEFINE_ERROR(PoolClosedError, PoolError);
#undef PASYN_DEFINE_ERROR

void throw_sqlite_error(const std::string& message, int code, int extended_code) {
  // Callers sometimes hold only one of the two codes (or pass an extended code as `code`), so
  // normalise: the primary code is always the low byte, and "no extension" means equal codes.
  const int primary = (code != 0 ? code : extended_code) & 0xff;
  const int extended = extended_code != 0 ? extended_code : code;

  // The same classification as Python's sqlite3 module (Modules/_sqlite/util.c), except that
  // SQLITE_NOMEM is an OperationalError here rather than a MemoryError.
  switch (primary) {
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
      throw IntegrityError(message, primary, extended);
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
      throw ProgrammingError(message, primary, extended);
    case SQLITE_TOOBIG:
      throw DataError(message, primary, extended);
    case SQLITE_INTERNAL:
    case SQLITE_NOTFOUND:
      throw InternalError(message, primary, extended);
    case SQLITE_ERROR:
    case SQLITE_PERM:
    case SQLITE_ABORT:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_NOMEM:
    case SQLITE_READONLY:
    case SQLITE_INTERRUPT:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
    case SQLITE_EMPTY:
    case SQLITE_SCHEMA:
    case SQLITE_NOLFS:
    case SQLITE_AUTH:
      throw OperationalError(message, primary, extended);
    default:  // SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_FORMAT, ...
      throw SqliteError(message, primary, extended);
  }
}

}  // namespace pasyn
