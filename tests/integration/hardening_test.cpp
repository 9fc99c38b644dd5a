// Integration tests of pasyn-writerd's hardening against the real binary: access control by peer
// credentials, the SQL authorizer and idempotency keys (the limits: limits_test.cpp; the bounded
// WAL: wal_limit_test.cpp) (PROTOCOL.md §3, §5, §6.3; README "Daemon flags").
//
// Running clients as another user (run_as) is daemon_fixture's.
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
#include "hardening_fixture.hpp"

namespace {

using namespace pasyn::itest;
using namespace pasyn::itest::hardening;

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

// What must run alone, outside any transaction (VACUUM, PRAGMA journal_mode, ...) is MISUSE in
// execute_many, which runs in the batch, and inside a transaction also when the pragma's name is
// quoted (a probe got SQLite's "cannot VACUUM from within a transaction", and a quoted
// PRAGMA "journal_mode" ran inside a transaction).
TEST_F(AuthorizerTest, WhatMustRunAloneIsMisuseInExecuteManyAndInATransaction) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  for (const char* sql : {"VACUUM", "PRAGMA journal_mode", "PRAGMA \"journal_mode\""}) {
    const std::string many = outcome_of([&] { client.execute_many(sql, {{}, {}}); });
    EXPECT_TRUE(many.starts_with("ProgrammingError code 21:")) << sql << ": " << many;
    EXPECT_TRUE(contains(many, "not execute_many()")) << many;
  }
  {
    auto tx = client.begin();
    for (const char* sql : {"PRAGMA \"journal_mode\"", "PRAGMA main.'foreign_keys'"}) {
      const std::string in_tx = outcome_of([&] { tx.execute_fetchall(sql); });
      EXPECT_TRUE(in_tx.starts_with("ProgrammingError code 21:")) << sql << ": " << in_tx;
    }
    tx.rollback();
  }
  EXPECT_EQ(client.execute_fetchall("PRAGMA \"journal_mode\"")[0][0],
            pasyn::Value(std::string("wal")));  // alone, it runs
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

// The most recent --idempotency-keys records are kept, deleted in steps of 1,024, also over
// daemon runs shorter than a step (probe22: the step was counted per run, so a daemon
// restarted before each 1,024th key never pruned: 8 runs of 1,000 keys left 8,000 records).
TEST_F(IdempotencyTest, OldKeysArePrunedAlsoOverShortDaemonRuns) {
  constexpr int kRuns = 4, kKeysPerRun = 600, kKeep = 100;
  for (int run = 0; run < kRuns; ++run) {
    ASSERT_NO_FATAL_FAILURE(start_daemon({"--idempotency-keys", std::to_string(kKeep)}));
    auto client = connect_client();
    client.execute("CREATE TABLE IF NOT EXISTS t (v)");
    std::vector<std::future<std::int64_t>> writes;
    for (int i = 0; i < kKeysPerRun; ++i) {
      const pasyn::WriteOptions key{.idempotency_key =
                                        std::to_string(run) + "/" + std::to_string(i)};
      writes.push_back(client.execute_async("INSERT INTO t VALUES (1)", {}, key));
    }
    for (auto& w : writes) ASSERT_EQ(w.get(), 1);
    stop_daemon();
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kRuns * kKeysPerRun);
  EXPECT_LT(query_int("SELECT count(*) FROM pasyn_idempotency"), kKeep + 1024);
  // The most recent key is still answered from its record.
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--idempotency-keys", std::to_string(kKeep)}));
  auto client = connect_client();
  const pasyn::WriteOptions last{.idempotency_key = std::to_string(kRuns - 1) + "/" +
                                                    std::to_string(kKeysPerRun - 1)};
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)", {}, last), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), kRuns * kKeysPerRun);
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
