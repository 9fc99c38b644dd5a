// The allow-list of the writer connection's authorizer. See authorizer.hpp and SECURITY.md.
#include "authorizer.hpp"

#include <algorithm>
#include <iterator>

namespace pasyn::server {
namespace {

using proto::PasynCode;

constexpr const char* kTransactionSqlMessage =
    "BEGIN, COMMIT, ROLLBACK and END cannot be sent as SQL: every request already runs "
    "atomically in the daemon's own transaction. Use MultiplexedClient::begin() for a "
    "transaction (then tx.commit() or tx.rollback()), or executescript()/execute_many() to make "
    "several statements atomic";
constexpr const char* kSavepointSqlMessage =
    "SAVEPOINT, RELEASE and ROLLBACK TO are only allowed inside a transaction opened with "
    "MultiplexedClient::begin()";
constexpr const char* kInternalSavepointMessage =
    "the savepoint name pasyn_request is reserved by pasyn-writerd";
constexpr const char* kAttachMessage =
    "ATTACH and DETACH are not allowed through pasyn-writerd: it serves one database file";
constexpr const char* kVacuumIntoMessage =
    "VACUUM INTO is not allowed through pasyn-writerd (an operator copies the database with "
    "BACKUP: `pasyn backup PATH`)";
constexpr const char* kExtensionMessage =
    "load_extension() is not allowed through pasyn-writerd: extensions are not loaded into the "
    "daemon";
constexpr const char* kTokenizerMessage =
    "fts3_tokenizer() is not allowed through pasyn-writerd: it reads and replaces raw pointers "
    "in the daemon's memory";
constexpr const char* kStmtTableMessage =
    "sqlite_stmt is not readable through pasyn-writerd: the connection is shared, and it lists "
    "every client's statements with their text";
constexpr const char* kDbstatMessage =
    "dbstat is not available through pasyn-writerd: it describes every table's pages, the "
    "daemon's own (pasyn_*) too; read it on a direct read-only connection";
constexpr const char* kPragmaMessage =
    "this pragma is not on pasyn-writerd's allow-list for this connection (SECURITY.md \"SQL "
    "allow-list\"): connection settings are the daemon's flags, and read-only peers may only "
    "query";
constexpr const char* kTempMessage =
    "TEMP tables, indexes, triggers and views are not allowed through pasyn-writerd: the "
    "connection is shared, and a temporary object would capture every other client's statements";
constexpr const char* kReservedMessage =
    "tables whose names start with pasyn_ belong to pasyn-writerd (idempotency keys) and cannot "
    "be read or changed by client SQL";
constexpr const char* kReadOnlyMessage =
    "this connection may only read (--read-only-uid/--read-only-gid): the statement writes";
constexpr const char* kNotAllowedMessage =
    "this SQL action is not on pasyn-writerd's allow-list (SECURITY.md \"SQL allow-list\")";
constexpr const char* kOutsideRequestMessage =
    "internal error: SQL outside any request (pasyn-writerd authorizes nothing there)";

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; };
           return lower(x) == lower(y);
         });
}

/// True when `name` is one of the daemon's own tables (any case, as SQLite compares names).
bool reserved(const char* name) {
  return name && sqlite3_strnicmp(name, kReservedPrefix.data(),
                                  static_cast<int>(kReservedPrefix.size())) == 0;
}

/// The schema table of a database, which SQLite never lets a client write itself (that takes
/// writable_schema, which no client can set here).
bool schema_table(const char* name) {
  if (!name) return false;
  for (const char* t :
       {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}) {
    if (sqlite3_stricmp(name, t) == 0) return true;
  }
  return false;
}

/// The main database (or no database named): never "temp", never an attached one.
bool main_db(const char* db) { return !db || sqlite3_stricmp(db, "main") == 0; }

bool is_writer(Mode m) {
  return m == Mode::kWriter || m == Mode::kWriterTransaction || m == Mode::kAdmin ||
         m == Mode::kAdminTransaction;
}
bool in_transaction(Mode m) {
  return m == Mode::kWriterTransaction || m == Mode::kAdminTransaction;
}
bool is_admin(Mode m) { return m == Mode::kAdmin || m == Mode::kAdminTransaction; }

// How a client may use each pragma on the list. Every other pragma is refused, in any form.
enum class Use : std::uint8_t {
  kQuery,        // only the query form, `PRAGMA name`: reports, changes nothing
  kObject,       // with or without an argument that names an object or bounds the report
  kWriterSets,   // anyone queries; writers may set it (a field of the database header)
  kWriterRuns,   // writers only, with or without an argument (it writes)
  kJournalMode,  // the query, or setting WAL, which it is already (a no-op)
  kAdminRuns,    // the admin role only
};

struct Pragma {
  std::string_view name;
  Use use;
};

// Sorted by name. Deliberately absent: everything that sets state of the shared connection
// (cache_size, foreign_keys, hard_heap_limit, mmap_size, case_sensitive_like,
// recursive_triggers, max_page_count, busy_timeout, synchronous, query_only, ...), the schema's
// integrity (writable_schema, ignore_check_constraints, setting trusted_schema), and anything that
// changes the file's layout (page_size, auto_vacuum, incremental_vacuum, secure_delete).
constexpr Pragma kPragmas[] = {
    {"application_id", Use::kWriterSets},
    {"collation_list", Use::kQuery},
    {"compile_options", Use::kQuery},
    {"data_version", Use::kQuery},
    {"database_list", Use::kQuery},
    {"encoding", Use::kQuery},
    {"foreign_key_check", Use::kObject},
    {"foreign_key_list", Use::kObject},
    {"foreign_keys", Use::kQuery},  // set by --foreign-keys
    {"freelist_count", Use::kQuery},
    {"function_list", Use::kQuery},
    {"index_info", Use::kObject},
    {"index_list", Use::kObject},
    {"index_xinfo", Use::kObject},
    {"integrity_check", Use::kObject},  // runs under --statement-timeout like any request
    {"journal_mode", Use::kJournalMode},
    {"module_list", Use::kQuery},
    {"optimize", Use::kWriterRuns},
    {"page_count", Use::kQuery},
    {"page_size", Use::kQuery},
    {"pragma_list", Use::kQuery},
    {"quick_check", Use::kObject},
    {"schema_version", Use::kQuery},
    {"synchronous", Use::kQuery},  // set by --synchronous
    {"table_info", Use::kObject},
    {"table_list", Use::kObject},
    {"table_xinfo", Use::kObject},
    {"trusted_schema", Use::kQuery},  // off (SPEC §4): readable, so that a client can check
    {"user_version", Use::kWriterSets},
    {"wal_checkpoint", Use::kAdminRuns},
};

const Pragma* find_pragma(std::string_view name) {
  const auto* it = std::find_if(std::begin(kPragmas), std::end(kPragmas),
                                [&](const Pragma& p) { return iequal(p.name, name); });
  return it == std::end(kPragmas) ? nullptr : it;
}

constexpr Decision kAllow{};

constexpr Decision deny(const char* message, PasynCode code = PasynCode::kPermission) {
  return Decision{SQLITE_DENY, code, message};
}

// A transaction command out of place: MISUSE, which the client raises as TransactionCommandError.
constexpr Decision deny_transaction_command(const char* message) {
  return Decision{SQLITE_DENY, PasynCode::kMisuse, message, proto::kMisuseTransactionCommand};
}

}  // namespace

Mode client_mode(Role role, bool in_transaction) {
  switch (role) {
    case Role::kReadOnly:
      return Mode::kReadOnly;
    case Role::kAdmin:
      return in_transaction ? Mode::kAdminTransaction : Mode::kAdmin;
    case Role::kWriter:
      break;
  }
  return in_transaction ? Mode::kWriterTransaction : Mode::kWriter;
}

std::size_t client_index(Mode client) {
  switch (client) {
    case Mode::kReadOnly:
      return 0;
    case Mode::kWriter:
      return 1;
    case Mode::kWriterTransaction:
      return 2;
    case Mode::kAdmin:
      return 3;
    case Mode::kAdminTransaction:
      return 4;
    default:
      return 0;  // not a client mode; callers pass client_mode()
  }
}

bool pragma_allowed(Mode mode, std::string_view name, const char* value) {
  const Pragma* p = find_pragma(name);
  if (!p) return false;
  const bool query = value == nullptr;
  switch (p->use) {
    case Use::kQuery:
      return query;
    case Use::kObject:
      return true;
    case Use::kWriterSets:
      return query || is_writer(mode);
    case Use::kWriterRuns:
      return is_writer(mode);
    case Use::kJournalMode:
      return query || (is_writer(mode) && iequal(value, "wal"));
    case Use::kAdminRuns:
      return is_admin(mode);
  }
  return false;
}

Decision decide(Mode mode, int action, const char* arg1, const char* arg2, const char* arg3,
                const char*) {
  switch (mode) {
    case Mode::kInternal:
      return kAllow;
    case Mode::kNone:
      return deny(kOutsideRequestMessage);
    case Mode::kVacuum:
      // VACUUM's own statements (its ATTACH of a temporary file, BEGIN, copies). VACUUM INTO
      // 'path' attaches the path, which would let a client write a copy of the database
      // anywhere the daemon may write.
      if (action == SQLITE_ATTACH && arg1 && *arg1) return deny(kVacuumIntoMessage);
      return kAllow;
    default:
      break;
  }
  // A client: reads first, allowed to every role.
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_RECURSIVE:
      return kAllow;
    case SQLITE_FUNCTION:  // arg2 the function's name
      // Both also disabled on the connection itself (writer.cpp); refused here too, so the
      // client is told PERMISSION, as for every other refused action, not SQLite's bare "not
      // authorized". fts3_tokenizer() returns a pointer into the daemon (one argument) or
      // installs a client's bytes as a tokenizer's function table (two), which the next FTS3
      // query calls: a crash at best, for readers too (a SELECT).
      if (!arg2) return kAllow;
      if (sqlite3_stricmp(arg2, "load_extension") == 0) return deny(kExtensionMessage);
      if (sqlite3_stricmp(arg2, "fts3_tokenizer") == 0) return deny(kTokenizerMessage);
      return kAllow;
    case SQLITE_READ:  // arg1 table (a pragma_* table-valued function too), arg2 column
      if (reserved(arg1)) return deny(kReservedMessage);
      // SQLITE_ENABLE_STMTVTAB (Debian's SQLite has it): the statements prepared on the
      // connection, which are every client's (and their literal values, a password in a rolled
      // back INSERT too).
      if (arg1 && sqlite3_stricmp(arg1, "sqlite_stmt") == 0) return deny(kStmtTableMessage);
      return kAllow;
    case SQLITE_PRAGMA:  // arg1 name, arg2 value or argument (nullptr: the query), arg3 db
      return main_db(arg3) && arg1 && pragma_allowed(mode, arg1, arg2) ? kAllow
                                                                       : deny(kPragmaMessage);
    case SQLITE_TRANSACTION:
      return deny_transaction_command(kTransactionSqlMessage);
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      return deny(kAttachMessage);
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
      return deny(kTempMessage);
    default:
      break;
  }
  // SQLite's own bookkeeping, not the client's SQL: declaring an eponymous virtual table (the
  // first pragma_* table-valued function of the connection) asks about an UPDATE of
  // sqlite_master. SQLite itself refuses any client write to that table.
  if (action == SQLITE_UPDATE && schema_table(arg1) && main_db(arg3)) return kAllow;
  if (!is_writer(mode)) return deny(kReadOnlyMessage);
  switch (action) {
    case SQLITE_INSERT:  // arg1 table, arg3 db
    case SQLITE_UPDATE:  // arg1 table, arg2 column, arg3 db
    case SQLITE_DELETE:
      if (reserved(arg1)) return deny(kReservedMessage);
      // ALTER TABLE ... RENAME also rewrites the temp schema (empty: no client creates TEMP
      // objects); SQLite refuses direct writes to a schema table.
      if (action != SQLITE_INSERT && schema_table(arg1) && arg3 &&
          sqlite3_stricmp(arg3, "temp") == 0) {
        return kAllow;
      }
      return main_db(arg3) ? kAllow : deny(kTempMessage);
    case SQLITE_CREATE_INDEX:  // arg1 index, arg2 table, arg3 db
    case SQLITE_CREATE_TABLE:  // arg1 table, arg3 db
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:  // arg1 table, arg2 module
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_REINDEX:
    case SQLITE_ANALYZE:  // arg1 table
      if (reserved(arg1) ||
          (action != SQLITE_CREATE_VTABLE && action != SQLITE_DROP_VTABLE && reserved(arg2))) {
        return deny(kReservedMessage);
      }
      // The writer connection has no dbstat module (writer.cpp: it describes every table's
      // pages, the daemon's own too): said here, where the name is known, rather than as
      // SQLite's "no such module" when the statement runs.
      if (action == SQLITE_CREATE_VTABLE && arg2 && sqlite3_stricmp(arg2, "dbstat") == 0) {
        return deny(kDbstatMessage);
      }
      return main_db(arg3) ? kAllow : deny(kTempMessage);
    case SQLITE_ALTER_TABLE:  // arg1 db, arg2 table
      if (reserved(arg2)) return deny(kReservedMessage);
      return main_db(arg1) ? kAllow : deny(kTempMessage);
    case SQLITE_SAVEPOINT:  // arg1 "BEGIN", "RELEASE" or "ROLLBACK"; arg2 the name
      if (!in_transaction(mode)) return deny_transaction_command(kSavepointSqlMessage);
      // Compared as SQLite compares savepoint names.
      if (arg2 && sqlite3_stricmp(arg2, kInternalSavepoint) == 0) {
        return deny(kInternalSavepointMessage, PasynCode::kMisuse);
      }
      return kAllow;
    default:
      return deny(kNotAllowedMessage);
  }
}

void Authorizer::install(sqlite3* db) { sqlite3_set_authorizer(db, &Authorizer::callback, this); }

int Authorizer::callback(void* self, int action, const char* a1, const char* a2, const char* a3,
                         const char* a4) {
  auto* a = static_cast<Authorizer*>(self);
  const Decision d = decide(a->mode_, action, a1, a2, a3, a4);
  if (!d.allowed()) {
    a->denial_ = d;
  } else if (action == SQLITE_ALTER_TABLE && a->mode_ != Mode::kInternal) {
    a->altered_ = true;
  }
  return d.rc;
}

}  // namespace pasyn::server
