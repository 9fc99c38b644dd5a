// BACKUP (PROTOCOL.md §5, SECURITY.md): an online copy of the database into a file named by the
// request inside --backup-dir, made on a thread of its own from a read-only connection.
//
// Where it writes, by construction:
//  * the request names a file, not a path: no '/', no NUL, not empty, no leading '.' (so no
//    "..", and no collision with the temporary names); anything else is refused (MISUSE);
//  * the directory is opened once per backup, and every name is resolved relative to that
//    descriptor without following symlinks (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or,
//    where the kernel or a seccomp filter refuses openat2, openat with O_CREAT|O_EXCL|O_NOFOLLOW
//    on a single component, which cannot follow one either);
//  * the copy goes into a temporary file ".NAME.PID.pasyn-tmp" created O_EXCL with the database's
//    mode; SQLite writes it through a VFS that only knows that descriptor (it cannot open any
//    other file: no journal, no temporary files), then the file is fsynced, checked to be still
//    the one at the temporary name, renamed over NAME with renameat (which replaces a symlink
//    at NAME, never follows it) and the directory is fsynced.
//
// Consistency without stopping writes: the source connection opens a read transaction first,
// so every step copies pages of that one WAL snapshot while the writer goes on committing (in
// WAL mode a reader does not block the writer). The copy holds every write committed before
// the backup started, and nothing after.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <pasyn/proto/codec.hpp>

#include "config.hpp"

namespace pasyn::server {

/// Why `name` is not an acceptable BACKUP file name, or nullopt if it is.
std::optional<std::string> invalid_backup_name(std::string_view name);

/// The backup directory of `config`: config.backup_dir, or "backups" beside the database.
std::string backup_directory(const Config& config);
/// Throws StartError if the backup directory is the database's own (checked at start, before
/// anything is created: Server::Impl::check_before_lock).
void refuse_backup_directory_of_database(const Config& config);

/// Runs one BACKUP at a time, each on a thread of its own.
///
/// Thread-safety: start(), cancel(), join() and the progress figures may be called from any
/// thread; `done` callbacks run on the backup's thread.
class BackupRunner {
 public:
  /// Throws StartError(kDatabase) when --backup-dir names the database's own directory.
  explicit BackupRunner(const Config& config);
  ~BackupRunner();  // cancels and joins a running backup
  BackupRunner(const BackupRunner&) = delete;
  BackupRunner& operator=(const BackupRunner&) = delete;

  /// The outcome: a report (`name`, `path`, `pages`, `bytes`, `ms`) or the error.
  using Done =
      std::function<void(bool ok, const proto::Report& report, const proto::ErrorReply& failure)>;

  /// Starts copying the database into `name`. False (nothing started, `done` not called) when a
  /// backup is running already. `done` is called once the backup is over (progress figures back
  /// to -1, start() accepts the next one).
  bool start(std::string name, Done done);
  /// Stops the running backup at its next step (its temporary file is removed; `done` reports
  /// SHUTTING_DOWN).
  void cancel();
  /// Waits for the running backup, if any, to end.
  void join();

  /// Pages copied and pages in all, of the backup running now; -1 when none runs.
  std::int64_t pages_done() const noexcept { return pages_done_.load(std::memory_order_relaxed); }
  std::int64_t pages_total() const noexcept { return pages_total_.load(std::memory_order_relaxed); }

  /// Pages copied per sqlite3_backup_step.
  static constexpr int kStepPages = 256;

 private:
  void run(const std::string& name, const Done& done);

  const Config& config_;
  // backup_directory(config_) with the symlinks of its path resolved when the daemon started:
  // each backup opens it following none, so one put there later is refused.
  const std::string resolved_dir_;
  std::mutex mu_;
  std::thread thread_;    // GUARDED_BY(mu_)
  bool running_ = false;  // GUARDED_BY(mu_)
  std::atomic<bool> cancel_{false};
  std::atomic<std::int64_t> pages_done_{-1};
  std::atomic<std::int64_t> pages_total_{-1};
};

}  // namespace pasyn::server
