// The reader role (leader/follower, client_impl.hpp), against the real pasyn-writerd: a lone
// synchronous caller reads its own reply, so the client's I/O thread sleeps through sequential
// calls (and through concurrent ones, whose callers also send their own requests); the role
// passes between callers, and to the I/O thread for asynchronous completions,
// so that every reply reaches its caller; a reader that times out, is closed under, or loses
// the daemon lets go promptly; an idle client notices that the daemon has gone.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
using pasyn::Timeout;

constexpr auto kRoleHang = 30s;  // a call not back by then hangs: the test fails

class ReaderRoleTest : public DaemonTest {
 protected:
  void TearDown() override {
    if (stopped_) daemon_.signal(SIGCONT);
    DaemonTest::TearDown();
  }
  void start_with_table(const std::vector<std::string>& flags = {}) {
    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    connect_client().execute("CREATE TABLE kv (k TEXT, who INTEGER)");
  }
  std::int64_t rows() const { return query_int("SELECT count(*) FROM kv"); }
  void stop() {
    daemon_.signal(SIGSTOP);
    stopped_ = true;
  }
  bool stopped_ = false;
};

// Waits (bounded) for `f`; a call still running after kRoleHang is a hang, and the process
// exits, so that it fails instead of hanging the suite.
template <typename T>
T within_hang_bound(std::future<T>& f, const char* what) {
  if (f.wait_for(kRoleHang) != std::future_status::ready) {
    ADD_FAILURE() << what << " did not return within 30 s";
    std::_Exit(1);
  }
  return f.get();
}

// The ids of this process's threads named `name` (/proc/self/task/*/comm).
std::vector<std::string> threads_named(const std::string& name) {
  std::vector<std::string> tids;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name) {
      tids.push_back(task.path().filename().string());
    }
  }
  return tids;
}

// The client's I/O thread, once it has named itself: it does so as its first step, which a
// synchronous call never waits for (CI saw none named yet after the warm-up call).
std::vector<std::string> client_io_threads() {
  std::vector<std::string> io;
  eventually([&] { return !(io = threads_named("pasyn-client-io")).empty(); }, 10s);
  return io;
}

// voluntary_ctxt_switches of thread `tid` of this process: how often it went to sleep.
long voluntary_switches(const std::string& tid) {
  std::ifstream status("/proc/self/task/" + tid + "/status");
  const std::string key = "voluntary_ctxt_switches:";
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  }
  return -1;
}

TEST_F(ReaderRoleTest, TheIoThreadSleepsThroughSequentialSynchronousCalls) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  client.execute("INSERT INTO kv (k) VALUES ('warm-up')");
  const auto io = client_io_threads();
  ASSERT_EQ(io.size(), 1u) << "the client's I/O thread is not named pasyn-client-io";
  const long before = voluntary_switches(io[0]);
  ASSERT_GE(before, 0);
  constexpr int kCalls = 2000;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_EQ(client.execute("INSERT INTO kv (k, who) VALUES ('seq', ?)", {i}), 1);
  }
  const long woken = voluntary_switches(io[0]) - before;
  // Through the I/O thread, every reply wakes it once at least (kCalls or more).
  EXPECT_LT(woken, kCalls / 10) << "the I/O thread woke " << woken << " times for " << kCalls
                                << " sequential calls";
  EXPECT_EQ(rows(), kCalls + 1);
}

// Threads sharing one client, each waiting for its own call: every caller sends its request
// itself, also while the others' replies are outstanding, and the replies are read by the
// callers (the reader role passes among them), so the I/O thread has nothing to do. Handing the
// request to the I/O thread instead cost a wake-up of it per request (client_impl.hpp).
TEST_F(ReaderRoleTest, TheIoThreadSleepsThroughConcurrentSynchronousCalls) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  client.execute("INSERT INTO kv (k) VALUES ('warm-up')");
  const auto io = client_io_threads();
  ASSERT_EQ(io.size(), 1u);
  const long before = voluntary_switches(io[0]);
  ASSERT_GE(before, 0);
  constexpr int kThreads = 4, kCalls = 500;
  std::vector<std::future<int>> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.push_back(std::async(std::launch::async, [&client, t] {
      int done = 0;
      for (int i = 0; i < kCalls; ++i) {
        done += static_cast<int>(client.execute("INSERT INTO kv (k, who) VALUES ('con', ?)", {t}));
      }
      return done;
    }));
  }
  for (auto& t : threads) EXPECT_EQ(within_hang_bound(t, "a caller"), kCalls);
  const long woken = voluntary_switches(io[0]) - before;
  EXPECT_LT(woken, kThreads * kCalls / 10)
      << "the I/O thread woke " << woken << " times for " << kThreads * kCalls
      << " synchronous calls from " << kThreads << " threads";
  EXPECT_EQ(rows(), kThreads * kCalls + 1);
}

// Asynchronous calls one at a time: the I/O thread reads their replies, and once it has, it
// keeps watching the idle connection, so the next call need not wake it (an eventfd write and a
// wake-up per call): one wake-up per reply, not two.
TEST_F(ReaderRoleTest, TheIoThreadWakesOncePerReplyOfSequentialAsynchronousCalls) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  client.execute_async("INSERT INTO kv (k) VALUES ('warm-up')").get();
  const auto io = client_io_threads();
  ASSERT_EQ(io.size(), 1u);
  // Counted in blocks, judged by the quietest (upper bound) and the busiest (lower bound): a
  // thread preempted or blocked on a mutex also counts a switch, and a load spike of the machine
  // lands in one block, not in all.
  constexpr int kBlocks = 4, kCalls = 500;
  long fewest = -1, most = -1;
  for (int b = 0; b < kBlocks; ++b) {
    const long before = voluntary_switches(io[0]);
    ASSERT_GE(before, 0);
    for (int i = 0; i < kCalls; ++i) {
      ASSERT_EQ(client.execute_async("INSERT INTO kv (k, who) VALUES ('async', ?)", {i}).get(), 1);
    }
    const long woken = voluntary_switches(io[0]) - before;
    fewest = fewest < 0 ? woken : std::min(fewest, woken);
    most = std::max(most, woken);
  }
  // Woken to take the role, then by the reply: 2 * kCalls.
  EXPECT_LT(fewest, kCalls * 3 / 2) << "the I/O thread woke at least " << fewest << " times for "
                                    << kCalls << " sequential asynchronous calls";
  EXPECT_GE(most, kCalls / 2) << "the replies were read by the I/O thread";
  EXPECT_EQ(rows(), kBlocks * kCalls + 1);
}

TEST_F(ReaderRoleTest, ConcurrentSynchronousCallersEachGetTheirOwnReply) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  constexpr int kThreads = 8;
  constexpr int kCalls = 250;
  std::vector<std::future<int>> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.push_back(std::async(std::launch::async, [&client, t] {
      int wrong = 0;
      for (int i = 0; i < kCalls; ++i) {
        const auto rowid = client.execute_returning_rowid("INSERT INTO kv (k, who) VALUES (?, ?)",
                                                          {std::to_string(i), t});
        // The reply is this thread's own: the row it names is the one this call inserted.
        const auto rows = client.execute_fetchall("SELECT who, k FROM kv WHERE rowid = ?", {rowid});
        if (rows.size() != 1 || rows[0][0] != pasyn::Value(std::int64_t{t}) ||
            rows[0][1] != pasyn::Value(std::to_string(i))) {
          ++wrong;
        }
      }
      return wrong;
    }));
  }
  for (auto& t : threads) EXPECT_EQ(within_hang_bound(t, "a caller"), 0);
  EXPECT_EQ(rows(), kThreads * kCalls);
}

TEST_F(ReaderRoleTest, AsynchronousCallsTransactionsAndSynchronousCallsShareOneClient) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  constexpr int kRounds = 60;
  auto futures_thread = std::async(std::launch::async, [&client] {
    std::int64_t changed = 0;
    for (int r = 0; r < kRounds; ++r) {
      std::vector<std::future<std::int64_t>> writes;
      for (int i = 0; i < 10; ++i) {
        writes.push_back(client.execute_async("INSERT INTO kv (k, who) VALUES ('async', 1)"));
      }
      for (auto& w : writes) changed += w.get();
    }
    return changed;
  });
  auto sync_thread = std::async(std::launch::async, [&client] {
    std::int64_t changed = 0;
    for (int r = 0; r < kRounds * 10; ++r) {
      changed += client.execute("INSERT INTO kv (k, who) VALUES ('sync', 2)");
    }
    return changed;
  });
  auto tx_thread = std::async(std::launch::async, [&client] {
    std::int64_t changed = 0;
    for (int r = 0; r < kRounds; ++r) {
      auto tx = client.begin();
      changed += tx.execute("INSERT INTO kv (k, who) VALUES ('tx', 3)");
      tx.commit();
      auto granted = client.begin_async();
      auto later = within_hang_bound(granted, "begin_async");
      changed += later.execute("INSERT INTO kv (k, who) VALUES ('tx', 3)");
      later.commit();
    }
    return changed;
  });
  EXPECT_EQ(within_hang_bound(futures_thread, "the asynchronous calls"), kRounds * 10);
  EXPECT_EQ(within_hang_bound(sync_thread, "the synchronous calls"), kRounds * 10);
  EXPECT_EQ(within_hang_bound(tx_thread, "the transactions"), kRounds * 2);
  EXPECT_EQ(rows(), kRounds * 22);
}

// The first caller reads (the writer is held up by another client's transaction) and times
// out; the second, which waits behind it, must be handed the role and get its reply.
TEST_F(ReaderRoleTest, AReaderThatTimesOutHandsTheRoleToTheNextCaller) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "60s"}));
  auto holder = connect_client();
  auto held = holder.begin();
  auto options = bounded_options();
  options.request_timeout = 0ms;
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());

  auto impatient = std::async(std::launch::async, [&client] {
    return outcome_of(
        [&] { client.execute("INSERT INTO kv (k) VALUES ('late')", {}, Timeout(500ms)); });
  });
  std::this_thread::sleep_for(150ms);  // the impatient caller reads; the next one follows
  auto patient = std::async(std::launch::async, [&client] {
    return client.execute("INSERT INTO kv (k) VALUES ('patient')", {}, Timeout(kRoleHang));
  });
  const auto timed_out = within_hang_bound(impatient, "the impatient caller");
  EXPECT_EQ(timed_out.rfind("TimeoutError: no reply", 0), 0u) << timed_out;
  held.commit();  // the daemon runs both writes now
  EXPECT_EQ(within_hang_bound(patient, "the caller behind the one that timed out"), 1);
  EXPECT_EQ(rows(), 2);  // "the request may still be executed": it was
  EXPECT_TRUE(client.ping());
}

TEST_F(ReaderRoleTest, CloseFromAnotherThreadReleasesACallerThatReads) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto options = bounded_options();
  options.request_timeout = 0ms;  // nothing but close() ends the wait
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());
  stop();
  auto reading = std::async(std::launch::async, [&client] {
    return outcome_of([&] { client.execute("INSERT INTO kv (k) VALUES ('x')"); });
  });
  auto following = std::async(std::launch::async, [&client] {
    return outcome_of([&] { client.execute("INSERT INTO kv (k) VALUES ('y')"); });
  });
  std::this_thread::sleep_for(200ms);  // both wait: one reads, one follows
  auto closing = std::async(std::launch::async, [&client] { client.close(); });
  within_hang_bound(closing, "close()");
  // Their requests were sent: closing the client does not take them back, so their outcome is
  // unknown, as for a lost connection (README: only ConnectionLostError and TimeoutError leave
  // the outcome open).
  for (auto* f : {&reading, &following}) {
    const auto what = within_hang_bound(*f, "a caller of a client closed under it");
    EXPECT_EQ(what.rfind("ConnectionLostError", 0), 0u) << what;
    EXPECT_NE(what.find("outcome unknown"), std::string::npos) << what;
  }
  EXPECT_THROW(client.ping(), pasyn::ConnectionClosedError);
  EXPECT_THROW((void)client.subscribe(), pasyn::ConnectionClosedError);
  EXPECT_FALSE(client.connected());
}

TEST_F(ReaderRoleTest, TheDaemonDyingWhileACallerReadsIsConnectionLost) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto options = bounded_options();
  options.request_timeout = 0ms;
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());
  stop();
  auto reading = std::async(std::launch::async, [&client] {
    return outcome_of([&] { client.execute("INSERT INTO kv (k) VALUES ('x')"); });
  });
  std::this_thread::sleep_for(200ms);
  daemon_.signal(SIGKILL);
  ASSERT_TRUE(daemon_.wait_exit(kStopTimeout).has_value());
  stopped_ = false;
  const auto what = within_hang_bound(reading, "a caller whose daemon died");
  EXPECT_EQ(what.rfind("ConnectionLostError", 0), 0u) << what;
  EXPECT_FALSE(client.connected());
}

// Nobody reads an idle connection; connected() looks at it, so a daemon that stopped is noticed,
// and the next call reconnects once the daemon is back.
TEST_F(ReaderRoleTest, AnIdleClientNoticesThatTheDaemonStoppedAndReconnectsLater) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  ASSERT_EQ(client.execute("INSERT INTO kv (k) VALUES ('before')"), 1);
  ASSERT_NO_FATAL_FAILURE(stop_daemon());
  const auto give_up = Clock::now() + 10s;
  while (client.connected() && Clock::now() < give_up) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(client.connected());
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  EXPECT_EQ(client.execute("INSERT INTO kv (k) VALUES ('after')"), 1);
  EXPECT_EQ(rows(), 2);
}

// The same without asking connected(): the first call after the daemon's restart notices the
// old connection's end before sending on it, and reconnects.
TEST_F(ReaderRoleTest, TheFirstCallAfterARestartReconnectsThoughNobodyWatchedTheConnection) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  ASSERT_EQ(client.execute("INSERT INTO kv (k) VALUES ('before')"), 1);
  ASSERT_NO_FATAL_FAILURE(stop_daemon());
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  EXPECT_EQ(client.execute("INSERT INTO kv (k) VALUES ('after')"), 1);
  EXPECT_EQ(rows(), 2);
}

}  // namespace
