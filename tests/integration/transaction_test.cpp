// Integration tests of transactions (SPEC §2.4, §2.6, §2.8; PROTOCOL.md §6.2) against the real
// pasyn-writerd binary: ownership by one connection, a dying owner, the lock wait and the idle
// timeout set on the command line, and reads from another process.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
namespace proto = pasyn::proto;

/// A daemon whose tests all write to kv(k TEXT).
class TransactionTest : public DaemonTest {
 protected:
  void start_with_table(const std::vector<std::string>& flags = {}) {
    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    connect_client().execute("CREATE TABLE kv (k TEXT)");
  }

  /// Rows with key `k`, counted on a read-only connection opened now.
  std::int64_t rows_with_key(const std::string& k) const {
    return query_int("SELECT count(*) FROM kv WHERE k = ?", {k});
  }

  static pasyn::ClientOptions patient_options() {
    auto options = bounded_options();
    options.request_timeout = 30s;  // longer than any daemon wait under test, so that a
                                    // TimeoutError can only come from the daemon
    return options;
  }
};

bool contains_digit(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

TEST_F(TransactionTest, OtherConnectionsCanNeitherCommitNorRollBackNorActInATransaction) {
  // A long lock wait: a request that wrongly queued behind A's transaction would get no reply
  // within kReplyTimeout, rather than a TIMEOUT that could be mistaken for a refusal.
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "20s"}));
  auto a = connect_client();
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);

  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::string> messages;
  proto::ErrorReply e;

  // Whatever transaction number it names: the peer has none of its own.
  EXPECT_TRUE(is_error(peer.request(tx_end_frame(proto::MsgType::kCommit, 1, 1)), 1,
                       proto::ErrorDomain::kPasyn, proto::PasynCode::kMisuse, &e))
      << "COMMIT from another connection";
  messages.push_back(e.message);
  EXPECT_TRUE(is_error(peer.request(tx_end_frame(proto::MsgType::kRollback, 2, 1)), 2,
                       proto::ErrorDomain::kPasyn, proto::PasynCode::kMisuse, &e))
      << "ROLLBACK from another connection";
  messages.push_back(e.message);
  EXPECT_TRUE(is_error(peer.request(tx_statement_frame(proto::MsgType::kExecute, 3, 1,
                                                       "INSERT INTO kv (k) VALUES ('peer')")),
                       3, proto::ErrorDomain::kPasyn, proto::PasynCode::kMisuse, &e))
      << "EXECUTE with the transaction bit from another connection";
  messages.push_back(e.message);
  for (const auto& m : messages) {
    EXPECT_FALSE(contains_digit(m)) << "an error message may reveal a transaction id: " << m;
  }

  EXPECT_EQ(rows_with_key("a"), 0) << "an uncommitted row is visible to a reader";
  EXPECT_FALSE(tx.finished()) << "another connection ended A's transaction";
  tx.commit();
  EXPECT_EQ(rows_with_key("a"), 1);
  EXPECT_EQ(rows_with_key("peer"), 0);

  // MISUSE is not a protocol error: the peer is still served.
  const auto pong = peer.request(empty_frame(proto::MsgType::kPing, 4));
  ASSERT_TRUE(pong.has_value()) << "the peer's connection was closed";
  EXPECT_EQ(pong->type, static_cast<std::uint8_t>(proto::MsgType::kPong));
  EXPECT_EQ(pong->request_id, 4u);
}

// PROTOCOL.md §6.2: after a connection's own COMMIT its transaction's number is stale like one
// the daemon ended (a probe got MISUSE, "no transaction is open", where an idle-ended one got
// TRANSACTION_ENDED).
TEST_F(TransactionTest, ANumberCommittedByItsOwnConnectionIsStale) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  proto::ErrorReply e;
  const auto ok = [](const std::optional<Frame>& f, std::uint64_t id) {
    return f && f->type == static_cast<std::uint8_t>(proto::MsgType::kOk) && f->request_id == id;
  };
  ASSERT_TRUE(ok(peer.request(empty_frame(proto::MsgType::kBegin, 10)), 10));
  ASSERT_TRUE(ok(peer.request(tx_end_frame(proto::MsgType::kCommit, 11, 10)), 11));
  EXPECT_TRUE(is_error(peer.request(tx_end_frame(proto::MsgType::kCommit, 12, 10)), 12,
                       proto::ErrorDomain::kPasyn, proto::PasynCode::kTransactionEnded, &e))
      << "COMMIT again";
  EXPECT_TRUE(ok(peer.request(tx_end_frame(proto::MsgType::kRollback, 13, 10)), 13));
  EXPECT_TRUE(is_error(peer.request(tx_statement_frame(proto::MsgType::kExecute, 14, 10,
                                                       "INSERT INTO kv (k) VALUES ('late')")),
                       14, proto::ErrorDomain::kPasyn, proto::PasynCode::kTransactionEnded, &e))
      << "EXECUTE in the committed transaction";
  EXPECT_EQ(rows_with_key("late"), 0);
}

// A client may pipeline BEGIN, its statements and COMMIT (the transaction's number is the
// BEGIN's id, known before the OK). When that BEGIN waits behind another connection's
// transaction, what follows it waits too and runs in the transaction it opens (probe19: they ran
// first and were refused, and the transaction then stayed open, holding every writer).
TEST_F(TransactionTest, StatementsPipelinedAfterAWaitingBeginRunInItsTransaction) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "20s"}));
  auto other = connect_client();
  auto held = other.begin();
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> pipelined = empty_frame(proto::MsgType::kBegin, 7);
  for (const auto& f :
       {tx_statement_frame(proto::MsgType::kExecute, 8, 7, "INSERT INTO kv (k) VALUES ('piped')"),
        tx_end_frame(proto::MsgType::kCommit, 9, 7)}) {
    pipelined.insert(pipelined.end(), f.begin(), f.end());
  }
  ASSERT_TRUE(peer.send(pipelined));
  std::this_thread::sleep_for(200ms);  // all three read, the BEGIN waiting
  held.rollback();
  for (const auto& [id, type] :
       {std::pair{7u, proto::MsgType::kOk}, std::pair{8u, proto::MsgType::kResult},
        std::pair{9u, proto::MsgType::kOk}}) {
    const auto reply = peer.read_frame(kReplyTimeout);
    ASSERT_TRUE(reply) << id;
    EXPECT_EQ(reply->request_id, id);
    EXPECT_EQ(reply->type, static_cast<std::uint8_t>(type)) << id;
  }
  EXPECT_EQ(rows_with_key("piped"), 1);
  // No transaction is left open: another writer is not held.
  EXPECT_EQ(other.execute("INSERT INTO kv (k) VALUES ('after')", {}, pasyn::Timeout{2s}), 1);
}

TEST_F(TransactionTest, KilledOwnerProcessHasItsTransactionRolledBackAndReleasesWaitingWriters) {
  // Neither limit may be what releases the waiting writer here: only the owner's death.
  ASSERT_NO_FATAL_FAILURE(
      start_with_table({"--lock-wait", "20s", "--transaction-idle-timeout", "30s"}));
  const std::string out = dir_.file("holder.out"), err = dir_.file("holder.err");
  Process holder;
  holder.spawn({PASYN_TX_HOLDER, sock_}, out, err);
  ASSERT_TRUE(wait_for_file_content(out, "ready\n", 10s)) << read_file(err);

  pasyn::MultiplexedClient b(sock_, patient_options());
  auto insert = b.execute_async("INSERT INTO kv (k) VALUES (?)", {"b"});
  ASSERT_EQ(insert.wait_for(300ms), std::future_status::timeout)
      << "a write did not wait for another process's open transaction";

  holder.signal(SIGKILL);
  const auto status = holder.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status)) << describe_status(*status) << "\n" << read_file(err);
  ASSERT_EQ(insert.wait_for(5s), std::future_status::ready)
      << "the owner died and the waiting write is still blocked";
  EXPECT_EQ(insert.get(), 1);
  EXPECT_EQ(rows_with_key("holder"), 0) << "the dead owner's uncommitted row was kept";
  EXPECT_EQ(rows_with_key("b"), 1);
}

TEST_F(TransactionTest, WriteWaitingLongerThanTheLockWaitFailsWithTimeoutAndIsNeverRun) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "300ms"}));
  auto a = connect_client();
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);

  pasyn::MultiplexedClient b(sock_, patient_options());
  const auto start = Clock::now();
  EXPECT_THROW(b.execute("INSERT INTO kv (k) VALUES (?)", {"b"}), pasyn::TimeoutError);
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 10s);

  tx.commit();
  EXPECT_EQ(b.execute("INSERT INTO kv (k) VALUES (?)", {"after"}), 1);  // B's queue has drained
  EXPECT_EQ(rows_with_key("a"), 1);
  EXPECT_EQ(rows_with_key("b"), 0) << "a write answered TIMEOUT was run after all";
  EXPECT_EQ(rows_with_key("after"), 1);
}

TEST_F(TransactionTest, ZeroLockWaitFailsAWriteAtOnceWhileAnotherTransactionIsOpen) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "0"}));
  auto a = connect_client();
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);

  pasyn::MultiplexedClient b(sock_, patient_options());
  const auto start = Clock::now();
  EXPECT_THROW(b.execute("INSERT INTO kv (k) VALUES (?)", {"b"}), pasyn::TimeoutError);
  EXPECT_LT(Clock::now() - start, 1s) << "--lock-wait 0 still waited";

  tx.commit();
  EXPECT_EQ(b.execute("INSERT INTO kv (k) VALUES (?)", {"after"}), 1);
  EXPECT_EQ(rows_with_key("a"), 1);
  EXPECT_EQ(rows_with_key("b"), 0);
}

TEST_F(TransactionTest, IdleTransactionIsRolledBackAndItsOwnerIsToldOnItsNextCall) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_table({"--transaction-idle-timeout", "2s", "--lock-wait", "30s"}));
  auto a = connect_client();
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);

  pasyn::MultiplexedClient b(sock_, patient_options());
  auto insert = b.execute_async("INSERT INTO kv (k) VALUES (?)", {"b"});
  // A stays idle past the timeout; B's insert runs once the idle rollback released the lock.
  ASSERT_EQ(insert.wait_for(20s), std::future_status::ready)
      << "the idle transaction still blocks other writers";
  EXPECT_EQ(insert.get(), 1);

  try {
    tx.execute("INSERT INTO kv (k) VALUES (?)", {"a2"});
    ADD_FAILURE() << "a call in a transaction rolled back for idleness succeeded";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.extended_code(), 516) << e.what();  // SQLITE_ABORT_ROLLBACK
    EXPECT_NE(std::string(e.what()).find("idle"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(rows_with_key("a"), 0) << "the idle transaction's row was kept";
  EXPECT_EQ(rows_with_key("a2"), 0);
  EXPECT_EQ(rows_with_key("b"), 1);
}

// A statement that ends the transaction: its own call says so (516, why), and so does every
// later call through the handle, commit() and rollback() included; a handle the caller finished
// itself answers ProgrammingError instead.
TEST_F(TransactionTest, EveryCallAfterAStatementEndedTheTransactionSaysWhy) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto a = connect_client();
  a.execute("CREATE TABLE u (k TEXT UNIQUE)");
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);
  ASSERT_EQ(tx.execute("INSERT INTO u (k) VALUES (?)", {"a"}), 1);
  const auto ended_why = [](const std::function<void()>& call) {
    try {
      call();
    } catch (const pasyn::OperationalError& e) {
      EXPECT_EQ(e.extended_code(), 516) << e.what();  // SQLITE_ABORT_ROLLBACK
      return std::string(e.what());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected OperationalError 516, got: " << e.what();
      return std::string();
    }
    ADD_FAILURE() << "a call through an ended transaction succeeded";
    return std::string();
  };
  const std::string first =
      ended_why([&] { tx.execute("INSERT OR ROLLBACK INTO u (k) VALUES (?)", {"a"}); });
  EXPECT_NE(first.find("a statement ended it"), std::string::npos) << first;
  EXPECT_TRUE(tx.finished());
  EXPECT_EQ(ended_why([&] { tx.execute("INSERT INTO kv (k) VALUES (?)", {"b"}); }), first);
  EXPECT_EQ(ended_why([&] { tx.commit(); }), first);
  EXPECT_EQ(ended_why([&] { tx.rollback(); }), first);
  EXPECT_EQ(rows_with_key("a"), 0);
  EXPECT_EQ(rows_with_key("b"), 0);

  auto done = a.begin();
  done.commit();
  EXPECT_THROW(done.execute("INSERT INTO kv (k) VALUES (?)", {"c"}), pasyn::ProgrammingError);
}

TEST_F(TransactionTest, StatsReportTheAgeOfAnotherClientsOpenTransactionUntilItsCommit) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto observer = connect_client();
  const auto age = [&] { return as_int(figure(observer.stats(), "transaction_age_ms")); };
  EXPECT_EQ(age(), -1) << "no transaction is open yet";

  auto a = connect_client();
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);
  const auto first = age();
  EXPECT_GE(first, 0);
  std::this_thread::sleep_for(100ms);
  EXPECT_GE(age(), first + 90) << "the age does not follow the clock";

  tx.commit();
  EXPECT_EQ(age(), -1) << "a committed transaction is still reported open";
}

TEST_F(TransactionTest, CheckpointWaitsForAnotherClientsTransactionAndRunsAfterItsCommit) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "20s"}));
  auto a = connect_client();
  auto tx = a.begin();
  ASSERT_EQ(tx.execute("INSERT INTO kv (k) VALUES (?)", {"a"}), 1);

  pasyn::MultiplexedClient b(sock_, patient_options());
  auto checkpoint = std::async(std::launch::async, [&] { return b.checkpoint("TRUNCATE"); });
  ASSERT_EQ(checkpoint.wait_for(300ms), std::future_status::timeout)
      << "a checkpoint ran while another connection's transaction was open";
  // Polled: the CHECKPOINT may not have reached the daemon yet.
  std::int64_t waiting = 0;
  for (const auto deadline = Clock::now() + 10s; Clock::now() < deadline;) {
    waiting = as_int(figure(b.stats(), "waiting_for_transaction"));
    if (waiting == 1) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(waiting, 1);

  tx.commit();
  ASSERT_EQ(checkpoint.wait_for(5s), std::future_status::ready)
      << "the checkpoint still waits after the commit";
  const auto report = checkpoint.get();
  EXPECT_EQ(as_int(figure(report, "busy")), 0);
  // It ran after the commit: the committed row is in the database file, the WAL is empty.
  EXPECT_EQ(as_int(figure(b.stats(), "wal_bytes")), 0);
  EXPECT_EQ(rows_with_key("a"), 1);
}

TEST_F(TransactionTest, ReadInAnotherProcessSeesEveryAcknowledgedWrite) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  auto client = connect_client();
  for (int i = 0; i < 20; ++i) {
    const std::string key = "key-" + std::to_string(i);
    ASSERT_EQ(client.execute("INSERT INTO kv (k) VALUES (?)", {key}), 1);
    const std::string out = dir_.file("read-" + std::to_string(i) + ".out");
    const std::string err = dir_.file("read.err");
    Process reader;
    reader.spawn({PASYN_READ_COUNT, db_, key}, out, err);
    const auto [status, killed] = reader.wait_or_kill(10s);
    ASSERT_FALSE(killed) << "pasyn-test-read-count hangs";
    ASSERT_TRUE(exited_with(status, 0)) << describe_status(status) << "\n" << read_file(err);
    ASSERT_EQ(read_file(out), "1\n") << "write " << i << " was acknowledged; another process "
                                     << "reading afterwards does not see it";
  }
}

}  // namespace
