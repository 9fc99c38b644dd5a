// The database's files under a running daemon (README, "If a COMMIT fails ..."; the writer's
// check_files_in_place): the database file or its WAL deleted, replaced or renamed while served
// stops the daemon at its next commit (exit 74), a WAL that only left its path is saved back,
// and a start refuses a missing or empty database file beside a WAL holding commits. With a
// symlinked --database too, whose WAL SQLite names after the resolved path.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;

// pasyn-writerd's exit status when it stops because what it committed may be unknown to the
// next start (EX_IOERR; README, RestartPreventExitStatus= of the unit).
constexpr int kExitStorageFailure = 74;

class FilesTest : public DaemonTest {
 protected:
  // The next write through `client` finds the daemon stopping (its file left its path): no
  // reply (ConnectionLostError, outcome unknown), or, when it is read after the stop began,
  // SHUTTING_DOWN (it was not run: PROTOCOL.md §2; seen under ThreadSanitizer's timing, where
  // the writer's look at the files came first); never an acknowledgement. Then exit 74, and
  // the reason in the log.
  void expect_stop_at_next_commit(pasyn::MultiplexedClient& client) {
    std::this_thread::sleep_for(50ms);  // past the writer's 10 ms between two looks
    try {
      client.execute("INSERT INTO t VALUES (2)");
      ADD_FAILURE() << "a write was acknowledged after the file left its path";
    } catch (const pasyn::ConnectionLostError&) {
    } catch (const pasyn::OperationalError& e) {
      EXPECT_NE(std::string(e.what()).find("shutting down; the request was not executed"),
                std::string::npos)
          << e.what();
    }
    const auto status = daemon_.wait_exit(kStopTimeout);
    ASSERT_TRUE(status) << "pasyn-writerd kept serving after its file left its path";
    EXPECT_TRUE(exited_with(*status, kExitStorageFailure)) << describe_status(*status);
    EXPECT_NE(read_file(log_).find("is no longer the file at its path"), std::string::npos)
        << read_file(log_);
  }
  // A start on db_ beside a WAL holding commits (of `wal_size` bytes, at `wal`) is refused with
  // the reason, and leaves the WAL as it was.
  void expect_start_refused_keeping(const std::string& wal, std::uintmax_t wal_size) {
    Process again;
    const std::string err = dir_.file("again.err");
    again.spawn(daemon_args({}, sock_), err, err);
    const auto [code, killed] = again.wait_or_kill(kStartTimeout);
    EXPECT_FALSE(killed) << "the daemon started without its database file";
    EXPECT_TRUE(WIFEXITED(code) && WEXITSTATUS(code) == 1) << describe_status(code);
    EXPECT_NE(read_file(err).find("it is missing or empty, but its WAL"), std::string::npos)
        << read_file(err);
    EXPECT_EQ(std::filesystem::file_size(wal), wal_size);
  }
};

// Through a symlinked --database: SQLite names the WAL after the resolved path, and so do both
// checks (review18: they looked beside the symlink, found no WAL, and were off; a start
// through a dangling symlink let SQLite delete the WAL beside its target).
TEST_F(FilesTest, TheWalChecksFollowASymlinkedDatabasePath) {
  ASSERT_EQ(::mkdir(dir_.file("data").c_str(), 0700), 0);
  const std::string target = dir_.file("data/real.sqlite");
  db_ = dir_.file("link.sqlite");
  ASSERT_EQ(::symlink(target.c_str(), db_.c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  {
    auto client = connect_client();
    client.execute("CREATE TABLE t (x)");
    EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
    ASSERT_EQ(::unlink((target + "-wal").c_str()), 0);
    std::this_thread::sleep_for(50ms);  // past the writer's 10 ms between two looks
    EXPECT_THROW(client.execute("INSERT INTO t VALUES (2)"), pasyn::ConnectionLostError);
  }
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status) << "pasyn-writerd kept serving after its WAL was removed";
  EXPECT_TRUE(exited_with(*status, kExitStorageFailure)) << describe_status(*status);
  EXPECT_TRUE(path_exists(target + "-wal"));  // saved back beside the target, not the symlink

  // Commits left in the WAL (the daemon killed), then the target removed: a start through the
  // now dangling symlink is refused, and the WAL stays.
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE x = 1"), 1);
  EXPECT_EQ(connect_client().execute("INSERT INTO t VALUES (3)"), 1);
  daemon_.signal(SIGKILL);
  (void)daemon_.wait_exit(kStopTimeout);
  const auto wal_size = std::filesystem::file_size(target + "-wal");
  ASSERT_GT(wal_size, 0u);
  ASSERT_EQ(::unlink(target.c_str()), 0);
  expect_start_refused_keeping(target + "-wal", wal_size);
}

// The file renamed while it is served (or bind-mounted elsewhere) is a second path that is
// neither a symlink nor a hard link: a probe's second daemon served it with a WAL of its own,
// and the first daemon's acknowledged rows were gone after both stopped.
TEST_F(FilesTest, TheDatabaseRenamedWhileServedIsRefusedUnderItsNewName) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
  // The look that commit may owe (within 10 ms of the last one) made before the rename: the
  // first daemon serves on, holding its lock, until its next commit (under a sanitizer the owed
  // look came after the rename, and the first daemon had stopped before the second started).
  std::this_thread::sleep_for(200ms);
  const std::string moved = dir_.file("moved.sqlite");
  ASSERT_EQ(::rename(db_.c_str(), moved.c_str()), 0);
  const std::string sock = dir_.file("second.sock"), err_file = dir_.file("second.err");
  Process second;
  second.spawn({PASYN_WRITERD, "--database", moved, "--socket", sock, "--log-level", "warn"},
               err_file, err_file);
  const auto [status, killed] = second.wait_or_kill(kStartTimeout);
  EXPECT_FALSE(killed) << "the second daemon kept running";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << describe_status(status);
  const std::string err = read_file(err_file);
  EXPECT_NE(err.find("another path to the same file"), std::string::npos) << err;
  EXPECT_FALSE(path_exists(moved + "-wal")) << "the second daemon opened the database";
  // The first one stops at its next commit: the file at its path is not the one it writes, and
  // what it commits now would be missing under either name (its WAL keeps the old one).
  ASSERT_NO_FATAL_FAILURE(expect_stop_at_next_commit(client));
  client.close();
  // Renamed back, nothing of it is lost: the unanswered write's outcome is unknown.
  ASSERT_EQ(::rename(moved.c_str(), db_.c_str()), 0);
  EXPECT_GE(query_int("SELECT count(*) FROM t"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE x = 1"), 1);
}

// A file removed under the running daemon (the database's WAL, or the database file) keeps the
// descriptor it writes to: it went on acknowledging writes into a file nobody would read again
// (probe25: 200 of them, all gone after a restart). It stops at its next commit instead, and a
// start refuses a database file that is missing or empty beside a WAL holding commits, which
// SQLite would delete.
TEST_F(FilesTest, AFileRemovedUnderTheDaemonStopsItAndAStartKeepsTheWal) {
  // "-wal+": the WAL removed and an empty file made in its place (as a reader opening the
  // database then does).
  for (const std::string what : {"-wal", "-wal+", ""}) {
    const std::string removed = what == "-wal+" ? "-wal" : what;
    db_ = dir_.file(what.empty()     ? "lost-db.sqlite"
                    : what == "-wal" ? "lost-wal.sqlite"
                                     : "lost-wal-again.sqlite");
    SCOPED_TRACE("removed: " + db_ + what);
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    auto client = connect_client();
    client.execute("CREATE TABLE t (x)");
    EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
    ASSERT_EQ(::unlink((db_ + removed).c_str()), 0);
    if (what == "-wal+") std::ofstream(db_ + removed).flush();
    ASSERT_NO_FATAL_FAILURE(expect_stop_at_next_commit(client));
    if (!removed.empty()) {
      // Only the WAL went: the one the daemon still had open was saved back to its path before
      // the stop, so the next start recovers the acknowledged row (and the unanswered one may
      // be there).
      EXPECT_NE(read_file(log_).find("was saved back to"), std::string::npos) << read_file(log_);
      ASSERT_NO_FATAL_FAILURE(start_daemon());
      EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE x = 1"), 1);
      stop_daemon();
      continue;
    }
    // The database file is gone, its WAL is not: the start refuses, and leaves the WAL.
    const auto wal_size = std::filesystem::file_size(db_ + "-wal");
    ASSERT_GT(wal_size, 0u);
    expect_start_refused_keeping(db_ + "-wal", wal_size);
    EXPECT_FALSE(path_exists(db_));
  }
}

// A commit within the writer's 10 ms between two looks is looked at when they end, or at
// shutdown: probe29's write right after a rename was acknowledged, the daemon went on serving
// (no commit came to look again), and SIGTERM then exited 0 with nothing in the log.
TEST_F(FilesTest, TheLastCommitBeforeAPauseOrAStopIsLookedAtToo) {
  for (const bool sigterm : {false, true}) {
    db_ = dir_.file(sigterm ? "stopped.sqlite" : "paused.sqlite");
    SCOPED_TRACE(sigterm ? "SIGTERM right after the write" : "no request after the write");
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    const std::string moved = db_ + ".moved";
    {
      auto client = connect_client();
      client.execute("CREATE TABLE t (x)");
      EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
      ASSERT_EQ(::rename(db_.c_str(), moved.c_str()), 0);
      try {  // usually within 10 ms of the last look, and acknowledged; else the stop is now
        client.execute("INSERT INTO t VALUES (2)");
      } catch (const pasyn::ConnectionLostError&) {
      }
      if (sigterm) daemon_.signal(SIGTERM);
      const auto status = daemon_.wait_exit(kStopTimeout);
      ASSERT_TRUE(status) << "pasyn-writerd kept serving a file that left its path";
      EXPECT_TRUE(exited_with(*status, kExitStorageFailure)) << describe_status(*status);
      EXPECT_NE(read_file(log_).find("is no longer the file at its path"), std::string::npos)
          << read_file(log_);
    }
    ASSERT_EQ(::rename(moved.c_str(), db_.c_str()), 0);
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE x = 1"), 1);
    stop_daemon();
  }
}

}  // namespace
