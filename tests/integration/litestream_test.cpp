// The Litestream test (README "Surviving the loss of the machine"): the real pasyn-writerd with
// --checkpoint-mode external beside the real Litestream v0.3.14 (built by scripts/litestream.sh),
// replicating to a file replica. Writers write at full speed for 60 s while the daemon is killed
// (SIGKILL) and restarted twice; then the machine is "lost": Litestream and the daemon are
// killed at the same moment, with writes in flight, and the replica is restored to another path.
// Every write acknowledged more than one replication interval before that moment must be in the
// restored copy, the copy must pass PRAGMA integrity_check, and Litestream must have kept one
// generation throughout (nobody reset the WAL behind its back), but for one it may start when a
// kill cuts a commit short (see the check at the end).
// Before the daemon left the write lock free for Litestream's checkpoints (checkpointer.cpp,
// yield_to_checkpointer), 42 of Litestream's syncs failed in such a run and it lost its place in
// the WAL once ("wal overwritten by another process": a second generation); before it paused
// after a WAL reset, restored copies were corrupt (kMaxCheckpointPages).
//
// Its own executable, registered only where Litestream can run beside an uninstrumented daemon
// (not in the sanitizer trees: tests/CMakeLists.txt). A missing Go or Litestream fails it: it
// never skips.
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
using namespace std::chrono_literals;

// How often Litestream copies the WAL to its shadow WAL (monitor-interval) and that to the
// replica (sync-interval): an acknowledged write reaches the replica within their sum (the
// monitor interval is part of Litestream's interval: a write waits for it before the sync
// interval's wait begins) plus the time Litestream takes to copy it, twice (to the shadow WAL,
// synced; then, compressed, to the replica). The bound, one sync interval, cannot be held
// to the millisecond: a write acknowledged just after a copy began waits a whole monitor interval
// for the next, and its copy may finish just after the replica's sync began, which then waits a
// whole sync interval. So kCopyAllowance, measured: over five whole runs at full speed (every
// moment a possible loss; load 1.8-3.7 on 2 cores) the data in the replica was at worst 1.09,
// 1.12, 1.21, 1.31 and 1.50 s old (the last with a build running beside), and the oldest write
// missing at the end had been acknowledged 0.67-1.01 s before it (15 runs). Before the daemon left
// the write lock free as soon as Litestream checkpoints (checkpointer.cpp), Litestream copied
// nothing while it waited for the lock, up to 0.84 s at each checkpoint: the data in the replica
// was at worst 1.70-2.91 s old, and one run missed a write acknowledged 2.37 s before the end
// (the bound was 3.1 s then).
constexpr auto kMonitorInterval = 100ms;
constexpr auto kSyncInterval = 1s;
constexpr auto kCopyAllowance = 500ms;
// Litestream's RESTART checkpoint from 2,000 WAL pages (8 MB; its default is 10,000), as in
// systemd/litestream/litestream.yml: five times as many WAL resets, the moment where a writer
// that does not make room for Litestream overwrites the end of the old WAL before Litestream
// copied it. Before the daemon paused after a reset (checkpointer.cpp), two runs out of two
// restored a corrupt copy.
constexpr int kMaxCheckpointPages = 2000;
constexpr auto kReplicationBound = kMonitorInterval + kSyncInterval + kCopyAllowance;
constexpr auto kRun = 60s;
// How long after a kill of the daemon Litestream may start a new generation because of it (its
// next sync after the restart: a monitor and a sync interval, and the restart itself).
constexpr auto kGenerationAfterKill = 5s;
constexpr int kWriters = 4;

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string litestream_binary(const TempDir& dir) {
  const Completed built = run_to_completion(
      {"/bin/bash", PASYN_LITESTREAM_SCRIPT, PASYN_LITESTREAM_DIR}, dir, {}, 600s);
  if (!exited_with(built.status, 0)) {
    ADD_FAILURE() << "scripts/litestream.sh failed (" << describe_status(built.status)
                  << "): Litestream is required, the test does not skip\n"
                  << built.err;
    return {};
  }
  return trimmed(built.out);
}

std::size_t entries(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return 0;
  return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(dir, ec),
                                                std::filesystem::directory_iterator()));
}

// The new generations Litestream logged after its first one, as (time, reason): its log lines
// read `time=2026-12-05T18:25:36.731Z level=INFO msg="sync: new generation" ... reason="..."`.
struct NewGeneration {
  std::chrono::system_clock::time_point at;
  std::string reason;
};
std::vector<NewGeneration> new_generations(const std::string& log) {
  std::vector<NewGeneration> found;
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find("msg=\"sync: new generation\"") == std::string::npos) continue;
    const auto r = line.find("reason=\"");
    std::string reason = r == std::string::npos ? "" : line.substr(r + 8);
    if (!reason.empty() && reason.back() == '"') reason.pop_back();
    if (reason == "no generation exists") continue;  // its first
    std::tm tm{};
    int millis = 0;
    const auto t = line.find("time=");
    if (t == std::string::npos ||
        std::sscanf(line.c_str() + t + 5, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &millis) != 7) {
      found.push_back({{}, reason + " (at a time the test could not read: " + line + ")"});
      continue;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    found.push_back(
        {std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::milliseconds(millis),
         reason});
  }
  return found;
}

std::size_t occurrences(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

struct Ack {
  std::int64_t seq;
  Clock::time_point at;
};

class LitestreamTest : public DaemonTest {
 protected:
  std::vector<std::string> daemon_flags() const {
    // A small --wal-limit: ignored with external (a warning says so); with internal it would
    // make the daemon fight Litestream's read transaction for the WAL.
    return {"--checkpoint-mode", "external", "--wal-limit", "1048576"};
  }

  void write_config(const std::string& litestream_yml, const std::string& replica) const {
    std::ofstream yml(litestream_yml);
    yml << "dbs:\n"
        << "  - path: " << db_ << "\n"
        << "    monitor-interval: " << kMonitorInterval.count() << "ms\n"
        << "    max-checkpoint-page-count: " << kMaxCheckpointPages << "\n"
        << "    replicas:\n"
        << "      - type: file\n"
        << "        path: " << replica << "\n"
        << "        sync-interval: "
        << std::chrono::duration_cast<std::chrono::milliseconds>(kSyncInterval).count() << "ms\n";
  }
};

TEST_F(LitestreamTest, EveryAcknowledgedWriteSurvivesKillsAndTheLossOfTheMachine) {
  const std::string litestream = litestream_binary(dir_);
  ASSERT_FALSE(litestream.empty());
  const std::string yml = dir_.file("litestream.yml"), replica = dir_.file("replica");
  const std::string litestream_log = dir_.file("litestream.log");
  write_config(yml, replica);

  start_daemon(daemon_flags());
  ASSERT_FALSE(HasFatalFailure());
  connect_client().execute(
      "CREATE TABLE t (writer INTEGER, seq INTEGER, pad BLOB, PRIMARY KEY (writer, seq))");
  Process replicator;
  replicator.spawn({litestream, "replicate", "-config", yml}, litestream_log, litestream_log);
  // Its first snapshot: a generation in the replica.
  ASSERT_TRUE(
      eventually([&] { return entries(std::filesystem::path(replica) / "generations") > 0; }, 30s))
      << read_file(litestream_log);

  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> errors{0};
  std::vector<std::vector<Ack>> acks(kWriters);
  std::vector<std::int64_t> attempted(kWriters, 0);
  std::vector<std::thread> writers;
  std::mutex mu;
  std::string first_errors;
  struct JoinAtExit {  // also when an assertion below returns early
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    void join() {
      stop = true;
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
    ~JoinAtExit() { join(); }
  } join_writers{stop, writers};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto client = connect_client();
      const pasyn::Blob pad(100, static_cast<std::uint8_t>('a' + w));
      std::int64_t seq = 0;
      while (!stop.load()) {
        try {
          client.execute("INSERT INTO t (writer, seq, pad) VALUES (?, ?, ?)",
                         {std::int64_t{w}, seq, pad});
          acks[w].push_back({seq, Clock::now()});
        } catch (const pasyn::Error& e) {
          // The daemon was killed: outcome unknown; the client reconnects by itself.
          if (++errors <= 3) {
            std::lock_guard lk(mu);
            first_errors += std::string(e.what()) + "\n";
          }
          std::this_thread::sleep_for(1ms);
        }
        attempted[w] = ++seq;
      }
    });
  }

  const auto started = Clock::now();
  std::vector<std::chrono::system_clock::time_point> kills;  // Litestream logs wall-clock times
  for (int restart = 1; restart <= 2; ++restart) {
    std::this_thread::sleep_until(started + restart * kRun / 3);
    kills.push_back(std::chrono::system_clock::now());
    daemon_.signal(SIGKILL);
    ASSERT_TRUE(daemon_.wait_exit(kStopTimeout).has_value());
    start_daemon(daemon_flags());
    ASSERT_FALSE(HasFatalFailure());
  }
  std::this_thread::sleep_until(started + kRun);
  // The machine is lost: replication and the daemon stop at once, writes in flight.
  const auto end = Clock::now();
  replicator.signal(SIGKILL);
  daemon_.signal(SIGKILL);
  replicator.wait_exit(kStopTimeout);
  daemon_.wait_exit(kStopTimeout);
  join_writers.join();

  const std::string restored = dir_.file("restored.sqlite");
  const Completed restore =
      run_to_completion({litestream, "restore", "-config", yml, "-o", restored, db_}, dir_);
  ASSERT_TRUE(exited_with(restore.status, 0)) << restore.err << read_file(litestream_log);

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(restored.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  std::string integrity;
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr), SQLITE_OK);
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    integrity += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  EXPECT_EQ(integrity, "ok");
  std::vector<std::vector<bool>> present(kWriters);
  for (int w = 0; w < kWriters; ++w) present[w].assign(attempted[w], false);
  std::int64_t rows = 0, unknown = 0;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT writer, seq FROM t", -1, &stmt, nullptr), SQLITE_OK);
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    const auto w = sqlite3_column_int64(stmt, 0), seq = sqlite3_column_int64(stmt, 1);
    ++rows;
    if (w >= 0 && w < kWriters && seq >= 0 && seq < attempted[w]) {
      present[w][seq] = true;
    } else {
      ++unknown;
    }
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);

  std::int64_t acked = 0, due = 0, missing = 0, late_present = 0;
  Clock::duration lag{};  // how long before the end the oldest write missing was acknowledged
  for (int w = 0; w < kWriters; ++w) {
    for (const Ack& a : acks[w]) {
      ++acked;
      if (!present[w][a.seq]) lag = std::max(lag, end - a.at);
      if (a.at < end - kReplicationBound) {
        ++due;
        if (!present[w][a.seq]) ++missing;
      } else if (present[w][a.seq]) {
        ++late_present;
      }
    }
  }
  const auto ms = [](Clock::duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  const auto generations = entries(std::filesystem::path(replica) / "generations");
  std::cout << "[          ] " << acked << " writes acknowledged in "
            << std::chrono::duration_cast<std::chrono::seconds>(kRun).count() << " s (" << errors
            << " lost with the daemon), " << rows << " rows restored; " << due
            << " acknowledged more than " << ms(kReplicationBound) << " ms before the end, "
            << missing << " of them missing; " << late_present << " of the " << acked - due
            << " later ones restored; the oldest write missing was acknowledged " << ms(lag)
            << " ms before the end; " << generations << " generation(s), "
            << occurrences(read_file(litestream_log), "sync error") << " sync errors\n"
            << first_errors;
  EXPECT_GT(due, 0);
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(unknown, 0) << "rows that no writer attempted";
  // One generation throughout, but for one that Litestream may start when the daemon is killed
  // in the middle of a commit: SQLite writes a commit's frames to the WAL file before it
  // publishes them in the WAL-index, Litestream reads the file and may copy the frames of the
  // commit the kill cut short (never acknowledged), and the restarted daemon, finding them
  // unpublished, writes its next commit over them ("wal overwritten by another process"; seen in
  // about 1 run in 10, the same with the daemon before its pauses for Litestream). Any other new
  // generation (a reset of the WAL behind Litestream's back, by --wal-limit or a shutdown
  // checkpoint) fails the test.
  const std::string log = read_file(litestream_log);
  const auto fresh = new_generations(log);
  EXPECT_EQ(generations, 1 + fresh.size()) << "generations in the replica against Litestream's log";
  for (const auto& g : fresh) {
    const bool at_a_kill = g.reason == "wal overwritten by another process" &&
                           std::any_of(kills.begin(), kills.end(), [&](auto k) {
                             return g.at >= k - 1s && g.at <= k + kGenerationAfterKill;
                           });
    EXPECT_TRUE(at_a_kill) << "Litestream started a new generation (" << g.reason
                           << ") other than at a kill of the daemon:\n"
                           << log;
  }
  if (HasFailure()) std::cerr << "---- litestream ----\n" << read_file(litestream_log);
}

}  // namespace
