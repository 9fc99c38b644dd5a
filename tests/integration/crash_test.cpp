// Durability under kill -9 (SPEC §2.1): every write the daemon acknowledged is in the database
// after the daemon is killed mid-load and restarted, and the database stays intact.
//
// Each round starts pasyn-writerd on the same database, lets writer processes
// (pasyn-test-crash-writer) insert unique keys and log each acknowledged one, kills the daemon
// with SIGKILL at a random moment, restarts it over the stale socket and lock file it left, and
// checks every logged key. Rounds: PASYN_CRASH_ROUNDS (default 20, synchronous=full) and
// PASYN_CRASH_ROUNDS_NORMAL (default 5, synchronous=normal); PASYN_CRASH_SEED replays a run.
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;

constexpr int kWriters = 2;
constexpr int kThreadsPerWriter = 4;
constexpr auto kWritersExitTimeout = 20s;   // longer than the writers' 10 s request timeout
constexpr auto kWritersStartTimeout = 60s;  // to the first acknowledged write of each writer

int rounds_from_env(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

std::uint32_t seed_from_env() {
  const char* v = std::getenv("PASYN_CRASH_SEED");
  if (v != nullptr && *v != '\0') return static_cast<std::uint32_t>(std::strtoul(v, nullptr, 10));
  return std::random_device{}();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

class CrashTest : public DaemonTest {
 protected:
  struct Check {
    std::size_t keys_checked = 0;
    std::size_t keys_present = 0;
  };

  /// Runs `rounds` kill -9 rounds with `--synchronous synchronous`, checking after each restart
  /// and once more after a final clean stop.
  void run_rounds(int rounds, const std::string& synchronous) {
    if (rounds <= 0) GTEST_SKIP() << "no rounds requested";
    const std::uint32_t seed = seed_from_env();
    std::cout << "[          ] synchronous=" << synchronous << ", " << rounds << " rounds, seed "
              << seed << " (PASYN_CRASH_SEED=" << seed << " replays it)\n";
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> kill_after_ms(0, 350);
    const std::vector<std::string> flags{"--synchronous", synchronous};

    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    connect_client().execute("CREATE TABLE acked (k TEXT PRIMARY KEY)");

    std::vector<std::string> all_logs;
    for (int round = 0; round < rounds; ++round) {
      SCOPED_TRACE("round " + std::to_string(round));
      std::vector<std::string> logs;
      ASSERT_NO_FATAL_FAILURE(load_then_kill(round, kill_after_ms(rng), logs));

      // The daemon must replace the stale socket by itself; the lock died with its holder.
      daemon_.spawn(daemon_args(flags, sock_), log_, log_);
      ASSERT_TRUE(wait_until_serving(daemon_, sock_))
          << "restart after kill -9 (stale socket and lock file left behind)";
      const Check c = check_keys(logs);
      ASSERT_EQ(c.keys_present, c.keys_checked) << "acknowledged writes lost in this round";
      all_logs.insert(all_logs.end(), logs.begin(), logs.end());
    }

    ASSERT_NO_FATAL_FAILURE(stop_daemon());
    EXPECT_FALSE(path_exists(sock_)) << "the socket file was left behind after SIGTERM";
    const Check total = check_keys(all_logs);
    std::cout << "[          ] synchronous=" << synchronous << ": " << rounds << " rounds, "
              << total.keys_checked << " acknowledged keys checked, " << total.keys_present
              << " present\n";
    EXPECT_EQ(total.keys_present, total.keys_checked);
    EXPECT_GT(total.keys_checked, 0u) << "no write was acknowledged in any round";
  }

  /// Starts the writers, kills the daemon `kill_after_ms` after each of them had a write
  /// acknowledged, and waits for the writers, which must all stop on ConnectionLostError.
  /// Appends their ack logs to `logs`.
  void load_then_kill(int round, int kill_after_ms, std::vector<std::string>& logs) {
    std::vector<Process> writers(kWriters);
    std::vector<std::string> names;
    for (int w = 0; w < kWriters; ++w) {
      // Appended, not "r" + ...: g++ 12 at -O3 warns falsely (-Wrestrict) on literal + string.
      std::string name = "r";
      name += std::to_string(round);
      name += "w";
      name += std::to_string(w);
      names.push_back(name);
      logs.push_back(dir_.file(name + ".acks"));
      writers[w].spawn(
          {PASYN_CRASH_WRITER, sock_, name, std::to_string(kThreadsPerWriter), logs.back()},
          dir_.file(name + ".out"), dir_.file(name + ".err"));
    }
    // The kill lands mid-load: after every writer had a write acknowledged (however long the
    // start takes on a loaded machine), then at a random moment.
    for (int w = 0; w < kWriters; ++w) {
      ASSERT_TRUE(
          wait_for_file_content(logs[logs.size() - kWriters + w], "\n", kWritersStartTimeout))
          << names[w] << " had no write acknowledged: " << read_file(dir_.file(names[w] + ".err"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));

    daemon_.signal(SIGKILL);
    const auto status = daemon_.wait_exit(kStopTimeout);
    ASSERT_TRUE(status.has_value()) << "pasyn-writerd survived SIGKILL";
    ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << "pasyn-writerd ended before it was killed: " << describe_status(*status);

    const auto deadline = Clock::now() + kWritersExitTimeout;
    for (int w = 0; w < kWriters; ++w) {
      const auto [wstatus, killed] = writers[w].wait_or_kill(deadline - Clock::now());
      EXPECT_FALSE(killed) << names[w] << " did not stop after the daemon died";
      EXPECT_TRUE(exited_with(wstatus, 0)) << names[w] << ": " << describe_status(wstatus) << "\n"
                                           << read_file(dir_.file(names[w] + ".err"));
    }
  }

  /// Every key of the given ack logs must be in acked, and the database must pass
  /// integrity_check. Opened only while a daemon serves the database again (it recovered it).
  Check check_keys(const std::vector<std::string>& logs) const {
    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    const auto integrity = conn.execute_fetchall("PRAGMA integrity_check");
    EXPECT_EQ(integrity.size(), 1u);
    if (!integrity.empty()) {
      EXPECT_EQ(std::get<std::string>(integrity[0].at(0)), "ok");
    }
    std::unordered_set<std::string> stored;
    for (const auto& row : conn.execute_fetchall("SELECT k FROM acked")) {
      stored.insert(std::get<std::string>(row.at(0)));
    }
    Check c;
    int reported = 0;
    for (const auto& path : logs) {
      for (const auto& key : read_lines(path)) {
        ++c.keys_checked;
        if (stored.count(key) != 0) {
          ++c.keys_present;
        } else if (reported++ < 10) {
          ADD_FAILURE() << "acknowledged key " << key << " is missing";
        }
      }
    }
    return c;
  }
};

TEST_F(CrashTest, EveryAcknowledgedWriteSurvivesKillNineOfTheDaemonWithSynchronousFull) {
  run_rounds(rounds_from_env("PASYN_CRASH_ROUNDS", 20), "full");
}

TEST_F(CrashTest, EveryAcknowledgedWriteSurvivesKillNineOfTheDaemonWithSynchronousNormal) {
  run_rounds(rounds_from_env("PASYN_CRASH_ROUNDS_NORMAL", 5), "normal");
}

}  // namespace
