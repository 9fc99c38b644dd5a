// The daemon's side of issue 11, item 2: a synchronous execute costs pasyn-writerd no heap
// allocation of its own in the steady state. The request's payload goes into a buffer the
// writer handed back (Writer::submit), it crosses to the writer and back through reused
// vectors (the queue, Fifo, the batch, per-connection reply buffers), and the change feed
// fills again the commits its history let go (SpareCommits, FeedHub::publish). Counted with an
// LD_PRELOAD library (alloc_count.cpp) in the real daemon: its operator new calls, not SQLite's
// mallocs.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "../sanitizers.hpp"
#include "daemon_fixture.hpp"

namespace pasyn::itest {
namespace {

class DaemonAllocTest : public DaemonTest {
 protected:
  void SetUp() override {
#if PASYN_TEST_ASAN || PASYN_TEST_TSAN
    GTEST_SKIP() << "a sanitizer runtime replaces operator new before any preloaded library";
#endif
    daemon_env_ = {std::string("LD_PRELOAD=") + PASYN_ALLOC_COUNT,
                   "PASYN_ALLOC_COUNT_FILE=" + count_file_};
    start_daemon(daemon_args_);
  }

  // A small history, so that the feed reaches its steady state (it lets go of a commit for each
  // one it takes) within the warm-up.
  const std::vector<std::string> daemon_args_{"--synchronous", "normal", "--feed-history", "65536"};

  // The daemon's operator new calls so far (bounded wait for its signal handler).
  std::uint64_t daemon_allocations() {
    std::remove(count_file_.c_str());
    daemon_.signal(SIGUSR2);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(count_file_);
      std::uint64_t n = 0;
      if (in >> n) return n;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "the daemon did not report its allocations";
    return 0;
  }

  // Several callers at once: batches of one to kCallers requests from as many connections
  // alternate, so the feed's commits vary in size and its history lets go of none, one or
  // several per commit (SpareCommits, change_feed.hpp).
  void expect_no_allocation_from_several_callers() {
    constexpr int kCallers = 8;
    constexpr int kWarmUp = 1500;  // per caller
    constexpr int kCalls = 1000;   // per caller
    connect_client().execute("CREATE TABLE t(x INTEGER, s TEXT)");
    // Connected before counting: a connection costs allocations (its session and buffers).
    std::vector<MultiplexedClient> clients;
    for (int c = 0; c < kCallers; ++c) clients.push_back(connect_client());
    const Params params{Value{std::int64_t{7}}, Value{std::string(40, 'p')}};
    auto insert = [&](int calls) {
      std::vector<std::thread> threads;
      for (auto& client : clients) {
        threads.emplace_back([&client, &params, calls] {
          for (int i = 0; i < calls; ++i) client.execute("INSERT INTO t VALUES (?, ?)", params);
        });
      }
      for (auto& t : threads) t.join();
    };
    insert(kWarmUp);
    const auto before = daemon_allocations();
    insert(kCalls);
    const auto after = daemon_allocations();
    EXPECT_EQ(after - before, 0u) << "operator new calls in pasyn-writerd across " << kCallers
                                  << " x " << kCalls << " synchronous execute() calls";
    EXPECT_EQ(query_int("SELECT count(*) FROM t"), kCallers * (kWarmUp + kCalls));
  }

  std::string count_file_ = dir_.file("allocations");
};

TEST_F(DaemonAllocTest, ASynchronousExecuteCostsTheDaemonNoAllocation) {
  constexpr int kWarmUp = 3000;  // ~130 bytes of feed history each: it is full after ~500
  constexpr int kCalls = 2000;
  auto client = connect_client();
  client.execute("CREATE TABLE t(x INTEGER, s TEXT)");
  const Params params{Value{std::int64_t{7}}, Value{std::string(40, 'p')}};
  for (int i = 0; i < kWarmUp; ++i) client.execute("INSERT INTO t VALUES (?, ?)", params);
  const auto before = daemon_allocations();
  for (int i = 0; i < kCalls; ++i) client.execute("INSERT INTO t VALUES (?, ?)", params);
  const auto after = daemon_allocations();
  EXPECT_GT(before, 0u) << "the counter does not count";
  EXPECT_EQ(after - before, 0u) << "operator new calls in pasyn-writerd across " << kCalls
                                << " synchronous execute() calls";
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kWarmUp + kCalls);
}

// At synchronous=normal the writer thread runs the I/O (--writer-io auto).
TEST_F(DaemonAllocTest, SeveralCallersCostTheDaemonNoAllocation) {
  expect_no_allocation_from_several_callers();
}

// The I/O thread reads and parses, the writer commits and answers (the layout at full).
TEST_F(DaemonAllocTest, SeveralCallersCostTheDaemonNoAllocationWithoutWriterIo) {
  stop_daemon();
  auto args = daemon_args_;
  args.insert(args.end(), {"--writer-io", "off"});
  start_daemon(args);
  expect_no_allocation_from_several_callers();
}

// The feed refills a commit its history let go only for a commit of the same capacity class
// (ChangeLog::capacity_for): one larger commit (a batch of 50 rows here) once let go must not
// leave every later small commit allocating its own.
TEST_F(DaemonAllocTest, ALargerCommitLeavesTheFeedAllocatingNothingAfterward) {
  constexpr int kCalls = 2000;
  auto client = connect_client();
  client.execute("CREATE TABLE t(x INTEGER, s TEXT)");
  const Params params{Value{std::int64_t{7}}, Value{std::string(40, 'p')}};
  for (int i = 0; i < 1000; ++i) client.execute("INSERT INTO t VALUES (?, ?)", params);
  client.execute_many("INSERT INTO t VALUES (?, ?)", std::vector<Params>(50, params));
  // ~500 one-row commits fill the 64 KiB history: the large one leaves it within these.
  for (int i = 0; i < 3000; ++i) client.execute("INSERT INTO t VALUES (?, ?)", params);
  const auto before = daemon_allocations();
  for (int i = 0; i < kCalls; ++i) client.execute("INSERT INTO t VALUES (?, ?)", params);
  const auto after = daemon_allocations();
  EXPECT_EQ(after - before, 0u) << "operator new calls in pasyn-writerd across " << kCalls
                                << " synchronous execute() calls after a larger commit";
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1000 + 50 + 3000 + kCalls);
}

}  // namespace
}  // namespace pasyn::itest
