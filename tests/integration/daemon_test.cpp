// Integration tests: the real pasyn-writerd binary, raw protocol peers, several client processes.
//
// Every test starts its own daemon in a fresh temporary directory (DaemonTest) and every wait is
// bounded, so a misbehaving daemon fails a test instead of hanging the suite.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
namespace proto = pasyn::proto;

// ---- Many processes ---------------------------------------------------------------------------

TEST_F(DaemonTest, FourProcessesOfEightThreadsEachGetEveryWriteAcknowledgedExactlyOnce) {
  constexpr int kProcesses = 4, kThreads = 8, kRows = 200;
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  connect_client().execute(
      "CREATE TABLE acks (proc INTEGER, thread INTEGER, seq INTEGER, UNIQUE (proc, thread, seq))");

  std::vector<Process> writers(kProcesses);
  for (int p = 0; p < kProcesses; ++p) {
    const std::string name = "load-" + std::to_string(p);
    writers[p].spawn({PASYN_LOAD_WRITER, sock_, std::to_string(p), std::to_string(kThreads),
                      std::to_string(kRows)},
                     dir_.file(name + ".out"), dir_.file(name + ".err"));
  }
  const auto deadline = Clock::now() + 45s;
  for (int p = 0; p < kProcesses; ++p) {
    const std::string name = "load-" + std::to_string(p);
    const auto [status, killed] = writers[p].wait_or_kill(deadline - Clock::now());
    EXPECT_FALSE(killed) << name << " did not finish within 45 s";
    EXPECT_TRUE(exited_with(status, 0)) << name << ": " << describe_status(status) << "\n"
                                        << read_file(dir_.file(name + ".err"));
    EXPECT_EQ(read_file(dir_.file(name + ".out")),
              "acked " + std::to_string(kThreads * kRows) + " errors 0\n")
        << name;
  }

  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  auto row = conn.execute_fetchone(
      "SELECT count(*), count(DISTINCT proc || '/' || thread || '/' || seq) FROM acks");
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(as_int(row->at(0)), kProcesses * kThreads * kRows);
  EXPECT_EQ(as_int(row->at(1)), kProcesses * kThreads * kRows);
}

// ---- Group commit and SQL errors --------------------------------------------------------------

TEST_F(DaemonTest, FailingMembersOfAGroupCommitFailAloneAndTheRestCommit) {
  constexpr int kRequests = 500;
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE u (k INTEGER UNIQUE, req INTEGER)");

  // Request i inserts key i, except every 10th, which repeats the key of the request before it.
  auto key_of = [](int i) { return i % 10 == 9 ? i - 1 : i; };
  std::vector<std::future<std::int64_t>> futures;
  for (int i = 0; i < kRequests; ++i) {
    futures.push_back(client.execute_async("INSERT INTO u (k, req) VALUES (?, ?)", {key_of(i), i}));
  }
  const auto deadline = Clock::now() + 20s;
  std::set<std::int64_t> succeeded;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(futures[i].wait_until(deadline), std::future_status::ready) << "request " << i;
    if (i % 10 == 9) {
      try {
        futures[i].get();
        ADD_FAILURE() << "request " << i << " repeated a key and succeeded";
      } catch (const pasyn::IntegrityError& e) {
        EXPECT_EQ(e.extended_code(), 2067) << e.what();  // SQLITE_CONSTRAINT_UNIQUE
      }
    } else {
      EXPECT_EQ(futures[i].get(), 1) << "request " << i;
      succeeded.insert(i);
    }
  }

  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  std::set<std::int64_t> stored;
  for (const auto& row : conn.execute_fetchall("SELECT k, req FROM u")) {
    EXPECT_EQ(as_int(row[0]), as_int(row[1]));  // each key holds the row of the request that won
    stored.insert(as_int(row[1]));
  }
  EXPECT_EQ(stored, succeeded);
  EXPECT_EQ(succeeded.size(), std::size_t{kRequests - kRequests / 10});
}

// A deferred foreign key is checked at COMMIT, which a batch shares: each request is held to
// what its own COMMIT would say, so one request's orphan row fails that request alone, and a
// later request of the same batch that adds the missing parent does not rescue it.
TEST_F(DaemonTest, ADeferredForeignKeyViolationFailsOnlyTheRequestThatLeftIt) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--foreign-keys", "on"}));
  auto client = connect_client();
  client.executescript(
      "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
      "CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent (id) "
      "DEFERRABLE INITIALLY DEFERRED);"
      "CREATE TABLE other (v TEXT)");
  auto holder = connect_client();
  auto tx = holder.begin();  // the requests below queue behind it and then run as one batch
  auto a = connect_client(), b = connect_client(), c = connect_client();
  auto orphan = a.execute_async("INSERT INTO child (id, p) VALUES (1, 7)");
  ASSERT_TRUE(stat_reaches(client, "waiting_for_transaction", 1));
  auto unrelated = b.execute_async("INSERT INTO other (v) VALUES ('b')");
  ASSERT_TRUE(stat_reaches(client, "waiting_for_transaction", 2));
  auto parent = c.execute_async("INSERT INTO parent (id) VALUES (7)");
  ASSERT_TRUE(stat_reaches(client, "waiting_for_transaction", 3));
  // A request with one orphan among its rows fails whole (parent 8 never exists)...
  auto whole = c.execute_async("INSERT INTO child (id, p) SELECT 2, 8 UNION ALL SELECT 3, 7");
  ASSERT_TRUE(stat_reaches(client, "waiting_for_transaction", 4));
  // ...and one that resolves its own violation before it ends commits.
  auto script = b.executescript_async(
      "INSERT INTO child (id, p) VALUES (4, 9); INSERT INTO parent (id) VALUES (9)");
  ASSERT_TRUE(stat_reaches(client, "waiting_for_transaction", 5));
  tx.rollback();

  try {
    orphan.get();
    ADD_FAILURE() << "an orphan row under a deferred foreign key was committed";
  } catch (const pasyn::IntegrityError& e) {
    EXPECT_EQ(e.extended_code(), 787) << e.what();  // SQLITE_CONSTRAINT_FOREIGNKEY
  }
  EXPECT_EQ(unrelated.get(), 1);
  EXPECT_EQ(parent.get(), 1);
  try {
    whole.get();
    ADD_FAILURE() << "a request that left a deferred violation (parent 8) was committed";
  } catch (const pasyn::IntegrityError& e) {
    EXPECT_EQ(e.extended_code(), 787) << e.what();  // SQLITE_CONSTRAINT_FOREIGNKEY
  }
  script.get();  // its second statement adds the parent its first one needs

  EXPECT_EQ(query_int("SELECT count(*) FROM other"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM parent"), 2);  // 7 and 9
  EXPECT_EQ(query_int("SELECT count(*) FROM child"), 1);   // only the script's row 4
  EXPECT_EQ(query_int("SELECT count(*) FROM child WHERE id = 4"), 1);
  EXPECT_TRUE(client.execute_fetchall("PRAGMA foreign_key_check").empty());
}

TEST_F(DaemonTest, BadSqlIsATypedErrorAndTheDaemonKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (1"), pasyn::OperationalError);
  EXPECT_THROW(client.execute("SELEC 1"), pasyn::OperationalError);
  EXPECT_THROW(client.execute("INSERT INTO nowhere VALUES (1)"), pasyn::OperationalError);
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"),
               pasyn::ProgrammingError);
  // Transaction commands as SQL: the seed's TransactionCommandError, a ProgrammingError.
  EXPECT_THROW(client.execute("BEGIN"), pasyn::TransactionCommandError);
  EXPECT_THROW(client.execute("COMMIT"), pasyn::TransactionCommandError);
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (1); END"),
               pasyn::TransactionCommandError);
  EXPECT_THROW(client.execute("SAVEPOINT s"), pasyn::TransactionCommandError);
  EXPECT_THROW(client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"),
               pasyn::ProgrammingError);
  try {
    client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)");
  } catch (const pasyn::TransactionError&) {
    ADD_FAILURE() << "several statements are a ProgrammingError, not a TransactionError";
  } catch (const pasyn::ProgrammingError&) {
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 0);
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (3)"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);
}

TEST_F(DaemonTest, ExecuteReturningRowidReturnsTheRowidOfTheInsertedRow) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (v) VALUES ('a')"), 1);
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (id, v) VALUES (42, 'b')"), 42);
  EXPECT_EQ(client.execute_returning_rowid("INSERT INTO t (v) VALUES (?)", {"c"}), 43);
  EXPECT_EQ(client.execute_returning_rowid("UPDATE t SET v = 'd' WHERE id = 1"), 0);
}

TEST_F(DaemonTest, ExecuteFetchallWithReturningReturnsTheWrittenRows) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  const auto rows =
      client.execute_fetchall("INSERT INTO t (v) VALUES (?), (?) RETURNING id, v", {"a", "b"});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (pasyn::Row{std::int64_t{1}, std::string("a")}));
  EXPECT_EQ(rows[1], (pasyn::Row{std::int64_t{2}, std::string("b")}));
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
}

TEST_F(DaemonTest, ExecutescriptWhoseThirdStatementFailsLeavesNothingOfTheFirstTwo) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x INTEGER UNIQUE)");
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); "
                                    "INSERT INTO t VALUES (1); INSERT INTO t VALUES (3);"),
               pasyn::IntegrityError);
  EXPECT_THROW(client.executescript("INSERT INTO t VALUES (4); INSERT INTO t VALUES (5); "
                                    "INSERT INTO nowhere VALUES (6);"),
               pasyn::OperationalError);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 0);
  client.executescript("INSERT INTO t VALUES (7); INSERT INTO t VALUES (8);");
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 2);
}

TEST_F(DaemonTest, AnAcknowledgedWriteIsVisibleToAReadConnectionOpenedAfterwards) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x INTEGER)");
  for (int i = 1; i <= 50; ++i) {
    ASSERT_EQ(client.execute("INSERT INTO t VALUES (?)", {i}), 1);
    ASSERT_EQ(query_int("SELECT max(x) FROM t"), i) << "write " << i << " acknowledged, not seen";
  }
}

// ---- Faults and shutdown ----------------------------------------------------------------------

TEST_F(DaemonTest, KilledDaemonFailsAWaitingCallAndLaterCallsWithConnectionLost) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  pasyn::ClientOptions options;
  options.request_timeout = 20s;  // bounds the std::async below even if the client hangs
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());
  auto call = std::async(std::launch::async, [&] {
    return client.execute_fetchall(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000) "
        "SELECT count(*) FROM c");
  });
  std::this_thread::sleep_for(300ms);  // let the writer start the statement
  ASSERT_EQ(call.wait_for(0s), std::future_status::timeout) << "the long statement finished";

  daemon_.signal(SIGKILL);
  const auto killed_at = Clock::now();
  ASSERT_EQ(call.wait_for(5s), std::future_status::ready) << "the waiting call hangs";
  EXPECT_THROW(call.get(), pasyn::ConnectionLostError);
  EXPECT_LT(Clock::now() - killed_at, 5s);
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << describe_status(*status);

  const auto later = Clock::now();
  EXPECT_THROW(client.ping(), pasyn::ConnectionLostError);
  EXPECT_THROW(client.execute("SELECT 1"), pasyn::ConnectionLostError);
  EXPECT_LT(Clock::now() - later, 2s);
}

/// Queues a slow statement and many inserts, sends SIGTERM, and checks what every shutdown must
/// keep: no call hangs, exit status 0, no socket left, every acknowledged row stored.
class SigtermTest : public DaemonTest {
 protected:
  static constexpr int kRequests = 2000;

  struct Outcome {
    std::vector<std::int64_t> acked;
    int refused = 0;  // OperationalError: the daemon said it did not run the request
    int lost = 0;     // ConnectionLostError: outcome unknown
    int other = 0;    // any other pasyn::Error
  };

  /// With `wait_until_read`, SIGTERM is sent only once the daemon has read every request (a
  /// ping sent after them was answered), so that all of them are queued in the daemon.
  Outcome submit_then_sigterm(bool wait_until_read) {
    Outcome out;
    auto client = connect_client();
    client.execute("CREATE TABLE q (i INTEGER PRIMARY KEY)");
    // The slow statement keeps the writer busy, so the inserts are still queued at SIGTERM.
    auto slow = client.execute_fetchall_async(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
        "SELECT count(*) FROM c");
    std::vector<std::future<std::int64_t>> futures;
    for (int i = 0; i < kRequests; ++i) {
      futures.push_back(client.execute_async("INSERT INTO q (i) VALUES (?)", {i}));
    }
    if (wait_until_read) {
      auto pong = client.ping_async();
      EXPECT_EQ(pong.wait_for(kReplyTimeout), std::future_status::ready);
      EXPECT_EQ(slow.wait_for(0s), std::future_status::timeout) << "the writer was idle already";
    }
    daemon_.signal(SIGTERM);

    const auto deadline = Clock::now() + 20s;
    EXPECT_EQ(slow.wait_until(deadline), std::future_status::ready) << "the slow statement hangs";
    for (int i = 0; i < kRequests; ++i) {
      if (futures[i].wait_until(deadline) != std::future_status::ready) {
        ADD_FAILURE() << "request " << i << " hangs after SIGTERM";
        return out;
      }
      try {
        EXPECT_EQ(futures[i].get(), 1);
        out.acked.push_back(i);
      } catch (const pasyn::OperationalError&) {
        ++out.refused;
      } catch (const pasyn::ConnectionLostError&) {
        ++out.lost;
      } catch (const pasyn::Error&) {
        ++out.other;
      }
    }
    const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
    EXPECT_FALSE(killed);
    EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
    EXPECT_FALSE(path_exists(sock_)) << "the socket file was left behind";

    auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
    std::set<std::int64_t> stored;
    for (const auto& row : conn.execute_fetchall("SELECT i FROM q")) stored.insert(as_int(row[0]));
    for (auto i : out.acked) {
      EXPECT_TRUE(stored.count(i)) << "acknowledged row " << i << " is missing";
    }
    std::cout << "[          ] " << out.acked.size() << " acknowledged, " << out.refused
              << " refused, " << out.lost << " lost, " << out.other << " other errors\n";
    return out;
  }
};

TEST_F(SigtermTest, RequestsSentJustBeforeSigtermEachSucceedOrFailAndAcknowledgedRowsAreKept) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  submit_then_sigterm(false);
}

TEST_F(SigtermTest, WorkQueuedInTheDaemonIsFinishedBeforeItExits) {
  // Every request must be read before SIGTERM: lift the in-flight limit above kRequests.
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--max-inflight", std::to_string(kRequests + 10)}));
  const auto out = submit_then_sigterm(true);
  EXPECT_EQ(out.acked.size(), std::size_t{kRequests});
}

// The stop signals (SIGTERM, SIGINT, SIGHUP) blocked in each thread of `pid`, by thread id.
std::vector<std::pair<pid_t, bool>> stop_signals_blocked(pid_t pid) {
  std::vector<std::pair<pid_t, bool>> out;
  for (const auto& [tid, lines] : thread_status(pid, "SigBlk:")) {
    for (const auto& line : lines) {
      const auto mask = std::stoull(line.substr(line.find_first_not_of(" \t", 7)), nullptr, 16);
      const auto bit = [&](int signo) { return ((mask >> (signo - 1)) & 1) != 0; };
      EXPECT_TRUE(bit(SIGTERM) == bit(SIGINT) && bit(SIGINT) == bit(SIGHUP)) << line;
      out.emplace_back(tid, bit(SIGTERM));
    }
  }
  return out;
}

// The stop signals reach the thread that runs the I/O loop and never the writer's, in both
// layouts: Asio installs its handler without SA_RESTART, so a signal the writer thread took
// would interrupt the system call of SQLite's it lands in.
TEST_F(DaemonTest, OnlyTheMainThreadTakesTheStopSignals) {
  for (const char* writer_io : {"off", "on"}) {
    SCOPED_TRACE(std::string("--writer-io ") + writer_io);
    ASSERT_NO_FATAL_FAILURE(start_daemon({"--writer-io", writer_io}));
    const pid_t pid = daemon_.pid();
    const auto threads = stop_signals_blocked(pid);
    ASSERT_GE(threads.size(), 2u);  // it answered: its writer thread runs
    for (const auto& [tid, blocked] : threads) {
      EXPECT_EQ(blocked, tid != pid) << "thread " << tid << " of " << pid;
    }
    auto client = connect_client();
    EXPECT_TRUE(client.ping());
    client.close();
    stop_daemon();
  }
}

// A daemon started with the stop signals blocked (by a thread of a program that takes its own
// signals with sigwait, say) would leave SIGTERM pending for ever: it unblocks them.
TEST_F(DaemonTest, ADaemonStartedWithTheStopSignalsBlockedStillStopsOnSigterm) {
  {
    struct Blocked {  // on this thread while the daemon is started: the child inherits the mask
      sigset_t saved;
      Blocked() {
        sigset_t set;
        sigemptyset(&set);
        for (const int signo : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, signo);
        ::pthread_sigmask(SIG_BLOCK, &set, &saved);
      }
      ~Blocked() { ::pthread_sigmask(SIG_SETMASK, &saved, nullptr); }
    } blocked;
    ASSERT_NO_FATAL_FAILURE(start_daemon());
  }
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  client.close();
  stop_daemon();  // exit status 0 within the stop timeout
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 0);
}

TEST_F(DaemonTest, ShutdownServerMakesTheDaemonExitCleanlyAndRemoveItsSocket) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  client.execute("INSERT INTO t VALUES (1)");
  client.shutdown_server();
  const auto [status, killed] = daemon_.wait_or_kill(kStopTimeout);
  EXPECT_FALSE(killed);
  EXPECT_TRUE(exited_with(status, 0)) << describe_status(status);
  EXPECT_FALSE(path_exists(sock_));
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 1);
}

// ---- Start-up refusals ------------------------------------------------------------------------

TEST_F(DaemonTest, SecondDaemonOnTheSameDatabaseIsRefusedAndTheFirstKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");

  const std::string second_sock = dir_.file("second.sock");
  const std::string second_err = dir_.file("second.err");
  Process second;
  second.spawn(daemon_args({}, second_sock), second_err, second_err);
  const auto [status, killed] = second.wait_or_kill(kStartTimeout);
  EXPECT_FALSE(killed) << "the second daemon kept running";
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << describe_status(status);
  EXPECT_TRUE(WIFEXITED(status)) << describe_status(status);
  const std::string err = read_file(second_err);
  EXPECT_NE(err.find("already served"), std::string::npos) << err;
  EXPECT_FALSE(path_exists(second_sock));

  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
  EXPECT_TRUE(connect_client().ping());
}

// The same database through another path: a symlink finds the first daemon's lock (named after
// the resolved path); a hard link is refused outright (SQLite would keep a second WAL under the
// other name), also when no daemon runs.
TEST_F(DaemonTest, ASecondPathToTheDatabaseIsRefusedToo) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  client.execute("CREATE TABLE t (x)");
  const std::string symlink = dir_.file("symlink.sqlite");
  ASSERT_EQ(::symlink(db_.c_str(), symlink.c_str()), 0);
  const auto second_start = [&](const std::string& database, const std::string& expected) {
    const std::string sock = dir_.file("second.sock"), err_file = dir_.file("second.err");
    Process second;
    second.spawn({PASYN_WRITERD, "--database", database, "--socket", sock, "--log-level", "warn"},
                 err_file, err_file);
    const auto [status, killed] = second.wait_or_kill(kStartTimeout);
    EXPECT_FALSE(killed) << database << ": the second daemon kept running";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << describe_status(status);
    const std::string err = read_file(err_file);
    EXPECT_NE(err.find(expected), std::string::npos) << database << ": " << err;
    EXPECT_FALSE(path_exists(sock));
  };
  second_start(symlink, "already served");

  const std::string link = dir_.file("hardlink.sqlite");
  ASSERT_EQ(::link(db_.c_str(), link.c_str()), 0);
  second_start(link, "hard links");
  EXPECT_EQ(client.execute("INSERT INTO t VALUES (1)"), 1);
  client.close();
  stop_daemon();
  second_start(link, "hard links");  // nothing runs: still refused
  second_start(db_, "hard links");   // and under its first name too
}

TEST_F(DaemonTest, RegularFileAtTheSocketPathIsRefusedAndLeftUntouched) {
  const std::string content = "precious data, not a socket\n";
  std::ofstream(sock_, std::ios::binary) << content;
  daemon_.spawn(daemon_args({}, sock_), log_, log_);
  const auto [status, killed] = daemon_.wait_or_kill(kStartTimeout);
  EXPECT_FALSE(killed) << "the daemon started over a regular file";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << describe_status(status);
  const std::string err = read_file(log_);
  EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
  EXPECT_EQ(read_file(sock_), content);
  EXPECT_FALSE(path_exists(db_)) << "a start refused for its socket created the database";
}

TEST_F(DaemonTest, StaleSocketFileIsReplacedAndServed) {
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    const auto addr = pasyn::proto::unix_address(sock_);
    ASSERT_TRUE(addr);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr), 0);
    ::close(fd);  // leaves the socket file behind, with nobody accepting on it
  }
  struct stat st {};
  ASSERT_EQ(::lstat(sock_.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  ASSERT_LT(connect_unix(sock_), 0);

  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto client = connect_client();
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("CREATE TABLE t (x)"), 0);
}

}  // namespace
