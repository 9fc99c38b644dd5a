// The SQL authorizer of the writer connection: an allow-list (SECURITY.md "SQL allow-list").
//
// SQLite asks the authorizer about every action of a statement while it prepares it (and, for a
// pragma used as a table-valued function, `SELECT * FROM pragma_table_info('t')`, again when
// the pragma statement runs). Whatever is not listed for the current Mode is SQLITE_DENY, so a
// statement SQLite learns to express later, or a pragma nobody thought of, is refused by
// default. Many pragmas take effect while they are prepared (hard_heap_limit, cache_size,
// foreign_keys): the decision is taken there, before they run.
//
// The daemon's own statements run in Mode::kInternal (everything allowed); client requests run
// in the mode of their peer's Role. Outside any request the mode is kNone: nothing is allowed.
#pragma once

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include <pasyn/proto/codec.hpp>

namespace pasyn::server {

/// What a peer may do, fixed when its connection is accepted (SECURITY.md "Roles").
enum class Role : std::uint8_t {
  kWriter,    // reads and writes rows and schema, within the allow-list
  kReadOnly,  // --read-only-uid/--read-only-gid: reads and query-only pragmas
  kAdmin,     // a writer that may also run PRAGMA wal_checkpoint (set at accept; see server.cpp)
};

/// What the writer connection is running when SQLite asks.
enum class Mode : std::uint8_t {
  kNone,               // outside any request: nothing is allowed
  kInternal,           // the daemon's own statements: everything is allowed
  kVacuum,             // VACUUM's own statements: all but attaching a file (VACUUM INTO)
  kReadOnly,           // a read-only peer's request
  kWriter,             // a writer's request outside its transaction
  kWriterTransaction,  // a writer's request inside its transaction: its savepoints too
  kAdmin,              // an admin's request outside its transaction
  kAdminTransaction,   // an admin's request inside its transaction
};

/// The client mode of a request from `role`, inside its own transaction or not.
Mode client_mode(Role role, bool in_transaction);
/// Client modes are numbered 0 .. kClientModes-1 by client_index (for per-mode caches).
inline constexpr std::size_t kClientModes = 5;
std::size_t client_index(Mode client);

/// The outcome of one question of SQLite's.
struct Decision {
  int rc = SQLITE_OK;                                     // SQLITE_OK or SQLITE_DENY
  proto::PasynCode code = proto::PasynCode::kPermission;  // when denied
  const char* message = nullptr;                          // when denied: why (static text)
  std::int32_t extended = 0;  // when denied: ERROR's extended code (0: `code` again)
  bool allowed() const { return rc == SQLITE_OK; }
};

/// The allow-list itself: a pure function of the mode and SQLite's arguments (see
/// sqlite3_set_authorizer: arg3 is the database name, arg4 the trigger or view).
Decision decide(Mode mode, int action, const char* arg1, const char* arg2, const char* arg3,
                const char* arg4);

/// True when a client may run `PRAGMA name` (value: nullptr for the query form, else the
/// argument or the value set) in `mode`.
bool pragma_allowed(Mode mode, std::string_view name, const char* value);

/// The name of the savepoint the daemon wraps each transaction request in.
inline constexpr const char* kInternalSavepoint = "pasyn_request";
/// Table names starting with this (any case) belong to the daemon: clients cannot touch them.
inline constexpr std::string_view kReservedPrefix = "pasyn_";
/// The refusal of an ALTER TABLE that gave a table (or an FTS table's shadow table) a reserved
/// name: found after the statement ran (Authorizer::altered()), and undone.
inline constexpr const char* kRenameReservedMessage =
    "tables whose names start with pasyn_ belong to pasyn-writerd: no table may be renamed to "
    "one; nothing of the request was written";

/// The authorizer installed on the writer connection: the current mode and the last denial.
///
/// Thread-safety: none; used on the writer thread only (SQLite calls it from there).
class Authorizer {
 public:
  /// Installs the callback on `db` (which must outlive this object or drop it first).
  void install(sqlite3* db);

  Mode mode() const { return mode_; }

  /// Sets the mode for a scope and restores the previous one at its end.
  class Scope {
   public:
    Scope(Authorizer& a, Mode m) : a_(a), previous_(a.mode_) { a_.mode_ = m; }
    ~Scope() { a_.mode_ = previous_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Authorizer& a_;
    Mode previous_;
  };

  /// The last refusal since clear_denial(), if any.
  const std::optional<Decision>& denial() const { return denial_; }
  /// Whether a client's ALTER TABLE was allowed since clear_denial(). SQLite names only the old
  /// table to the authorizer, so the writer checks the new name afterwards
  /// (Writer::renamed_into_reserved_names).
  bool altered() const { return altered_; }
  void clear_denial() {
    denial_.reset();
    altered_ = false;
  }

 private:
  static int callback(void* self, int action, const char* a1, const char* a2, const char* a3,
                      const char* a4);

  Mode mode_ = Mode::kNone;
  std::optional<Decision> denial_;
  bool altered_ = false;
};

}  // namespace pasyn::server
