#include "backup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "log.hpp"
#include "paths.hpp"

namespace pasyn::server {
namespace {

using Clock = std::chrono::steady_clock;

// ---- A VFS that only knows one descriptor ------------------------------------------------------
//
// sqlite3_open_v2("<fd>", ..., kFdVfs) opens the file behind descriptor <fd> (duplicated; the
// caller keeps its own). Any other file SQLite may want (journal, WAL, temporary files) cannot be
// opened, and nothing is ever deleted: SQLite can write to that one file and nowhere else. The
// destination runs with journal_mode=OFF (the temporary file is thrown away on failure), so no
// journal is needed.

constexpr const char* kFdVfs = "pasyn-backup-fd";

struct FdFile {
  sqlite3_file base;
  int fd;
};

int fd_of(sqlite3_file* f) { return reinterpret_cast<FdFile*>(f)->fd; }

int fd_close(sqlite3_file* f) {
  ::close(fd_of(f));
  return SQLITE_OK;
}

int fd_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 offset) {
  auto* out = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < static_cast<std::size_t>(n)) {
    const ssize_t r = ::pread(fd_of(f), out + got, static_cast<std::size_t>(n) - got,
                              static_cast<off_t>(offset) + static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return SQLITE_IOERR_READ;
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  if (got < static_cast<std::size_t>(n)) {
    std::memset(out + got, 0, static_cast<std::size_t>(n) - got);  // SQLite requires the zeros
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

int fd_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 offset) {
  const auto* in = static_cast<const unsigned char*>(buf);
  // The copy is a rollback-journal database (file format bytes 18/19 = 1), a single
  // self-contained file: sqlite3_backup copies page 1 with the source's WAL marks, and a copy
  // in WAL mode grows -wal and -shm files beside it as soon as anyone opens it. Whoever uses the
  // backup may switch it to WAL.
  std::vector<unsigned char> first_page;
  if (offset == 0 && n >= 20) {
    first_page.assign(in, in + n);
    first_page[18] = first_page[19] = 1;
    in = first_page.data();
  }
  std::size_t put = 0;
  while (put < static_cast<std::size_t>(n)) {
    const ssize_t w = ::pwrite(fd_of(f), in + put, static_cast<std::size_t>(n) - put,
                               static_cast<off_t>(offset) + static_cast<off_t>(put));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return errno == ENOSPC ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    put += static_cast<std::size_t>(w);
  }
  return SQLITE_OK;
}

int fd_truncate(sqlite3_file* f, sqlite3_int64 size) {
  return ::ftruncate(fd_of(f), static_cast<off_t>(size)) == 0 ? SQLITE_OK : SQLITE_IOERR_TRUNCATE;
}

int fd_sync(sqlite3_file* f, int) {
  return ::fdatasync(fd_of(f)) == 0 ? SQLITE_OK : SQLITE_IOERR_FSYNC;
}

int fd_file_size(sqlite3_file* f, sqlite3_int64* size) {
  struct stat st {};
  if (::fstat(fd_of(f), &st) != 0) return SQLITE_IOERR_FSTAT;
  *size = st.st_size;
  return SQLITE_OK;
}

// The file is ours alone (created O_EXCL under a name no request can give): no locks needed.
int fd_lock(sqlite3_file*, int) { return SQLITE_OK; }
int fd_check_reserved(sqlite3_file*, int* out) {
  *out = 0;
  return SQLITE_OK;
}
int fd_file_control(sqlite3_file*, int, void*) { return SQLITE_NOTFOUND; }
int fd_sector_size(sqlite3_file*) { return 4096; }
int fd_device_characteristics(sqlite3_file*) { return 0; }

const sqlite3_io_methods kFdMethods = {
    1,  // iVersion: no shared memory, no mmap
    fd_close,
    fd_read,
    fd_write,
    fd_truncate,
    fd_sync,
    fd_file_size,
    fd_lock,
    fd_lock,
    fd_check_reserved,
    fd_file_control,
    fd_sector_size,
    fd_device_characteristics,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

sqlite3_vfs* base_vfs() { return sqlite3_vfs_find(nullptr); }

int vfs_open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  file->pMethods = nullptr;
  if (!name || !(flags & SQLITE_OPEN_MAIN_DB)) return SQLITE_CANTOPEN;  // journals, temp files
  char* end = nullptr;
  const long fd = std::strtol(name, &end, 10);
  if (end == name || *end != '\0' || fd < 0) return SQLITE_CANTOPEN;
  const int own = ::fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
  if (own < 0) return SQLITE_CANTOPEN;
  reinterpret_cast<FdFile*>(file)->fd = own;
  file->pMethods = &kFdMethods;
  if (out_flags) *out_flags = flags;
  return SQLITE_OK;
}
int vfs_delete(sqlite3_vfs*, const char*, int) { return SQLITE_OK; }  // nothing to delete
int vfs_access(sqlite3_vfs*, const char*, int, int* out) {
  *out = 0;  // no journal, no WAL
  return SQLITE_OK;
}
int vfs_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  sqlite3_snprintf(n, out, "%s", name);
  return SQLITE_OK;
}
int vfs_randomness(sqlite3_vfs*, int n, char* out) {
  return base_vfs()->xRandomness(base_vfs(), n, out);
}
int vfs_sleep(sqlite3_vfs*, int us) { return base_vfs()->xSleep(base_vfs(), us); }
int vfs_current_time(sqlite3_vfs*, double* now) {
  return base_vfs()->xCurrentTime(base_vfs(), now);
}

void register_fd_vfs() {
  static std::once_flag once;
  std::call_once(once, [] {
    static sqlite3_vfs vfs{};
    vfs.iVersion = 1;
    vfs.szOsFile = sizeof(FdFile);
    vfs.mxPathname = 64;
    vfs.zName = kFdVfs;
    vfs.xOpen = vfs_open;
    vfs.xDelete = vfs_delete;
    vfs.xAccess = vfs_access;
    vfs.xFullPathname = vfs_full_pathname;
    vfs.xRandomness = vfs_randomness;
    vfs.xSleep = vfs_sleep;
    vfs.xCurrentTime = vfs_current_time;
    sqlite3_vfs_register(&vfs, 0);
  });
}

// ---- Files in the backup directory -------------------------------------------------------------

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// Creates `name` (one component) in `dir` without following any symlink: openat2 where the
/// kernel has it (Linux >= 5.6) and no seccomp filter refuses it, else openat with
/// O_CREAT|O_EXCL|O_NOFOLLOW, which follows no symlink for a single component either.
int create_beneath(int dir, const char* name, mode_t mode) {
  const int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags);
  how.mode = mode;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const long fd = ::syscall(SYS_openat2, dir, name, &how, sizeof how);
  if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return static_cast<int>(fd);
  return ::openat(dir, name, flags, mode);
}

/// Opens the directory at `path` (absolute) one component at a time, each with O_NOFOLLOW, the
/// ones above it with O_PATH (search permission is all they need), creating the last one (0750,
/// one level) when it is missing. -1 with errno ELOOP when a component is a symlink. Walked by
/// hand rather than with openat2's RESOLVE_NO_SYMLINKS: the same on every kernel.
int open_directory_following_no_symlink(const std::filesystem::path& path) {
  std::vector<std::string> parts;
  for (const auto& part : path.relative_path()) {
    if (!part.empty() && part != ".") parts.push_back(part.string());
  }
  if (parts.empty()) return ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  Fd dir(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dir.fd < 0) return -1;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const bool last = i + 1 == parts.size();
    const char* name = parts[i].c_str();
    if (last && ::mkdirat(dir.fd, name, 0750) != 0 && errno != EEXIST) return -1;
    const int next =
        ::openat(dir.fd, name, (last ? O_RDONLY : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      const int error = errno;
      struct stat entry {};
      const bool link = (error == ENOTDIR || error == ELOOP) &&
                        ::fstatat(dir.fd, name, &entry, AT_SYMLINK_NOFOLLOW) == 0 &&
                        S_ISLNK(entry.st_mode);  // O_NOFOLLOW|O_DIRECTORY on a link: ENOTDIR
      errno = link ? ELOOP : error;
      return -1;
    }
    if (last) return next;
    ::close(dir.fd);
    dir.fd = next;
  }
  return -1;  // not reached
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

struct BackupError {
  proto::ErrorReply reply;
};

BackupError pasyn_error(proto::PasynCode code, std::string message) {
  return {{proto::ErrorDomain::kPasyn, static_cast<int>(code), static_cast<int>(code),
           std::move(message)}};
}

BackupError sqlite_error(sqlite3* db, int rc, const std::string& what) {
  const int ext = db ? sqlite3_extended_errcode(db) : rc;
  return {{proto::ErrorDomain::kSqlite, ext & 0xff, ext,
           what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc))}};
}

// Removes the temporary files `.NAME.PID.pasyn-tmp` in `dir_fd` that no backup is writing:
// those of backups to NAME whose daemon died mid-copy (SIGKILL, power loss). Under systemd a PID
// rarely comes back, so the current PID's name alone never matched them (probe22). A backup
// holds an flock on its temporary file while it writes it (BackupRunner::run), so a file whose
// lock can be taken is nobody's, whatever its PID says and in whatever PID namespace its daemon
// ran (review18: a live daemon in another container looks dead to kill(2)). The entry is opened
// without following a symlink; unlinkat removes entries, never what a symlink points to.
void remove_dead_leftovers(int dir_fd, const std::string& name, const std::string& ours) {
  const int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return;
  }
  const std::string prefix = "." + name + ".";
  constexpr std::string_view kSuffix = ".pasyn-tmp";
  std::vector<std::string> candidates;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view entry = e->d_name;
    if (entry == ours || entry.size() <= prefix.size() + kSuffix.size() ||
        !entry.starts_with(prefix) || !entry.ends_with(kSuffix)) {
      continue;
    }
    const auto digits = entry.substr(prefix.size(), entry.size() - prefix.size() - kSuffix.size());
    if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      candidates.emplace_back(entry);
    }
  }
  ::closedir(d);
  for (const auto& f : candidates) {
    const int leftover =
        ::openat(dir_fd, f.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (leftover < 0) continue;
    struct stat st {};
    if (::fstat(leftover, &st) == 0 && S_ISREG(st.st_mode) &&
        ::flock(leftover, LOCK_EX | LOCK_NB) == 0 && ::unlinkat(dir_fd, f.c_str(), 0) == 0) {
      log().info("removed {}, left by a backup whose daemon died", f);
    }
    ::close(leftover);
  }
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

std::string database_directory(const Config& config) {
  return std::filesystem::path(config.database_path).parent_path().string();
}

}  // namespace

std::optional<std::string> invalid_backup_name(std::string_view name) {
  if (name.empty()) return "BACKUP needs a file name (written into --backup-dir)";
  if (name.find('/') != std::string_view::npos) {
    return "the BACKUP name '" + std::string(name) +
           "' contains '/': give a file name; the file is written into --backup-dir";
  }
  if (name.find('\0') != std::string_view::npos) return "the BACKUP name contains a NUL byte";
  if (name.front() == '.') {
    return "the BACKUP name '" + std::string(name) + "' starts with '.' (reserved)";
  }
  if (name.size() > 200) return "the BACKUP name is longer than 200 bytes";
  return std::nullopt;
}

std::string backup_directory(const Config& config) {
  if (!config.backup_dir.empty()) return config.backup_dir;
  return (std::filesystem::path(database_directory(config)) / "backups").string();
}

void refuse_backup_directory_of_database(const Config& config) {
  struct stat dir {
  }, db_dir{};
  if (::stat(backup_directory(config).c_str(), &dir) == 0 &&
      ::stat(database_directory(config).c_str(), &db_dir) == 0 && same_file(dir, db_dir)) {
    throw StartError(StartError::Kind::kDatabase,
                     "--backup-dir " + backup_directory(config) +
                         " is the database's own directory: backups must go elsewhere");
  }
}

BackupRunner::BackupRunner(const Config& config)
    : config_(config), resolved_dir_(resolve_symlinks(backup_directory(config))) {
  register_fd_vfs();
}

BackupRunner::~BackupRunner() {
  cancel();
  join();
}

bool BackupRunner::start(std::string name, Done done) {
  std::thread finished;
  {
    std::lock_guard lk(mu_);
    if (running_) return false;
    running_ = true;
    cancel_ = false;
    pages_done_ = 0;
    pages_total_ = 0;
    finished = std::move(thread_);
    thread_ =
        std::thread([this, name = std::move(name), done = std::move(done)] { run(name, done); });
  }
  if (finished.joinable()) finished.join();  // the previous backup's thread, already done
  return true;
}

void BackupRunner::cancel() { cancel_ = true; }

void BackupRunner::join() {
  std::thread t;
  {
    std::lock_guard lk(mu_);
    t = std::move(thread_);
  }
  if (t.joinable()) t.join();
}

void BackupRunner::run(const std::string& name, const Done& done) {
  const auto started = Clock::now();
  const std::string dir_path = backup_directory(config_);
  // Unique to this process: daemons of other instances may share the directory.
  const std::string tmp = "." + name + "." + std::to_string(::getpid()) + ".pasyn-tmp";
  Fd dir, file;
  sqlite3* src = nullptr;
  sqlite3* dest = nullptr;
  bool created = false;
  std::int64_t pages = 0;

  const auto attempt = [&]() -> std::optional<BackupError> {
    if (auto why = invalid_backup_name(name)) {
      return pasyn_error(proto::PasynCode::kMisuse, *why);
    }
    // The directory: created 0750 if missing (one level; its parent must exist), and opened
    // through its path as resolved at start, following no symlink: one that is there now was
    // put there since, by someone who could write where the backups go (probe40: a backups/
    // swapped for a symlink redirected every later copy). A --backup-dir symlink retargeted
    // after start takes effect at the next start.
    const auto symlink_error = [&] {
      return pasyn_error(proto::PasynCode::kPermission,
                         "the backup directory " + dir_path + " (" + resolved_dir_ +
                             " when the daemon started) is now reached through a symlink: a "
                             "backup follows none; restore the directory or restart the daemon");
    };
    dir.fd = open_directory_following_no_symlink(resolved_dir_);
    if (dir.fd < 0) {
      if (errno == ELOOP) return symlink_error();
      return pasyn_error(proto::PasynCode::kMisuse,
                         errno_text("cannot create or open the backup directory " + dir_path));
    }
    struct stat dir_st {
    }, db_dir{}, db{};
    if (::fstat(dir.fd, &dir_st) != 0 || ::stat(config_.database_path.c_str(), &db) != 0) {
      return pasyn_error(proto::PasynCode::kMisuse, errno_text("stat"));
    }
    if (::stat(database_directory(config_).c_str(), &db_dir) == 0 && same_file(dir_st, db_dir)) {
      return pasyn_error(proto::PasynCode::kPermission,
                         "the backup directory " + dir_path +
                             " is the database's own directory; set --backup-dir elsewhere");
    }
    // The temporary file, with the database's permissions (not SQLite's 0644 & ~umask). A
    // leftover of a backup that died, or anything planted there, is removed first: unlinkat
    // removes the entry itself, even a symlink, and never what it points to.
    const mode_t mode = db.st_mode & 0666;
    file.fd = create_beneath(dir.fd, tmp.c_str(), mode);
    if (file.fd < 0 && errno == EEXIST && ::unlinkat(dir.fd, tmp.c_str(), 0) == 0) {
      file.fd = create_beneath(dir.fd, tmp.c_str(), mode);
    }
    if (file.fd < 0) {
      return pasyn_error(proto::PasynCode::kMisuse,
                         errno_text("cannot create " + dir_path + "/" + tmp));
    }
    created = true;
    // Held until the file is renamed or removed: a leftover whose lock can be taken is nobody's
    // (remove_dead_leftovers). A new file's lock is free: this never waits. Where the file
    // system has no locks (NFS without a lock manager), the backup goes on and sweeps nothing.
    if (::flock(file.fd, LOCK_EX) == 0) {
      // Still the entry at the name: another daemon's sweep may have taken it between the
      // create and the lock (review19); then fail now rather than after the whole copy.
      struct stat ours {
      }, named{};
      if (::fstat(file.fd, &ours) != 0 ||
          ::fstatat(dir.fd, tmp.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
          !same_file(ours, named)) {
        created = false;
        return pasyn_error(proto::PasynCode::kMisuse,
                           "the temporary file " + dir_path + "/" + tmp +
                               " was removed as it was created; nothing was published");
      }
      remove_dead_leftovers(dir.fd, name, tmp);
    }
    if (::fchmod(file.fd, mode) != 0)
      return pasyn_error(proto::PasynCode::kMisuse,
                         errno_text("fchmod of " + dir_path + "/" + tmp));

    // The source: a read-only connection whose read transaction pins one WAL snapshot for the
    // whole copy (a step does not release a transaction it did not open), so writes between
    // steps neither restart the copy nor appear in it.
    int rc = sqlite3_open_v2(config_.database_path.c_str(), &src,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc == SQLITE_OK)
      rc = sqlite3_busy_timeout(src, static_cast<int>(config_.busy_timeout.count()));
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(src, "BEGIN; PRAGMA schema_version;", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return sqlite_error(src, rc, "backup: cannot read the database");

    const std::string fd_name = std::to_string(file.fd);
    rc = sqlite3_open_v2(fd_name.c_str(), &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                         kFdVfs);
    if (rc == SQLITE_OK) {
      rc = sqlite3_exec(dest, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;", nullptr, nullptr,
                        nullptr);
    }
    if (rc != SQLITE_OK) return sqlite_error(dest, rc, "backup: cannot open " + tmp);
    sqlite3_backup* b = sqlite3_backup_init(dest, "main", src, "main");
    if (!b) return sqlite_error(dest, SQLITE_ERROR, "backup: cannot start");
    do {
      rc = sqlite3_backup_step(b, kStepPages);
      pages = sqlite3_backup_pagecount(b);
      pages_total_ = pages;
      pages_done_ = pages - sqlite3_backup_remaining(b);
    } while ((rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && !cancel_);
    sqlite3_backup_finish(b);
    if (cancel_ && rc != SQLITE_DONE) {
      return pasyn_error(proto::PasynCode::kShuttingDown,
                         "pasyn-writerd is shutting down; the backup was abandoned");
    }
    if (rc != SQLITE_DONE) return sqlite_error(dest, rc, "backup to " + tmp + " failed");
    sqlite3_close_v2(dest);
    dest = nullptr;
    if (::fsync(file.fd) != 0) {
      return pasyn_error(proto::PasynCode::kMisuse, errno_text("fsync of " + dir_path + "/" + tmp +
                                                               " (nothing was published)"));
    }
    // The drain timeout may have passed during that fsync (a large copy's takes a while): then
    // nothing is published, as PROTOCOL.md says (probe20 saw one published 30-180 ms after).
    if (cancel_) {
      return pasyn_error(proto::PasynCode::kShuttingDown,
                         "pasyn-writerd is shutting down; the backup was abandoned");
    }
    // The name must still be our file: never publish what someone else put there.
    struct stat ours {
    }, named{};
    if (::fstat(file.fd, &ours) != 0 ||
        ::fstatat(dir.fd, tmp.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
        !same_file(ours, named)) {
      created = false;  // not ours to remove
      return pasyn_error(proto::PasynCode::kMisuse,
                         "the temporary file " + dir_path + "/" + tmp +
                             " was replaced during the backup; nothing was published");
    }
    if (::renameat(dir.fd, tmp.c_str(), dir.fd, name.c_str()) != 0) {
      return pasyn_error(proto::PasynCode::kMisuse,
                         errno_text("cannot rename " + tmp + " to " + name + " in " + dir_path));
    }
    created = false;
    if (::fsync(dir.fd) != 0) {  // NAME is the new copy now, but maybe not after a crash
      return pasyn_error(proto::PasynCode::kMisuse,
                         errno_text(name + " in " + dir_path +
                                    " is the new copy, but the fsync of the directory that makes "
                                    "the rename durable failed"));
    }
    return std::nullopt;
  };

  const auto error = attempt();
  if (dest) sqlite3_close_v2(dest);
  if (src) sqlite3_close_v2(src);
  if (created) ::unlinkat(dir.fd, tmp.c_str(), 0);
  proto::Report report;
  if (!error) {
    struct stat out {};
    ::fstat(file.fd, &out);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
    report = {{"name", name},
              {"path", (std::filesystem::path(dir_path) / name).string()},
              {"pages", pages},
              {"bytes", static_cast<std::int64_t>(out.st_size)},
              {"ms", static_cast<std::int64_t>(ms)}};
    log().info("backup of {} pages written to {}/{} in {} ms", pages, dir_path, name, ms);
  } else {
    log().warn("backup to {}/{} failed: {}", dir_path, name, error->reply.message);
  }
  // Over before the reply goes out: a client that got it sees STATS without this backup, and
  // may start the next one.
  pages_done_ = -1;
  pages_total_ = -1;
  {
    std::lock_guard lk(mu_);
    running_ = false;
  }
  done(!error, report, error ? error->reply : proto::ErrorReply{});
}

}  // namespace pasyn::server
