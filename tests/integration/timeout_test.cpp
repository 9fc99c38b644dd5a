// Per-call timeouts (pasyn::Timeout), against the real pasyn-writerd: a call's own bound
// replaces ClientOptions::request_timeout for that call, shorter or longer, with the same
// meaning (TimeoutError, outcome unknown, never re-sent; nothing sent when it ran out waiting
// for an in-flight slot). The writer is held up by another client's open transaction, or the
// whole daemon by SIGSTOP.
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
using pasyn::Timeout;

// Far beyond every wait of these tests: the daemon's own TimeoutError never comes first.
const std::vector<std::string> kPatientDaemon = {"--lock-wait", "60s", "--transaction-idle-timeout",
                                                 "60s"};
constexpr auto kHang = 30s;  // a call not back by then hangs: the test fails
const pasyn::NamedParams kLate{{{"k", "late"}}};

class TimeoutTest : public DaemonTest {
 protected:
  void TearDown() override {
    if (stopped_) daemon_.signal(SIGCONT);
    DaemonTest::TearDown();
  }
  void start_with_table() {
    ASSERT_NO_FATAL_FAILURE(start_daemon(kPatientDaemon));
    connect_client().execute("CREATE TABLE kv (k TEXT)");
  }
  std::int64_t rows_with_key(const std::string& k) const {
    return query_int("SELECT count(*) FROM kv WHERE k = ?", {k});
  }
  /// A client with the given request_timeout (0: none) and a bounded connect.
  pasyn::MultiplexedClient client_with(std::chrono::milliseconds request_timeout,
                                       std::size_t max_in_flight = 16384) const {
    auto options = bounded_options();
    options.request_timeout = request_timeout;
    options.max_in_flight = max_in_flight;
    return pasyn::MultiplexedClient(sock_, options);
  }
  void stop() {
    daemon_.signal(SIGSTOP);
    stopped_ = true;
  }
  void resume() {
    daemon_.signal(SIGCONT);
    stopped_ = false;
  }
  bool stopped_ = false;
};

// outcome_of(call) ("ok", "TimeoutError: ...", ...), run on another thread: a call still
// running after kHang is a hang, and the process exits, so that it fails instead of hanging
// the suite.
std::string outcome(std::function<void()> call) {
  auto running =
      std::async(std::launch::async, [call = std::move(call)] { return outcome_of(call); });
  if (running.wait_for(kHang) != std::future_status::ready) {
    ADD_FAILURE() << "the call did not return within 30 s";
    std::_Exit(1);
  }
  return running.get();
}

// The client-side timeout's message, not the daemon's lock wait (also a TimeoutError).
bool client_timed_out(const std::string& what) {
  return what.rfind("TimeoutError: no reply", 0) == 0;
}

// Compiled, not run: the call forms that compiled before Timeout still compile (no ambiguity
// with the new overloads: Timeout has no default constructor, so `{}` is never one).
[[maybe_unused]] void call_forms_of_before_still_compile(pasyn::MultiplexedClient& c,
                                                         pasyn::Transaction& tx) {
  c.execute("x", {}, {});
  c.execute("x", {"Alice", "alice@example.com"});
  c.execute("x", {"a"}, {"key"});
  c.execute_returning_rowid("x", {}, {});
  c.execute_many("x", {}, {});
  c.execute_many("x", {{"a"}}, {"key"});
  c.executescript("x", {});
  c.executescript("x", {"key"});
  tx.execute("x", {});
}

TEST_F(TimeoutTest, EveryBlockingCallsTimeoutBoundsItWhileTheClientHasNone) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto holder = connect_client();
  auto held = holder.begin();
  auto client = client_with(0ms);  // request_timeout 0: only the calls' own bounds
  const Timeout t{200ms};
  const pasyn::WriteOptions keyed{"key-1"};
  const std::vector<std::pair<std::string, std::function<void()>>> calls = {
      {"execute", [&] { client.execute("INSERT INTO kv (k) VALUES ('late')", {}, t); }},
      {"execute keyed",
       [&] { client.execute("INSERT INTO kv (k) VALUES ('late')", {}, keyed, t); }},
      {"execute_returning_rowid",
       [&] { client.execute_returning_rowid("INSERT INTO kv (k) VALUES ('late')", {}, t); }},
      {"execute_returning_rowid keyed",
       [&] {
         client.execute_returning_rowid("INSERT INTO kv (k) VALUES ('late')", {},
                                        pasyn::WriteOptions{"key-2"}, t);
       }},
      {"execute_many",
       [&] { client.execute_many("INSERT INTO kv (k) VALUES (?)", {{"late"}}, t); }},
      {"execute_many keyed",
       [&] {
         client.execute_many("INSERT INTO kv (k) VALUES (?)", {{"late"}},
                             pasyn::WriteOptions{"key-3"}, t);
       }},
      {"executescript", [&] { client.executescript("INSERT INTO kv (k) VALUES ('late')", t); }},
      {"executescript keyed",
       [&] {
         client.executescript("INSERT INTO kv (k) VALUES ('late')", pasyn::WriteOptions{"key-4"},
                              t);
       }},
      {"execute_fetchall",
       [&] {
         (void)client.execute_fetchall("INSERT INTO kv (k) VALUES ('late') RETURNING k", {}, t);
       }},
      {"execute_fetchone",
       [&] {
         (void)client.execute_fetchone("INSERT INTO kv (k) VALUES ('late') RETURNING k", {}, t);
       }},
      {"execute_fetchall_columns",
       [&] {
         (void)client.execute_fetchall_columns("INSERT INTO kv (k) VALUES ('late') RETURNING k", {},
                                               t);
       }},
      {"execute_named", [&] { client.execute_named("INSERT INTO kv (k) VALUES (:k)", kLate, t); }},
      {"execute_returning_rowid_named",
       [&] { client.execute_returning_rowid_named("INSERT INTO kv (k) VALUES (:k)", kLate, t); }},
      {"execute_many_named",
       [&] { client.execute_many_named("INSERT INTO kv (k) VALUES (:k)", {kLate}, t); }},
      {"execute_fetchall_named",
       [&] {
         (void)client.execute_fetchall_named("INSERT INTO kv (k) VALUES (:k) RETURNING k", kLate,
                                             t);
       }},
      {"execute_fetchone_named",
       [&] {
         (void)client.execute_fetchone_named("INSERT INTO kv (k) VALUES (:k) RETURNING k", kLate,
                                             t);
       }},
  };
  for (const auto& [name, call] : calls) {
    const auto what = outcome(call);
    EXPECT_TRUE(client_timed_out(what)) << name << ": " << what;
    EXPECT_TRUE(contains(what, "within 200 ms")) << name << ": " << what;
  }
  held.commit();
  // "The request may still be executed": each one did, once (none was re-sent), before the
  // write below, which the same connection sent after them.
  client.execute("INSERT INTO kv (k) VALUES ('after')");
  EXPECT_EQ(rows_with_key("late"), static_cast<std::int64_t>(calls.size()));
  EXPECT_EQ(rows_with_key("after"), 1);
}

TEST_F(TimeoutTest, ACallsTimeoutLongerThanRequestTimeoutWins) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto holder = connect_client();
  auto held = holder.begin();
  auto client = client_with(200ms);
  // Without a Timeout of its own, a call keeps request_timeout, as before.
  EXPECT_TRUE(
      client_timed_out(outcome([&] { client.execute("INSERT INTO kv (k) VALUES ('default')"); })));
  auto patient = std::async(std::launch::async, [&] {
    return client.execute("INSERT INTO kv (k) VALUES ('patient')", {}, Timeout{kHang});
  });
  auto unbounded = std::async(std::launch::async, [&] {
    return client.execute("INSERT INTO kv (k) VALUES ('unbounded')", {}, Timeout{0ms});
  });
  std::this_thread::sleep_for(1s);  // five times request_timeout: both would have given up
  held.commit();
  ASSERT_EQ(patient.wait_for(kHang), std::future_status::ready);
  ASSERT_EQ(unbounded.wait_for(kHang), std::future_status::ready);
  EXPECT_EQ(patient.get(), 1);
  EXPECT_EQ(unbounded.get(), 1);
  EXPECT_EQ(rows_with_key("patient"), 1);
  EXPECT_EQ(rows_with_key("unbounded"), 1);
}

// milliseconds::max() means no bound (its deadline would overflow the clock, and so time out
// at once), as request_timeout and as a call's own.
TEST_F(TimeoutTest, TheLargestBoundMeansNoBound) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(std::chrono::milliseconds::max(), 1);
  (void)client.execute_async("INSERT INTO kv (k) VALUES ('async')");  // may hold the one slot
  EXPECT_EQ(outcome([&] { client.execute("INSERT INTO kv (k) VALUES ('default')"); }), "ok");
  EXPECT_EQ(outcome([&] {
              client.execute("INSERT INTO kv (k) VALUES ('own')", {},
                             Timeout{std::chrono::milliseconds::max()});
            }),
            "ok");
  EXPECT_EQ(rows_with_key("own"), 1);
}

// The calls the daemon answers on its I/O thread or between batches take a Timeout too.
TEST_F(TimeoutTest, PingStatsAndTheAdminCallsTimeoutBoundsThemWhileTheDaemonIsStopped) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(0ms);
  ASSERT_TRUE(client.ping(Timeout{kHang}));
  stop();
  const Timeout t{200ms};
  const std::vector<std::pair<std::string, std::function<void()>>> calls = {
      {"ping", [&] { client.ping(t); }},
      {"stats", [&] { (void)client.stats(t); }},
      {"checkpoint", [&] { (void)client.checkpoint("PASSIVE", t); }},
      {"backup", [&] { (void)client.backup("timed-out.sqlite", t); }},
      {"shutdown_server", [&] { client.shutdown_server(t); }},
  };
  for (const auto& [name, call] : calls) {
    const auto what = outcome(call);
    EXPECT_TRUE(client_timed_out(what)) << name << ": " << what;
    EXPECT_TRUE(contains(what, "within 200 ms")) << name << ": " << what;
  }
  resume();
  // The SHUTDOWN sent above still arrives: the daemon stops once it is resumed.
  const auto status = daemon_.wait_exit(kStopTimeout);
  EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

// Reconnecting after a lost connection is bounded by the call's own bound too, and so is the
// wait for another thread's reconnect (a probe: execute(Timeout{200ms}) and execute_async with
// request_timeout 200 ms took connect_timeout, 5 s, against a restarted daemon that never
// answered the handshake).
TEST_F(TimeoutTest, ReconnectingIsBoundedByTheCallsTimeout) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(0ms);               // connect_timeout 5 s, no request_timeout
  auto async_client = client_with(200ms);       // request_timeout 200 ms
  auto other_thread_client = client_with(0ms);  // shared by two threads below
  for (auto* c : {&client, &async_client, &other_thread_client}) ASSERT_TRUE(c->ping());
  stop_daemon();
  ASSERT_NO_FATAL_FAILURE(start_daemon(kPatientDaemon));
  stop();  // connections are accepted (the listen backlog), HELLO is never answered

  const auto not_sent = [](const std::string& what) {
    return what.starts_with("TimeoutError") && contains(what, "its request was not sent");
  };
  const auto own = outcome(
      [&] { client.execute_named("INSERT INTO kv (k) VALUES (:k)", kLate, Timeout{200ms}); });
  EXPECT_TRUE(not_sent(own)) << own;
  const auto async = outcome(
      [&] { (void)async_client.execute_async("INSERT INTO kv (k) VALUES ('late')").get(); });
  EXPECT_TRUE(not_sent(async)) << async;
  // One thread reconnects for up to 3 s; another, bounded by 200 ms, does not wait that long.
  auto first = std::async(std::launch::async, [&] {
    return outcome_of([&] { other_thread_client.ping(Timeout{3s}); });
  });
  std::this_thread::sleep_for(100ms);
  const auto second = outcome([&] {
    other_thread_client.execute_named("INSERT INTO kv (k) VALUES (:k)", kLate, Timeout{200ms});
  });
  EXPECT_TRUE(not_sent(second)) << second;
  resume();
  EXPECT_TRUE(eventually(
      [&] {
        return outcome_of([&] { client.execute("INSERT INTO kv (k) VALUES ('after')"); }) == "ok";
      },
      kReplyTimeout));
  const auto first_outcome = first.get();
  EXPECT_TRUE(first_outcome == "ok" || not_sent(first_outcome)) << first_outcome;
  EXPECT_EQ(rows_with_key("late"), 0);
  EXPECT_EQ(rows_with_key("after"), 1);
}

TEST_F(TimeoutTest, ATransactionStatementThatTimedOutLeavesTheTransactionOpen) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(0ms);
  auto tx = client.begin(Timeout{kHang});
  tx.execute("INSERT INTO kv (k) VALUES ('first')", {}, Timeout{kHang});
  stop();
  EXPECT_TRUE(client_timed_out(
      outcome([&] { tx.execute("INSERT INTO kv (k) VALUES ('late')", {}, Timeout{200ms}); })));
  EXPECT_TRUE(client_timed_out(
      outcome([&] { (void)tx.execute_fetchall("SELECT count(*) FROM kv", {}, Timeout{200ms}); })));
  EXPECT_FALSE(tx.finished());
  resume();
  // The statement that timed out ran inside the transaction, before this one.
  const auto rows =
      tx.execute_fetchone("SELECT count(*) FROM kv WHERE k = 'late'", {}, Timeout{kHang});
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ(std::get<std::int64_t>(rows->at(0)), 1);
  tx.commit(Timeout{kHang});
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(rows_with_key("first"), 1);
  EXPECT_EQ(rows_with_key("late"), 1);
}

TEST_F(TimeoutTest, ACommitThatTimedOutFinishesTheHandleAndMayStillCommit) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(0ms);
  auto tx = client.begin();
  tx.execute("INSERT INTO kv (k) VALUES ('in-tx')");
  stop();
  EXPECT_TRUE(client_timed_out(outcome([&] { tx.commit(Timeout{200ms}); })));
  EXPECT_TRUE(tx.finished());
  resume();
  client.execute("INSERT INTO kv (k) VALUES ('after')");  // runs after the COMMIT
  EXPECT_EQ(rows_with_key("in-tx"), 1);
}

TEST_F(TimeoutTest, ABeginThatTimedOutIsRolledBackWhenGranted) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto holder = connect_client();
  auto held = holder.begin();
  auto impatient = client_with(0ms);
  const auto what = outcome([&] { (void)impatient.begin(Timeout{200ms}); });
  EXPECT_TRUE(contains(what, "TimeoutError: no reply to BEGIN")) << what;
  held.commit();
  // The daemon grants the abandoned BEGIN now; the client rolls it back at once, so this
  // write does not wait for the 60 s idle timeout.
  auto third = connect_client();
  EXPECT_EQ(outcome([&] { third.execute("INSERT INTO kv (k) VALUES ('third')"); }), "ok");
  auto again = impatient.begin(Timeout{kHang});
  again.execute("INSERT INTO kv (k) VALUES ('again')");
  again.commit();
  EXPECT_EQ(rows_with_key("third"), 1);
  EXPECT_EQ(rows_with_key("again"), 1);
}

TEST_F(TimeoutTest, ATimeoutThatRunsOutWaitingForAnInFlightSlotSendsNothing) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(0ms, 1);
  ASSERT_TRUE(client.ping());
  stop();
  auto first = client.execute_async("INSERT INTO kv (k) VALUES ('first')");  // the one slot
  const auto what =
      outcome([&] { client.execute("INSERT INTO kv (k) VALUES ('never')", {}, Timeout{200ms}); });
  EXPECT_TRUE(contains(what, "(ClientOptions::max_in_flight)")) << what;
  EXPECT_TRUE(contains(what, "the request was not sent")) << what;
  resume();
  ASSERT_EQ(first.wait_for(kHang), std::future_status::ready);
  EXPECT_EQ(first.get(), 1);
  client.execute("INSERT INTO kv (k) VALUES ('after')");
  EXPECT_EQ(rows_with_key("never"), 0);
  EXPECT_EQ(rows_with_key("after"), 1);
}

// One deadline per call: the wait for a slot and the wait for the reply share the bound. Y waits
// 1.2 s for the client's one slot, then its reply is held up by a second transaction until
// 2.8 s. With a bound of 2 s it must time out; when each wait had its own 2 s, Y was answered
// (its reply wait would have lasted until 3.2 s).
TEST_F(TimeoutTest, TheSlotWaitAndTheReplyWaitShareOneDeadline) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = client_with(0ms, 1);
  auto first_holder = connect_client(), second_holder = connect_client();
  auto held = first_holder.begin();
  auto first = client.execute_async("INSERT INTO kv (k) VALUES ('first')");  // the one slot
  ASSERT_TRUE(stat_reaches(first_holder, "waiting_for_transaction", 1));
  auto second = second_holder.begin_async();  // granted when `held` ends, after `first` ran
  ASSERT_TRUE(stat_reaches(first_holder, "waiting_for_transaction", 2));
  const auto start = Clock::now();
  auto late = std::async(std::launch::async, [&] {
    return outcome_of(
        [&] { client.execute("INSERT INTO kv (k) VALUES ('late')", {}, Timeout{2000ms}); });
  });
  std::this_thread::sleep_until(start + 1200ms);
  held.rollback();  // `first` runs and frees the slot; `late` goes out behind `second`
  ASSERT_EQ(first.wait_for(kHang), std::future_status::ready);
  EXPECT_EQ(first.get(), 1);
  ASSERT_EQ(second.wait_for(kHang), std::future_status::ready);
  auto second_tx = second.get();
  std::this_thread::sleep_until(start + 2800ms);
  second_tx.commit();
  ASSERT_EQ(late.wait_for(kHang), std::future_status::ready);
  const std::string what = late.get();
  EXPECT_TRUE(client_timed_out(what)) << what;
  client.execute("INSERT INTO kv (k) VALUES ('after')");  // runs after `late`, which was sent
  EXPECT_EQ(rows_with_key("late"), 1);
}

TEST_F(TimeoutTest, ThreadTransactionsCallsTakeATimeoutInsideAndOutsideATransaction) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto holder = connect_client();
  auto client = client_with(0ms);
  pasyn::ThreadTransactions threads(client);
  {
    auto held = holder.begin();
    EXPECT_TRUE(client_timed_out(outcome(
        [&] { threads.execute("INSERT INTO kv (k) VALUES ('late')", {}, Timeout{200ms}); })));
    EXPECT_TRUE(client_timed_out(outcome(
        [&] { threads.execute_named("INSERT INTO kv (k) VALUES (:k)", kLate, Timeout{200ms}); })));
    held.commit();
  }
  threads.begin(Timeout{kHang});
  EXPECT_EQ(threads.execute("INSERT INTO kv (k) VALUES ('mine')", {}, Timeout{kHang}), 1);
  EXPECT_EQ(threads.execute_fetchall("SELECT count(*) FROM kv WHERE k = 'mine'", {}, Timeout{kHang})
                .size(),
            1u);
  threads.commit(Timeout{kHang});
  EXPECT_FALSE(threads.in_transaction());
  EXPECT_EQ(rows_with_key("mine"), 1);
  EXPECT_EQ(rows_with_key("late"), 2);
}

}  // namespace
