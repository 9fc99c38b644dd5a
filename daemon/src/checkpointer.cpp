// The writer's checkpoints: SQLite's passive auto-checkpoint (the WAL hook), the bounded
// TRUNCATE past --wal-limit, CHECKPOINT requests, and the checkpoint at close; and the check
// that the database file and its WAL are still the files at their paths (check_files_in_place,
// save_open_wal). Runs on the writer thread only. See writer.hpp.
//
// --checkpoint-mode external (Config::CheckpointMode): another program checkpoints, typically
// Litestream, which keeps a read transaction open so that nobody else can reset the WAL before it
// has copied it, and checkpoints itself (PASSIVE, RESTART past its max-checkpoint-page-count).
// The writer then runs none on its own: not the passive one, not the TRUNCATE past --wal-limit
// (which would wait for Litestream's read transaction on every try, pausing writes: one writer's
// throughput fell to 0.02x), not the one at close. An admin's explicit CHECKPOINT still runs:
// asked for, it is the operator's call (PASSIVE is harmless beside Litestream; a TRUNCATE or
// RESTART waits for its read transaction, and one that resets the WAL makes it start a new
// generation).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "log.hpp"
#include "writer.hpp"

namespace pasyn::server {
namespace {

// WAL frames from which each commit runs a passive checkpoint (SQLite's default).
constexpr int kAutoCheckpointFrames = 1000;
// How often check_files_in_place() looks, at most (after a commit).
constexpr auto kFilesCheckEvery = std::chrono::milliseconds(10);
// A TRUNCATE checkpoint past --wal-limit (see bound_wal) first waits this long for readers...
constexpr std::chrono::milliseconds kTruncateWait{100};
// ...doubling after each failed try up to this (or --busy-timeout if shorter): the longest
// pause of writes that one try may cause.
constexpr std::chrono::milliseconds kTruncateWaitMax{1000};
// How often the checkpoint looks again whether the readers it waits for are done...
constexpr std::chrono::milliseconds kTruncatePoll{1};
// ...and how long one call of the checkpoint waits before a new call looks at the readers afresh
// (see bound_wal).
constexpr std::chrono::milliseconds kTruncateCall{10};
// After this many failed tries at the longest wait, writes go on kTruncateBackoff before the next.
constexpr int kTriesAtLongest = 3;
constexpr std::chrono::seconds kTruncateBackoff{60};
// After a try that failed on the disk (full, an I/O error), not on readers: writes go on this
// long before the next (a failing checkpoint copies pages before it fails), doubling after each
// failure up to kTruncateBackoff.
constexpr std::chrono::seconds kTruncateErrorBackoff{1};

// --checkpoint-mode external (yield_to_checkpointer): from this many WAL frames on (Litestream's
// default min-checkpoint-page-count, from which it checkpoints)...
constexpr int kYieldFrames = 1000;
// ...the writer leaves the write lock free this long between two batches: longer than the
// longest sleep (100 ms) of SQLite's default busy handler, so a program waiting in it for the
// lock gets it...
constexpr std::chrono::milliseconds kYieldPause{110};
// ...or until this long after that program committed (it may take the lock once more at once:
// Litestream does after a checkpoint that reset the WAL)...
constexpr std::chrono::milliseconds kYieldGrace{10};
// ...looking every kYieldPoll; at most once every kYieldEvery after the last pause, so that a
// program waiting 1 s (Litestream's busy timeout) always sees one whole pause. It costs writers
// at most 110 ms in 910 (12 %), and only while the WAL is that large.
constexpr std::chrono::milliseconds kYieldPoll{1};
constexpr std::chrono::milliseconds kYieldEvery{800};

}  // namespace

int Writer::on_wal_commit(void* self, sqlite3*, const char*, int frames) {
  // Only counts: the checkpoints run in maintain_wal(), after the batch's replies went out, not
  // inside the COMMIT that the clients wait for (SQLite's own auto-checkpoint, which this hook
  // replaces, runs here).
  auto* w = static_cast<Writer*>(self);
  if (frames < w->wal_frames_) w->wal_restarted_ = true;  // someone's checkpoint reset the WAL
  w->wal_frames_ = frames;
  return SQLITE_OK;
}

void Writer::maintain_wal() {
  if (!config_.checkpoints_internally()) {
    warn_unless_checkpointed();
    yield_to_checkpointer();
    return;
  }
  // What SQLite's auto-checkpoint would do: passive (it never waits, for readers or anyone),
  // once the WAL holds kAutoCheckpointFrames, after every commit that added frames.
  // While it fails on the disk, it is tried again after a wait that doubles from 1 s up to
  // 60 s, not after every commit (each try copies pages on this thread before it fails;
  // review19), as the TRUNCATE past --wal-limit does.
  if (wal_frames_ >= kAutoCheckpointFrames && wal_frames_ != passive_at_frames_ &&
      (!passive_failing_ || Clock::now() >= next_passive_)) {
    passive_at_frames_ = wal_frames_;
    const int rc =
        sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    // A failure (the disk: with --synchronous normal this is the WAL's first fsync) loses
    // nothing, as the WAL keeps every commit and grows until one succeeds, but the operator
    // must hear of it: logged when it starts failing and when it succeeds again.
    const bool failed = rc != SQLITE_OK && rc != SQLITE_BUSY;
    if (failed && !passive_failing_) {
      log().error(
          "a passive checkpoint failed: {} (SQLite code {}); the WAL keeps every commit "
          "and grows until one succeeds",
          sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
    } else if (!failed && passive_failing_) {
      log().info("passive checkpoints succeed again");
    }
    if (failed) {
      next_passive_ = Clock::now() + passive_backoff_;
      passive_backoff_ = std::min<std::chrono::seconds>(2 * passive_backoff_, kTruncateBackoff);
    } else {
      passive_backoff_ = kTruncateErrorBackoff;
    }
    passive_failing_ = failed;
  }
  bound_wal();
}

void Writer::bound_wal() {
  // Past --wal-limit. A passive checkpoint cannot reset a WAL that readers keep using, so this
  // one (TRUNCATE) waits for them: while it holds the write lock no frame is added, new readers
  // read from the database file, and it succeeds once the readers already running are done. (It
  // runs here, between batches, not in the WAL hook: there the writer still holds its own read
  // lock and would wait for itself.)
  //
  // Writes wait while it waits, so each call makes ONE try, bounded, and the run loop calls it
  // once per batch, never back to back: between two tries the next batch runs (the WAL grows by
  // at most one batch per failed try), and stop(), expiries and aborts are seen. The first try
  // waits kTruncateWait (a query is usually shorter); each failure doubles the next try's wait up
  // to kTruncateWaitMax (or --busy-timeout if shorter): no pause of writes is longer than that.
  // After kTriesAtLongest failed tries at the longest wait (a reader keeping one snapshot, a long
  // read transaction), the writer backs off for kTruncateBackoff: the WAL grows past the limit
  // meanwhile, the price of not pausing writes for that reader's whole life.
  if (wal_frames_ < wal_limit_frames_) return;
  const auto now = Clock::now();
  if (now < next_truncate_) return;
  //
  // The try is a loop of checkpoint calls, each waiting at most kTruncateCall, because one call
  // reads each reader's snapshot once, then waits for that reader to let go of it. A reader that
  // queries without pause lets go only for the microseconds between two queries, and its next
  // query takes a snapshot of the newest frame, which the checkpoint need not wait for; a call
  // still waiting for the old one would time out although nothing stands in its way (under a
  // slow build such as TSan's, every time). A new call sees the new snapshot and copies every
  // frame back; from then on readers' new queries read the database file, not the WAL, and the
  // call succeeds once the queries already running end. No frame is added between calls: this
  // thread is the only writer.
  struct Wait {
    Clock::time_point deadline, call_deadline;
  } wait{now + truncate_wait_, {}};
  // SQLite's own busy handler sleeps ever longer between tries and misses the short gaps between
  // a busy reader's queries; this one looks again every kTruncatePoll until the call's deadline.
  sqlite3_busy_handler(
      db_,
      [](void* arg, int) {
        if (Clock::now() >= static_cast<Wait*>(arg)->call_deadline) return 0;
        std::this_thread::sleep_for(kTruncatePoll);
        return 1;
      },
      &wait);
  int rc = SQLITE_BUSY;
  for (auto t = now; (rc & 0xff) == SQLITE_BUSY && t < wait.deadline; t = Clock::now()) {
    wait.call_deadline = std::min(wait.deadline, t + kTruncateCall);
    rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  }
  const bool busy = (rc & 0xff) == SQLITE_BUSY;  // readers (extended codes are on)
  const std::string why = rc == SQLITE_OK || busy ? "" : sqlite3_errmsg(db_);
  const int code = sqlite3_extended_errcode(db_);
  sqlite3_busy_timeout(db_, static_cast<int>(config_.busy_timeout.count()));
  const auto done = Clock::now();
  if (rc == SQLITE_OK) {
    if (truncate_failing_) log().info("checkpoints past --wal-limit succeed again");
    truncate_failing_ = false;
    truncate_error_backoff_ = kTruncateErrorBackoff;
    wal_frames_ = 0;
    truncate_wait_ = kTruncateWait;
    tries_at_longest_ = 0;
    next_truncate_ = {};
    return;
  }
  if (!busy) {
    // The disk, not readers (probe25: a full disk was logged as readers keeping snapshots). The
    // WAL keeps every commit meanwhile; logged when it starts failing and when it succeeds again.
    if (!truncate_failing_) {
      log().error(
          "a checkpoint past --wal-limit failed: {} (SQLite code {}); the WAL keeps every "
          "commit and grows until one succeeds; trying again after {} s, then less often (up to "
          "every {} s)",
          why, code, kTruncateErrorBackoff.count(), kTruncateBackoff.count());
    }
    truncate_failing_ = true;
    truncate_wait_ = kTruncateWait;
    tries_at_longest_ = 0;
    next_truncate_ = done + truncate_error_backoff_;
    truncate_error_backoff_ =
        std::min<std::chrono::seconds>(2 * truncate_error_backoff_, kTruncateBackoff);
    return;
  }
  const auto longest = std::max(
      kTruncateWait, std::min<std::chrono::milliseconds>(kTruncateWaitMax, config_.busy_timeout));
  if (truncate_wait_ >= longest && ++tries_at_longest_ >= kTriesAtLongest) {
    log().warn(
        "the WAL is over --wal-limit ({} frames) and readers kept their snapshots through {} "
        "waits of {} ms; trying again in {} s",
        wal_frames_, tries_at_longest_, truncate_wait_.count(), kTruncateBackoff.count());
    truncate_wait_ = kTruncateWait;
    tries_at_longest_ = 0;
    next_truncate_ = done + kTruncateBackoff;
    return;
  }
  log().debug("WAL over --wal-limit ({} frames): readers outlasted a {} ms wait", wal_frames_,
              truncate_wait_.count());
  truncate_wait_ = std::min(2 * truncate_wait_, longest);
}

Writer::Checkpointer Writer::checkpointer() {
  // The WAL-index (the -shm file, which SQLite maps into every connection's memory; documented
  // in https://www.sqlite.org/walformat.html, "The WAL-Index File Format") holds, after its two
  // 48-byte headers, the checkpoint's state: nBackfill (the frames copied back into the database)
  // at byte 96 and nBackfillAttempted at byte 128, native 32-bit words that every checkpoint
  // advances and a WAL reset sets to 0. Read through SQLite's own mapping (xShmMap of region 0,
  // never extending it), not a file descriptor of ours: closing one would drop this process's
  // POSIX locks on the file, SQLite's included.
  sqlite3_file* file = nullptr;
  if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK ||
      file == nullptr || file->pMethods == nullptr || file->pMethods->iVersion < 2 ||
      file->pMethods->xShmMap == nullptr || file->pMethods->xShmLock == nullptr) {
    return {};
  }
  void volatile* region = nullptr;
  if (file->pMethods->xShmMap(file, 0, 32 * 1024, 0, &region) != SQLITE_OK || region == nullptr) {
    return {};
  }
  const auto* words = static_cast<const volatile std::uint32_t*>(region);
  Checkpointer c;
  c.progress = (std::uint64_t{words[96 / 4]} << 32) | words[128 / 4];
  // The checkpoint lock (WAL_CKPT_LOCK, lock 1 of the WAL-index): every checkpoint holds it
  // exclusively from its start, a RESTART or TRUNCATE also while it waits for the write lock. A
  // shared lock taken for an instant tells whether another connection holds it; one that tried
  // to take it in that instant returns "busy" and does nothing (a PRAGMA wal_checkpoint reports
  // it in its row; Litestream checkpoints again at its next sync).
  constexpr int kCheckpointLock = 1;
  const int rc =
      file->pMethods->xShmLock(file, kCheckpointLock, 1, SQLITE_SHM_LOCK | SQLITE_SHM_SHARED);
  if (rc == SQLITE_OK) {
    file->pMethods->xShmLock(file, kCheckpointLock, 1, SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED);
  }
  c.running = rc == SQLITE_BUSY;
  return c;
}

void Writer::yield_to_checkpointer() {
  // The checkpointing program needs the write lock too: Litestream writes a row of its own after
  // each checkpoint (and, if the WAL was reset, takes the lock again to copy its end), and a
  // RESTART or TRUNCATE checkpoint takes it first. It waits for it in SQLite's busy handler,
  // which looks again after sleeps of up to 100 ms, for at most 1 s (Litestream's busy timeout).
  // A writer busy without pause frees the lock only for microseconds between two batches, so
  // that program missed it (measured, 4 clients writing without pause for 60 s: 42 of
  // Litestream's syncs failed, each delaying replication by a second or more, and once it lost
  // its place in the WAL and started a new generation). So the writer pauses between two
  // batches, until the other program has written or kYieldPause is over; requests queue
  // meanwhile and go in the next batch. It pauses:
  //
  // At once after a batch that found another program checkpointing (it holds the checkpoint lock:
  // a RESTART or TRUNCATE waits for the write lock holding it) or done with a checkpoint (the
  // WAL-index's checkpoint progress changed; this writer runs none): Litestream writes right
  // after each checkpoint, and its copying of the WAL to its shadow WAL, the first step of
  // replication, waits for the checkpoint and that write. When the writer paused only once every
  // kYieldEvery (below), Litestream's syncs took up to 1.3 s instead of milliseconds, writes
  // reached the replica up to 2.9 s after their acknowledgement, and one acknowledged 2.37 s
  // before the machine was lost was missing from the restored copy.
  //
  // At once after a batch that found the WAL reset by the other program's checkpoint: that
  // batch began writing the WAL from its start again, and Litestream, which takes the lock right
  // after its checkpoint to copy the old WAL's end (the frames written between its last copy and
  // the checkpoint), must get it before the writer's next batches overwrite that end. When they
  // did (Litestream waiting up to 1 s, writers at 30 MB/s), its replica missed pages, and the
  // copy restored from it failed PRAGMA integrity_check (measured with Litestream's
  // max-checkpoint-page-count at 2,000: two runs out of two).
  //
  // And, once the WAL is as large as Litestream lets it grow before it checkpoints, at most once
  // every kYieldEvery: for any other program that needs the write lock.
  const auto now = Clock::now();
  const Checkpointer seen = checkpointer();
  const bool progressed = seen.progress != std::exchange(checkpoint_progress_, seen.progress);
  const bool checkpointed = seen.running || progressed;
  if (!std::exchange(wal_restarted_, false) && !checkpointed) {
    if (wal_frames_ < kYieldFrames) return;
    if (now < next_yield_) return;
  }
  const auto data_version = [this]() -> std::int64_t {
    Authorizer::Scope internal(authorizer_, Mode::kInternal);  // a schema change re-prepares it
    std::int64_t v = -1;
    if (sqlite3_step(data_version_.get()) == SQLITE_ROW)
      v = sqlite3_column_int64(data_version_.get(), 0);
    sqlite3_reset(data_version_.get());
    return v;
  };
  const std::int64_t before = data_version();
  auto until = now + kYieldPause;
  bool written = false;
  for (auto t = now; t < until && !aborted_; t = Clock::now()) {
    std::this_thread::sleep_for(kYieldPoll);
    if (!written && data_version() != before) {
      written = true;
      until = std::min(until, Clock::now() + kYieldGrace);
    }
  }
  // A checkpoint during the pause was followed by its write during the pause.
  checkpoint_progress_ = checkpointer().progress;
  next_yield_ = Clock::now() + kYieldEvery;
  log().debug("left the write lock free for {} us (WAL {} frames{}){}",
              std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - now).count(),
              wal_frames_, checkpointed ? ", another program checkpoints" : "",
              written ? ": another program wrote" : "");
}

void Writer::warn_unless_checkpointed() {
  // The WAL restarted (another program checkpointed): the next warning from --wal-limit again.
  if (wal_frames_ < wal_warned_frames_ / 2 || wal_warned_frames_ == 0) {
    wal_warned_frames_ = std::max(wal_limit_frames_, 1);
  }
  if (wal_frames_ < wal_warned_frames_) return;
  log().warn(
      "the WAL holds {} frames and nothing has reset it: with --checkpoint-mode external "
      "the daemon never checkpoints, so it grows until the program that does (Litestream) runs "
      "(next warning at twice the size)",
      wal_frames_);
  wal_warned_frames_ = wal_frames_ > INT32_MAX / 2 ? INT32_MAX : wal_frames_ * 2;
}

bool Writer::checkpoint(std::string_view mode, proto::Report& report) {
  static constexpr std::pair<std::string_view, int> kModes[] = {
      {"PASSIVE", SQLITE_CHECKPOINT_PASSIVE},
      {"FULL", SQLITE_CHECKPOINT_FULL},
      {"RESTART", SQLITE_CHECKPOINT_RESTART},
      {"TRUNCATE", SQLITE_CHECKPOINT_TRUNCATE}};
  const auto* found = std::find_if(std::begin(kModes), std::end(kModes), [&](const auto& m) {
    return m.first.size() == mode.size() &&
           std::equal(mode.begin(), mode.end(), m.first.begin(), [](char a, char b) {
             return std::toupper(static_cast<unsigned char>(a)) == b;
           });
  });
  if (found == std::end(kModes)) {
    set_failure(proto::PasynCode::kMisuse, "unknown checkpoint mode '" + std::string(mode) +
                                               "' (PASSIVE, FULL, RESTART or TRUNCATE)");
    return false;
  }
  if (!config_.checkpoints_internally() && found->second != SQLITE_CHECKPOINT_PASSIVE) {
    log().warn(
        "CHECKPOINT {} with --checkpoint-mode external: it waits for the checkpointing program's "
        "read transaction, and if it resets the WAL, Litestream starts a new generation",
        found->first);
  }
  int wal_frames = 0, checkpointed = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, found->second, &wal_frames, &checkpointed);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    capture_sqlite_error();
    // The admin is told; the operator reads the log (an I/O error here is the disk failing,
    // with --synchronous normal the WAL's first fsync).
    log().error("CHECKPOINT {} failed: {} (SQLite code {})", found->first, failure_.message,
                failure_.extended_code);
    return false;
  }
  // Busy: readers kept part of the WAL from being copied back; the counts tell how much. FULL,
  // RESTART and TRUNCATE say so with SQLITE_BUSY; PASSIVE never waits and never does, its counts
  // alone tell.
  const bool busy = rc == SQLITE_BUSY || checkpointed < wal_frames;
  report = {{"mode", std::string(found->first)},
            {"busy", std::int64_t{busy}},
            {"wal_frames", std::int64_t{wal_frames}},
            {"checkpointed_frames", std::int64_t{checkpointed}}};
  return true;
}

void Writer::close_database(bool checkpoint) {
  clear_cache();
  if (keys_) keys_->close();
  for (auto* s :
       {&begin_, &commit_, &rollback_, &savepoint_, &release_, &rollback_to_, &data_version_}) {
    s->reset();
  }
  if (checkpoint) {
    // After the drain timeout interrupted the writer, SQLite's interrupt flag is still set, and
    // would interrupt this checkpoint too, leaving the WAL behind. From here abort() interrupts
    // nothing more (closing_), and the flag is cleared: SQLite clears it when it starts to parse
    // a statement while none is running (the statement is not run).
    {
      std::lock_guard lk(mu_);
      closing_ = true;
    }
    if (aborted_) {
      Authorizer::Scope internal(authorizer_, Mode::kInternal);
      sqlite3_stmt* nothing = nullptr;
      sqlite3_prepare_v2(db_, "SELECT 1", -1, &nothing, nullptr);
      sqlite3_finalize(nothing);
    }
    int wal_frames = 0, checkpointed = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &wal_frames,
                                             &checkpointed);
    if (rc == SQLITE_BUSY) {
      log().warn(
          "final checkpoint incomplete: readers still hold the WAL; it is kept, and "
          "the next start or checkpoint copies it back");
    } else if (rc != SQLITE_OK) {
      log().error(
          "final checkpoint failed: {} (SQLite code {}); the WAL is kept, and the next "
          "start or checkpoint copies it back",
          sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
    }
  }
  std::lock_guard lk(mu_);  // abort() may call sqlite3_interrupt concurrently
  if (sqlite3_close_v2(db_) != SQLITE_OK) log().error("closing the database failed");
  db_ = nullptr;
}

// A file deleted, replaced or renamed under the running daemon keeps the descriptor SQLite
// writes to, so commits went on being acknowledged into a file nobody would open again, and a
// restart made a new database (probe25: the database file or its WAL removed, then 200 writes
// acknowledged and lost). SQLITE_FCNTL_HAS_MOVED compares the file at the path with the one
// open (a stat of the path: two per check, at most every kFilesCheckEvery, so a commit rarely
// pays for it). What was committed since the file left its path is unknown to whoever opens the
// path next: the writer stops answering (FailStop), and the start refuses a WAL beside a missing
// database file (Writer::Writer).
// The WAL left its path while the database file stayed: the commits since the last checkpoint
// are only in the WAL the writer still has open. Its bytes are copied out through SQLite's own
// handle, whole (a checkpoint into the database file could stop at a reader's snapshot and
// leave the file in a state that never existed; review19), into `<wal>.saved`, fsynced, and
// renamed to the WAL's path if nothing but an empty file is there (a reader may have made one):
// WAL recovery at the next start then replays exactly the commits it holds. Says what it did.
std::string Writer::save_open_wal(sqlite3_file& wal, bool take_the_path) {
  const std::string saved = wal_path_ + ".saved";
  const auto failed = [&](const std::string& what) {
    return "; saving the WAL the daemon still had open to " + saved + " failed (" + what +
           "): the commits since the last checkpoint are lost";
  };
  sqlite3_int64 size = 0;
  if (wal.pMethods->xFileSize(&wal, &size) != SQLITE_OK) return failed("cannot read its size");
  struct stat db {};
  const mode_t mode = ::stat(config_.database_path.c_str(), &db) == 0 ? (db.st_mode & 0666) : 0600;
  const int fd = ::open(saved.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return failed(std::strerror(errno));
  std::vector<char> buf(64 * 1024);
  bool ok = true;
  for (sqlite3_int64 off = 0; ok && off < size;) {
    const int n = static_cast<int>(
        std::min<sqlite3_int64>(static_cast<sqlite3_int64>(buf.size()), size - off));
    ok = wal.pMethods->xRead(&wal, buf.data(), n, off) == SQLITE_OK;
    for (int done = 0; ok && done < n;) {
      const ssize_t w = ::write(fd, buf.data() + done, static_cast<std::size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      if (ok) done += static_cast<int>(w);
    }
    off += n;
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(saved.c_str());
    return failed("cannot copy it");
  }
  const std::string dir = std::filesystem::path(wal_path_).parent_path().string();
  const bool renamed = take_the_path && ::rename(saved.c_str(), wal_path_.c_str()) == 0;
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  if (renamed) {
    return "; the WAL it still had open (" + std::to_string(size) + " bytes) was saved back to " +
           wal_path_ + ", so the next start recovers every commit";
  }
  return "; the WAL it still had open (" + std::to_string(size) + " bytes) was saved to " + saved +
         ": with the daemon stopped, move it to " + wal_path_ +
         " (replacing the file there) to recover the commits since the last checkpoint";
}

void Writer::check_files_in_place(bool now) {
  const auto time = Clock::now();
  if (!now && time < next_files_check_) {
    // Looked less than kFilesCheckEvery ago: serve() looks when that ends, so that the last
    // commit before a pause (or before SIGTERM: close_database) is looked at too (probe29: a
    // write right after a rename was acknowledged, and the daemon then exited 0).
    files_check_owed_ = true;
    return;
  }
  files_check_owed_ = false;
  next_files_check_ = time + kFilesCheckEvery;
  int moved = 0;
  const char* which = nullptr;
  if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved) {
    which = "the database file";
  }
  // The WAL: the file at its path now against the one seen when SQLite first had it open. Only
  // a file that is not there (ENOENT) or another file counts: a stat that fails otherwise
  // (EACCES after a chmod, ESTALE) says nothing, and is tried again at the next look.
  bool wal_gone = false, wal_there_empty = false, wal_moved = false;
  sqlite3_file* wal = nullptr;
  if (!which &&
      sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) == SQLITE_OK && wal &&
      wal->pMethods) {
    struct stat st {};
    const bool there = ::stat(wal_path_.c_str(), &st) == 0;
    wal_gone = !there && errno == ENOENT;
    wal_there_empty = there && S_ISREG(st.st_mode) && st.st_size == 0;
    if (!wal_file_) {
      if (there) wal_file_.emplace(st.st_dev, st.st_ino);
    } else if (wal_gone || (there && *wal_file_ != std::pair(st.st_dev, st.st_ino))) {
      which = "the WAL";
      wal_moved = true;
    }
  }
  if (!which) return;
  std::string message = std::string(which) + " of " + config_.database_path +
                        " is no longer the file at its path (deleted, replaced or renamed while "
                        "served)";
  if (wal_moved) {  // and the database file is where it was
    message += save_open_wal(*wal, wal_gone || wal_there_empty);
  } else {
    message += "; the commits since are in a file the next start will not read";
  }
  throw FailStop{{message, SQLITE_IOERR}};
}

}  // namespace pasyn::server
