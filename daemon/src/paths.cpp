// Default socket path, lock file and stale-socket handling.
#include "paths.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <pasyn/proto/unix_socket.hpp>

#include "log.hpp"

namespace pasyn::server {
namespace {

constexpr std::size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

std::string errno_text(int err) { return std::strerror(err); }

std::string absolute_path(const std::string& path) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  if (ec) return path;
  return abs.lexically_normal().string();
}

// SPEC §4: a default socket path is never in a directory where another user could bind it
// first. A database in /tmp (or any directory writable by all, sticky or not) would put it
// there; a directory that cannot be looked at is judged by the start that then fails.
bool world_writable_directory_of(const std::string& abs) {
  const std::string dir = std::filesystem::path(abs).parent_path().string();
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && (st.st_mode & S_IWOTH) != 0;
}

}  // namespace

std::string private_socket_dir() {
  const auto uid = ::geteuid();
  const std::string dir = "/tmp/pasyn-" + std::to_string(uid);
  if (::mkdir(dir.c_str(), 0700) == 0) {
    ::chmod(dir.c_str(), 0700);  // whatever the umask left
  } else if (errno != EEXIST) {
    throw StartError(StartError::Kind::kSocket,
                     "cannot create the socket directory " + dir + ": " + errno_text(errno));
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {  // lstat: a symlink planted there is refused below
    throw StartError(StartError::Kind::kSocket,
                     "cannot inspect the socket directory " + dir + ": " + errno_text(errno));
  }
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  if (!S_ISDIR(st.st_mode) || st.st_uid != uid || (st.st_mode & 077) != 0) {
    throw StartError(StartError::Kind::kSocket,
                     "refusing the socket directory " + dir +
                         ": it must be a directory owned by uid " + std::to_string(uid) +
                         " with mode 0700, but it is " +
                         (S_ISDIR(st.st_mode) ? "a directory" : "not a directory") +
                         " owned by uid " + std::to_string(st.st_uid) + " with mode " + mode);
  }
  return dir;
}

std::string default_socket_path(const std::string& database_path) {
  std::string abs = absolute_path(database_path);
  std::string beside = abs + "-pasyn.sock";
  if (beside.size() <= kMaxSocketPath && !world_writable_directory_of(abs)) return beside;
  // 64-bit FNV-1a of the absolute path: stable across processes and runs.
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : abs) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char name[32];
  std::snprintf(name, sizeof name, "/%016llx.sock", static_cast<unsigned long long>(h));
  return private_socket_dir() + name;
}

namespace {

// The database's path with every symlink resolved (of its directory, if the file is not there
// yet), so that two paths to one file name one lock file.
std::string canonical_database_path(const std::string& database_path) {
  std::error_code ec;
  const auto canonical = std::filesystem::weakly_canonical(database_path, ec);
  return ec || canonical.empty() ? database_path : canonical.string();
}

// SQLite names the WAL and the -shm after the path it was given, so a daemon (or any writer)
// reaching the file through a second hard link would keep a WAL of its own beside the first
// one's, and checkpoints from both would corrupt the database. No lock file can stand for both
// names; a database with more than one link is refused instead.
void refuse_hard_links(const std::string& database_path) {
  struct stat st {};
  if (::stat(database_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink <= 1) return;
  throw StartError(StartError::Kind::kDatabase,
                   "database " + database_path + " has " + std::to_string(st.st_nlink) +
                       " hard links; SQLite keeps one WAL per file name, so a writer through "
                       "another link would corrupt it. Serve a copy, or remove the other links");
}

}  // namespace

LockFile::LockFile(const std::string& database_path, bool lock_database_file)
    : path_(canonical_database_path(database_path) + "-pasyn.lock") {
  refuse_hard_links(database_path);
  // O_NOFOLLOW: a symlink planted at the lock file's path (in a directory others may write) must
  // not make the daemon truncate the file it points to.
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) {
    throw StartError(StartError::Kind::kDatabase,
                     "cannot open lock file " + path_ + ": " + errno_text(errno));
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    [[maybe_unused]] auto n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      std::string owner = pid[0] ? std::string(" (pid ") + std::strtok(pid, "\n") + ")" : "";
      throw StartError(StartError::Kind::kLocked, "database " + database_path +
                                                      " is already served by another pasyn writer" +
                                                      owner + "; lock file " + path_);
    }
    throw StartError(StartError::Kind::kDatabase, "cannot lock " + path_ + ": " + errno_text(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    log().warn("cannot record pid in lock file {}: {}", path_, errno_text(errno));
  }
  // Before SQLite opens it (created here if missing, as SQLite would: an empty file is a new
  // database). flock() locks are apart from SQLite's fcntl() locks.
  if (!lock_database_file) return;
  database_fd_ = ::open(database_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  if (database_fd_ < 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw StartError(StartError::Kind::kDatabase,
                     "cannot open database " + database_path + ": " + errno_text(err));
  }
  if (::flock(database_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(database_fd_);
    ::close(fd_);
    database_fd_ = fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw StartError(StartError::Kind::kLocked,
                       "database " + database_path +
                           " is already served by another pasyn writer, through another path to "
                           "the same file (renamed while served, or bind-mounted)");
    }
    throw StartError(StartError::Kind::kDatabase,
                     "cannot lock database " + database_path + ": " + errno_text(err));
  }
}

// (probe25: the database file deleted under a running daemon, then a restart: the acknowledged
// rows still in the WAL were gone.) Checked before the lock file's open creates the database.
std::string resolve_symlinks(const std::string& path) {
  std::error_code ec;
  std::filesystem::path resolved = std::filesystem::absolute(path, ec);
  if (ec) resolved = path;
  for (int hops = 0; hops < 40 && std::filesystem::is_symlink(resolved, ec); ++hops) {
    const auto target = std::filesystem::read_symlink(resolved, ec);
    if (ec) break;
    resolved = (resolved.parent_path() / target).lexically_normal();  // an absolute target wins
  }
  const auto canonical = std::filesystem::weakly_canonical(resolved, ec);
  return (ec || canonical.empty() ? resolved.lexically_normal() : canonical).string();
}

void refuse_wal_without_database(const std::string& database_path) {
  // SQLite names the WAL after the path with its symlinks resolved, a dangling one too (its
  // target is the file it creates), so that is where to look.
  const std::string resolved = resolve_symlinks(database_path);
  struct stat db {};
  struct stat wal {};
  const bool no_database =
      ::stat(resolved.c_str(), &db) != 0 ? errno == ENOENT : S_ISREG(db.st_mode) && db.st_size == 0;
  const std::string wal_path = resolved + "-wal";
  if (no_database && ::stat(wal_path.c_str(), &wal) == 0 && wal.st_size > 0) {
    throw StartError(StartError::Kind::kDatabase,
                     "cannot open database " + database_path +
                         ": it is missing or empty, but its WAL " + wal_path + " holds " +
                         std::to_string(wal.st_size) +
                         " bytes of commits, which SQLite would delete; restore the database "
                         "file, or move the WAL away to start a new database");
  }
}

LockFile::~LockFile() {
  // The file stays: unlinking a lock file races with the next owner opening it.
  if (database_fd_ >= 0) ::close(database_fd_);
  if (fd_ >= 0) ::close(fd_);
}

void free_socket_path(const std::string& socket_path) {
  if (socket_path.empty()) throw StartError(StartError::Kind::kSocket, "empty socket path");
  if (socket_path.size() > kMaxSocketPath) {
    throw StartError(
        StartError::Kind::kSocket,
        "socket path is longer than " + std::to_string(kMaxSocketPath) + " bytes: " + socket_path);
  }
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw StartError(StartError::Kind::kSocket,
                     "cannot inspect socket path " + socket_path + ": " + errno_text(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    throw StartError(StartError::Kind::kSocket,
                     "refusing to replace " + socket_path + ": it exists and is not a socket");
  }
  const int fd = proto::connect_unix(socket_path);
  const int err = errno;
  if (fd >= 0) {
    ::close(fd);
    throw StartError(StartError::Kind::kSocket,
                     "socket " + socket_path + " is in use by a running server");
  }
  if (err != ECONNREFUSED) {
    throw StartError(StartError::Kind::kSocket,
                     "cannot tell whether " + socket_path + " is stale: " + errno_text(err));
  }
  if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
    throw StartError(StartError::Kind::kSocket,
                     "cannot remove stale socket " + socket_path + ": " + errno_text(errno));
  }
  log().info("removed stale socket {}", socket_path);
}

}  // namespace pasyn::server
