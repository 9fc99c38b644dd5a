// See readers.hpp.
#include "readers.hpp"

#include <sqlite3.h>

#include <filesystem>

namespace pasyn::server {

void prepare_for_readers(const std::string& database) {
  std::error_code ec;
  if (!std::filesystem::exists(database, ec)) return;  // nothing to read yet
  sqlite3* db = nullptr;
  // No SQLITE_OPEN_CREATE: this never creates a database, only the files next to one.
  const int rc =
      sqlite3_open_v2(database.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto fail = [&](const std::string& what) {
    std::string msg = "cannot prepare " + database + " for readers: " + what;
    if (db) msg += std::string(" (") + sqlite3_errmsg(db) + ")";
    sqlite3_close_v2(db);
    throw StartError(StartError::Kind::kDatabase, msg);
  };
  if (rc != SQLITE_OK) fail(sqlite3_errstr(rc));
  sqlite3_busy_timeout(db, 5000);
  int persist_wal = 1;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal) != SQLITE_OK) {
    fail("SQLITE_FCNTL_PERSIST_WAL");
  }
  // As the last connection, SQLite would checkpoint at close: the WAL is the daemon's or
  // (--checkpoint-mode external) Litestream's to checkpoint, never this.
  int no_checkpoint = 0;
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &no_checkpoint);
  if (no_checkpoint != 1) fail("SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE");
  // A read transaction on a WAL database opens (creates) -wal and -shm; a database in another
  // journal mode needs neither, and is left as it is (the daemon switches it to WAL).
  if (sqlite3_exec(db, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    fail("cannot read it");
  }
  if (sqlite3_close_v2(db) != SQLITE_OK) throw StartError(StartError::Kind::kDatabase, "close");
}

}  // namespace pasyn::server
