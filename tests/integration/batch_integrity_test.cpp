// The batch transaction cannot vanish unnoticed, and a reply is never false: the real
// pasyn-writerd with faults injected by an LD_PRELOAD library (fault_inject.c) that fails one
// fsync, WAL write, temporary-file read or large allocation when the test arms it.
//
// Every test forms one batch the same way: a holder opens a transaction, the requests of the
// batch queue behind it (their order of arrival is their order in the batch), the fault is armed,
// and the holder rolls back, which runs the queued requests as one batch.
#include <signal.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "../sanitizers.hpp"
#include "daemon_fixture.hpp"

namespace pasyn::itest {
namespace {

// pasyn-writerd's exit status when the outcome of a commit is unknown (kExitStorageFailure,
// EX_IOERR; README, PROTOCOL.md §6.1, RestartPreventExitStatus= of the unit).
constexpr int kExitStorageFailure = 74;

class BatchIntegrityTest : public DaemonTest {
 protected:
  void SetUp() override {
#if PASYN_TEST_ASAN || PASYN_TEST_TSAN
    GTEST_SKIP() << "the fault-injection library cannot be preloaded before a sanitizer runtime";
#endif
    daemon_env_ = {std::string("LD_PRELOAD=") + PASYN_FAULT_INJECT, "PASYN_FAULT_FILE=" + trigger_};
  }

  /// Arms the fault (see fault_inject.c for the format).
  void arm(const std::string& spec) const { std::ofstream(trigger_) << spec << "\n"; }
  bool fired() const { return path_exists(trigger_ + ".fired"); }
  void disarm() const { ::unlink(trigger_.c_str()); }

  /// Waits (bounded) until `n` requests wait behind the holder's transaction.
  static ::testing::AssertionResult waiting(MultiplexedClient& c, std::int64_t n) {
    return stat_reaches(c, "waiting_for_transaction", n);
  }

  std::int64_t count(const std::string& where) const {
    return query_int("SELECT count(*) FROM t WHERE " + where);
  }

  std::string trigger_ = dir_.file("fault");
};

// M2: an fsync that fails at COMMIT leaves the outcome unknown (the frames may be on disk and
// WAL recovery brings them back). The daemon must not answer "failed": it stops, the clients
// see ConnectionLostError, and it exits with the status systemd does not restart on.
TEST_F(BatchIntegrityTest, FsyncFailureAtCommitStopsWithoutAnswering) {
  start_daemon();
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  for (int i = 0; i < 10; ++i) c.execute("INSERT INTO t (v) VALUES (?)", {"acked"});

  auto holder = connect_client();
  auto tx = holder.begin();
  std::vector<MultiplexedClient> clients;
  std::vector<std::future<std::int64_t>> writes;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_client());
    writes.push_back(clients.back().execute_async("INSERT INTO t (v) VALUES (?)", {"unknown"}));
    ASSERT_TRUE(waiting(c, i + 1));
  }
  arm("fsync EIO -wal");
  tx.rollback();
  for (auto& w : writes) {
    try {
      w.get();
      ADD_FAILURE() << "a write whose commit failed to sync was answered as committed";
    } catch (const ConnectionLostError&) {  // outcome unknown: the only true answer
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected ConnectionLostError, got: " << e.what();
    }
  }
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status) << "pasyn-writerd kept running after an fsync failure at COMMIT";
  EXPECT_TRUE(exited_with(*status, kExitStorageFailure)) << describe_status(*status);
  EXPECT_TRUE(fired());
  EXPECT_NE(read_file(log_).find("critical"), std::string::npos) << read_file(log_);

  // The next start recovers the WAL: consistent, every acknowledged write there. (The batch's
  // frames reached the file before the sync failed, so recovery brings it back: telling its
  // clients it failed would have been false.)
  start_daemon();
  EXPECT_EQ(query_int("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check='ok'"), 1);
  EXPECT_EQ(count("v = 'acked'"), 10);
  EXPECT_EQ(count("v = 'unknown'"), 3);
  auto again = connect_client();
  EXPECT_EQ(again.execute("INSERT INTO t (v) VALUES ('after')"), 1);
}

// With --synchronous normal the WAL's first fsync is a checkpoint's: one that fails is answered
// to the admin who asked, and logged for the operator (a probe found it answered only). The
// daemon goes on: a checkpoint that fails leaves the WAL, which holds every commit, as it was.
TEST_F(BatchIntegrityTest, ACheckpointsFailedFsyncIsAnsweredAndLogged) {
  start_daemon({"--synchronous", "normal"});
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  for (int i = 0; i < 10; ++i) c.execute("INSERT INTO t (v) VALUES (?)", {"acked"});
  arm("fsync EIO -wal");
  EXPECT_THROW(c.checkpoint("TRUNCATE"), pasyn::OperationalError);
  EXPECT_TRUE(fired());
  EXPECT_NE(read_file(log_).find("CHECKPOINT TRUNCATE failed"), std::string::npos)
      << read_file(log_);
  EXPECT_EQ(c.execute("INSERT INTO t (v) VALUES ('after')"), 1);
  EXPECT_EQ(count("v = 'acked'"), 10);
}

// The daemon's own passive checkpoints too (from 1,000 WAL frames): a failure was ignored.
TEST_F(BatchIntegrityTest, APassiveCheckpointsFailedFsyncIsLogged) {
  start_daemon({"--synchronous", "normal"});
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  arm("fsync EIO -wal");
  // ~1,300 pages of rows, in batches: a passive checkpoint runs once the WAL passes 1,000.
  for (int i = 0; i < 130 && !fired(); ++i) {
    c.execute_many("INSERT INTO t (v) VALUES (?)",
                   std::vector<pasyn::Params>(10, {std::string(4000, 'x')}));
  }
  ASSERT_TRUE(fired());
  EXPECT_TRUE(eventually(
      [&] { return read_file(log_).find("a passive checkpoint failed") != std::string::npos; },
      kReplyTimeout))
      << read_file(log_);
  EXPECT_EQ(c.execute("INSERT INTO t (v) VALUES ('after')"), 1);
}

// The TRUNCATE checkpoint past --wal-limit: an error of the disk is logged as one, at error
// level, not as readers that kept their snapshots (probe25: a full disk was reported as
// "readers kept their snapshots through 3 waits", with no reader and no wait).
TEST_F(BatchIntegrityTest, ACheckpointPastTheWalLimitThatFailsOnTheDiskIsLoggedAsSuch) {
  start_daemon({"--synchronous", "normal", "--wal-limit", "65536", "--log-level", "info"});
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  arm("pwrite ENOSPC db.sqlite$ 0 1000000");  // the database file's writes: checkpoints only
  for (int i = 0; i < 40; ++i) c.execute("INSERT INTO t (v) VALUES (?)", {std::string(4000, 'x')});
  EXPECT_TRUE(fired() || path_exists(trigger_));
  EXPECT_TRUE(eventually(
      [&] {
        return read_file(log_).find(
                   "a checkpoint past --wal-limit failed: database or disk is "
                   "full") != std::string::npos;
      },
      kReplyTimeout))
      << read_file(log_);
  EXPECT_EQ(read_file(log_).find("readers kept their snapshots"), std::string::npos)
      << read_file(log_);
  disarm();
  int more = 0;  // it tries again once a second, after a batch
  EXPECT_TRUE(eventually(
      [&] {
        c.execute("INSERT INTO t (v) VALUES (?)", {std::string(4000, 'x')});
        ++more;
        return read_file(log_).find("checkpoints past --wal-limit succeed again") !=
               std::string::npos;
      },
      kReplyTimeout))
      << read_file(log_);
  EXPECT_EQ(count("length(v) = 4000"), 40 + more);
}

// VACUUM commits its own transaction, outside any batch: an fsync that fails at its COMMIT leaves
// its outcome unknown too (a probe's VACUUM got "disk I/O error" and was there after recovery).
TEST_F(BatchIntegrityTest, FsyncFailureAtAVacuumsCommitStopsWithoutAnswering) {
  start_daemon();
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  c.execute_many("INSERT INTO t (v) VALUES (?)", std::vector<pasyn::Params>(200, {"acked"}));
  c.execute("DELETE FROM t WHERE id > 100");  // pages for VACUUM to free
  arm("fsync EIO -wal");
  try {
    c.execute("VACUUM");
    ADD_FAILURE() << "a VACUUM whose commit failed to sync was answered";
  } catch (const ConnectionLostError&) {  // outcome unknown: the only true answer
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ConnectionLostError, got: " << e.what();
  }
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status) << "pasyn-writerd kept running after an fsync failure at VACUUM's COMMIT";
  EXPECT_TRUE(exited_with(*status, kExitStorageFailure)) << describe_status(*status);
  EXPECT_TRUE(fired());
  start_daemon();
  EXPECT_EQ(query_int("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check='ok'"), 1);
  EXPECT_EQ(count("v = 'acked'"), 100);
}

// A file-size limit (ulimit -f, LimitFSIZE=) makes a write fail with EFBIG: an I/O error at
// COMMIT, so the daemon stops with exit status 74, saying why. (Without SIGXFSZ ignored, a probe
// saw the signal kill it unannounced, with its socket left behind.)
TEST_F(BatchIntegrityTest, AFileSizeLimitStopsTheDaemonWithTheStorageExitStatus) {
  std::vector<std::string> args = {"/bin/sh", "-c", "ulimit -f 2048 && exec \"$0\" \"$@\""};
  const auto daemon = daemon_args({}, sock_);
  args.insert(args.end(), daemon.begin(), daemon.end());
  daemon_.spawn(args, log_, log_, daemon_env_);
  ASSERT_TRUE(wait_until_serving(daemon_, sock_));
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  // Commits of 400 KB each, appended to the WAL at their COMMIT: the third passes 1 MiB.
  bool lost = false;
  for (int i = 0; i < 10 && !lost; ++i) {
    try {
      c.execute("INSERT INTO t (v) VALUES (zeroblob(400000))");
    } catch (const ConnectionLostError&) {  // the outcome is unknown: no reply
      lost = true;
    }
  }
  EXPECT_TRUE(lost) << "ten 400 KB commits under a 1 MiB file-size limit";
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status) << "pasyn-writerd kept running past the file-size limit";
  EXPECT_TRUE(exited_with(*status, kExitStorageFailure)) << describe_status(*status);
  EXPECT_NE(read_file(log_).find("critical"), std::string::npos) << read_file(log_);
}

// A definite commit failure (ENOSPC writing the WAL: SQLITE_FULL, nothing committed) is an error
// for every request of the batch, and the daemon goes on serving.
TEST_F(BatchIntegrityTest, DiskFullAtCommitFailsTheBatchAndKeepsServing) {
  start_daemon();
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");

  auto holder = connect_client();
  auto tx = holder.begin();
  std::vector<MultiplexedClient> clients;
  std::vector<std::future<std::int64_t>> writes;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_client());
    writes.push_back(clients.back().execute_async("INSERT INTO t (v) VALUES (?)", {"full"}));
    ASSERT_TRUE(waiting(c, i + 1));
  }
  arm("pwrite ENOSPC -wal");
  tx.rollback();
  for (auto& w : writes) {
    try {
      w.get();
      ADD_FAILURE() << "a write whose commit failed was answered as committed";
    } catch (const SqliteError& e) {
      EXPECT_EQ(e.code(), SQLITE_FULL) << e.what();
    }
  }
  EXPECT_TRUE(fired());
  EXPECT_EQ(count("v = 'full'"), 0);
  EXPECT_EQ(c.execute("INSERT INTO t (v) VALUES ('after')"), 1);
  EXPECT_EQ(count("v = 'after'"), 1);
}

// M3: the request that ran over --statement-timeout is blamed, and only it. Batch: a slow write
// (times out, which ends the transaction), an innocent insert, a failing insert (so the batch
// is run again with savepoints). The innocent one must run and commit.
TEST_F(BatchIntegrityTest, StatementTimeoutBlamesOnlyTheSlowRequest) {
  start_daemon({"--statement-timeout", "300ms"});
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  c.execute("INSERT INTO t (id, v) VALUES (1, 'taken')");

  auto holder = connect_client();
  auto tx = holder.begin();
  auto slow_client = connect_client(), innocent_client = connect_client(),
       failing_client = connect_client();
  auto slow = slow_client.execute_async(
      "INSERT INTO t (v) SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
      "SELECT x + 1 FROM c) SELECT x FROM c)");
  ASSERT_TRUE(waiting(c, 1));
  auto innocent = innocent_client.execute_async("INSERT INTO t (v) VALUES ('innocent')");
  ASSERT_TRUE(waiting(c, 2));
  auto failing = failing_client.execute_async("INSERT INTO t (id, v) VALUES (1, 'duplicate')");
  ASSERT_TRUE(waiting(c, 3));
  tx.rollback();

  EXPECT_THROW(slow.get(), TimeoutError);
  EXPECT_NO_THROW(EXPECT_EQ(innocent.get(), 1));
  EXPECT_THROW(failing.get(), IntegrityError);
  EXPECT_EQ(count("v = 'innocent'"), 1);
  EXPECT_EQ(count("v = 'duplicate'"), 0);
}

// M1: when one of the writer's own statements fails and takes the transaction with it (here
// ROLLBACK TO, whose read of the statement journal fails with EIO), no request may run on in
// autocommit mode: every request answered OK is in the database, every one answered with an
// error is not, also after a restart.
TEST_F(BatchIntegrityTest, LostTransactionNeverCommitsRequestsOneByOne) {
  start_daemon();
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  // Large enough that undoing an UPDATE of all of it reads the statement journal from a
  // temporary file (SQLite keeps the first 64 KiB in memory).
  c.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)");
  c.executescript(
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 2000) "
      "INSERT INTO big (v) SELECT printf('%.200c', 'a') FROM n");

  auto holder = connect_client();
  auto tx = holder.begin();
  std::vector<MultiplexedClient> clients;
  std::vector<std::future<void>> replies;
  std::vector<std::string> names;
  const auto queue = [&](const std::string& name, const std::string& script) {
    clients.push_back(connect_client());
    replies.push_back(clients.back().executescript_async(script));
    names.push_back(name);
    return waiting(c, static_cast<std::int64_t>(names.size()));
  };
  ASSERT_TRUE(queue("before", "INSERT INTO t (v) VALUES ('before')"));
  // Fails (no such column) after changing every page of `big`.
  ASSERT_TRUE(queue("failing", "UPDATE big SET v = v || 'x'; SELECT nosuchcolumn FROM big"));
  ASSERT_TRUE(queue("after1", "INSERT INTO t (v) VALUES ('after1')"));
  ASSERT_TRUE(queue("after2", "INSERT INTO t (v) VALUES ('after2')"));
  arm("pread EIO etilqs");
  tx.rollback();

  std::vector<bool> ok;
  for (std::size_t i = 0; i < replies.size(); ++i) {
    try {
      replies[i].get();
      ok.push_back(true);
    } catch (const Error& e) {
      ok.push_back(false);
      std::cerr << names[i] << ": " << e.what() << "\n";
    }
  }
  EXPECT_TRUE(fired()) << "the statement journal was never read back";
  EXPECT_FALSE(ok[1]) << "the failing script was answered as committed";
  const auto check = [&] {
    EXPECT_EQ(query_int("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'"),
              1);
    EXPECT_EQ(query_int("SELECT count(*) FROM big WHERE v LIKE '%x'"), 0)
        << "the failed script's UPDATE was committed";
    for (std::size_t i : {0u, 2u, 3u}) {
      EXPECT_EQ(count("v = '" + names[i] + "'"), ok[i] ? 1 : 0)
          << names[i] << " was answered " << (ok[i] ? "OK" : "with an error");
    }
  };
  check();
  // Here nothing failed but the script itself: the others are committed.
  EXPECT_TRUE(ok[0] && ok[2] && ok[3]);
  stop_daemon();
  start_daemon();
  check();
}

// §4 "Drain timeout": when the drain timeout interrupts a batch that runs with savepoints, the
// rest of the batch does not run. Batch: a failing insert (so savepoints), a read that never ends
// (interrupted, which leaves the transaction open), an insert that must then not be committed.
TEST_F(BatchIntegrityTest, DrainTimeoutStopsTheRestOfASavepointBatch) {
  start_daemon({"--drain-timeout", "300ms", "--statement-timeout", "0"});
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  c.execute("INSERT INTO t (id, v) VALUES (1, 'taken')");

  auto holder = connect_client();
  auto tx = holder.begin();
  auto failing_client = connect_client(), endless_client = connect_client(),
       last_client = connect_client();
  auto failing = failing_client.execute_async("INSERT INTO t (id, v) VALUES (1, 'duplicate')");
  ASSERT_TRUE(waiting(c, 1));
  auto endless = endless_client.execute_fetchall_async(
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n");
  ASSERT_TRUE(waiting(c, 2));
  auto last = last_client.execute_async("INSERT INTO t (v) VALUES ('last')");
  ASSERT_TRUE(waiting(c, 3));
  tx.rollback();
  daemon_.signal(SIGTERM);  // the endless read runs until the drain timeout interrupts it
  EXPECT_THROW(endless.get(), Error);
  EXPECT_THROW(last.get(), Error);
  EXPECT_THROW(failing.get(), Error);
  const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
  EXPECT_FALSE(killed);
  EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  // The final checkpoint still runs (a probe: "final checkpoint incomplete: interrupted", and
  // the WAL left behind).
  EXPECT_EQ(read_file(log_).find("final checkpoint"), std::string::npos) << read_file(log_);
  EXPECT_EQ(std::filesystem::file_size(db_ + "-wal"), 0u);
  EXPECT_EQ(count("v = 'last'"), 0) << "a request after the interrupted one was committed";
}

// The drain timeout interrupts a long write; the final checkpoint still runs (a probe: "final
// checkpoint incomplete: interrupted", and a 54 MB WAL left behind: SQLite's interrupt flag
// was still set).
TEST_F(BatchIntegrityTest, TheFinalCheckpointRunsAfterTheDrainTimeoutInterruptedAWrite) {
  start_daemon({"--drain-timeout", "300ms", "--statement-timeout", "0"});
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  c.execute("INSERT INTO t (v) VALUES ('before')");
  auto slow_client = connect_client(), queued_client = connect_client();
  auto slow = slow_client.execute_async(
      "INSERT INTO t (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE "
      "x < 50000000) SELECT 'slow' FROM c");
  std::this_thread::sleep_for(200ms);  // running (it takes seconds): the next ones queue
  auto queued = queued_client.execute_async("INSERT INTO t (v) VALUES ('queued')");
  daemon_.signal(SIGTERM);
  EXPECT_THROW(slow.get(), Error);
  EXPECT_THROW(queued.get(), Error);
  const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
  EXPECT_FALSE(killed);
  EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  EXPECT_EQ(read_file(log_).find("final checkpoint"), std::string::npos) << read_file(log_);
  EXPECT_EQ(std::filesystem::file_size(db_ + "-wal"), 0u);
  EXPECT_EQ(count("v = 'before'"), 1);
  EXPECT_EQ(count("v <> 'before'"), 0);
}

// M2, in process: start_writer_server stops the same way, and its join() reports why.
TEST_F(BatchIntegrityTest, InProcessServerStopsAndJoinThrows) {
  const auto r =
      run_to_completion({PASYN_INPROC_STORAGE_FAILURE, db_}, dir_, daemon_env_, kStopTimeout);
  EXPECT_TRUE(exited_with(r.status, 0)) << describe_status(r.status) << "\n" << r.out << r.err;
  EXPECT_NE(r.out.find("write: ConnectionLostError"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("join: OperationalError " + std::to_string(SQLITE_IOERR_FSYNC)),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(fired());
}

// M4: an allocation failure on the writer thread (a reply that cannot be held) fails that
// request, not the daemon; the other request of its batch commits.
TEST_F(BatchIntegrityTest, AllocationFailureFailsTheRequestNotTheDaemon) {
  start_daemon();
  auto c = connect_client();
  c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");

  auto holder = connect_client();
  auto tx = holder.begin();
  auto big_client = connect_client(), other_client = connect_client();
  // About 5 MB of reply in rows of 1 KB: only the reply buffer grows past 1 MiB.
  auto big = big_client.execute_fetchall_async(
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 5000) "
      "SELECT randomblob(1000) FROM n");
  ASSERT_TRUE(waiting(c, 1));
  auto other = other_client.execute_async("INSERT INTO t (v) VALUES ('other')");
  ASSERT_TRUE(waiting(c, 2));
  arm("malloc ENOMEM 1048576 0 1000000");  // every allocation over 1 MiB fails
  tx.rollback();
  try {
    big.get();
    ADD_FAILURE() << "a reply that could not be allocated was sent";
  } catch (const SqliteError& e) {
    EXPECT_EQ(e.code(), SQLITE_NOMEM) << e.what();
  }
  EXPECT_NO_THROW(EXPECT_EQ(other.get(), 1));
  disarm();
  EXPECT_TRUE(c.ping());
  EXPECT_EQ(c.execute("INSERT INTO t (v) VALUES ('after')"), 1);
  EXPECT_EQ(count("v IN ('other', 'after')"), 2);
}

}  // namespace
}  // namespace pasyn::itest
