// Readers without the daemon: the files a read-only reader of a WAL database needs.
#pragma once

#include <string>

#include "paths.hpp"  // StartError

namespace pasyn::server {

/// Makes `database`, if it exists, readable by read-only connections that may not create files
/// in its directory (SQLite wal.html, "Read-Only Databases": a read-only WAL reader needs the
/// -wal and -shm files to exist). Opens it through SQLite with SQLITE_FCNTL_PERSIST_WAL, starts
/// and ends one read transaction (which creates -wal and -shm with the caller's umask) and closes
/// it, leaving both files in place. It never checkpoints, not even at close (where SQLite would,
/// as the last connection): that is the daemon's job, or with --checkpoint-mode external another
/// program's (Litestream's). Does nothing if `database` does not exist. Safe while a writer has
/// the database open. Throws StartError(kDatabase) on failure.
///
/// Run by pasyn-writerd@.socket before its daemon ever starts (`pasyn-writerd --prepare-readers`),
/// so that readers in the group can read a database the daemon has not opened since boot; the
/// writer itself keeps the files with SQLITE_FCNTL_PERSIST_WAL (writer.cpp).
void prepare_for_readers(const std::string& database);

}  // namespace pasyn::server
