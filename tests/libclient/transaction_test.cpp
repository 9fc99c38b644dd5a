// Transactions (SPEC §2.4, §2.8) and the write-path rules around them, with in-process servers.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <pasyn/pasyn.hpp>
#include <thread>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kSqliteAbortRollback = 516;

class TransactionTest : public ::testing::Test {
 protected:
  TransactionTest() {
    char tmpl[] = "/tmp/pasyn-tx-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    db_ = (dir_ / "db.sqlite").string();
  }
  ~TransactionTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  pasyn::WriterServerHandle start(std::chrono::milliseconds lock_wait = 5s,
                                  std::chrono::milliseconds idle = 10s) {
    pasyn::ServerOptions options;
    options.lock_wait = lock_wait;
    options.transaction_idle_timeout = idle;
    auto server = pasyn::start_writer_server(db_, options);
    pasyn::MultiplexedClient setup(server.socket_path());
    setup.executescript("CREATE TABLE t (x INTEGER, tag TEXT)");
    return server;
  }

  std::int64_t count(const std::string& where = "1") {
    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    return std::get<std::int64_t>(
        conn.execute_fetchone("SELECT count(*) FROM t WHERE " + where)->at(0));
  }

  fs::path dir_;
  std::string db_;
};

TEST_F(TransactionTest, CommitMakesEveryWriteVisibleAtOnce) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  EXPECT_FALSE(tx.finished());
  EXPECT_EQ(tx.execute("INSERT INTO t (x) VALUES (?)", {1}), 1);
  EXPECT_EQ(tx.execute_many("INSERT INTO t (x) VALUES (?)", {{2}, {3}}), 2);
  tx.executescript("INSERT INTO t (x) VALUES (4); INSERT INTO t (x) VALUES (5);");
  EXPECT_EQ(count(), 0);  // nothing is visible before the commit
  tx.commit();
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(count(), 5);
}

TEST_F(TransactionTest, RollbackDiscardsEverything) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.execute("INSERT INTO t (x) VALUES (1)");
  tx.rollback();
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(count(), 0);
  client.execute("INSERT INTO t (x) VALUES (2)");  // the writer is free again
  EXPECT_EQ(count(), 1);
}

TEST_F(TransactionTest, DestroyingAnUnfinishedTransactionRollsItBack) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  {
    auto tx = client.begin();
    tx.execute("INSERT INTO t (x) VALUES (1)");
  }
  EXPECT_EQ(count(), 0);
  client.execute("INSERT INTO t (x) VALUES (2)");
  EXPECT_EQ(count(), 1);
}

TEST_F(TransactionTest, QueriesInsideTheTransactionReadItsOwnWrites) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.execute("INSERT INTO t (x, tag) VALUES (7, 'mine')");
  auto row = tx.execute_fetchone("SELECT x, tag FROM t");
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(*row, (pasyn::Row{std::int64_t{7}, std::string("mine")}));
  auto returned = tx.execute_fetchall("INSERT INTO t (x) VALUES (8), (9) RETURNING x");
  ASSERT_EQ(returned.size(), 2u);
  EXPECT_EQ(std::get<std::int64_t>(returned[1][0]), 9);
  EXPECT_GT(tx.execute_returning_rowid("INSERT INTO t (x) VALUES (10)"), 0);
  tx.rollback();
  EXPECT_EQ(count(), 0);
}

TEST_F(TransactionTest, UsingAFinishedTransactionIsAProgrammingError) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.commit();
  // The seed's TransactionError, which is a ProgrammingError.
  EXPECT_THROW(tx.commit(), pasyn::TransactionError);
  EXPECT_THROW(tx.rollback(), pasyn::ProgrammingError);
  EXPECT_THROW(tx.execute("INSERT INTO t (x) VALUES (1)"), pasyn::TransactionError);
  auto moved = client.begin();
  auto other = std::move(moved);
  EXPECT_THROW(moved.execute("SELECT 1"),
               pasyn::ProgrammingError);  // NOLINT(bugprone-use-after-move)
  other.rollback();
}

TEST_F(TransactionTest, OtherClientsWaitAndRunAfterTheCommit) {
  auto server = start();
  pasyn::MultiplexedClient owner(server.socket_path());
  pasyn::MultiplexedClient other(server.socket_path());
  auto tx = owner.begin();
  tx.execute("INSERT INTO t (x, tag) VALUES (1, 'tx')");
  auto waiting = other.execute_async("INSERT INTO t (x, tag) VALUES (2, 'other')");
  EXPECT_EQ(waiting.wait_for(300ms), std::future_status::timeout);  // queued, not failed
  tx.execute("INSERT INTO t (x, tag) VALUES (3, 'tx')");
  tx.commit();
  EXPECT_EQ(waiting.get(), 1);
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  auto rows = conn.execute_fetchall("SELECT x FROM t ORDER BY rowid");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(std::get<std::int64_t>(rows[2][0]), 2);  // the waiting write ran after the commit
}

TEST_F(TransactionTest, OtherThreadsOfTheSameClientWaitLikeAnyWriter) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.execute("INSERT INTO t (x) VALUES (1)");
  auto other_thread = std::async(std::launch::async, [&] {
    return client.execute("INSERT INTO t (x) VALUES (2)");  // not through the handle
  });
  EXPECT_EQ(other_thread.wait_for(300ms), std::future_status::timeout);
  tx.rollback();
  EXPECT_EQ(other_thread.get(), 1);
  EXPECT_EQ(count("x = 1"), 0);
  EXPECT_EQ(count("x = 2"), 1);
}

TEST_F(TransactionTest, ASecondBeginWaitsForTheFirstTransaction) {
  auto server = start();
  pasyn::MultiplexedClient a(server.socket_path());
  pasyn::MultiplexedClient b(server.socket_path());
  auto first = a.begin();
  auto second = std::async(std::launch::async, [&] {
    auto tx = b.begin();
    tx.execute("INSERT INTO t (x) VALUES (2)");
    tx.commit();
  });
  EXPECT_EQ(second.wait_for(300ms), std::future_status::timeout);
  first.execute("INSERT INTO t (x) VALUES (1)");
  first.commit();
  second.get();
  EXPECT_EQ(count(), 2);
}

TEST_F(TransactionTest, AWriterWaitingLongerThanTheLockWaitTimesOutAndDoesNotRun) {
  auto server = start(200ms);
  pasyn::MultiplexedClient owner(server.socket_path());
  pasyn::MultiplexedClient other(server.socket_path());
  auto tx = owner.begin();
  const auto start_time = Clock::now();
  EXPECT_THROW(other.execute("INSERT INTO t (x) VALUES (2)"), pasyn::TimeoutError);
  EXPECT_GE(Clock::now() - start_time, 150ms);
  tx.execute("INSERT INTO t (x) VALUES (1)");
  tx.commit();
  EXPECT_EQ(count("x = 2"), 0);
  EXPECT_EQ(count("x = 1"), 1);
}

// InterruptScope: a blocking call whose wait the thread's check ends gives up as at a timeout
// (InterruptedError, outcome unknown), whether it reads the socket itself or waits to be woken,
// and a BEGIN given up so is rolled back when the daemon grants it. Without a scope, or with a
// check that says no, the calls wait on.
TEST_F(TransactionTest, AnInterruptScopeEndsABlockingWait) {
  auto server = start(30s);
  pasyn::MultiplexedClient owner(server.socket_path());
  pasyn::MultiplexedClient other(server.socket_path());
  auto tx = owner.begin();
  std::atomic<int> asked{0};
  std::atomic<bool> stop{false};
  struct Flags {
    std::atomic<int>* asked;
    std::atomic<bool>* stop;
  } flags{&asked, &stop};
  const auto check = [](void* p) {
    auto* f = static_cast<Flags*>(p);
    ++*f->asked;
    return f->stop->load();
  };
  std::thread later([&] {
    std::this_thread::sleep_for(300ms);
    stop = true;
  });
  const auto start_time = Clock::now();
  {
    pasyn::InterruptScope scope(check, &flags, 20ms);
    EXPECT_THROW(other.execute("INSERT INTO t (x) VALUES (2)"), pasyn::InterruptedError);
  }
  later.join();
  EXPECT_GE(Clock::now() - start_time, 250ms);
  EXPECT_LT(Clock::now() - start_time, 10s);  // not the 30 s lock wait
  EXPECT_GE(asked.load(), 5);
  {
    pasyn::InterruptScope scope(check, &flags, 20ms);  // says yes at once
    EXPECT_THROW((void)other.begin(), pasyn::InterruptedError);
    stop = false;
    // A scope whose check says no: the call waits as without one.
    auto waiting = std::async(std::launch::async, [&] {
      pasyn::InterruptScope inner(check, &flags, 5ms);
      return other.execute("INSERT INTO t (x) VALUES (3)");
    });
    EXPECT_EQ(waiting.wait_for(200ms), std::future_status::timeout);
    tx.execute("INSERT INTO t (x) VALUES (1)");
    tx.commit();
    EXPECT_EQ(waiting.get(), 1);
  }
  // The interrupted INSERT may have run (its outcome was unknown); the abandoned BEGIN was
  // rolled back when granted, so the client's next calls run.
  EXPECT_EQ(other.execute("INSERT INTO t (x) VALUES (4)"), 1);
  auto next = owner.begin();
  next.rollback();
  EXPECT_EQ(count("x IN (1, 3, 4)"), 3);
}

// The check may call the client it interrupts (a Python signal handler may): the waiting
// caller steps out of the reader role while the check runs, so that call is served instead of
// waiting for the caller that runs it.
TEST_F(TransactionTest, AnInterruptCheckMayCallTheClientItsThreadWaitsOn) {
  auto server = start(30s);
  pasyn::MultiplexedClient owner(server.socket_path());
  pasyn::MultiplexedClient other(server.socket_path());
  auto tx = owner.begin();
  struct Context {
    pasyn::MultiplexedClient* client;
    int pings = 0;
    bool inside = false;
  } context{&other};
  const auto check = [](void* p) {
    auto* c = static_cast<Context*>(p);
    if (c->inside) return false;  // the ping's own wait asks too: it must end by its reply
    if (c->pings == 3) return true;
    ++c->pings;
    c->inside = true;
    c->client->ping();  // answered without the writer, which the transaction holds
    c->inside = false;
    return false;
  };
  {
    pasyn::InterruptScope scope(check, &context, 10ms);
    EXPECT_THROW(other.execute("INSERT INTO t (x) VALUES (2)"), pasyn::InterruptedError);
  }
  EXPECT_EQ(context.pings, 3);
  // Another thread of the same client, reading meanwhile, is not disturbed either.
  auto waiting =
      std::async(std::launch::async, [&] { return other.execute("INSERT INTO t (x) VALUES (3)"); });
  context.pings = 0;
  {
    pasyn::InterruptScope scope(check, &context, 10ms);
    EXPECT_THROW(other.execute("INSERT INTO t (x) VALUES (4)"), pasyn::InterruptedError);
  }
  EXPECT_EQ(waiting.wait_for(100ms), std::future_status::timeout);
  tx.commit();
  EXPECT_EQ(waiting.get(), 1);
  EXPECT_EQ(other.execute("INSERT INTO t (x) VALUES (5)"), 1);
  EXPECT_EQ(count("x IN (3, 5)"), 2);
}

TEST_F(TransactionTest, ALockWaitOfZeroFailsAtOnce) {
  auto server = start(0ms);
  pasyn::MultiplexedClient owner(server.socket_path());
  pasyn::MultiplexedClient other(server.socket_path());
  auto tx = owner.begin();
  EXPECT_THROW(other.execute("INSERT INTO t (x) VALUES (2)"), pasyn::TimeoutError);
  EXPECT_THROW((void)other.begin(), pasyn::TimeoutError);  // begin() is [[nodiscard]]
  tx.commit();
  EXPECT_EQ(other.execute("INSERT INTO t (x) VALUES (3)"), 1);
}

TEST_F(TransactionTest, AnIdleTransactionIsRolledBackAndItsOwnerIsTold) {
  // An idle timeout of 1 s, not less: a loaded machine may pause this thread between begin()
  // and the first execute for a few hundred milliseconds.
  auto server = start(10s, 1s);
  pasyn::MultiplexedClient owner(server.socket_path());
  pasyn::MultiplexedClient other(server.socket_path());
  auto tx = owner.begin();
  tx.execute("INSERT INTO t (x) VALUES (1)");
  // The queued writer is released by the idle rollback, long before its lock wait: once it
  // returns, the rollback has happened (no sleep needed).
  EXPECT_EQ(other.execute("INSERT INTO t (x) VALUES (2)"), 1);
  try {
    tx.execute("INSERT INTO t (x) VALUES (3)");
    FAIL() << "the idle transaction was not rolled back";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.extended_code(), kSqliteAbortRollback);
    EXPECT_NE(std::string(e.what()).find("idle"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(count("x = 1"), 0);
  EXPECT_EQ(count("x = 2"), 1);
  EXPECT_EQ(count("x = 3"), 0);
  auto next = owner.begin();  // the connection can start over
  next.execute("INSERT INTO t (x) VALUES (4)");
  next.commit();
  EXPECT_EQ(count("x = 4"), 1);
}

TEST_F(TransactionTest, ClosingTheOwnerRollsBackAtOnceAndReleasesWaiters) {
  auto server = start(10s, 10s);
  pasyn::MultiplexedClient other(server.socket_path());
  auto owner = std::make_unique<pasyn::MultiplexedClient>(server.socket_path());
  auto tx = owner->begin();
  tx.execute("INSERT INTO t (x) VALUES (1)");
  auto waiting = other.execute_async("INSERT INTO t (x) VALUES (2)");
  EXPECT_EQ(waiting.wait_for(200ms), std::future_status::timeout);
  owner->close();  // the transaction's connection goes away
  ASSERT_EQ(waiting.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(waiting.get(), 1);
  EXPECT_EQ(count("x = 1"), 0);
  EXPECT_THROW(tx.execute("SELECT 1"), pasyn::ConnectionClosedError);
  EXPECT_TRUE(tx.finished());
}

TEST_F(TransactionTest, SavepointsNestInsideATransaction) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.execute("SAVEPOINT a");
  tx.execute("INSERT INTO t (x) VALUES (1)");
  tx.execute("SAVEPOINT b");
  tx.execute("INSERT INTO t (x) VALUES (2)");
  tx.execute("ROLLBACK TO b");
  tx.execute("RELEASE b");
  tx.execute("RELEASE a");
  tx.commit();
  EXPECT_EQ(count("x = 1"), 1);
  EXPECT_EQ(count("x = 2"), 0);
  // The same savepoint SQL outside a transaction is refused, even though it ran before.
  EXPECT_THROW(client.execute("SAVEPOINT a"), pasyn::ProgrammingError);
  EXPECT_THROW(client.execute("RELEASE a"), pasyn::ProgrammingError);
  auto tx2 = client.begin();
  EXPECT_THROW(tx2.execute("RELEASE pasyn_request"), pasyn::ProgrammingError);
  EXPECT_THROW(tx2.execute("COMMIT"), pasyn::ProgrammingError);
  tx2.rollback();
}

TEST_F(TransactionTest, DdlInsideATransactionIsRolledBackWithIt) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.execute("CREATE TABLE made_in_tx (y)");
  tx.execute("INSERT INTO made_in_tx VALUES (1)");
  EXPECT_EQ(tx.execute_fetchall("SELECT y FROM made_in_tx").size(), 1u);
  tx.rollback();
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  EXPECT_FALSE(conn.execute_fetchone("SELECT name FROM sqlite_schema WHERE name = 'made_in_tx'")
                   .has_value());
  EXPECT_THROW(client.execute("INSERT INTO made_in_tx VALUES (2)"), pasyn::OperationalError);
}

TEST_F(TransactionTest, AThousandInsertsInOneTransaction) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  for (int i = 0; i < 1000; ++i) tx.execute("INSERT INTO t (x) VALUES (?)", {i});
  EXPECT_EQ(count(), 0);
  tx.commit();
  EXPECT_EQ(count(), 1000);
}

TEST_F(TransactionTest, AFailingStatementIsUndoneAloneAndTheTransactionGoesOn) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE u (k INTEGER UNIQUE)");
  auto tx = client.begin();
  tx.execute("INSERT INTO u VALUES (1)");
  EXPECT_THROW(tx.execute("INSERT INTO u VALUES (1)"), pasyn::IntegrityError);
  EXPECT_THROW(tx.execute_many("INSERT INTO u VALUES (?)", {{2}, {1}}), pasyn::IntegrityError);
  EXPECT_THROW(tx.executescript("INSERT INTO u VALUES (3); INSERT INTO u VALUES (1);"),
               pasyn::IntegrityError);
  EXPECT_FALSE(tx.finished());
  tx.commit();
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  auto rows = conn.execute_fetchall("SELECT k FROM u");
  ASSERT_EQ(rows.size(), 1u);  // 2 and 3 went with their failed requests
}

TEST_F(TransactionTest, AStatementThatEndsTheTransactionFailsItLoudly) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE u (k INTEGER UNIQUE)");
  auto tx = client.begin();
  tx.execute("INSERT INTO u VALUES (1)");
  try {
    tx.execute("INSERT OR ROLLBACK INTO u VALUES (1)");
    FAIL() << "INSERT OR ROLLBACK conflict did not fail";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.extended_code(), kSqliteAbortRollback) << e.what();
  }
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(client.execute("INSERT INTO u VALUES (5)"), 1);  // the writer is free again
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  EXPECT_EQ(conn.execute_fetchall("SELECT k FROM u").size(), 1u);
}

TEST_F(TransactionTest, InsertOrRollbackInABusyBatchNeverAcknowledgesALostWrite) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE u (k INTEGER UNIQUE)");
  client.execute("INSERT INTO u VALUES (-1)");
  std::vector<std::future<std::int64_t>> good;
  std::vector<std::future<std::int64_t>> rollers;
  for (int i = 0; i < 600; ++i) {
    good.push_back(client.execute_async("INSERT INTO u VALUES (?)", {i}));
    if (i % 100 == 50) {  // conflicts, and rolls back the whole batch transaction
      rollers.push_back(client.execute_async("INSERT OR ROLLBACK INTO u VALUES (-1)"));
    }
  }
  for (auto& f : rollers) EXPECT_THROW(f.get(), pasyn::IntegrityError);
  for (auto& f : good) EXPECT_EQ(f.get(), 1);  // every acknowledgement is a committed row
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  EXPECT_EQ(std::get<std::int64_t>(conn.execute_fetchone("SELECT count(*) FROM u")->at(0)), 601);
}

TEST_F(TransactionTest, RaiseRollbackInATriggerFailsOnlyItsRequest) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript(
      "CREATE TABLE guarded (v INTEGER);"
      "CREATE TRIGGER no_negatives BEFORE INSERT ON guarded WHEN NEW.v < 0 "
      "BEGIN SELECT RAISE(ROLLBACK, 'negative values are not allowed'); END;");
  std::vector<std::future<std::int64_t>> futures;
  for (int i = -2; i < 50; ++i) {
    futures.push_back(client.execute_async("INSERT INTO guarded VALUES (?)", {i}));
  }
  for (int i = -2; i < 50; ++i) {
    auto& f = futures[static_cast<std::size_t>(i + 2)];
    if (i < 0) {
      EXPECT_THROW(f.get(), pasyn::IntegrityError);
    } else {
      EXPECT_EQ(f.get(), 1) << i;
    }
  }
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  EXPECT_EQ(std::get<std::int64_t>(conn.execute_fetchone("SELECT count(*) FROM guarded")->at(0)),
            50);
}

TEST_F(TransactionTest, StatementsThatCannotRunInATransactionRunAlone) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  std::vector<std::future<std::int64_t>> around;
  for (int i = 0; i < 20; ++i)
    around.push_back(client.execute_async("INSERT INTO t (x) VALUES (?)", {i}));
  EXPECT_EQ(client.execute("VACUUM"), 0);
  EXPECT_EQ(client.execute_fetchall("PRAGMA journal_mode = WAL").at(0).at(0),
            pasyn::Value(std::string("wal")));
  for (auto& f : around) EXPECT_EQ(f.get(), 1);
  EXPECT_THROW(client.executescript("INSERT INTO t (x) VALUES (1); VACUUM;"),
               pasyn::ProgrammingError);
  client.executescript("VACUUM");  // alone in a script is fine
  auto tx = client.begin();
  EXPECT_THROW(tx.execute("VACUUM"), pasyn::ProgrammingError);
  tx.rollback();
  EXPECT_EQ(count(), 20);
}

TEST_F(TransactionTest, ReturningRowsComeBackToTheCaller) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto rows =
      client.execute_fetchall("INSERT INTO t (x, tag) VALUES (1, 'a'), (2, 'b') RETURNING x, tag");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1], (pasyn::Row{std::int64_t{2}, std::string("b")}));
  auto one = client.execute_fetchone("UPDATE t SET tag = 'z' WHERE x = 2 RETURNING tag");
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(std::get<std::string>(one->at(0)), "z");
  EXPECT_EQ(count("tag = 'z'"), 1);
}

TEST_F(TransactionTest, RequestsOfOneClientRunInOrderAndAcknowledgedWritesAreVisible) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  for (int i = 0; i < 100; ++i) {
    client.execute("INSERT INTO t (x) VALUES (?)", {i});
    auto row = conn.execute_fetchone("SELECT max(x) FROM t");
    ASSERT_EQ(std::get<std::int64_t>(row->at(0)), i);
  }
}

TEST_F(TransactionTest, AStatementFailingHalfWayIsUndoneWholeInsideATransaction) {
  auto server = start();
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE u (k INTEGER PRIMARY KEY)");
  auto tx = client.begin();
  tx.execute("INSERT INTO u VALUES (3)");
  // OR FAIL keeps the rows before the conflicting one unless the request is undone as a whole.
  EXPECT_THROW(tx.execute("INSERT OR FAIL INTO u VALUES (1), (2), (3), (4)"),
               pasyn::IntegrityError);
  tx.commit();
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  EXPECT_EQ(conn.execute_fetchall("SELECT k FROM u").size(), 1u);
}

TEST_F(TransactionTest, AReturningReplyTooLargeToSendUndoesItsWritesInsideATransaction) {
  pasyn::ServerOptions options;
  options.max_frame = 4096;
  auto server = pasyn::start_writer_server(db_, options);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE u (k INTEGER)");
  auto tx = client.begin();
  EXPECT_THROW(tx.execute_fetchall("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
                                   "WHERE i < 5000) INSERT INTO u SELECT i FROM r RETURNING k"),
               pasyn::DataError);
  tx.commit();
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  EXPECT_EQ(std::get<std::int64_t>(conn.execute_fetchone("SELECT count(*) FROM u")->at(0)), 0);
}

TEST_F(TransactionTest, AStatementRunningLongerThanTheIdleTimeoutDoesNotCountAsIdle) {
  // 400 ms: the calls around the statement must each come sooner (a loaded machine pauses a
  // thread for a few hundred milliseconds); 6M rows: 0.6-0.9 s of SQLite's own work.
  constexpr auto kIdle = 400ms;
  auto server = start(5s, kIdle);
  pasyn::MultiplexedClient client(server.socket_path());
  auto tx = client.begin();
  tx.execute("INSERT INTO t (x) VALUES (1)");
  const auto started = Clock::now();
  tx.execute_fetchall(
      "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 6000000) "
      "SELECT count(*) FROM r");
  const bool slow_enough = Clock::now() - started > kIdle;
  EXPECT_EQ(tx.execute("INSERT INTO t (x) VALUES (2)"), 1) << "rolled back as idle";
  tx.commit();
  EXPECT_EQ(count(), 2);
  if (!slow_enough) GTEST_SKIP() << "the statement ran faster than the idle timeout";
}

}  // namespace
