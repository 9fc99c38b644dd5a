// MultiplexedClient and start_writer_server through the public API and the shared library.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <pasyn/pasyn.hpp>
#include <pasyn/proto/unix_socket.hpp>
#include <thread>

namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pasyn-client-test-XXXXXX";
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

class ClientTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string db_ = dir_.file("db.sqlite");
};

std::int64_t count_rows(const std::string& db, const std::string& table) {
  auto conn = pasyn::connect(db, pasyn::OpenFlags::readonly());
  auto row = conn.execute_fetchone("SELECT count(*) FROM " + table);
  return std::get<std::int64_t>(row->at(0));
}

TEST_F(ClientTest, SeedQuickStartRunsAsWritten) {
  const std::string db = db_;
  auto server = pasyn::start_writer_server(db);
  pasyn::MultiplexedClient client(server.socket_path());
  auto read_conn = pasyn::connect(db, pasyn::OpenFlags::readonly());
  client.executescript(
      "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)");
  client.execute("INSERT INTO users (name, email) VALUES (?, ?)", {"Alice", "alice@example.com"});
  auto rows = read_conn.execute_fetchall("SELECT * FROM users");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0],
            (pasyn::Row{std::int64_t{1}, std::string("Alice"), std::string("alice@example.com")}));
  read_conn.close();
  server.stop();
  EXPECT_FALSE(server.running());
  EXPECT_FALSE(fs::exists(server.socket_path()));
}

TEST_F(ClientTest, MixedParameterListsRoundTripThroughTheWriter) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (a, b, c, d, e)");
  client.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                 {std::int64_t(7), std::string("x"), 2.5, nullptr, pasyn::Blob{0, 1, 255}});
  auto rows = client.execute_fetchall("SELECT a, b, c, d, e FROM t");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0],
            (pasyn::Row{std::int64_t{7}, std::string("x"), 2.5, nullptr, pasyn::Blob{0, 1, 255}}));
  auto one = client.execute_fetchone("SELECT b FROM t WHERE a = ?", {7});
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(std::get<std::string>(one->at(0)), "x");
  EXPECT_FALSE(client.execute_fetchone("SELECT b FROM t WHERE a = ?", {8}).has_value());
}

TEST_F(ClientTest, ExecuteReturnsChangedRowsAndRowidIsTheRequestsOwn) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT UNIQUE)");
  EXPECT_EQ(client.execute("INSERT INTO t (tag) VALUES ('a'), ('b')"), 2);
  EXPECT_EQ(client.execute("UPDATE t SET tag = tag || '!'"), 2);
  EXPECT_EQ(client.execute("CREATE TABLE u (x)"), 0);
  // A request that inserts nothing reports rowid 0, not the previous request's rowid.
  EXPECT_EQ(client.execute_returning_rowid("UPDATE t SET tag = tag"), 0);

  constexpr int kThreads = 8, kPerThread = 100;
  std::vector<std::thread> threads;
  std::vector<std::vector<std::pair<std::int64_t, std::string>>> got(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string tag = std::to_string(t) + "/" + std::to_string(i);
        got[t].emplace_back(client.execute_returning_rowid("INSERT INTO t (tag) VALUES (?)", {tag}),
                            tag);
      }
    });
  }
  for (auto& th : threads) th.join();
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  for (const auto& per_thread : got) {
    for (const auto& [rowid, tag] : per_thread) {
      auto row = conn.execute_fetchone("SELECT tag FROM t WHERE id = ?", {rowid});
      ASSERT_TRUE(row.has_value()) << rowid;
      EXPECT_EQ(std::get<std::string>(row->at(0)), tag);
    }
  }
}

// The writer caches statements for every client: a cached SELECT * run after another client's
// ALTER TABLE returns the new columns, as plain SQLite does (probe14: it read the column list
// before the first step, where SQLite prepares a stale statement again, and lost an added
// column, kept a dropped one as NULL and named a renamed one by its old name).
TEST_F(ClientTest, ACachedQueryAfterAnotherClientsSchemaChangeHasTheNewColumns) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient a(server.socket_path()), b(server.socket_path());
  a.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  const auto select_all = [&] { return b.execute_fetchall_columns("SELECT * FROM t"); };
  EXPECT_EQ(select_all().columns, std::vector<std::string>{"x"});
  a.execute("ALTER TABLE t ADD COLUMN y DEFAULT 42");
  auto result = select_all();
  EXPECT_EQ(result.columns, (std::vector<std::string>{"x", "y"}));
  ASSERT_EQ(result.rows.size(), 1u);
  EXPECT_EQ(result.rows[0], (pasyn::Row{std::int64_t{1}, std::int64_t{42}}));
  a.execute("ALTER TABLE t DROP COLUMN y");
  EXPECT_EQ(select_all().columns, std::vector<std::string>{"x"});
  EXPECT_EQ(select_all().rows[0].size(), 1u);
  a.execute("ALTER TABLE t RENAME COLUMN x TO renamed");
  EXPECT_EQ(select_all().columns, std::vector<std::string>{"renamed"});
  // RETURNING * the same way.
  const auto insert = [&] {
    return b.execute_fetchall_columns("INSERT INTO t (renamed) VALUES (2) RETURNING *");
  };
  EXPECT_EQ(insert().columns, std::vector<std::string>{"renamed"});
  a.execute("ALTER TABLE t ADD COLUMN z DEFAULT 'new'");
  auto returned = insert();
  EXPECT_EQ(returned.columns, (std::vector<std::string>{"renamed", "z"}));
  ASSERT_EQ(returned.rows.size(), 1u);
  EXPECT_EQ(returned.rows[0], (pasyn::Row{std::int64_t{2}, std::string("new")}));
}

// last_insert_rowid() in a client's SQL is that client's own, as on a connection of its own:
// not the rowid another client's request (probe14: a child row pointed at another client's
// row) or the daemon's idempotency record left on the shared writer connection.
TEST_F(ClientTest, LastInsertRowidInSqlIsTheClientsOwn) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient a(server.socket_path()), b(server.socket_path());
  a.executescript(
      "CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE other (id INTEGER PRIMARY KEY);"
      "CREATE TABLE child (parent_id, tag); CREATE TABLE log (v)");
  const auto own = [](pasyn::MultiplexedClient& c) {
    return std::get<std::int64_t>(c.execute_fetchall("SELECT last_insert_rowid()").at(0).at(0));
  };
  b.execute("INSERT INTO parent (id) VALUES (2)");
  a.execute("INSERT INTO other (id) VALUES (7777)");
  b.execute("INSERT INTO child VALUES (last_insert_rowid(), 'b')");
  EXPECT_EQ(own(a), 7777);
  // Pipelined, so that both run in one batch.
  auto p = b.execute_async("INSERT INTO parent (id) VALUES (3)");
  auto o = a.execute_async("INSERT INTO other (id) VALUES (8888)");
  auto c = b.execute_async("INSERT INTO child VALUES (last_insert_rowid(), 'b, pipelined')");
  p.get();
  o.get();
  c.get();
  // The key's record is the daemon's own row.
  b.execute("INSERT INTO parent (id) VALUES (4)", {}, pasyn::WriteOptions{.idempotency_key = "k"});
  b.execute("INSERT INTO child VALUES (last_insert_rowid(), 'b, keyed')");
  // In a transaction, from its first statement.
  a.execute("INSERT INTO other (id) VALUES (9999)");
  {
    auto tx = b.begin();
    tx.execute("INSERT INTO child VALUES (last_insert_rowid(), 'b, in a transaction')");
    tx.commit();
  }
  // A batch run again after a failed request (probe16): the first attempt's inserts, also of
  // requests queued after this one, are not what it sees the second time.
  a.execute("INSERT INTO other (id) VALUES (100)");
  auto logged = a.execute_async("INSERT INTO log VALUES (last_insert_rowid())");
  auto later = a.execute_async("INSERT INTO other (id) VALUES (50)");
  auto duplicate = a.execute_async("INSERT INTO other (id) VALUES (50)");
  EXPECT_EQ(logged.get(), 1);
  EXPECT_EQ(later.get(), 1);
  EXPECT_THROW(duplicate.get(), pasyn::IntegrityError);
  EXPECT_EQ(a.execute_fetchall("SELECT v FROM log"),
            (std::vector<pasyn::Row>{{std::int64_t{100}}}));
  // execute_returning_rowid of a statement that inserts nothing answers 0 and leaves the value.
  {
    auto tx = a.begin();
    tx.execute("INSERT INTO other (id) VALUES (7)");
    EXPECT_EQ(tx.execute_returning_rowid("UPDATE other SET id = id WHERE id = 7"), 0);
    EXPECT_EQ(tx.execute_fetchall("SELECT last_insert_rowid()").at(0).at(0),
              pasyn::Value(std::int64_t{7}));
    // An explicit rowid 0 is an insert like any other.
    EXPECT_EQ(tx.execute_returning_rowid("INSERT INTO other (id) VALUES (0)"), 0);
    EXPECT_EQ(tx.execute_fetchall("SELECT last_insert_rowid()").at(0).at(0),
              pasyn::Value(std::int64_t{0}));
    tx.rollback();
  }
  auto rows = a.execute_fetchall("SELECT parent_id, tag FROM child ORDER BY rowid");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], (pasyn::Row{std::int64_t{2}, std::string("b")}));
  EXPECT_EQ(rows[1], (pasyn::Row{std::int64_t{3}, std::string("b, pipelined")}));
  EXPECT_EQ(rows[2], (pasyn::Row{std::int64_t{4}, std::string("b, keyed")}));
  EXPECT_EQ(rows[3], (pasyn::Row{std::int64_t{3}, std::string("b, in a transaction")}));
}

TEST_F(ClientTest, ManyThreadsShareOneClientAndEveryWriteIsAcknowledgedOnce) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE acks (thread INTEGER, seq INTEGER, UNIQUE (thread, seq))");
  constexpr int kThreads = 16, kPerThread = 250;
  std::atomic<int> acked{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        client.execute("INSERT INTO acks VALUES (?, ?)", {t, i});
        acked.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(acked.load(), kThreads * kPerThread);
  EXPECT_EQ(count_rows(db_, "acks"), kThreads * kPerThread);
}

TEST_F(ClientTest, OneThreadKeepsThousandsOfWritesInFlight) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x INTEGER)");
  std::vector<std::future<std::int64_t>> futures;
  for (int i = 0; i < 5000; ++i)
    futures.push_back(client.execute_async("INSERT INTO t VALUES (?)", {i}));
  for (auto& f : futures) EXPECT_EQ(f.get(), 1);
  // Order on one connection: the rows went in in submission order.
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  auto rows = conn.execute_fetchall("SELECT x FROM t ORDER BY rowid");
  ASSERT_EQ(rows.size(), 5000u);
  for (int i = 0; i < 5000; ++i) EXPECT_EQ(std::get<std::int64_t>(rows[i][0]), i);
}

TEST_F(ClientTest, ExecuteManyIsAllOrNothing) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x INTEGER UNIQUE)");
  EXPECT_EQ(client.execute_many("INSERT INTO t VALUES (?)", {{1}, {2}, {3}}), 3);
  EXPECT_THROW(client.execute_many("INSERT INTO t VALUES (?)", {{4}, {5}, {1}, {6}}),
               pasyn::IntegrityError);
  EXPECT_EQ(count_rows(db_, "t"), 3);
}

TEST_F(ClientTest, ExecutescriptIsAllOrNothing) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x INTEGER UNIQUE)");
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"
                                    "INSERT INTO t VALUES (1);"),
               pasyn::IntegrityError);
  EXPECT_EQ(count_rows(db_, "t"), 0);
}

TEST_F(ClientTest, FailingRequestsInABatchFailAloneAndTheOthersCommit) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x INTEGER UNIQUE)");
  std::vector<std::future<std::int64_t>> futures;
  for (int i = 0; i < 1000; ++i) {
    // Every 10th statement is broken in a different way; the rest are good.
    if (i % 30 == 0) {
      futures.push_back(client.execute_async("INSERT INTO t VALUES (?)", {0}));  // duplicate
    } else if (i % 30 == 10) {
      futures.push_back(client.execute_async("INSERT INTO nowhere VALUES (?)", {i}));
    } else if (i % 30 == 20) {
      futures.push_back(client.execute_async("INSERT INTO t VALUES (?, ?)", {i}));  // arity
    } else {
      futures.push_back(client.execute_async("INSERT INTO t VALUES (?)", {i}));
    }
  }
  int failed = 0;
  for (int i = 0; i < 1000; ++i) {
    if (i % 10 == 0 && i != 0) {
      EXPECT_THROW(futures[i].get(), pasyn::SqliteError) << i;
      ++failed;
    } else if (i == 0) {
      EXPECT_EQ(futures[i].get(), 1);  // the first 0 is not a duplicate yet
    } else {
      EXPECT_EQ(futures[i].get(), 1) << i;
    }
  }
  EXPECT_EQ(count_rows(db_, "t"), 1000 - failed);
}

TEST_F(ClientTest, TransactionControlSqlIsRefusedWithAPointerToTheApi) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x)");
  for (const char* sql : {"BEGIN", "COMMIT", "ROLLBACK", "END", "BEGIN EXCLUSIVE", "SAVEPOINT s",
                          "RELEASE s", "ROLLBACK TO s"}) {
    try {
      client.execute(sql);
      ADD_FAILURE() << sql << " was accepted";
    } catch (const pasyn::ProgrammingError& e) {
      EXPECT_NE(std::string(e.what()).find("begin()"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2)"),
               pasyn::ProgrammingError);
  EXPECT_EQ(count_rows(db_, "t"), 0);
  EXPECT_TRUE(client.ping());
}

TEST_F(ClientTest, MoreThanOneStatementInExecuteIsAnErrorAndRunsNothing) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x)");
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"),
               pasyn::ProgrammingError);
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (3); -- a trailing comment"), 1);
  EXPECT_EQ(count_rows(db_, "t"), 1);
}

TEST_F(ClientTest, ARequestLargerThanTheMaximumFrameIsRefusedLocally) {
  pasyn::ServerOptions options;
  options.max_frame = 4096;
  auto server = pasyn::start_writer_server(db_, options);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x)");
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (?)", {std::string(10000, 'x')}),
               pasyn::DataError);
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (?)", {std::string(100, 'x')}), 1);
  // A result too large for one frame is an error too, and the connection survives it.
  client.execute("INSERT INTO t VALUES (?)", {std::string(3000, 'y')});
  client.execute("INSERT INTO t VALUES (?)", {std::string(3000, 'z')});
  EXPECT_THROW(client.execute_fetchall("SELECT x FROM t"), pasyn::DataError);
  EXPECT_TRUE(client.ping());
}

TEST_F(ClientTest, ShutdownServerStopsTheServerAfterQueuedWork) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x)");
  std::vector<std::future<std::int64_t>> futures;
  for (int i = 0; i < 100; ++i)
    futures.push_back(client.execute_async("INSERT INTO t VALUES (?)", {i}));
  client.shutdown_server();
  for (auto& f : futures) EXPECT_EQ(f.get(), 1);
  server.join();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(count_rows(db_, "t"), 100);
  EXPECT_THROW(client.ping(), pasyn::ConnectionLostError);
}

TEST_F(ClientTest, StoppedServerFailsWaitingAndLaterCallsWithConnectionLost) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  ASSERT_TRUE(client.ping());
  server.stop();
  try {
    client.execute("SELECT 1");
    FAIL() << "no error after the server stopped";
  } catch (const pasyn::ConnectionLostError&) {
  }
  EXPECT_FALSE(client.connected());
}

TEST_F(ClientTest, LaterCallsReconnectOnceTheServerIsBack) {
  const std::string sock = dir_.file("restart.sock");
  auto server = pasyn::start_writer_server(db_, sock);
  pasyn::MultiplexedClient client(sock);
  client.executescript("CREATE TABLE t (x INTEGER UNIQUE)");
  client.execute("INSERT INTO t VALUES (1)");
  auto tx = client.begin();
  tx.execute("INSERT INTO t VALUES (2)");
  server.stop();  // rolls back the open transaction
  EXPECT_THROW(client.ping(), pasyn::ConnectionLostError);
  EXPECT_FALSE(client.connected());

  auto again = pasyn::start_writer_server(db_, sock);
  bool reconnected = false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!reconnected && std::chrono::steady_clock::now() < give_up) {
    try {
      reconnected = client.ping();
    } catch (const pasyn::ConnectionLostError&) {  // inside the backoff
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_TRUE(reconnected);
  EXPECT_TRUE(client.connected());
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (3)"), 1);
  // The transaction went with the old connection; its handle says so instead of acting on the
  // new one.
  EXPECT_THROW(tx.execute("INSERT INTO t VALUES (4)"), pasyn::ConnectionLostError);
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(count_rows(db_, "t"), 2);  // 1 and 3; 2 was rolled back, 4 never sent
}

TEST_F(ClientTest, ConnectingToNothingIsConnectionLost) {
  EXPECT_THROW(pasyn::MultiplexedClient(dir_.file("missing.sock")), pasyn::ConnectionLostError);
}

TEST_F(ClientTest, ASecondServerOnTheSameDatabaseIsRefused) {
  auto server = pasyn::start_writer_server(db_);
  try {
    auto second = pasyn::start_writer_server(db_, dir_.file("other.sock"));
    FAIL() << "second server started";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_NE(std::string(e.what()).find("already served"), std::string::npos) << e.what();
  }
  pasyn::MultiplexedClient client(server.socket_path());
  EXPECT_TRUE(client.ping());
}

TEST_F(ClientTest, EveryLibraryErrorIsCaughtAsPasynError) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  auto expect_pasyn_error = [](auto&& call) {
    try {
      call();
      ADD_FAILURE() << "no exception";
    } catch (const pasyn::Error&) {
    }
  };
  expect_pasyn_error([&] { client.execute("NOT SQL"); });
  expect_pasyn_error([&] { client.execute("SELECT ?", {1, 2}); });
  client.close();
  expect_pasyn_error([&] { client.ping(); });
  EXPECT_THROW(client.ping(), pasyn::ConnectionClosedError);
}

TEST_F(ClientTest, CloseFailsNothingThatAlreadySucceeded) {
  auto server = pasyn::start_writer_server(db_);
  pasyn::MultiplexedClient client(server.socket_path());
  client.executescript("CREATE TABLE t (x)");
  auto f = client.execute_async("INSERT INTO t VALUES (1)");
  EXPECT_EQ(f.get(), 1);
  client.close();
  client.close();  // idempotent
  EXPECT_FALSE(client.connected());
}

TEST_F(ClientTest, ADaemonThatNeverAnswersTheHandshakeTimesOutTheConstructor) {
  // A socket that listens but never accepts: connect() succeeds into the backlog, and no
  // HELLO_OK ever comes.
  const std::string path = dir_.file("silent.sock");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  const auto addr = pasyn::proto::unix_address(path);
  ASSERT_TRUE(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  pasyn::ClientOptions options;
  options.connect_timeout = std::chrono::milliseconds(300);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(pasyn::MultiplexedClient(path, options), pasyn::TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  ::close(fd);
}

TEST(DefaultSocketPath, IsBesideTheDatabaseAndStable) {
  EXPECT_EQ(pasyn::default_socket_path("/var/lib/pasyn/x.sqlite"),
            "/var/lib/pasyn/x.sqlite-pasyn.sock");
  const std::string long_path = "/tmp/" + std::string(200, 'd') + "/x.sqlite";
  const auto p = pasyn::default_socket_path(long_path);
  EXPECT_EQ(p, pasyn::default_socket_path(long_path));
  EXPECT_EQ(p.rfind("/tmp/pasyn-" + std::to_string(::geteuid()) + "/", 0), 0u) << p;
  EXPECT_LT(p.size(), 108u);
}

// SPEC §4: never in a directory writable by all, where another user could bind the name
// first (probe29: a database in /tmp had its socket in /tmp).
TEST(DefaultSocketPath, IsNeverInADirectoryWritableByAll) {
  char tmpl[] = "/tmp/pasyn-sockdir-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, db = dir + "/x.sqlite";
  EXPECT_EQ(pasyn::default_socket_path(db), db + "-pasyn.sock");  // mkdtemp: mode 0700
  for (const mode_t mode : {0777, 01777, 0703}) {
    ASSERT_EQ(::chmod(dir.c_str(), mode), 0);
    const auto p = pasyn::default_socket_path(db);
    EXPECT_EQ(p.rfind("/tmp/pasyn-" + std::to_string(::geteuid()) + "/", 0), 0u)
        << std::oct << mode << ": " << p;
    EXPECT_EQ(p, pasyn::default_socket_path(db));  // the daemon's and its clients' alike
  }
  EXPECT_EQ(pasyn::default_socket_path("/tmp/x.sqlite").rfind("/tmp/pasyn-", 0), 0u);
  ::rmdir(dir.c_str());
}

}  // namespace
