// Integration tests of --checkpoint-mode against the real binary (README "Daemon flags",
// "Surviving the loss of the machine"). In WAL mode the database file is written by checkpoints
// only, so its size tells whether anyone checkpointed: with `external` the daemon never does
// (not between batches, not past --wal-limit, not at shutdown, not when SQLite closes the last
// connection), so that Litestream sees every WAL frame before anybody resets the WAL; with
// `internal` (the default) it does as before.
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <future>
#include <iostream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
using namespace std::chrono_literals;

std::int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

class CheckpointModeTest : public DaemonTest {
 protected:
  // 3,000 rows of 4 KB: past SQLite's auto-checkpoint threshold (1,000 pages, the passive
  // checkpoint the daemon runs in its place) and far past the --wal-limit the tests give.
  static constexpr int kBatches = 30, kRowsPerBatch = 100, kRowBytes = 4000;
  static constexpr std::int64_t kRows = kBatches * kRowsPerBatch;
  static constexpr std::int64_t kDataBytes = kRows * kRowBytes;

  struct Sizes {
    std::int64_t db_at_start = -1;  // after the daemon created the database
    std::int64_t largest_db = -1;   // while the rows were written
    std::int64_t wal_at_end = -1;   // after the last write, before the daemon stops
  };

  // Starts the daemon with `flags`, writes the rows in kBatches requests while the sizes of the
  // database file are sampled after each.
  Sizes write_rows(const std::vector<std::string>& flags) {
    Sizes sizes;
    std::vector<std::string> all{"--synchronous", "normal"};
    all.insert(all.end(), flags.begin(), flags.end());
    start_daemon(all);
    if (HasFatalFailure()) return sizes;
    auto client = connect_client();
    client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB)");
    sizes.db_at_start = file_size(db_);
    sizes.largest_db = sizes.db_at_start;
    const std::vector<pasyn::Params> rows(kRowsPerBatch,
                                          pasyn::Params{pasyn::Blob(kRowBytes, 'x')});
    for (int b = 0; b < kBatches; ++b) {
      client.execute_many("INSERT INTO t (pad) VALUES (?)", rows);
      sizes.largest_db = std::max(sizes.largest_db, file_size(db_));
    }
    sizes.wal_at_end = file_size(db_ + "-wal");
    return sizes;
  }
};

TEST_F(CheckpointModeTest, ExternalNeverCheckpointsNeitherAcrossWritesNorAtShutdown) {
  // --wal-limit given explicitly: ignored, with a warning.
  const Sizes s = write_rows({"--checkpoint-mode", "external", "--wal-limit", "65536"});
  ASSERT_FALSE(HasFatalFailure());
  std::cout << "[          ] external: database " << s.db_at_start << " -> " << s.largest_db
            << " bytes, WAL " << s.wal_at_end << " bytes\n";
  EXPECT_EQ(s.largest_db, s.db_at_start) << "the daemon checkpointed while writing";
  EXPECT_GT(s.wal_at_end, kDataBytes);
  stop_daemon();
  EXPECT_EQ(file_size(db_), s.db_at_start) << "the daemon checkpointed at shutdown";
  EXPECT_EQ(file_size(db_ + "-wal"), s.wal_at_end) << "the WAL changed at shutdown";
  EXPECT_TRUE(contains(read_file(log_), "--wal-limit is ignored with --checkpoint-mode external"))
      << read_file(log_);
  // ...but past it, and each time the WAL doubles after, nothing checkpointing it is logged
  // (12 MB of WAL: from 16 frames, 10 times).
  const std::string log = read_file(log_);
  std::size_t warnings = 0;
  for (std::size_t at = 0; (at = log.find("nothing has reset it", at)) != std::string::npos; ++at) {
    ++warnings;
  }
  EXPECT_GE(warnings, 5u) << log;
  EXPECT_LE(warnings, 12u) << log;
  // Nothing is lost: the rows are read from the WAL.
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kRows);
}

/// The control, today's behaviour: the same workload is checkpointed into the database file
/// while it runs, and the WAL is truncated at shutdown.
TEST_F(CheckpointModeTest, InternalCheckpointsWhileWritingAndTruncatesTheWalAtShutdown) {
  const Sizes s = write_rows({"--wal-limit", "1048576"});
  ASSERT_FALSE(HasFatalFailure());
  std::cout << "[          ] internal: database " << s.db_at_start << " -> " << s.largest_db
            << " bytes, WAL " << s.wal_at_end << " bytes\n";
  EXPECT_GT(s.largest_db, s.db_at_start);
  EXPECT_LT(s.wal_at_end, kDataBytes);
  stop_daemon();
  EXPECT_EQ(file_size(db_ + "-wal"), 0);
  EXPECT_GT(file_size(db_), kDataBytes);
  EXPECT_FALSE(contains(read_file(log_), "--wal-limit is ignored"));
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kRows);
}

/// Nor does SQLite checkpoint for it when the daemon is gone: the database, killed, restarted and
/// stopped again keeps its WAL; the rows of both runs are there.
TEST_F(CheckpointModeTest, ExternalLeavesTheWalAloneAcrossAKillAndARestart) {
  const Sizes s = write_rows({"--checkpoint-mode", "external"});
  ASSERT_FALSE(HasFatalFailure());
  daemon_.signal(SIGKILL);
  ASSERT_TRUE(daemon_.wait_exit(kStopTimeout).has_value());
  start_daemon({"--checkpoint-mode", "external"});
  ASSERT_FALSE(HasFatalFailure());
  connect_client().execute("INSERT INTO t (pad) VALUES (x'00')");
  stop_daemon();
  EXPECT_EQ(file_size(db_), s.db_at_start);
  EXPECT_GT(file_size(db_ + "-wal"), s.wal_at_end);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kRows + 1);
}

/// `pasyn-writerd --prepare-readers` (run by the socket unit before the daemon starts) opens the
/// database read-write and, as its last connection, SQLite would checkpoint when it closes it:
/// it must not (the WAL is Litestream's to checkpoint).
TEST_F(CheckpointModeTest, PrepareReadersDoesNotCheckpoint) {
  const Sizes s = write_rows({"--checkpoint-mode", "external"});
  ASSERT_FALSE(HasFatalFailure());
  daemon_.signal(SIGKILL);
  ASSERT_TRUE(daemon_.wait_exit(kStopTimeout).has_value());
  const Completed prepared =
      run_to_completion({PASYN_WRITERD, "--database", db_, "--prepare-readers"}, dir_);
  EXPECT_TRUE(exited_with(prepared.status, 0)) << prepared.err;
  EXPECT_EQ(file_size(db_), s.db_at_start);
  EXPECT_EQ(file_size(db_ + "-wal"), s.wal_at_end);
}

/// An admin's explicit CHECKPOINT still runs with `external`: it was asked for.
TEST_F(CheckpointModeTest, ExternalStillRunsAnExplicitCheckpoint) {
  const Sizes s = write_rows({"--checkpoint-mode", "external"});
  ASSERT_FALSE(HasFatalFailure());
  auto client = connect_client();
  const pasyn::Report report = client.checkpoint("PASSIVE");
  EXPECT_EQ(as_int(figure(report, "busy")), 0);
  EXPECT_GT(as_int(figure(report, "checkpointed_frames")), 0);
  EXPECT_GT(file_size(db_), kDataBytes);
  EXPECT_EQ(file_size(db_ + "-wal"), s.wal_at_end) << "PASSIVE does not truncate";
}

/// With `external`, the checkpointing program writes right after each of its checkpoints
/// (Litestream's row in _litestream_seq; its copying of the WAL waits for it): the daemon,
/// writing without pause, leaves it the write lock after the first batch that sees the
/// checkpoint, not only once the WAL is large (checkpointer.cpp, yield_to_checkpointer). The
/// program waits as Litestream does (SQLite's busy handler, for at most 1 s) and writes in the
/// daemon's pause. The daemon must be busy without pause for this to test anything: with one
/// synchronous client, its writer idled between requests, the program could take the lock there
/// before or after any pause, and which came first was a race (it failed a CI run under ASan).
TEST_F(CheckpointModeTest, ExternalLeavesTheWriteLockFreeAfterAnotherProgramsCheckpoint) {
  start_daemon({"--checkpoint-mode", "external", "--log-level", "debug"});
  ASSERT_FALSE(HasFatalFailure());
  connect_client().execute("CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB)");
  connect_client().execute("CREATE TABLE other (n INTEGER)");
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> written{0};
  std::thread writer([&] {
    auto client = connect_client();
    std::deque<std::future<std::int64_t>> in_flight;  // 64 at all times: the writer never idles
    while (!stop.load()) {
      in_flight.push_back(client.execute_async("INSERT INTO t (pad) VALUES (x'00')"));
      if (in_flight.size() < 64) continue;
      in_flight.front().get();
      in_flight.pop_front();
      ++written;
    }
    for (auto& f : in_flight) f.get();
  });
  struct JoinAtExit {  // also when an assertion below returns early
    std::atomic<bool>& stop;
    std::thread& thread;
    ~JoinAtExit() {
      stop = true;
      thread.join();
    }
  } join_writer{stop, writer};
  ASSERT_TRUE(eventually([&] { return written.load() >= 100; }, 30s));

  // Another program: a checkpoint, then its write at once, as Litestream does; up to kCycles
  // times, until one of its writes lands in a pause of the daemon. The daemon pauses after the
  // first batch that sees the checkpoint, but the program may also take the lock in the
  // microseconds between two batches before that (1 cycle in about 90 did, 6 copies of this test
  // at once under ASan); then the pause comes after its write. Without the pauses that a
  // checkpoint begins, it failed in 3 runs of 3 (the pauses for a large WAL do not count).
  constexpr int kCycles = 20;
  // The daemon's debug line for a pause in which the program wrote, begun by its checkpoint
  // (or by the WAL reset that the checkpoint allowed: SQLite resets the WAL at the next write
  // once a checkpoint copied all of it), not by the WAL being large (kYieldFrames, 1,000 frames).
  const auto wrote_in_a_pause = [&] {
    static const std::regex pause(
        R"(left the write lock free for \d+ us \(WAL (\d+) frames(, another program checkpoints)?\): another program wrote)");
    const std::string log = read_file(log_);
    for (std::sregex_iterator m(log.begin(), log.end(), pause), end; m != end; ++m) {
      if ((*m)[2].matched || std::stoll((*m)[1].str()) < 1000) return true;
    }
    return false;
  };
  int cycles = 0;
  while (cycles < kCycles && !wrote_in_a_pause()) {
    ++cycles;
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(db_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    sqlite3_busy_timeout(db, 1000);  // Litestream's
    EXPECT_EQ(sqlite3_exec(db, "PRAGMA wal_checkpoint(PASSIVE)", nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    EXPECT_EQ(sqlite3_exec(db, "INSERT INTO other VALUES (1)", nullptr, nullptr, nullptr),
              SQLITE_OK)
        << "cycle " << cycles << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
    const std::int64_t after = written.load();
    ASSERT_TRUE(eventually([&] { return written.load() >= after + 100; }, 30s))
        << "the daemon writes again after the pause";
  }
  stop = true;
  EXPECT_EQ(query_int("SELECT count(*) FROM other"), cycles);
  EXPECT_TRUE(wrote_in_a_pause()) << "in " << cycles << " cycles\n"
                                  << read_file(log_).substr(0, 4000);
}

}  // namespace
