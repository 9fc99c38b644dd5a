// Integration tests of pasyn-writerd's hardening against the real binary: the size and connection
// limits, backpressure (--max-inflight) and the output bound (--max-output), the statement
// timeout, access control by peer credentials, the SQL authorizer and idempotency
// keys (the bounded WAL: wal_limit_test.cpp) (PROTOCOL.md §3, §5, §6.3, §7; README "Daemon flags").
//
// Every limit test also shows that a client connected before the limit was hit is still served.
// Size: over 600 lines, one fixture per hardening concern (limits, access control); running
// clients as another user (run_as) is daemon_fixture's.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../sanitizers.hpp"
#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
namespace proto = pasyn::proto;

constexpr std::uint8_t kExecute = static_cast<std::uint8_t>(proto::MsgType::kExecute);
constexpr std::uint8_t kExecuteInTransaction = kExecute | proto::kInTransaction;  // 0x43

/// A query that never ends on its own.
constexpr const char* kEndless =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

// ---- Fixtures ---------------------------------------------------------------------------------

/// A daemon with a test's flags, a table probe (v TEXT), and `before_`, a client connected
/// before anything under test happens, which must still be served afterwards.
class HardeningTest : public DaemonTest {
 protected:
  void start_with_probe(const std::vector<std::string>& flags = {}) {
    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    before_.emplace(connect_client());
    before_->execute("CREATE TABLE probe (v TEXT)");
  }

  void TearDown() override {
    before_.reset();
    DaemonTest::TearDown();
  }

  /// The client connected before still gets a ping and a write answered, and the write is stored.
  void expect_still_served() {
    try {
      EXPECT_TRUE(before_->ping());
      const std::int64_t rows = query_int("SELECT count(*) FROM probe");
      EXPECT_EQ(before_->execute("INSERT INTO probe (v) VALUES ('served')"), 1);
      EXPECT_EQ(query_int("SELECT count(*) FROM probe"), rows + 1);
    } catch (const pasyn::Error& e) {
      ADD_FAILURE() << "the client connected before is no longer served: " << e.what();
    }
  }

  std::optional<pasyn::MultiplexedClient> before_;
};

class LimitTest : public HardeningTest {};
class AuthorizerTest : public HardeningTest {};
class IdempotencyTest : public HardeningTest {};

// ---- Size limits ------------------------------------------------------------------------------

TEST_F(LimitTest, SqlLongerThanMaxSqlLengthIsADataErrorAndTheConnectionGoesOn) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-sql-length", "100"}));
  auto client = connect_client();
  const std::string head = "INSERT INTO probe (v) VALUES ('", tail = "')";
  const std::string at_limit = head + std::string(100 - head.size() - tail.size(), 'a') + tail;
  const std::string over_limit = head + std::string(101 - head.size() - tail.size(), 'o') + tail;
  ASSERT_EQ(at_limit.size(), 100u);
  ASSERT_EQ(over_limit.size(), 101u);

  try {
    client.execute(over_limit);
    ADD_FAILURE() << "101 bytes of SQL ran under --max-sql-length 100";
  } catch (const pasyn::DataError& e) {
    EXPECT_EQ(e.code(), SQLITE_TOOBIG);
    EXPECT_TRUE(contains(e.what(), "--max-sql-length")) << e.what();
  }
  const std::string long_script = "INSERT INTO probe (v) VALUES ('s1'); " + over_limit;
  EXPECT_THROW(client.executescript(long_script), pasyn::DataError);
  EXPECT_THROW(client.execute_fetchall("SELECT '" + std::string(120, 'f') + "'"), pasyn::DataError);

  // The same connection goes on, and SQL of exactly the limit runs.
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute(at_limit), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'o%' OR v = 's1'"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'a%'"), 1);
  expect_still_served();
}

// Found by pasyn-fuzz-session: SQLite stops reading at a NUL byte, so a script with one made the
// writer loop forever on the same spot and every later write of every client hung.
TEST_F(LimitTest, SqlWithANulByteIsRefusedAndTheWriterGoesOn) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  using namespace std::string_view_literals;
  for (const auto sql : {"SELECT 1;\0"sv, "\0"sv, "INSERT INTO probe (v) VALUES ('x')\0; x"sv}) {
    EXPECT_THROW(client.executescript(sql), pasyn::ProgrammingError);
    EXPECT_THROW(client.execute(sql), pasyn::ProgrammingError);
  }
  {
    auto tx = client.begin();
    EXPECT_THROW(tx.executescript("SELECT 1;\0"sv), pasyn::ProgrammingError);
    tx.rollback();
  }
  // The writer still answers writes, on this connection and on the one connected before.
  EXPECT_EQ(client.execute("INSERT INTO probe (v) VALUES ('after')"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'x'"), 0);
  expect_still_served();
}

TEST_F(LimitTest, MoreParametersThanMaxParamsIsADataErrorAndTheConnectionGoesOn) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-params", "3"}));
  auto client = connect_client();
  client.execute("CREATE TABLE quad (a, b, c, d)");

  try {
    client.execute("INSERT INTO quad VALUES (?, ?, ?, ?)", {1, 2, 3, 4});
    ADD_FAILURE() << "4 parameters ran under --max-params 3";
  } catch (const pasyn::DataError& e) {
    EXPECT_EQ(e.code(), SQLITE_TOOBIG);
    EXPECT_TRUE(contains(e.what(), "--max-params")) << e.what();
  }
  EXPECT_THROW(client.execute_fetchall("SELECT ?, ?, ?, ?", {1, 2, 3, 4}), pasyn::DataError);
  // Each EXECUTE_MANY row is held to the same limit, with the same error (PROTOCOL.md §7)...
  try {
    client.execute_many("INSERT INTO quad VALUES (?, ?, ?, ?)", {{1, 2, 3}, {1, 2, 3, 4}});
    ADD_FAILURE() << "a row of 4 parameters ran under --max-params 3";
  } catch (const pasyn::DataError& e) {
    EXPECT_EQ(e.code(), SQLITE_TOOBIG);
    EXPECT_TRUE(contains(e.what(), "4 parameters in a row, more than --max-params 3")) << e.what();
  }
  // ...and a statement with more placeholders meets SQLite's variable limit, which the daemon
  // sets to the same value: refused by SQLite, with its error.
  EXPECT_THROW(client.execute_many("INSERT INTO quad VALUES (?, ?, ?, ?)", {{1, 2, 3}}),
               pasyn::SqliteError);
  EXPECT_EQ(query_int("SELECT count(*) FROM quad"), 0);

  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO quad VALUES (?, ?, ?, 0)", {1, 2, 3}), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM quad"), 1);
  expect_still_served();
}

// ---- Connections, backpressure, output --------------------------------------------------------

// One connection's replies in one batch are held under --max-output: the request that would
// pass it is undone and answered TOO_LARGE, the others of the batch (its own smaller ones too)
// are served, and the daemon never holds more than the bound for it.
TEST_F(LimitTest, OneConnectionsRepliesInABatchStayUnderMaxOutput) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-frame", "524288", "--max-output", "1048576", "--lock-wait", "30s"}));
  auto holder = connect_client();
  auto tx = holder.begin();  // everything below queues behind it and runs as one batch
  auto client = connect_client();
  std::vector<std::future<std::vector<pasyn::Row>>> big;
  for (int i = 0; i < 6; ++i) {
    big.push_back(client.execute_fetchall_async(
        "INSERT INTO probe (v) VALUES (zeroblob(300000)) RETURNING v"));
  }
  auto small = client.execute_async("INSERT INTO probe (v) VALUES ('small')");
  ASSERT_TRUE(
      eventually([&] { return stat_int(holder, "waiting_for_transaction") == 7; }, kReplyTimeout));
  tx.commit();
  for (int i = 0; i < 6; ++i) {
    if (i < 3) {  // 3 x 300,000 bytes fit in 1 MiB; a fourth does not
      EXPECT_EQ(big[i].get().size(), 1u) << i;
      continue;
    }
    try {
      big[i].get();
      ADD_FAILURE() << "reply " << i << " passed --max-output";
    } catch (const pasyn::DataError& e) {
      EXPECT_TRUE(contains(e.what(), "--max-output")) << e.what();
    }
  }
  EXPECT_EQ(small.get(), 1);
  // The refused ones wrote nothing: 3 large rows and the small one.
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE length(v) = 300000"), 3);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'small'"), 1);
  expect_still_served();
}

// A connection whose reading pauses because --max-total-bytes is reached (by other connections'
// requests waiting behind a transaction) while it has nothing in the writer stays open, and is
// read again once the bytes are released: it is neither closed unannounced nor lost from the
// connection count. (While the budget is full nobody is read, the transaction's owner neither:
// the waiting requests' --lock-wait releases it.)
TEST_F(LimitTest, AConnectionPausedByTheTotalBudgetIsKeptAndReadAgain) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-frame", "65536", "--max-output", "1048576", "--max-queued-bytes",
                        "1048576", "--max-total-bytes", "2097152", "--lock-wait", "1s"}));
  auto holder = connect_client();
  auto tx = holder.begin();  // the big senders' requests wait behind it and fill the budget
  RawPeer big1(sock_), big2(sock_), paused(sock_);
  ASSERT_TRUE(big1.handshake());
  ASSERT_TRUE(big2.handshake());
  ASSERT_TRUE(paused.handshake());
  std::vector<std::uint8_t> bulk;
  for (std::uint64_t id = 1; id <= 60; ++id) {
    const auto f = statement_frame(kExecute, id, "INSERT INTO probe (v) VALUES (?)",
                                   {pasyn::Blob(20000, 'y')});
    bulk.insert(bulk.end(), f.begin(), f.end());
  }
  auto send1 = std::async(std::launch::async, [&] { return big1.send(bulk); });
  auto send2 = std::async(std::launch::async, [&] { return big2.send(bulk); });
  std::this_thread::sleep_for(300ms);  // ~2 MiB of requests wait: the budget is full
  const auto request =
      statement_frame(kExecute, 7, "INSERT INTO probe (v) VALUES ('paused, then read')");
  const std::size_t half = request.size() / 2;
  ASSERT_TRUE(paused.send({request.begin(), request.begin() + half}));  // read, then paused
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(paused.send({request.begin() + half, request.end()}));
  // Answered once the budget has room again: TIMEOUT (it waits for the holder's transaction
  // too) or a RESULT, but an answer, on the same connection.
  const auto reply = paused.read_frame(20s);
  ASSERT_TRUE(reply.has_value()) << "the paused connection was dropped";
  EXPECT_EQ(reply->request_id, 7u);
  EXPECT_TRUE(send1.get());
  EXPECT_TRUE(send2.get());
  tx.commit();
  big1.close();
  big2.close();
  paused.close();
  // Every raw connection's slot is given back: the holder and before_ are what is left.
  EXPECT_TRUE(eventually([&] { return stat_int(holder, "connections") == 2; }, kReplyTimeout))
      << stat_int(holder, "connections");
  expect_still_served();
}

TEST_F(LimitTest, AConnectionOverMaxConnectionsIsRefusedAsBusyAndAFreedSlotIsReused) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--max-connections", "2"}));
  auto first = connect_client();
  // start_daemon()'s probe connection counts until the daemon has seen it close.
  ASSERT_TRUE(eventually([&] { return stat_int(first, "connections") == 1; }, kReplyTimeout));
  std::optional<pasyn::MultiplexedClient> second(connect_client());
  first.execute("CREATE TABLE t (who TEXT)");

  try {
    pasyn::MultiplexedClient third(sock_, bounded_options());
    ADD_FAILURE() << "a third connection was admitted under --max-connections 2";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.code(), SQLITE_BUSY) << e.what();
    EXPECT_TRUE(contains(e.what(), "connection limit")) << e.what();
  }
  EXPECT_TRUE(first.ping());
  EXPECT_TRUE(second->ping());
  EXPECT_EQ(first.execute("INSERT INTO t VALUES ('first')"), 1);
  EXPECT_EQ(second->execute("INSERT INTO t VALUES ('second')"), 1);

  // Closing is asynchronous: the daemon frees the slot once it has seen the close.
  second.reset();
  std::optional<pasyn::MultiplexedClient> fourth;
  std::string refusal;
  const auto deadline = Clock::now() + kReplyTimeout;
  while (!fourth && Clock::now() < deadline) {
    try {
      fourth.emplace(sock_, bounded_options());
    } catch (const pasyn::OperationalError& e) {
      if (e.code() != SQLITE_BUSY) throw;
      refusal = e.what();
      std::this_thread::sleep_for(10ms);
    }
  }
  ASSERT_TRUE(fourth.has_value()) << "no slot after a client closed; last refusal: " << refusal;
  EXPECT_EQ(fourth->execute("INSERT INTO t VALUES ('fourth')"), 1);
  EXPECT_TRUE(first.ping());
  EXPECT_EQ(first.execute("INSERT INTO t VALUES ('first again')"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 4);
}

TEST_F(LimitTest, MaxInflightStopsReadingFromAConnectionAndLosesNoRequest) {
  constexpr int kRequests = 200;
  constexpr std::int64_t kMaxInflight = 8;
  // Long waits: the requests wait behind a transaction on purpose, for as long as the test says.
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-inflight", std::to_string(kMaxInflight), "--lock-wait", "60s",
                        "--transaction-idle-timeout", "60s"}));
  before_->execute("CREATE TABLE seq (id INTEGER PRIMARY KEY, n INTEGER)");
  auto holder = connect_client();
  auto tx = holder.begin();
  tx.execute("INSERT INTO probe (v) VALUES ('holder')");

  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> bytes;
  for (int i = 1; i <= kRequests; ++i) {
    proto::encode_statement(bytes, proto::MsgType::kExecute, i, "INSERT INTO seq (n) VALUES (?)",
                            {i});
  }
  ASSERT_TRUE(peer.send(bytes));

  // Requests the daemon has read and not answered: none can be answered while the transaction
  // is open, so this is what it took from the socket.
  const auto taken = [&] {
    const auto report = before_->stats();
    return as_int(figure(report, "queue_depth")) +
           as_int(figure(report, "waiting_for_transaction"));
  };
  // First until the requests taken wait for the transaction: the daemon reads the two figures
  // one after the other, and a request moving from the queue to the waiting list in between
  // would be counted twice.
  std::int64_t waiting = 0;
  ASSERT_TRUE(eventually(
      [&] {
        waiting = stat_int(*before_, "waiting_for_transaction");
        return waiting >= kMaxInflight;
      },
      kReplyTimeout))
      << "only " << waiting << " requests wait for the transaction";
  // Watch for a while: a daemon that kept reading would take all 200 meanwhile.
  std::int64_t most = taken();
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(10ms);
    most = std::max(most, taken());
  }
  EXPECT_EQ(most, kMaxInflight) << "requests taken from a connection over --max-inflight";
  EXPECT_TRUE(before_->ping()) << "the client connected before is not served while paused";

  tx.commit();
  for (int i = 1; i <= kRequests; ++i) {
    const auto frame = peer.read_frame(kReplyTimeout);
    ASSERT_TRUE(frame.has_value()) << "no reply to request " << i;
    ASSERT_EQ(frame->type, static_cast<std::uint8_t>(proto::MsgType::kResult)) << "request " << i;
    EXPECT_EQ(frame->request_id, static_cast<std::uint64_t>(i));
    proto::Result result;
    std::string why;
    ASSERT_TRUE(proto::decode_result(frame->payload, result, why)) << why;
    EXPECT_EQ(result.changes, 1) << "request " << i;
  }
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  const auto rows = conn.execute_fetchall("SELECT n FROM seq ORDER BY id");
  ASSERT_EQ(rows.size(), std::size_t{kRequests});
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(as_int(rows[i][0]), i + 1) << "row " << i;
  expect_still_served();
}

TEST_F(LimitTest, AClientThatDoesNotReadItsRepliesIsDisconnectedAndItsTransactionRolledBack) {
  constexpr int kFetches = 100;  // 30 KB replies: 3 MB, far beyond socket buffer + --max-output
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-output", "65536", "--max-frame", "65536", "--lock-wait", "30s"}));
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  const auto begun = peer.request(empty_frame(proto::MsgType::kBegin, 1));
  ASSERT_TRUE(begun && begun->type == static_cast<std::uint8_t>(proto::MsgType::kOk));
  const auto inserted = peer.request(tx_statement_frame(proto::MsgType::kExecute, 2, 1,
                                                        "INSERT INTO probe (v) VALUES ('unread')"));
  ASSERT_TRUE(inserted && inserted->type == static_cast<std::uint8_t>(proto::MsgType::kResult));

  // From here on the peer only sends.
  std::vector<std::uint8_t> bytes;
  for (int i = 0; i < kFetches; ++i) {
    const auto f =
        tx_statement_frame(proto::MsgType::kExecuteFetch, 100 + i, 1, "SELECT zeroblob(30000)");
    bytes.insert(bytes.end(), f.begin(), f.end());
  }
  ASSERT_TRUE(peer.send(bytes));
  // Queued behind the peer's transaction; runs once the daemon has rolled it back.
  auto queued = before_->execute_async("INSERT INTO probe (v) VALUES ('queued')");

  EXPECT_TRUE(wait_for_file_content(log_, "does not read its replies", 10s));
  EXPECT_TRUE(contains(read_file(log_), "more than --max-output"));
  EXPECT_TRUE(before_->ping());
  ASSERT_EQ(queued.wait_for(10s), std::future_status::ready)
      << "the peer's transaction still blocks other writers";
  EXPECT_EQ(queued.get(), 1);
  EXPECT_EQ(stat_int(*before_, "transaction_age_ms"), -1) << "the transaction is still open";

  const auto r = peer.read_until_closed(kReplyTimeout);
  EXPECT_TRUE(r.closed) << "the daemon did not close the connection of a peer that never read";
  EXPECT_LT(r.frames.size(), std::size_t{kFetches}) << "every reply was kept for the peer";
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'unread'"), 0)
      << "the disconnected peer's transaction was committed";

  auto other = connect_client();
  auto tx = other.begin();
  EXPECT_EQ(tx.execute("INSERT INTO probe (v) VALUES ('next transaction')"), 1);
  tx.commit();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'next transaction'"), 1);
  expect_still_served();
}

// ---- Statement timeout ------------------------------------------------------------------------

/// "w<i>", appended: g++ 12 at -O3 warns falsely (-Wrestrict) on "w" + std::to_string(i).
std::string probe_value(int i) {
  std::string v = "w";
  v += std::to_string(i);
  return v;
}

TEST_F(LimitTest, StatementTimeoutInterruptsARunawayQueryAndTheRestOfItsBatchCommits) {
  constexpr int kWritesAround = 20;  // before and after the runaway query
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--statement-timeout", "200", "--lock-wait", "30s"}));
  auto client = connect_client();
  try {
    client.execute_fetchall(kEndless);
    ADD_FAILURE() << "an endless query returned";
  } catch (const pasyn::TimeoutError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
  }

  // A transaction on another connection holds every request back until all are queued, so
  // that they run as one batch when it commits.
  auto holder = connect_client();
  auto tx = holder.begin();
  const std::int64_t batches_before = stat_int(client, "batches");
  std::vector<std::future<std::int64_t>> writes;
  for (int i = 0; i < kWritesAround; ++i) {
    writes.push_back(client.execute_async("INSERT INTO probe (v) VALUES (?)", {probe_value(i)}));
  }
  auto runaway = client.execute_fetchall_async(kEndless);
  for (int i = kWritesAround; i < 2 * kWritesAround; ++i) {
    writes.push_back(client.execute_async("INSERT INTO probe (v) VALUES (?)", {probe_value(i)}));
  }
  ASSERT_TRUE(eventually(
      [&] { return stat_int(client, "waiting_for_transaction") == 2 * kWritesAround + 1; },
      kReplyTimeout));
  tx.commit();

  ASSERT_EQ(runaway.wait_for(20s), std::future_status::ready);
  try {
    runaway.get();
    ADD_FAILURE() << "an endless query returned";
  } catch (const pasyn::TimeoutError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
  }
  for (std::size_t i = 0; i < writes.size(); ++i) {
    ASSERT_EQ(writes[i].wait_for(20s), std::future_status::ready) << "write " << i;
    EXPECT_EQ(writes[i].get(), 1) << "write " << i;
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'w%'"), 2 * kWritesAround);
  // One group commit for all of them: the runaway query was undone alone, not the batch.
  EXPECT_EQ(stat_int(client, "batches") - batches_before, 1);
  expect_still_served();
}

// Inside a client transaction a runaway read is undone alone and the transaction goes on; a
// runaway write ends the transaction, because SQLite rolls back the whole transaction when it
// interrupts a statement that writes. Both are answered TIMEOUT; what the transaction wrote
// before is gone in the second case, and its next request says why.
TEST_F(LimitTest, StatementTimeoutInsideATransactionIsATimeoutAndAWriteEndsTheTransaction) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--statement-timeout", "200"}));
  auto client = connect_client();
  auto tx = client.begin();
  tx.execute("INSERT INTO probe (v) VALUES ('kept')");
  EXPECT_THROW(tx.execute_fetchall(kEndless), pasyn::TimeoutError);
  tx.execute("INSERT INTO probe (v) VALUES ('kept too')");
  tx.commit();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'kept%'"), 2);

  auto lost = client.begin();
  lost.execute("INSERT INTO probe (v) VALUES ('lost')");
  try {
    lost.execute(
        "INSERT INTO probe (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
        "SELECT 'runaway' FROM c");
    ADD_FAILURE() << "an endless INSERT returned";
  } catch (const pasyn::TimeoutError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
    EXPECT_TRUE(contains(e.what(), "the transaction was rolled back")) << e.what();
  }
  try {
    lost.execute("INSERT INTO probe (v) VALUES ('after')");
    ADD_FAILURE() << "the transaction went on after SQLite rolled it back";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v IN ('lost', 'runaway', 'after')"), 0);
  EXPECT_EQ(client.execute("INSERT INTO probe (v) VALUES ('served')"), 1);
  expect_still_served();
}

// ---- Access control ---------------------------------------------------------------------------

/// Peers of another user. The tests run as root in CI (the daemon too), and root may become
/// `nobody`; the socket is made reachable for it with --socket-mode 0666 and a searchable
/// directory.
class AccessTest : public HardeningTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root, to run a client as another user (nobody)";
    }
#if PASYN_TEST_TSAN
    // run_as() forks this multi-threaded process and starts client threads in the child, which
    // ThreadSanitizer cannot follow; these tests run in the plain and ASan suites.
    GTEST_SKIP() << "forks a multi-threaded process: not supported under ThreadSanitizer";
#endif
    const passwd* pw = ::getpwnam("nobody");
    ASSERT_NE(pw, nullptr) << "no user nobody";
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    ASSERT_NE(uid_, ::geteuid());
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0) << std::strerror(errno);
  }

  AsUser as_nobody(const std::function<void(StepLog&)>& script) const {
    return run_as(uid_, gid_, script);
  }

  /// As nobody: connects, then pings and writes a row ('nobody') with the same client.
  AsUser nobody_connects_and_writes() const {
    const std::string sock = sock_;
    return as_nobody([sock](StepLog& log) {
      std::optional<pasyn::MultiplexedClient> client;
      log.run("connect", [&] { client.emplace(sock, bounded_options()); });
      if (!client) return;
      log.run("ping", [&] { client->ping(); });
      log.run("insert", [&] { client->execute("INSERT INTO probe (v) VALUES ('nobody')"); });
    });
  }

  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

TEST_F(AccessTest, APeerNotInAllowUidIsRefusedWithPermissionAndLoggedWithPidAndUid) {
  const passwd* other = ::getpwnam("daemon");
  ASSERT_NE(other, nullptr) << "no user daemon";
  ASSERT_NE(other->pw_uid, uid_);
  // The test's own uid (root) is not listed either: the daemon's own uid is always admitted.
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--socket-mode", "0666", "--allow-uid", "daemon"}));

  const AsUser nobody = nobody_connects_and_writes();
  ASSERT_EQ(nobody.problem, "");
  EXPECT_TRUE(nobody["connect"].starts_with(kRefusedPermission)) << nobody["connect"];
  EXPECT_TRUE(contains(nobody["connect"], "may not use")) << nobody["connect"];
  const std::string peer =
      "from pid " + std::to_string(nobody.pid) + " uid " + std::to_string(uid_);
  EXPECT_TRUE(wait_for_file_content(log_, peer + " refused", kReplyTimeout));
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'nobody'"), 0);
  expect_still_served();
}

TEST_F(AccessTest, AllowUidAdmitsTheListedUser) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--socket-mode", "0666", "--allow-uid", "nobody"}));
  const AsUser nobody = nobody_connects_and_writes();
  ASSERT_EQ(nobody.problem, "");
  EXPECT_EQ(nobody["connect"], "ok");
  EXPECT_EQ(nobody["ping"], "ok");
  EXPECT_EQ(nobody["insert"], "ok");
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'nobody'"), 1);
  expect_still_served();
}

TEST_F(AccessTest, AllowGidAdmitsMembersOfTheListedGroup) {
  const group* gr = ::getgrgid(gid_);
  ASSERT_NE(gr, nullptr);
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--socket-mode", "0666", "--allow-gid", gr->gr_name}));
  const AsUser nobody = nobody_connects_and_writes();
  ASSERT_EQ(nobody.problem, "");
  EXPECT_EQ(nobody["connect"], "ok");
  EXPECT_EQ(nobody["insert"], "ok");
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'nobody'"), 1);
  expect_still_served();
}

TEST_F(AccessTest, AReadOnlyPeerMayPingReadStatsAndSelectButNothingElse) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--socket-mode", "0666", "--read-only-uid", "nobody"}));
  before_->execute("INSERT INTO probe (v) VALUES ('visible')");
  const std::string sock = sock_;
  const AsUser nobody = as_nobody([sock](StepLog& log) {
    std::optional<pasyn::MultiplexedClient> client;
    log.run("connect", [&] { client.emplace(sock, bounded_options()); });
    if (!client) return;
    auto& c = *client;
    log.run("ping", [&] { c.ping(); });
    log.run("stats", [&] {
      for (const auto& [name, value] : c.stats()) {
        if (name == "database" || name == "socket" || name == "pid") {
          throw std::runtime_error("STATS shows a read-only peer the " + name);
        }
      }
    });
    log.run("select", [&] {
      const auto rows = c.execute_fetchall("SELECT v FROM probe WHERE v = 'visible'");
      if (rows.size() != 1) throw std::runtime_error(std::to_string(rows.size()) + " rows");
    });
    log.run("insert", [&] { c.execute("INSERT INTO probe (v) VALUES ('nobody')"); });
    log.run("insert returning",
            [&] { c.execute_fetchall("INSERT INTO probe (v) VALUES ('nobody') RETURNING v"); });
    log.run("insert rowid",
            [&] { c.execute_returning_rowid("INSERT INTO probe (v) VALUES ('nobody')"); });
    log.run("execute_many",
            [&] { c.execute_many("INSERT INTO probe (v) VALUES (?)", {{"nobody"}}); });
    log.run("executescript", [&] { c.executescript("INSERT INTO probe (v) VALUES ('nobody')"); });
    log.run("begin", [&] { auto tx = c.begin(); });
    log.run("checkpoint", [&] { c.checkpoint("PASSIVE"); });
    log.run("shutdown_server", [&] { c.shutdown_server(); });
    log.run("ping after", [&] { c.ping(); });
  });
  ASSERT_EQ(nobody.problem, "");
  for (const char* allowed : {"connect", "ping", "stats", "select", "ping after"}) {
    EXPECT_EQ(nobody[allowed], "ok") << allowed;
  }
  for (const char* refused : {"insert", "insert returning", "insert rowid", "execute_many",
                              "executescript", "begin", "checkpoint", "shutdown_server"}) {
    EXPECT_TRUE(nobody[refused].starts_with(kRefusedPermission))
        << refused << ": " << nobody[refused];
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'nobody'"), 0);
  EXPECT_TRUE(daemon_.running()) << "a read-only peer shut the daemon down";
  expect_still_served();
}

TEST_F(AccessTest, SocketModeAndSocketGroupApplyToTheSocketFile) {
  const group* gr = ::getgrgid(gid_);
  ASSERT_NE(gr, nullptr);
  ASSERT_NE(gr->gr_gid, ::getegid()) << "the group must differ from the daemon's own";
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--socket-mode", "0600", "--socket-group", gr->gr_name}));
  struct stat st {};
  ASSERT_EQ(::stat(sock_.c_str(), &st), 0) << std::strerror(errno);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_gid, gr->gr_gid);
  // 0600 and owned by root: nobody, in the socket's group, still cannot connect.
  const AsUser nobody = nobody_connects_and_writes();
  ASSERT_EQ(nobody.problem, "");
  EXPECT_TRUE(nobody["connect"].starts_with("ConnectionLostError")) << nobody["connect"];
  EXPECT_TRUE(contains(nobody["connect"], std::strerror(EACCES))) << nobody["connect"];
  expect_still_served();
}

// ---- Authorizer -------------------------------------------------------------------------------

TEST_F(AuthorizerTest, VacuumRunsButVacuumIntoAPathIsRefusedWithPermission) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  client.execute("INSERT INTO probe (v) VALUES ('kept')");
  const std::string copy = dir_.file("vacuumed-copy.sqlite");
  const std::string outcome = outcome_of([&] { client.execute("VACUUM INTO '" + copy + "'"); });
  EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << outcome;
  EXPECT_TRUE(contains(outcome, "VACUUM INTO")) << outcome;
  EXPECT_NE(::access(copy.c_str(), F_OK), 0) << "VACUUM INTO wrote " << copy;
  EXPECT_EQ(client.execute("VACUUM"), 0);  // plain VACUUM (a temporary copy) still runs
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'kept'"), 1);
  expect_still_served();
}

TEST_F(AuthorizerTest, AttachDetachAndProtectedPragmasAreRefusedWithPermission) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  const std::string attached = dir_.file("attached.sqlite");
  const std::vector<std::string> refused = {
      "ATTACH '" + attached + "' AS y", "DETACH y",
      "PRAGMA synchronous=OFF",         "pragma Synchronous = off",
      "PRAGMA main.synchronous=OFF",    "PRAGMA journal_mode=DELETE",
      "PRAGMA writable_schema=ON",      "PRAGMA wal_autocheckpoint=0",
  };
  for (const auto& sql : refused) {
    const std::string outcome = outcome_of([&] { client.execute(sql); });
    EXPECT_TRUE(outcome.starts_with(kRefusedPermission)) << sql << ": " << outcome;
  }
  // The same through a script and inside a transaction.
  const std::string script = outcome_of(
      [&] { client.executescript("INSERT INTO probe (v) VALUES ('s'); PRAGMA synchronous=OFF;"); });
  EXPECT_TRUE(script.starts_with(kRefusedPermission)) << script;
  {
    auto tx = client.begin();
    const std::string in_tx = outcome_of([&] { tx.execute("ATTACH '" + attached + "' AS y"); });
    EXPECT_TRUE(in_tx.starts_with(kRefusedPermission)) << in_tx;
    tx.rollback();
  }
  EXPECT_FALSE(path_exists(attached)) << "ATTACH created its file";
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 's'"), 0);

  // Reading a protected pragma, and setting journal_mode to what it is, are allowed; nothing
  // refused above took effect.
  const auto sync = client.execute_fetchall("PRAGMA synchronous");
  ASSERT_EQ(sync.size(), 1u);
  EXPECT_EQ(sync[0][0], pasyn::Value(std::int64_t{2}));  // FULL, the daemon's default
  const auto wal = client.execute_fetchall("PRAGMA journal_mode=WAL");
  ASSERT_EQ(wal.size(), 1u);
  EXPECT_EQ(wal[0][0], pasyn::Value(std::string("wal")));
  EXPECT_EQ(query_int("PRAGMA writable_schema"), 0);

  // Refused with PERMISSION before SQLite looks for the file (extension loading is also off
  // on the writer connection itself).
  const std::string extension =
      outcome_of([&] { client.execute_fetchall("SELECT load_extension('x')"); });
  EXPECT_TRUE(extension.starts_with(kRefusedPermission)) << extension;
  EXPECT_TRUE(client.ping());
  expect_still_served();
}

// ---- Idempotency keys -------------------------------------------------------------------------

TEST_F(IdempotencyTest, ARepeatedKeyGetsTheFirstReplyWithoutRunningAgain) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  const pasyn::WriteOptions k1{.idempotency_key = "k1"};
  const std::int64_t rowid =
      client.execute_returning_rowid("INSERT INTO t (v) VALUES ('a')", {}, k1);
  EXPECT_GT(rowid, 0);
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (v) VALUES ('a')", {}, k1), rowid);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);

  const pasyn::WriteOptions k2{.idempotency_key = "k2"};
  EXPECT_EQ(client.execute("INSERT INTO t (v) VALUES ('b')", {}, k2), 1);
  EXPECT_EQ(client.execute("INSERT INTO t (v) VALUES ('b')", {}, k2), 1);  // the recorded reply
  EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE v = 'b'"), 1);
  // No key, or another key: runs.
  EXPECT_EQ(client.execute("INSERT INTO t (v) VALUES ('b')"), 1);
  EXPECT_EQ(client.execute("INSERT INTO t (v) VALUES ('b')", {}, {.idempotency_key = "k3"}), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE v = 'b'"), 3);
}

TEST_F(IdempotencyTest, TwoWritesWithTheSameKeyInOneBatchApplyOnceAndGetTheSameReply) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--lock-wait", "30s"}));
  auto client = connect_client();
  client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  // Held back by a transaction until both are queued: they then run in one batch.
  auto holder = connect_client();
  auto tx = holder.begin();
  const pasyn::WriteOptions key{.idempotency_key = "together"};
  auto first = client.execute_returning_rowid_async("INSERT INTO t (v) VALUES ('x')", {}, key);
  auto second = client.execute_returning_rowid_async("INSERT INTO t (v) VALUES ('x')", {}, key);
  ASSERT_TRUE(
      eventually([&] { return stat_int(client, "waiting_for_transaction") == 2; }, kReplyTimeout));
  tx.commit();
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  const std::int64_t rowid = first.get();
  EXPECT_GT(rowid, 0);
  EXPECT_EQ(second.get(), rowid);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);
}

TEST_F(IdempotencyTest, AFailedKeyedWriteRecordsNothingSoItsRetryRuns) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  client.execute("CREATE TABLE u (k INTEGER UNIQUE)");
  client.execute("INSERT INTO u (k) VALUES (1)");
  const pasyn::WriteOptions key{.idempotency_key = "retry"};
  EXPECT_THROW(client.execute("INSERT INTO u (k) VALUES (1)", {}, key), pasyn::IntegrityError);
  EXPECT_EQ(client.execute("INSERT INTO u (k) VALUES (2)", {}, key), 1);  // the fixed retry
  EXPECT_EQ(query_int("SELECT count(*) FROM u WHERE k = 2"), 1);
  // Now recorded: the same write with the key is answered from the record; another write with
  // the same key is a misuse (a key is bound to its request), and runs neither.
  EXPECT_EQ(client.execute("INSERT INTO u (k) VALUES (2)", {}, key), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM u WHERE k = 2"), 1);
  EXPECT_THROW(client.execute("INSERT INTO u (k) VALUES (3)", {}, key), pasyn::ProgrammingError);
  EXPECT_EQ(query_int("SELECT count(*) FROM u WHERE k = 3"), 0);
}

TEST_F(IdempotencyTest, AKeySurvivesADaemonRestart) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  const pasyn::WriteOptions key{.idempotency_key = "across a restart"};
  std::int64_t rowid = 0;
  {
    auto client = connect_client();
    client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    client.execute("INSERT INTO t (v) VALUES ('earlier')");
    rowid = client.execute_returning_rowid("INSERT INTO t (v) VALUES ('once')", {}, key);
    EXPECT_EQ(rowid, 2);
  }
  stop_daemon();
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (v) VALUES ('once')", {}, key), rowid);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
  EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE v = 'once'"), 1);
}

TEST_F(IdempotencyTest, AnEmptyOrOverlongKeyIsAProtocolErrorThatClosesOnlyThatConnection) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  for (const std::string& key : {std::string(), std::string(proto::kMaxIdempotencyKey + 1, 'k')}) {
    SCOPED_TRACE("key of " + std::to_string(key.size()) + " bytes");
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.handshake());
    auto frame = statement_frame(kExecute, 1, "INSERT INTO probe (v) VALUES ('bad key')");
    proto::add_idempotency_key(frame, 0, key);
    ASSERT_EQ(frame[proto::kLengthFieldSize], kExecute | proto::kIdempotent);
    ASSERT_TRUE(peer.send(frame));
    expect_protocol_error_then_close(peer);
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'bad key'"), 0);
  expect_still_served();
}

TEST_F(IdempotencyTest, TheKeyBitTogetherWithTheTransactionBitIsAnUnknownType) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  ASSERT_TRUE(peer.request(empty_frame(proto::MsgType::kBegin, 1)).has_value());
  auto frame =
      statement_frame(kExecuteInTransaction, 2, "INSERT INTO probe (v) VALUES ('both bits')");
  proto::add_idempotency_key(frame, 0, "k");
  ASSERT_EQ(frame[proto::kLengthFieldSize], 0x63);
  ASSERT_TRUE(peer.send(frame));
  const auto r = peer.read_until_closed(kReplyTimeout);
  expect_protocol_error_and_close(r);
  if (r.frames.size() == 1) {
    proto::ErrorReply e;
    std::string why;
    ASSERT_TRUE(proto::decode_error(r.frames[0].payload, e, why)) << why;
    EXPECT_TRUE(contains(e.message, "unknown message type 0x63")) << e.message;
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'both bits'"), 0);
  expect_still_served();
}

}  // namespace
