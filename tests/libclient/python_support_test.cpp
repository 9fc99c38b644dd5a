// The C++ additions the Python package binds: OpenFlags modifiers, in-memory connections,
// connection counters, streaming cursors, named parameters (locally and through the daemon),
// ReadPool and the thread-bound client transactions.
#include <pasyn/pasyn.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace {

namespace fs = std::filesystem;
using pasyn::NamedParams;
using pasyn::Row;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pasyn-pysupport-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::int64_t as_int(const pasyn::Value& v) { return std::get<std::int64_t>(v); }

TEST(OpenFlagsTest, ModifiersAddTheirBitAndKeepTheRest) {
  const auto f = pasyn::OpenFlags::readonly().uri().shared_cache();
  EXPECT_TRUE(f.has(pasyn::OpenFlags::readonly()));
  EXPECT_TRUE(f.has(pasyn::OpenFlags::readonly().uri()));
  EXPECT_TRUE(f.has(pasyn::OpenFlags::readonly().shared_cache()));
  EXPECT_FALSE(f.has(pasyn::OpenFlags::readonly().memory()));
  // The bits of the original three flags are unchanged (they are inline in applications).
  EXPECT_EQ(pasyn::OpenFlags::readonly().bits(), 1u);
  EXPECT_EQ(pasyn::OpenFlags::readwrite().bits(), 2u);
  EXPECT_EQ(pasyn::OpenFlags::create().bits(), 4u);
}

TEST(ConnectionMemoryTest, MemoryIsPrivateAndSharedMemoryIsShared) {
  auto a = pasyn::Connection::memory();
  a.executescript("CREATE TABLE t (x)");
  auto b = pasyn::Connection::memory();
  EXPECT_THROW(b.execute("INSERT INTO t VALUES (1)"), pasyn::OperationalError);

  auto s1 = pasyn::Connection::shared_memory("pysupport shared/1");
  s1.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (42)");
  auto s2 = pasyn::Connection::shared_memory("pysupport shared/1");
  EXPECT_EQ(as_int(s2.execute_fetchone("SELECT x FROM t")->at(0)), 42);
  auto other = pasyn::Connection::shared_memory("pysupport shared/2");
  EXPECT_THROW(other.execute_fetchone("SELECT x FROM t"), pasyn::OperationalError);
}

TEST(ConnectionMemoryTest, UriFlagOpensAFileUri) {
  TempDir dir;
  const std::string path = dir.file("u.db");
  pasyn::connect(path).executescript("CREATE TABLE t (x)");
  auto c = pasyn::connect("file:" + path + "?mode=ro", pasyn::OpenFlags::readonly().uri());
  EXPECT_EQ(c.column_names("SELECT x AS renamed FROM t"), std::vector<std::string>{"renamed"});
  // memory(): the name is not a file.
  auto m = pasyn::connect(dir.file("not-a-file.db"),
                          (pasyn::OpenFlags::readwrite() | pasyn::OpenFlags::create()).memory());
  m.executescript("CREATE TABLE t (x)");
  EXPECT_FALSE(fs::exists(dir.file("not-a-file.db")));
}

TEST(ConnectionCountersTest, RowidChangesTotalChanges) {
  auto c = pasyn::Connection::memory();
  c.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
  c.execute("INSERT INTO t (v) VALUES (?)", {"a"});
  c.execute("INSERT INTO t (v) VALUES (?)", {"b"});
  EXPECT_EQ(c.last_insert_rowid(), 2);
  EXPECT_EQ(c.execute("UPDATE t SET v = 'c'"), 2);
  EXPECT_EQ(c.changes(), 2);
  EXPECT_EQ(c.total_changes(), 4);
  EXPECT_THROW(c.set_busy_timeout(-1), pasyn::ProgrammingError);
  c.set_busy_timeout(10);
}

TEST(ConnectionCountersTest, InterruptStopsALongQueryFromAnotherThread) {
  auto c = pasyn::Connection::memory();
  std::atomic<bool> stop{false};
  std::thread interrupter([&] {
    while (!stop) {
      c.interrupt();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  try {
    c.execute_fetchone(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n");
    ADD_FAILURE() << "the endless query returned";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.code(), 9);  // SQLITE_INTERRUPT
  }
  stop = true;
  interrupter.join();
}

TEST(CursorTest, StreamsRowsWithoutMaterialisingThem) {
  auto c = pasyn::Connection::memory();
  // An endless result: only a cursor that steps on demand can return its first rows.
  auto cur = c.cursor(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i AS k FROM n");
  EXPECT_EQ(cur.column_names(), std::vector<std::string>{"k"});
  EXPECT_EQ(as_int(cur.fetchone()->at(0)), 1);
  auto some = cur.fetchmany(3);
  ASSERT_EQ(some.size(), 3u);
  EXPECT_EQ(as_int(some[2].at(0)), 4);
  cur.execute();  // from the start again
  EXPECT_EQ(as_int(cur.fetchone()->at(0)), 1);
}

TEST(CursorTest, FetchallEndsAndTheConnectionRunsOtherStatementsMeanwhile) {
  auto c = pasyn::Connection::memory();
  c.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)");
  auto cur = c.cursor("SELECT x FROM t WHERE x > ?", {1});
  EXPECT_EQ(as_int(c.execute_fetchone("SELECT x FROM t WHERE x > ?", {1})->at(0)), 2);
  auto rows = cur.fetchall();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_FALSE(cur.fetchone().has_value());
  auto named = c.cursor_named("SELECT x FROM t WHERE x = :v", NamedParams{{{"v", 3}}});
  EXPECT_EQ(as_int(named.fetchone()->at(0)), 3);
  c.close();
  EXPECT_THROW(named.fetchone(), pasyn::ConnectionClosedError);
}

// A closed cursor says so (Python's sqlite3: "Cannot operate on a closed cursor"); before, it
// answered no rows and execute() ran nothing.
TEST(CursorTest, AClosedCursorRefusesToRun) {
  auto c = pasyn::Connection::memory();
  auto cur = c.cursor("SELECT 1");
  cur.close();
  cur.close();  // idempotent
  EXPECT_THROW(cur.fetchone(), pasyn::ProgrammingError);
  EXPECT_THROW(cur.fetchall(), pasyn::ProgrammingError);
  EXPECT_THROW(cur.execute(), pasyn::ProgrammingError);
}

// The rows of a WAL database `path` with table t, and a writer connection to it.
pasyn::Connection wal_database(const std::string& path) {
  auto writer = pasyn::connect(path);
  writer.execute_fetchone("PRAGMA journal_mode = wal");
  writer.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)");
  return writer;
}

// What a TRUNCATE checkpoint of `writer` reports as busy (1 while a reader pins the WAL).
std::int64_t checkpoint_busy(pasyn::Connection& writer) {
  writer.execute("INSERT INTO t VALUES (4)");
  return as_int(writer.execute_fetchone("PRAGMA wal_checkpoint(TRUNCATE)")->at(0));
}

// close() releases the connection's snapshot at once, also one that an open cursor holds
// (before, the closed handle lived on with the cursor, and so did its read lock).
TEST(CursorTest, ClosingTheConnectionEndsAnOpenCursorsSnapshot) {
  TempDir dir;
  const std::string path = dir.file("c.db");
  auto writer = wal_database(path);
  auto reader = pasyn::connect(path, pasyn::OpenFlags::readonly());
  auto cur = reader.cursor("SELECT x FROM t");
  ASSERT_TRUE(cur.fetchone().has_value());  // mid-result: a snapshot is held
  ASSERT_EQ(checkpoint_busy(writer), 1);
  reader.close();
  EXPECT_EQ(checkpoint_busy(writer), 0);
  EXPECT_THROW(cur.fetchone(), pasyn::ConnectionClosedError);
}

// A lease given back while a cursor of its connection is open does not return to the pool: the
// next lease would read the cursor's old snapshot, and the cursor's owner could step it while
// another thread uses the connection.
TEST(ReadPoolTest, AConnectionWithAnOpenCursorIsNotReused) {
  TempDir dir;
  const std::string path = dir.file("p.db");
  auto writer = wal_database(path);
  pasyn::ReadPool pool(path, 1);
  std::optional<pasyn::Cursor> cur;
  {
    auto lease = pool.acquire();
    cur.emplace(lease->cursor("SELECT x FROM t"));
    ASSERT_TRUE(cur->fetchone().has_value());
  }
  writer.execute("INSERT INTO t VALUES (10)");  // acknowledged before the next read starts
  {
    auto lease = pool.acquire(std::chrono::milliseconds(1000));
    EXPECT_EQ(as_int(lease->execute_fetchone("SELECT count(*) FROM t")->at(0)), 4);
  }
  EXPECT_EQ(checkpoint_busy(writer), 0);  // the cursor's connection was closed, not kept
  EXPECT_THROW(cur->fetchone(), pasyn::ConnectionClosedError);
  // A closed cursor does not hold its connection back.
  {
    auto lease = pool.acquire();
    auto closed = lease->cursor("SELECT x FROM t");
    closed.close();
  }
  EXPECT_EQ(pool.open_connections(), 1u);
}

TEST(NamedParamsTest, LocalBindingIsByNameNotByOrder) {
  auto c = pasyn::Connection::memory();
  c.executescript("CREATE TABLE t (a, b)");
  // Given in the opposite order of the statement's parameters.
  c.execute_named("INSERT INTO t VALUES (:a, @b)", NamedParams{{{"@b", "B"}, {"a", "A"}}});
  auto row = c.execute_fetchone("SELECT a, b FROM t");
  EXPECT_EQ(std::get<std::string>(row->at(0)), "A");
  EXPECT_EQ(std::get<std::string>(row->at(1)), "B");
  EXPECT_THROW(c.execute_named("INSERT INTO t VALUES (:a, :b)", NamedParams{{{"a", 1}, {"c", 2}}}),
               pasyn::ProgrammingError);
  EXPECT_THROW(c.execute_named("INSERT INTO t VALUES (:a, :b)", NamedParams{{{"a", 1}}}),
               pasyn::ProgrammingError);
  EXPECT_THROW(c.execute_named("INSERT INTO t VALUES (?, ?)", NamedParams{{{"a", 1}, {"b", 2}}}),
               pasyn::ProgrammingError);
  // A name is all of its bytes: "a\0zzz" is not :a (SQLite's lookup stops at a NUL).
  EXPECT_THROW(c.execute_fetchall_named("SELECT :a", NamedParams{{{std::string("a\0zzz", 5), 1}}}),
               pasyn::ProgrammingError);
}

class WriterTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string db_ = dir_.file("db.sqlite");
  pasyn::WriterServerHandle server_ = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client_{server_.socket_path()};
};

TEST_F(WriterTest, NamedParametersTravelAndBindByNameInTheDaemon) {
  client_.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, a, b)");
  EXPECT_EQ(client_.execute_named("INSERT INTO t (a, b) VALUES (:a, $b)",
                                  NamedParams{{{"b", "B"}, {"a", 1}}}),
            1);
  EXPECT_EQ(client_.execute_returning_rowid_named("INSERT INTO t (a, b) VALUES (:a, :b)",
                                                  NamedParams{{{":b", 2.5}, {":a", nullptr}}}),
            2);
  EXPECT_EQ(client_.execute_many_named(
                "INSERT INTO t (a, b) VALUES (:a, :b)",
                {NamedParams{{{"b", 1}, {"a", 10}}}, NamedParams{{{"a", 20}, {"b", 2}}}}),
            2);
  auto rows = client_.execute_fetchall_named("SELECT a, b FROM t WHERE id >= :first ORDER BY id",
                                             NamedParams{{{"first", 1}}});
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(as_int(rows[0][0]), 1);
  EXPECT_EQ(std::get<std::string>(rows[0][1]), "B");
  EXPECT_EQ(as_int(rows[3][0]), 20);
  EXPECT_EQ(as_int(rows[3][1]), 2);
  EXPECT_THROW(client_.execute_named("INSERT INTO t (a) VALUES (:a)", NamedParams{{{"x", 1}}}),
               pasyn::ProgrammingError);
  auto tx = client_.begin();
  tx.execute_named("INSERT INTO t (a) VALUES (:a)", NamedParams{{{"a", 99}}});
  EXPECT_EQ(as_int(tx.execute_fetchone_named("SELECT count(*) FROM t WHERE a = :a",
                                             NamedParams{{{"a", 99}}})
                       ->at(0)),
            1);
  tx.rollback();
  // The existing call forms keep their meaning: positional.
  client_.execute("INSERT INTO t (a, b) VALUES (?, ?)", {"x", "y"});
  client_.execute("DELETE FROM t WHERE a = 'nothing'", {});
  client_.execute("DELETE FROM t WHERE a = 'nothing'", {}, pasyn::WriteOptions{"k1"});
}

TEST_F(WriterTest, ThreadTransactionsBelongToTheCallingThread) {
  client_.executescript("CREATE TABLE t (x)");
  pasyn::ThreadTransactions txs(client_);
  txs.begin();
  EXPECT_TRUE(txs.in_transaction());
  // Out of place: the seed's TransactionCommandError, still a ProgrammingError.
  EXPECT_THROW(txs.begin(), pasyn::TransactionCommandError);
  txs.execute("INSERT INTO t VALUES (1)");
  std::atomic<bool> other_done{false};
  std::thread other([&] {
    EXPECT_FALSE(txs.in_transaction());
    EXPECT_THROW(txs.commit(), pasyn::TransactionCommandError);
    txs.execute("INSERT INTO t VALUES (2)");  // waits for the owner's transaction
    other_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(other_done.load());
  // Inside the transaction this thread sees its own write and not the other thread's.
  EXPECT_EQ(as_int(txs.execute_fetchall("SELECT count(*) FROM t")[0][0]), 1);
  txs.rollback();
  other.join();
  EXPECT_FALSE(txs.in_transaction());
  auto rows = client_.execute_fetchall("SELECT x FROM t");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(as_int(rows[0][0]), 2);
  EXPECT_THROW(txs.rollback(), pasyn::TransactionCommandError);
}

// A probe found a thread stuck: after the daemon ended its transaction, begin() said it already
// had one while in_transaction() said it had none, and only rollback() got it out.
TEST_F(WriterTest, AThreadWhoseTransactionTheDaemonEndedMayBeginAgain) {
  client_.executescript("CREATE TABLE u (x UNIQUE); INSERT INTO u VALUES (1)");
  pasyn::ThreadTransactions txs(client_);
  const auto ended_by_a_statement = [&] {
    txs.begin();
    txs.execute("INSERT INTO u VALUES (2)");
    try {
      txs.execute("INSERT OR ROLLBACK INTO u VALUES (1)");  // SQLite rolls the transaction back
      ADD_FAILURE() << "the conflict did not end the transaction";
    } catch (const pasyn::OperationalError& e) {
      EXPECT_NE(std::string(e.what()).find("rolled back"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(txs.in_transaction());
  };
  ended_by_a_statement();
  // What the thread meant to run in it does not run outside it.
  EXPECT_THROW(txs.execute("INSERT INTO u VALUES (3)"), pasyn::OperationalError);
  txs.begin();
  EXPECT_TRUE(txs.in_transaction());
  txs.execute("INSERT INTO u VALUES (4)");
  txs.commit();
  ended_by_a_statement();
  txs.rollback();  // of what has ended: returns the thread to plain writes
  EXPECT_FALSE(txs.in_transaction());
  EXPECT_EQ(txs.execute("INSERT INTO u VALUES (5)"), 1);
  ended_by_a_statement();
  EXPECT_THROW(txs.commit(), pasyn::OperationalError);  // says why, and ends it for the thread
  EXPECT_EQ(txs.execute("INSERT INTO u VALUES (6)"), 1);
  auto rows = client_.execute_fetchall("SELECT x FROM u ORDER BY x");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(as_int(rows[1][0]), 4);
  EXPECT_EQ(as_int(rows[3][0]), 6);
}

// A thread's transaction is not inherited by a later thread that gets the same std::thread::id
// (glibc reuses a finished thread's pthread_t; a review found the map keyed by it).
TEST_F(WriterTest, ALaterThreadDoesNotInheritAFinishedThreadsTransaction) {
  client_.executescript("CREATE TABLE t (x)");
  pasyn::ThreadTransactions txs(client_);
  std::thread::id first_id;
  std::thread first([&] {
    first_id = std::this_thread::get_id();
    txs.begin();  // left open: rolled back when txs is destroyed
  });
  first.join();
  bool inherited = true;
  std::thread::id second_id;
  std::thread second([&] {
    second_id = std::this_thread::get_id();
    inherited = txs.in_transaction();
  });
  second.join();
  EXPECT_FALSE(inherited) << (first_id == second_id ? "same thread id" : "another thread id");
}

// The handle rethrows what ended it also when an asynchronous call was the first to learn it.
TEST_F(WriterTest, ATransactionsAsyncCallThatFindsTheClientClosedEndsTheHandleWithThatError) {
  client_.executescript("CREATE TABLE t (x)");
  auto tx = client_.begin();
  tx.execute("INSERT INTO t VALUES (1)");
  client_.close();
  EXPECT_THROW(tx.execute_async("INSERT INTO t VALUES (2)"), pasyn::ConnectionClosedError);
  EXPECT_TRUE(tx.finished());
  EXPECT_THROW(tx.execute("INSERT INTO t VALUES (3)"), pasyn::ConnectionClosedError);
  EXPECT_THROW(tx.commit(), pasyn::ConnectionClosedError);
}

// milliseconds::max() is no bound, as for pasyn::Timeout (a probe's acquire(max) threw PoolError
// at once: now() + max wrapped into the past).
TEST(ReadPoolTest, TheLargestTimeoutWaitsForAConnection) {
  TempDir dir;
  const std::string path = dir.file("p.db");
  pasyn::connect(path).executescript("CREATE TABLE t (x)");
  pasyn::ReadPool pool(path, 1);
  std::optional<pasyn::ReadPool::Lease> held(pool.acquire());
  std::atomic<bool> acquired{false};
  std::string error;
  std::thread waiter([&] {
    try {
      auto lease = pool.acquire(std::chrono::milliseconds::max());
      acquired = true;
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  held.reset();  // returned: the waiter gets it
  waiter.join();
  EXPECT_TRUE(acquired.load()) << error;
}

TEST(ReadPoolTest, HandsOutAtMostSizeConnectionsAndRefusesAfterClose) {
  TempDir dir;
  const std::string path = dir.file("p.db");
  pasyn::connect(path).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (7)");
  pasyn::ReadPool pool(path, 2);
  EXPECT_THROW(pasyn::ReadPool(path, 0), pasyn::ProgrammingError);
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    EXPECT_EQ(pool.open_connections(), 2u);
    EXPECT_THROW(pool.acquire(std::chrono::milliseconds(20)), pasyn::PoolError);
    EXPECT_THROW(a->execute("INSERT INTO t VALUES (1)"), pasyn::OperationalError);  // read-only
  }
  std::atomic<int> reads{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 50; ++j) {
        auto lease = pool.acquire();
        if (as_int(lease->execute_fetchone("SELECT x FROM t")->at(0)) == 7) ++reads;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(reads.load(), 400);
  EXPECT_LE(pool.open_connections(), 2u);
  auto held = pool.acquire();
  std::atomic<bool> second_held{false};
  std::thread waiter([&] {
    auto b = pool.acquire();  // the second connection
    second_held = true;
    EXPECT_THROW(pool.acquire(), pasyn::PoolClosedError);  // woken by close(), or after it
  });
  // close() only once the waiter holds the second connection (before, that acquire would
  // throw too), then a moment later, so that its third acquire() is usually waiting by then.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!second_held && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(second_held.load()) << "the second acquire() did not return";
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  pool.close();
  waiter.join();
  EXPECT_THROW(pool.acquire(), pasyn::PoolClosedError);
  EXPECT_TRUE(pool.closed());
}

}  // namespace

// ---- What pasyn_sqlite.aio needs: transactions without a blocked thread -----------------------

TEST_F(WriterTest, BeginAsyncOpensATransactionItsAsyncCallsRunInside) {
  client_.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
  auto tx = client_.begin_async().get();
  EXPECT_FALSE(tx.finished());
  auto inserted = tx.execute_async("INSERT INTO t (x) VALUES (?)", {1});
  auto rowid = tx.execute_returning_rowid_async("INSERT INTO t (x) VALUES (?)", {2});
  auto named = tx.execute_named_async("INSERT INTO t (x) VALUES (:x)", NamedParams{{{"x", 3}}});
  auto many = tx.execute_many_async("INSERT INTO t (x) VALUES (?)", {{4}, {5}});
  auto script = tx.executescript_async("INSERT INTO t (x) VALUES (6)");
  auto seen = tx.execute_fetchall_async("SELECT count(*) FROM t");
  EXPECT_EQ(inserted.get(), 1);
  EXPECT_EQ(rowid.get(), 2);
  EXPECT_EQ(named.get(), 1);
  EXPECT_EQ(many.get(), 2);
  script.get();
  EXPECT_EQ(as_int(seen.get().at(0).at(0)), 6);  // its own uncommitted writes
  auto commit = tx.commit_async();
  EXPECT_TRUE(tx.finished());  // at once, like commit()
  commit.get();
  EXPECT_THROW((void)tx.execute_async("INSERT INTO t (x) VALUES (7)"), pasyn::ProgrammingError);
  EXPECT_EQ(as_int(client_.execute_fetchone("SELECT count(*) FROM t")->at(0)), 6);

  auto discarded = client_.begin_async().get();
  discarded.execute_async("INSERT INTO t (x) VALUES (8)").get();
  discarded.rollback_async().get();
  EXPECT_EQ(as_int(client_.execute_fetchone("SELECT count(*) FROM t")->at(0)), 6);
}

TEST(BeginAsyncTest, ADroppedBeginLeavesNoTransactionOpenWhetherGrantedBeforeOrAfter) {
  TempDir dir;
  pasyn::ServerOptions options;
  options.lock_wait = std::chrono::seconds(3);
  options.transaction_idle_timeout = std::chrono::seconds(600);  // never the rescue here
  auto server = pasyn::start_writer_server(dir.file("db.sqlite"), options);
  pasyn::MultiplexedClient a(server.socket_path()), b(server.socket_path()),
      c(server.socket_path());
  a.executescript("CREATE TABLE t (x)");

  // Dropped while the daemon still holds the BEGIN back (another connection's transaction).
  auto held = a.begin();
  { auto dropped = b.begin_async(); }
  held.execute("INSERT INTO t VALUES (1)");
  held.commit();
  // A transaction left open by the dropped BEGIN would hold c's write back until --lock-wait
  // runs out (TimeoutError).
  EXPECT_EQ(c.execute("INSERT INTO t VALUES (2)"), 1);

  // Dropped after the grant arrived, its Transaction never taken out of the future.
  {
    auto granted = b.begin_async();
    granted.wait();
  }
  EXPECT_EQ(c.execute("INSERT INTO t VALUES (3)"), 1);
  EXPECT_EQ(as_int(c.execute_fetchone("SELECT count(*) FROM t")->at(0)), 3);
}

// The seed's tests open and roll back savepoints with executescript(): a script of one savepoint
// statement must not be wrapped in (and released with) the daemon's own per-request savepoint.
TEST_F(WriterTest, ASavepointOpenedByExecutescriptSurvivesItsRequest) {
  client_.executescript("CREATE TABLE t (x)");
  auto tx = client_.begin();
  tx.execute("INSERT INTO t VALUES ('outer')");
  tx.executescript("SAVEPOINT s1_x1");
  tx.execute("INSERT INTO t VALUES ('inner')");
  tx.executescript("  ROLLBACK TO SAVEPOINT s1_x1; -- discard inner\n");
  tx.executescript_async("RELEASE SAVEPOINT s1_x1").get();
  // A script of several statements stays atomic as before.
  tx.executescript("SAVEPOINT a; INSERT INTO t VALUES ('script'); RELEASE a");
  EXPECT_THROW(tx.executescript("INSERT INTO t VALUES ('half'); SELECT nosuchcolumn"),
               pasyn::OperationalError);
  tx.commit();
  auto rows = client_.execute_fetchall("SELECT x FROM t ORDER BY rowid");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(std::get<std::string>(rows[0][0]), "outer");
  EXPECT_EQ(std::get<std::string>(rows[1][0]), "script");
}

TEST_F(WriterTest, TheWritersRowsComeWithTheirColumnNames) {
  client_.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
  auto inserted = client_.execute_fetchall_columns(
      "INSERT INTO t (x) VALUES (?) RETURNING id AS new_id, x", {"a"});
  EXPECT_EQ(inserted.columns, (std::vector<std::string>{"new_id", "x"}));
  ASSERT_EQ(inserted.rows.size(), 1u);
  EXPECT_EQ(as_int(inserted.rows[0][0]), 1);
  auto empty = client_.execute_fetchall_columns_async("SELECT x AS renamed FROM t WHERE 0").get();
  EXPECT_EQ(empty.columns, std::vector<std::string>{"renamed"});
  EXPECT_TRUE(empty.rows.empty());
  EXPECT_TRUE(client_.execute_fetchall_columns("DELETE FROM t WHERE 0").columns.empty());
  auto tx = client_.begin();
  tx.execute("INSERT INTO t (x) VALUES ('b')");
  auto seen = tx.execute_fetchall_columns("SELECT count(*) AS n FROM t");
  EXPECT_EQ(seen.columns, std::vector<std::string>{"n"});
  EXPECT_EQ(as_int(seen.rows.at(0).at(0)), 2);
  tx.rollback();
}
