// Small RAII helpers for the writer's own SQLite statements.
#pragma once

#include <sqlite3.h>

#include <memory>

namespace pasyn::server {

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};

/// A prepared statement finalized when it goes out of scope (or is reset), so that no path, not
/// even a constructor that throws half-way, can close the connection with statements left
/// behind (sqlite3_close_v2 would then leave a zombie connection holding its file descriptors
/// and locks). Not thread-safe, like the connection it belongs to.
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

/// True while `db` has a write transaction open on its main database: the batch transaction (or
/// a client's) is still there. SQLite may end it on its own after an error (SQLITE_IOERR,
/// SQLITE_FULL, SQLITE_NOMEM, SQLITE_INTERRUPT in a write, `OR ROLLBACK`; see
/// sqlite3_get_autocommit(3)), and this is the only way to find out.
inline bool in_write_transaction(sqlite3* db) {
  return sqlite3_txn_state(db, nullptr) == SQLITE_TXN_WRITE;
}

/// True when a failed COMMIT (or BEGIN) definitely wrote nothing, so that every request of the
/// transaction may be told it failed. An allow-list: any other code (every SQLITE_IOERR_*, a
/// failed fsync, SQLITE_CORRUPT, SQLITE_NOMEM, SQLITE_CANTOPEN, ...) leaves the outcome
/// unknown, because in WAL mode the commit frame is written before the WAL is synced and before
/// the wal-index is updated, so a COMMIT that fails after its frames reached the file may be
/// brought back by WAL recovery at the next open (and after a failed fsync the kernel may have
/// dropped dirty pages, so later syncs prove nothing). Evidence (SQLite 3.40, see PROTOCOL.md
/// §6.1):
///  * SQLITE_BUSY, SQLITE_LOCKED: the lock was not obtained; the transaction stays open
///    (lang_transaction.html: "If the COMMIT fails with SQLITE_BUSY the transaction remains
///    active").
///  * SQLITE_CONSTRAINT: deferred foreign keys are checked before anything is written, and the
///    transaction stays open.
///  * SQLITE_FULL: the unix VFS returns it when write() fails with ENOSPC or writes short
///    (unixWrite), or when max_page_count is reached before any write; a WAL frame that was not
///    written whole fails its checksum, so recovery ignores it and everything after it.
///  * SQLITE_INTERRUPT: checked between VDBE instructions, so the commit did not start.
inline bool commit_failure_is_definite(int extended_code) {
  switch (extended_code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CONSTRAINT:
    case SQLITE_FULL:
    case SQLITE_INTERRUPT:
      return true;
    default:
      return false;
  }
}

}  // namespace pasyn::server
