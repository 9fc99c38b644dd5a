// Guarantees of the client library by construction, with in-process servers: a transaction
// handle acts only in its own transaction, never reconnects, fork() children get connections of
// their own and leave the parent's alone, library threads take no signals, the server's uid is
// checked, and the fallback socket directory is private.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <set>
#include <string>
#include <thread>

#include "../sanitizers.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kSqliteAbortRollback = 516;

class GuaranteesTest : public ::testing::Test {
 protected:
  GuaranteesTest() {
    char tmpl[] = "/tmp/pasyn-guarantees-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    db_ = (dir_ / "db.sqlite").string();
    sock_ = (dir_ / "s.sock").string();
  }
  ~GuaranteesTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  pasyn::WriterServerHandle start(std::chrono::milliseconds idle = 10s) {
    pasyn::ServerOptions options;
    options.socket_path = sock_;
    options.lock_wait = 20s;
    options.transaction_idle_timeout = idle;
    auto server = pasyn::start_writer_server(db_, options);
    pasyn::MultiplexedClient setup(server.socket_path());
    setup.executescript("CREATE TABLE IF NOT EXISTS t (x INTEGER, tag TEXT)");
    return server;
  }

  static pasyn::ClientOptions bounded() {
    pasyn::ClientOptions options;
    options.request_timeout = 10s;  // a hang fails the test instead of the suite
    return options;
  }

  std::int64_t count(const std::string& where = "1") const {
    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    return std::get<std::int64_t>(
        conn.execute_fetchone("SELECT count(*) FROM t WHERE " + where)->at(0));
  }

  // Waits (bounded) until the daemon has rolled back an idle transaction: a write of another
  // client, which waits behind it, then completes.
  void wait_for_idle_rollback() {
    pasyn::MultiplexedClient other(sock_, bounded());
    EXPECT_EQ(other.execute("INSERT INTO t (x, tag) VALUES (0, 'other')"), 1);
  }

  fs::path dir_;
  std::string db_;
  std::string sock_;
};

// ---- 6. A transaction handle acts only in its own transaction ---------------------------------

TEST_F(GuaranteesTest, AStaleHandleDoesNotExecuteInsideTheNextTransaction) {
  auto server = start(1s);  // tx2 idles between its calls too: 300 ms was short on a loaded machine
  pasyn::MultiplexedClient client(sock_, bounded());
  auto tx1 = client.begin();
  tx1.execute("INSERT INTO t (x, tag) VALUES (1, 'tx1')");
  wait_for_idle_rollback();

  auto tx2 = std::async(std::launch::async, [&] { return client.begin(); }).get();
  tx2.execute("INSERT INTO t (x, tag) VALUES (2, 'tx2')");
  try {
    tx1.execute("DELETE FROM t");
    FAIL() << "a stale transaction handle ran a statement";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.extended_code(), kSqliteAbortRollback) << e.what();
  }
  EXPECT_TRUE(tx1.finished());
  EXPECT_FALSE(tx2.finished());
  tx2.commit();
  EXPECT_EQ(count("tag = 'tx2'"), 1) << "the stale handle's DELETE ran inside tx2";
  EXPECT_EQ(count("tag = 'tx1'"), 0);
}

TEST_F(GuaranteesTest, AStaleHandleDoesNotCommitTheNextTransaction) {
  auto server = start(1s);  // tx2 idles between its calls too: 300 ms was short on a loaded machine
  pasyn::MultiplexedClient client(sock_, bounded());
  auto tx1 = client.begin();
  tx1.execute("INSERT INTO t (x, tag) VALUES (1, 'tx1')");
  wait_for_idle_rollback();

  auto tx2 = std::async(std::launch::async, [&] { return client.begin(); }).get();
  tx2.execute("INSERT INTO t (x, tag) VALUES (2, 'tx2')");
  EXPECT_THROW(tx1.commit(), pasyn::OperationalError);
  EXPECT_FALSE(tx2.finished());
  EXPECT_EQ(count("tag = 'tx2'"), 0) << "the stale handle committed tx2";
  tx2.rollback();
  EXPECT_EQ(count("tag = 'tx2'"), 0);
}

TEST_F(GuaranteesTest, AfterAServerRestartTheFirstTransactionCallIsConnectionLostNotAReconnect) {
  std::optional<pasyn::WriterServerHandle> server(start());
  pasyn::MultiplexedClient client(sock_, bounded());
  auto tx = client.begin();
  tx.execute("INSERT INTO t (x, tag) VALUES (1, 'tx')");
  server->stop();
  const auto give_up = Clock::now() + 10s;
  while (client.connected() && Clock::now() < give_up) std::this_thread::sleep_for(10ms);
  ASSERT_FALSE(client.connected());
  server.reset();
  server.emplace(start());

  EXPECT_THROW(tx.execute("INSERT INTO t (x, tag) VALUES (2, 'tx')"), pasyn::ConnectionLostError);
  EXPECT_TRUE(tx.finished());
  EXPECT_FALSE(client.connected()) << "a transaction call reconnected";
  EXPECT_TRUE(client.ping());  // other calls reconnect as before
  EXPECT_EQ(count("tag = 'tx'"), 0);
}

TEST_F(GuaranteesTest, DestroyingAnUnfinishedTransactionNeitherWaitsNorReconnects) {
  std::optional<pasyn::WriterServerHandle> server(start());
  pasyn::MultiplexedClient client(sock_, bounded());
  {
    auto tx = client.begin();
    server->stop();
    const auto give_up = Clock::now() + 10s;
    while (client.connected() && Clock::now() < give_up) std::this_thread::sleep_for(10ms);
    ASSERT_FALSE(client.connected());
    server.reset();
    server.emplace(start());
  }  // ~Transaction
  EXPECT_FALSE(client.connected()) << "~Transaction reconnected";
}

TEST_F(GuaranteesTest, ADestroyedTransactionIsRolledBackBeforeTheNextRequestRuns) {
  auto server = start();
  pasyn::MultiplexedClient client(sock_, bounded());
  {
    auto tx = client.begin();
    tx.execute("INSERT INTO t (x, tag) VALUES (1, 'dropped')");
  }
  EXPECT_EQ(client.execute("INSERT INTO t (x, tag) VALUES (2, 'after')"), 1);
  EXPECT_EQ(count("tag = 'dropped'"), 0);
  EXPECT_EQ(count("tag = 'after'"), 1);
}

// ---- 7. fork() and threads ---------------------------------------------------------------------

// Runs `child` in a forked child (its return value is the exit status) and returns the status,
// killing a child that has not exited after 20 s.
int in_child(const std::function<int()>& child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = child();
    } catch (...) {
      code = 98;
    }
    std::_Exit(code);
  }
  const auto give_up = Clock::now() + 20s;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > give_up) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(10ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
}

TEST_F(GuaranteesTest, AForkedChildUsesTheInheritedClientOnAConnectionOfItsOwn) {
#if PASYN_TEST_TSAN
  // The child starts the client's new I/O thread, which ThreadSanitizer refuses after a
  // multi-threaded fork ("not supported"); these run in the plain and ASan suites.
  GTEST_SKIP() << "starts threads in a forked child: not supported under ThreadSanitizer";
#endif
  auto server = start();
  pasyn::MultiplexedClient client(sock_, bounded());
  ASSERT_TRUE(client.ping());
  const int status = in_child([&] {
    if (!client.ping()) return 1;
    if (client.execute("INSERT INTO t (x, tag) VALUES (1, 'child')") != 1) return 2;
    return 0;
  });
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO t (x, tag) VALUES (2, 'parent')"), 1);
  EXPECT_EQ(count("tag = 'child'"), 1);
  EXPECT_EQ(count("tag = 'parent'"), 1);
}

TEST_F(GuaranteesTest, AForkedChildThatOnlyDestroysEverythingLeavesTheParentWorking) {
#if PASYN_TEST_TSAN
  // The child starts the client's new I/O thread, which ThreadSanitizer refuses after a
  // multi-threaded fork ("not supported"); these run in the plain and ASan suites.
  GTEST_SKIP() << "starts threads in a forked child: not supported under ThreadSanitizer";
#endif
  std::optional<pasyn::WriterServerHandle> server(start());
  std::optional<pasyn::MultiplexedClient> client(std::in_place, sock_, bounded());
  std::optional<pasyn::Connection> reader(pasyn::connect(db_, pasyn::OpenFlags::readonly()));
  ASSERT_TRUE(client->ping());
  auto tx = client->begin();
  tx.execute("INSERT INTO t (x, tag) VALUES (1, 'parent tx')");
  const int status = in_child([&] {
    // What exit() does to globals: every destructor runs.
    { auto gone = std::move(tx); }
    client.reset();
    reader.reset();
    server.reset();
    return 0;
  });
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(server->running());
  EXPECT_TRUE(client->ping());
  EXPECT_EQ(tx.execute("INSERT INTO t (x, tag) VALUES (2, 'parent tx')"), 1);
  tx.commit();
  EXPECT_EQ(client->execute("INSERT INTO t (x, tag) VALUES (3, 'parent')"), 1);
  EXPECT_EQ(count("tag = 'parent tx'"), 2);
  EXPECT_EQ(std::get<std::int64_t>(
                reader->execute_fetchone("SELECT count(*) FROM t WHERE tag = 'parent'")->at(0)),
            1);
}

TEST_F(GuaranteesTest, AConnectionRefusesUseInAForkedChildAndTheParentKeepsIt) {
  auto server = start();
  auto reader = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  ASSERT_TRUE(reader.execute_fetchone("SELECT count(*) FROM t").has_value());
  auto cursor = reader.cursor("SELECT 1 UNION ALL SELECT 2");
  const int status = in_child([&] {
    try {
      reader.execute_fetchone("SELECT count(*) FROM t");
      return 1;
    } catch (const pasyn::ProgrammingError& e) {
      if (std::string(e.what()).find("fork") == std::string::npos) return 2;
    }
    // A cursor opened before fork() refuses too (before, it stepped the parent's handle).
    try {
      cursor.fetchone();
      return 4;
    } catch (const pasyn::ProgrammingError& e) {
      if (std::string(e.what()).find("fork") == std::string::npos) return 5;
    }
    cursor.close();
    reader.close();  // forgets the parent's handle without touching it
    auto own = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    return own.execute_fetchone("SELECT count(*) FROM t").has_value() ? 0 : 3;
  });
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(reader.execute_fetchone("SELECT count(*) FROM t").has_value());
}

// A ReadPool inherited across fork() hands the child connections of its own: its idle ones are
// the parent's (a probe's child got ProgrammingError from its first `size` acquisitions).
// A lease held at fork() (by a thread of the parent, which the child does not have) takes no
// place from the child either.
TEST_F(GuaranteesTest, AReadPoolInAForkedChildOpensConnectionsOfItsOwn) {
  auto server = start();
  pasyn::ReadPool pool(db_, 2);
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    ASSERT_TRUE(a->execute_fetchone("SELECT count(*) FROM t").has_value());
    ASSERT_TRUE(b->execute_fetchone("SELECT count(*) FROM t").has_value());
  }
  ASSERT_EQ(pool.open_connections(), 2u);
  std::optional<pasyn::ReadPool::Lease> held(pool.acquire());  // held across the fork
  const int status = in_child([&] {
    for (int i = 0; i < 4; ++i) {
      auto lease = pool.acquire(std::chrono::milliseconds(2000));
      auto other = pool.acquire(std::chrono::milliseconds(2000));  // both places are free
      if (!lease->execute_fetchone("SELECT count(*) FROM t").has_value()) return 1;
      if (!other->execute_fetchone("SELECT count(*) FROM t").has_value()) return 2;
    }
    held.reset();  // the parent's connection, given back here: dropped, uncounted
    return pool.open_connections() == 2 ? 0 : 3;
  });
  EXPECT_EQ(status, 0);
  EXPECT_TRUE((*held)->execute_fetchone("SELECT count(*) FROM t").has_value());
  held.reset();
  auto lease = pool.acquire();  // the parent's are still its own
  EXPECT_TRUE(lease->execute_fetchone("SELECT count(*) FROM t").has_value());
  EXPECT_EQ(pool.open_connections(), 2u);
}

TEST_F(GuaranteesTest, AWriterServerHandleInAForkedChildLeavesTheParentsServerServing) {
  std::optional<pasyn::WriterServerHandle> server(start());
  const int status = in_child([&] {
    server->shutdown();  // not the child's server: nothing happens
    server.reset();
    return 0;
  });
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(fs::exists(sock_)) << "the child removed the parent's socket";
  pasyn::MultiplexedClient client(sock_, bounded());
  EXPECT_EQ(client.execute("INSERT INTO t (x, tag) VALUES (1, 'after fork')"), 1);
}

// The threads of this process whose signal mask blocks SIGINT and SIGTERM.
std::set<std::string> threads_blocking_signals() {
  std::set<std::string> out;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("SigBlk:", 0) != 0) continue;
      const auto mask = std::stoull(line.substr(7), nullptr, 16);
      const auto bit = [](int sig) { return 1ull << (sig - 1); };
      if ((mask & bit(SIGINT)) && (mask & bit(SIGTERM))) out.insert(task.path().filename());
    }
  }
  return out;
}

TEST_F(GuaranteesTest, LibraryThreadsBlockSignals) {
  const auto before = threads_blocking_signals();
  auto server = start();
  pasyn::MultiplexedClient client(sock_, bounded());
  ASSERT_TRUE(client.ping());
  const auto after = threads_blocking_signals();
  // The client's I/O thread, and the server's threads (its own, writer, I/O).
  EXPECT_GE(after.size(), before.size() + 3);
}

// ---- 8. Impostors -----------------------------------------------------------------------------

TEST_F(GuaranteesTest, AServerOfAnotherUidIsRefusedAtConnect) {
  auto server = start();
  auto options = bounded();
  options.expect_server_uid = ::geteuid() + 1;
  try {
    pasyn::MultiplexedClient client(sock_, options);
    FAIL() << "connected to a server of another uid";
  } catch (const pasyn::ConnectionLostError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("uid " + std::to_string(::geteuid())), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(::geteuid() + 1)), std::string::npos) << what;
  }
  options.expect_server_uid = ::geteuid();
  pasyn::MultiplexedClient client(sock_, options);
  EXPECT_TRUE(client.ping());
}

TEST(DefaultSocketPathFallback, IsAPrivateDirectoryOfTheUserAndRefusesAnUnsafeOne) {
  const std::string long_path = "/tmp/" + std::string(200, 'g') + "/x.sqlite";
  const std::string dir = "/tmp/pasyn-" + std::to_string(::geteuid());
  const auto p = pasyn::default_socket_path(long_path);
  EXPECT_EQ(p.rfind(dir + "/", 0), 0u) << p;
  struct stat st {};
  ASSERT_EQ(::lstat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  EXPECT_THROW(pasyn::default_socket_path(long_path), pasyn::Error);
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  if (::geteuid() == 0) {  // only root can give a directory away
    ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
    EXPECT_THROW(pasyn::default_socket_path(long_path), pasyn::Error);
    ASSERT_EQ(::chown(dir.c_str(), 0, 0), 0);
  }
  EXPECT_EQ(pasyn::default_socket_path(long_path), p);
}

}  // namespace
