// A synchronous call of MultiplexedClient allocates nothing in the steady state (issue 11,
// item 2): no promise/future shared state, no node of the pending table, no outbox growth, on
// the calling thread or on the client's I/O thread. Counted against the real pasyn-writerd.
//
// This binary replaces the global operator new to count allocations, so it is an executable of
// its own (pasyn_alloc_tests): the counter would be meaningless beside the other tests' threads.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <new>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <thread>
#include <vector>

#include "../replaced_new.hpp"
#include "daemon_fixture.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<std::size_t> g_allocations{0};
// While counting: the allocation with this number (1 = the first) is refused; 0: none.
std::atomic<std::size_t> g_refuse_at{0};
}  // namespace

bool test_allocation_allowed(std::size_t) {
  if (g_counting.load(std::memory_order_relaxed)) {
    const std::size_t n = g_allocations.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n == g_refuse_at.load(std::memory_order_relaxed)) return false;
  }
  return true;
}

namespace pasyn::itest {
namespace {

constexpr int kWarmUp = 200;
constexpr int kCalls = 1000;

// Counts the allocations of the whole process (every thread) while `calls` runs.
template <typename Calls>
std::size_t allocations_during(Calls&& calls) {
  g_allocations.store(0);
  g_counting.store(true);
  calls();
  g_counting.store(false);
  return g_allocations.load();
}

class SyncAllocTest : public DaemonTest {
 protected:
  void SetUp() override {
    start_daemon();
    client_.emplace(connect_client());
    client_->execute("CREATE TABLE t(x INTEGER)");
  }
  void TearDown() override {
    client_.reset();
    DaemonTest::TearDown();
  }
  std::optional<MultiplexedClient> client_;
  const Params params_{Value{std::int64_t{42}}};
};

TEST_F(SyncAllocTest, ExecuteAllocatesNothingInTheSteadyState) {
  for (int i = 0; i < kWarmUp; ++i) client_->execute("INSERT INTO t(x) VALUES (?)", params_);
  std::int64_t changed = 0;
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i)
      changed += client_->execute("INSERT INTO t(x) VALUES (?)", params_);
  });
  EXPECT_EQ(changed, kCalls);
  EXPECT_EQ(n, 0u) << "allocations across " << kCalls << " synchronous execute() calls";
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kWarmUp + kCalls);
}

TEST_F(SyncAllocTest, ExecuteReturningRowidAllocatesNothingInTheSteadyState) {
  for (int i = 0; i < kWarmUp; ++i) {
    client_->execute_returning_rowid("INSERT INTO t(x) VALUES (?)", params_);
  }
  std::int64_t last = 0;
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i) {
      last = client_->execute_returning_rowid("INSERT INTO t(x) VALUES (?)", params_);
    }
  });
  EXPECT_EQ(last, kWarmUp + kCalls);
  EXPECT_EQ(n, 0u) << "allocations across " << kCalls << " execute_returning_rowid() calls";
}

// Several threads calling through one client at once (as an application's worker threads do):
// the callers take turns reading the replies (leader/follower, client_impl.hpp), one waits
// while another sends, and none of it allocates once each thread has made its first calls.
TEST_F(SyncAllocTest, SeveralThreadsSharingTheClientAllocateNothingInTheSteadyState) {
  constexpr int kThreads = 4;
  std::atomic<int> phase{0};  // 1: warm up, 2: counted calls, 3: done
  std::atomic<int> done{0};
  std::atomic<std::int64_t> changed{0};
  std::vector<std::thread> threads;  // started before counting: a thread allocates its state
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int round = 1; round <= 2; ++round) {
        while (phase.load() != round) std::this_thread::yield();
        std::int64_t n = 0;
        for (int i = 0; i < (round == 1 ? kWarmUp : kCalls); ++i) {
          n += client_->execute("INSERT INTO t(x) VALUES (?)", params_);
        }
        if (round == 2) changed += n;
        done.fetch_add(1);
      }
    });
  }
  auto run_round = [&](int round) {
    phase.store(round);
    while (done.load() != kThreads * round) std::this_thread::yield();
  };
  run_round(1);
  const auto n = allocations_during([&] { run_round(2); });
  phase.store(3);
  for (auto& t : threads) t.join();
  EXPECT_EQ(changed.load(), kThreads * kCalls);
  EXPECT_EQ(n, 0u) << "allocations across " << kThreads << " x " << kCalls
                   << " synchronous execute() calls sharing one client";
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kThreads * (kWarmUp + kCalls));
}

// A call with a Timeout of its own waits with a deadline (a futex wait with a timeout): still
// nothing on the heap.
TEST_F(SyncAllocTest, ExecuteWithATimeoutAllocatesNothingInTheSteadyState) {
  const Timeout timeout{std::chrono::seconds(30)};
  for (int i = 0; i < kWarmUp; ++i) {
    client_->execute("INSERT INTO t(x) VALUES (?)", params_, timeout);
  }
  std::int64_t changed = 0;
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i)
      changed += client_->execute("INSERT INTO t(x) VALUES (?)", params_, timeout);
  });
  EXPECT_EQ(changed, kCalls);
  EXPECT_EQ(n, 0u) << "allocations across " << kCalls << " execute() calls with a Timeout";
}

TEST_F(SyncAllocTest, KeyedExecuteAllocatesNothingInTheSteadyState) {
  WriteOptions options;
  for (int i = 0; i < kWarmUp; ++i) {
    options.idempotency_key = std::to_string(i);  // short (no allocation of its own)
    options.idempotency_key += 'w';  // (not "w" + ...: g++ 12 -O3 -Wrestrict warns falsely)
    client_->execute("INSERT INTO t(x) VALUES (?)", params_, options);
  }
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i) {
      options.idempotency_key = std::to_string(i);
      options.idempotency_key += 'k';
      client_->execute("INSERT INTO t(x) VALUES (?)", params_, options);
    }
  });
  EXPECT_EQ(n, 0u) << "allocations across " << kCalls << " execute() calls with a key";
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kWarmUp + kCalls);
}

TEST_F(SyncAllocTest, PingAllocatesNothingInTheSteadyState) {
  for (int i = 0; i < kWarmUp; ++i) client_->ping();
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i) client_->ping();
  });
  EXPECT_EQ(n, 0u) << "allocations across " << kCalls << " ping() calls";
}

TEST_F(SyncAllocTest, TransactionExecuteAllocatesNothingInTheSteadyState) {
  auto tx = client_->begin();
  for (int i = 0; i < kWarmUp; ++i) tx.execute("INSERT INTO t(x) VALUES (?)", params_);
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i) tx.execute("INSERT INTO t(x) VALUES (?)", params_);
  });
  tx.commit();
  EXPECT_EQ(n, 0u) << "allocations across " << kCalls << " Transaction::execute() calls";
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kWarmUp + kCalls);
}

// The asynchronous forms keep their future (its shared state is inherent): the count above is
// not zero because nothing is counted.
TEST_F(SyncAllocTest, TheCounterSeesTheAsynchronousFormsAllocate) {
  for (int i = 0; i < kWarmUp; ++i)
    client_->execute_async("INSERT INTO t(x) VALUES (?)", params_).get();
  const auto n = allocations_during([&] {
    for (int i = 0; i < kCalls; ++i)
      client_->execute_async("INSERT INTO t(x) VALUES (?)", params_).get();
  });
  EXPECT_GE(n, static_cast<std::size_t>(kCalls));
}

// A call that throws bad_alloc was not sent: whichever allocation of execute_async fails (its
// frame, its promise, its node in the pending table...), the request leaves nothing in the
// outbox, so no later write carries it to the daemon. (A frame left behind would be executed
// with the next request, and its reply, for an id nobody waits for, would cost the connection.)
TEST_F(SyncAllocTest, ACallRefusedMemoryIsNeverSent) {
  constexpr std::int64_t kRefusals = 16;
  std::vector<std::int64_t> refused;
  for (std::int64_t k = 1; k <= kRefusals; ++k) {
    auto fresh = connect_client();  // a first call, which allocates what it keeps afterwards
    std::optional<std::future<std::int64_t>> sent;
    g_allocations.store(0);
    g_refuse_at.store(static_cast<std::size_t>(k));
    g_counting.store(true);
    try {
      sent.emplace(fresh.execute_async("INSERT INTO t(x) VALUES (?)", {Value{k}}));
    } catch (const std::bad_alloc&) {
      refused.push_back(k);
    }
    g_counting.store(false);
    g_refuse_at.store(0);
    if (sent) {
      try {
        sent->get();
      } catch (const Error&) {  // refused on another thread: the outcome may be unknown
      }
    }
    // The next request on the same connection: it would carry a frame left in the outbox.
    try {
      fresh.execute("INSERT INTO t(x) VALUES (0)");
    } catch (const ConnectionLostError&) {
    }
  }
  ASSERT_FALSE(refused.empty()) << "no allocation of execute_async was refused";
  for (const std::int64_t k : refused) {
    EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE x = ?", {k}), 0)
        << "the call that threw bad_alloc at allocation " << k << " was executed";
  }
}

}  // namespace
}  // namespace pasyn::itest
