// Filesystem helpers of the server: the default socket path, the lock file, the socket path check.
#pragma once

#include <stdexcept>
#include <string>

namespace pasyn::server {

/// Raised when the server cannot start; `what()` is meant for the operator.
class StartError : public std::runtime_error {
 public:
  enum class Kind { kDatabase, kLocked, kSocket };
  StartError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

/// See pasyn::default_socket_path. Throws StartError(kSocket) if the fallback directory is
/// unsafe (see private_socket_dir).
std::string default_socket_path(const std::string& database_path);

/// "/tmp/pasyn-<euid>", the directory of the fallback socket paths: created with mode 0700 if
/// missing, and refused (StartError(kSocket)) unless it is a directory (not a symlink) owned by
/// the effective uid with no permission for group or others, so that no other user can plant
/// or replace a socket there.
std::string private_socket_dir();

/// `path` made absolute with its symlinks resolved as far as its components exist, a last one
/// that is a dangling symlink too (followed to what it names, which may be made later); `path`
/// normalized where that fails.
std::string resolve_symlinks(const std::string& path);

/// Throws StartError(kDatabase) when `database_path` is missing or empty while its WAL holds
/// commits: SQLite would take the file for a new database and delete the WAL.
void refuse_wal_without_database(const std::string& database_path);

/// An exclusive flock on "<database>-pasyn.lock", held for the object's lifetime, so that two
/// servers never serve one database. The file holds the owner's pid, for the error message.
class LockFile {
 public:
  /// Throws StartError(kLocked) naming the other owner's pid when the lock is held.
  /// `lock_database_file`: also flock() the database file itself (Config::lock_database_file).
  LockFile(const std::string& database_path, bool lock_database_file);
  ~LockFile();
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  // The database file itself, flock()ed: a second path to the same file that is neither a
  // symlink nor a hard link (the file renamed while served, a bind mount) finds it too. Closed
  // only after SQLite has closed the database: closing a descriptor of a file drops every POSIX
  // lock this process holds on it, SQLite's included.
  int database_fd_ = -1;
};

/// Makes `socket_path` free to bind: nothing there, or a stale socket (one nobody accepts on),
/// which is removed. Throws StartError(kSocket) if a server answers there, if the path is not a
/// socket (it is never removed then), or if the path is too long for a Unix socket address.
void free_socket_path(const std::string& socket_path);

}  // namespace pasyn::server
