// Integration tests of operating a running pasyn-writerd: the `pasyn` command line (cli/pasyn.cpp)
// run as a separate process, with its output and exit status (0 done, 1 failed, 2 bad usage),
// and the client API it is built on (MultiplexedClient::stats, checkpoint, backup).
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;

/// Rows of `table` in the database file at `path`, counted with the sqlite3 C API (-1 on error).
std::int64_t count_rows(const std::string& path, const std::string& table) {
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  std::int64_t n = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK &&
      sqlite3_prepare_v2(db, ("SELECT count(*) FROM " + table).c_str(), -1, &stmt, nullptr) ==
          SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    n = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
  return n;
}

/// The integer after `"name":` in a JSON object printed by the CLI, or -1.
std::int64_t json_int(const std::string& json, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + name + "\":(-?[0-9]+)"))) return -1;
  return std::stoll(m[1]);
}

/// A daemon with a table t, operated with the `pasyn` binary.
class CliTest : public DaemonTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    connect_client().execute("CREATE TABLE t (id INTEGER, name TEXT, score REAL)");
  }

  /// `pasyn <args>`, to completion.
  Completed cli(std::vector<std::string> args) const {
    args.insert(args.begin(), PASYN_CLI);
    return run_to_completion(args, dir_);
  }
  /// `pasyn --socket <the daemon's socket> <args>`.
  Completed cli_on_daemon(std::vector<std::string> args) const {
    args.insert(args.begin(), {"--socket", sock_});
    return cli(std::move(args));
  }
};

/// Describes a CLI run for failure messages.
std::string show(const Completed& r) {
  return describe_status(r.status) + (r.killed ? " (killed after the timeout)" : "") +
         "\nstdout: " + r.out + "\nstderr: " + r.err;
}

TEST_F(CliTest, PingAnswersWithPongAsTextAndAsJson) {
  auto r = cli_on_daemon({"ping"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_TRUE(r.out.starts_with("pong from " + sock_ + " in ")) << show(r);
  EXPECT_TRUE(r.out.ends_with(" ms\n")) << show(r);
  EXPECT_EQ(r.err, "");

  r = cli_on_daemon({"--json", "ping"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_TRUE(r.out.starts_with("{\"ok\":true,\"socket\":\"" + sock_ + "\",\"ms\":")) << show(r);
}

TEST_F(CliTest, ExecRunsAScriptAndInsertsWithTypedParameters) {
  auto r = cli_on_daemon({"exec", "--script", "CREATE TABLE a (x); CREATE TABLE b (y)"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "ok  1\n");

  r = cli_on_daemon(
      {"exec", "INSERT INTO t (id, name, score) VALUES (?, ?, ?)", "1", "ann", "2.5"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "changes  1\n");
  r = cli_on_daemon(
      {"--json", "exec", "INSERT INTO t (id, name, score) VALUES (?, ?, ?)", "2", "NULL", "NULL"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "{\"changes\":1}\n");

  EXPECT_EQ(count_rows(db_, "a"), 0) << "the script's first table is missing";
  EXPECT_EQ(count_rows(db_, "b"), 0) << "the script's second table is missing";
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  const auto types = conn.execute_fetchall(
      "SELECT typeof(id) || ',' || typeof(name) || ',' || typeof(score) FROM t ORDER BY id");
  ASSERT_EQ(types.size(), 2u);
  EXPECT_EQ(std::get<std::string>(types[0][0]), "integer,text,real");
  EXPECT_EQ(std::get<std::string>(types[1][0]), "integer,null,null");
}

// A write whose outcome is unknown exits 75 (EX_TEMPFAIL) with "outcome":"unknown", never 1
// like a definite failure (probe25: a write that committed was reported {"ok":false}, exit 1,
// as a refused one is). A TIMEOUT the daemon answers (--lock-wait: not executed) stays 1.
TEST_F(CliTest, AWriteWhoseOutcomeIsUnknownExitsWithItsOwnStatus) {
  stop_daemon();
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--lock-wait", "2s"}));
  auto holder = connect_client();
  {
    auto tx = holder.begin();  // the writes below wait behind it in the daemon
    // The CLI's own deadline passes first: its request may still run.
    auto r = cli_on_daemon({"--timeout", "300", "--json", "exec", "INSERT INTO t (id) VALUES (7)"});
    EXPECT_TRUE(exited_with(r.status, 75)) << show(r);
    EXPECT_NE(r.out.find("\"outcome\":\"unknown\""), std::string::npos) << show(r);
    EXPECT_NE(r.err.find("may still be executed"), std::string::npos) << show(r);
    // The daemon's --lock-wait passes first: it answers that the request was not executed.
    r = cli_on_daemon({"--timeout", "20000", "exec", "INSERT INTO t (id) VALUES (8)"});
    EXPECT_TRUE(exited_with(r.status, 1)) << show(r);
    EXPECT_NE(r.err.find("was not executed"), std::string::npos) << show(r);
    tx.rollback();
  }
  EXPECT_EQ(count_rows(db_, "t WHERE id = 8"), 0);
}

TEST_F(CliTest, WatchPrintsCommittedChangesAsTextAndAsJson) {
  auto client = connect_client();
  client.execute("CREATE TABLE other (x)");
  client.execute("INSERT INTO t (id, name) VALUES (1, 'ann')");  // rowid 1, commit 1
  client.execute("INSERT INTO other VALUES (0)");                // commit 2
  client.execute("DELETE FROM t WHERE id = 1");                  // commit 3
  const auto epoch = std::to_string(client.subscribe().epoch());
  // From the start of this daemon's run (--after 0): the daemon still holds every commit. Each
  // JSON line names the epoch its seq belongs to.
  auto r = cli_on_daemon({"--json", "watch", "--after", "0", "--count", "3"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out,
            "{\"seq\":1,\"kind\":\"insert\",\"table\":\"t\",\"rowid\":1,\"epoch\":\"" + epoch +
                "\"}\n"
                "{\"seq\":2,\"kind\":\"insert\",\"table\":\"other\",\"rowid\":1,\"epoch\":\"" +
                epoch +
                "\"}\n"
                "{\"seq\":3,\"kind\":\"delete\",\"table\":\"t\",\"rowid\":1,\"epoch\":\"" +
                epoch + "\"}\n")
      << show(r);
  r = cli_on_daemon({"watch", "t", "--after", "1", "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "3 delete t 1\n") << show(r);
  // A table name cannot forge a line: written escaped, as query's fields (probe23).
  client.execute("CREATE TABLE \"x 1\n77 delete users 42\" (v)");
  client.execute("INSERT INTO \"x 1\n77 delete users 42\" VALUES (1)");  // commit 4
  r = cli_on_daemon({"watch", "--after", "3", "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "4 insert x 1\\n77 delete users 42 1\n") << show(r);
  r = cli_on_daemon({"watch", "--after", "99", "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 1)) << show(r);
  EXPECT_NE(r.err.find("cannot resume after commit 99"), std::string::npos) << show(r);
}

TEST_F(CliTest, WatchResumesInTheEpochOfAJsonLineOnly) {
  auto client = connect_client();
  client.execute("INSERT INTO t (id) VALUES (1)");  // commit 1
  client.execute("INSERT INTO t (id) VALUES (2)");  // commit 2
  auto r = cli_on_daemon({"--json", "watch", "--after", "0", "--count", "2"});
  ASSERT_TRUE(exited_with(r.status, 0)) << show(r);
  // The first line's epoch, a string (64 bits do not fit a double).
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("^\\{\"seq\":1,.*\"epoch\":\"([0-9]+)\"\\}")))
      << show(r);
  const std::string epoch = m[1];
  EXPECT_EQ(epoch, std::to_string(client.subscribe().epoch()));

  // The line's (epoch, seq): the commits after it, no reset.
  r = cli_on_daemon({"watch", "--epoch", epoch, "--after", "1", "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "2 insert t 2\n") << show(r);

  // Another run's epoch: a reset at this run's last commit comes first (then the commits after
  // it), even after a seq this run never had.
  const std::string other = epoch == "1" ? "2" : "1";
  r = cli_on_daemon({"--json", "watch", "--epoch", other, "--after", "99", "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "{\"seq\":2,\"kind\":\"reset\",\"epoch\":\"" + epoch + "\"}\n") << show(r);
  r = cli_on_daemon({"watch", "--epoch", other, "--after", "1", "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "2 reset\n") << show(r);

  // --epoch alone names no resume point: bad usage.
  r = cli_on_daemon({"watch", "--epoch", epoch, "--count", "1"});
  EXPECT_TRUE(exited_with(r.status, 2)) << show(r);
  EXPECT_NE(r.err.find("--after"), std::string::npos) << show(r);

  // Out-of-range numbers: bad usage, with the range in a line of readable length (probe40:
  // the bound of --timeout was DBL_MAX written out, over 300 digits).
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"--timeout", "0", "ping"},
                                              {"--timeout", "abc", "ping"},
                                              {"watch", "--count", "0"}}) {
    r = cli_on_daemon(bad);
    EXPECT_TRUE(exited_with(r.status, 2)) << show(r);
    EXPECT_NE(r.err.find(bad[0] == "watch" ? "--count" : "--timeout"), std::string::npos)
        << show(r);
    EXPECT_LT(r.err.find('\n'), 120u) << show(r);
  }
}

TEST_F(CliTest, QueryPrintsRowsAsTabSeparatedTextAndAsJson) {
  auto client = connect_client();
  client.execute("INSERT INTO t (id, name, score) VALUES (1, 'ann', 2.5), (2, NULL, 0.25)");

  auto r = cli_on_daemon({"query", "SELECT id, name, score FROM t ORDER BY id"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "id\tname\tscore\n1\tann\t2.5\n2\tNULL\t0.25\n");

  r = cli_on_daemon({"--json", "query", "SELECT id, name, score FROM t ORDER BY id"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out,
            "[{\"id\":1,\"name\":\"ann\",\"score\":2.5},"
            "{\"id\":2,\"name\":null,\"score\":0.25}]\n");

  r = cli_on_daemon({"query", "SELECT name FROM t WHERE id = ?", "1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "name\nann\n");

  // A tab, newline, carriage return or backslash inside a name or value is escaped: every row
  // stays one line with one field per column.
  client.execute("INSERT INTO t (id, name) VALUES (3, ?)", {std::string("a\tb\nc\rd\\e")});
  r = cli_on_daemon({"query", "SELECT name AS \"x\ty\", id FROM t WHERE id = 3"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "x\\ty\tid\na\\tb\\nc\\rd\\\\e\t3\n");
}

TEST_F(CliTest, StatsAsJsonReportRequestsAndConnections) {
  auto client = connect_client();
  client.execute("INSERT INTO t (id) VALUES (1)");
  client.execute("INSERT INTO t (id) VALUES (2)");

  const auto r = cli_on_daemon({"--json", "stats"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_TRUE(r.out.starts_with("{") && r.out.ends_with("}\n")) << r.out;
  EXPECT_GE(json_int(r.out, "requests"), 3) << r.out;     // the CREATE and the two INSERTs
  EXPECT_GE(json_int(r.out, "connections"), 2) << r.out;  // `client` and the CLI itself
  EXPECT_NE(r.out.find("\"socket\":\"" + sock_ + "\""), std::string::npos) << r.out;
}

TEST_F(CliTest, CheckpointPassiveAsJsonCopiesEveryFrameWhenNoOneReads) {
  connect_client().execute("INSERT INTO t (id) VALUES (1)");
  const auto r = cli_on_daemon({"--json", "checkpoint", "--mode", "PASSIVE"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  const std::regex expected(R"(\{"mode":"PASSIVE","busy":0,"wal_frames":([0-9]+),)"
                            R"("checkpointed_frames":([0-9]+)\}\n)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, expected)) << r.out;
  EXPECT_GT(std::stoll(m[1]), 0) << "a write was acknowledged but the WAL is empty";
  EXPECT_EQ(m[1], m[2]) << "frames were left in the WAL with no reader holding them";
}

TEST_F(CliTest, BackupWritesACopyThatSqliteCanRead) {
  connect_client().execute("INSERT INTO t (id) VALUES (1), (2), (3)");
  const std::string copy = dir_.file("backups/copy.sqlite");  // the default --backup-dir
  const auto r = cli_on_daemon({"backup", "copy.sqlite"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_NE(r.out.find(copy), std::string::npos) << r.out;
  EXPECT_EQ(count_rows(copy, "t"), 3);
}

TEST_F(CliTest, BackupToAPathFails) {
  // A name inside --backup-dir, not a path: not the database itself, nor anything else.
  connect_client().execute("INSERT INTO t (id) VALUES (1)");
  const auto r = cli_on_daemon({"backup", db_});
  EXPECT_TRUE(exited_with(r.status, 1)) << show(r);
  EXPECT_TRUE(r.err.starts_with("pasyn: ")) << show(r);
  EXPECT_EQ(count_rows(db_, "t"), 1);
}

TEST_F(CliTest, BadSqlFailsWithSqlitesMessageOnStderrAndInJson) {
  auto r = cli_on_daemon({"exec", "INSERT INTO nope VALUES (1)"});
  EXPECT_TRUE(exited_with(r.status, 1)) << show(r);
  EXPECT_TRUE(r.err.starts_with("pasyn: ")) << show(r);
  EXPECT_NE(r.err.find("no such table"), std::string::npos) << show(r);
  EXPECT_EQ(r.out, "");

  r = cli_on_daemon({"--json", "exec", "INSERT INTO nope VALUES (1)"});
  EXPECT_TRUE(exited_with(r.status, 1)) << show(r);
  EXPECT_TRUE(r.out.starts_with("{\"ok\":false,\"error\":\"")) << show(r);
  EXPECT_NE(r.out.find("no such table"), std::string::npos) << show(r);
}

TEST_F(CliTest, NeitherSocketNorInstanceIsAUsageError) {
  const auto r = cli({"ping"});
  EXPECT_TRUE(exited_with(r.status, 2)) << show(r);
  EXPECT_NE(r.err.find("--socket"), std::string::npos) << show(r);
}

TEST_F(CliTest, UnknownOrMissingSubcommandIsAUsageError) {
  auto r = cli_on_daemon({"frobnicate"});
  EXPECT_TRUE(exited_with(r.status, 2)) << show(r);
  r = cli_on_daemon({});
  EXPECT_TRUE(exited_with(r.status, 2)) << show(r);
}

// With --json, a usage error the option parser finds is JSON on stdout too (a probe got an empty
// stdout for these, where the README promises valid JSON always).
TEST_F(CliTest, WithJsonAUsageErrorIsJsonOnStdout) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--json", "exec"},
                                               {"--json", "checkpoint", "--mode", "bogus"},
                                               {"--json", "--timeout", "0", "ping"},
                                               {"--json", "frobnicate"}}) {
    const auto r = cli_on_daemon(args);
    EXPECT_TRUE(exited_with(r.status, 2)) << show(r);
    EXPECT_TRUE(r.out.starts_with("{\"ok\":false,\"error\":\"")) << show(r);
    EXPECT_TRUE(r.out.ends_with("}\n")) << show(r);
  }
}

TEST_F(CliTest, SocketNobodyListensOnFails) {
  // A stale socket file: bound once, never listened on, its socket closed.
  const std::string stale = dir_.file("stale.sock");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  const auto addr = pasyn::proto::unix_address(stale);
  ASSERT_TRUE(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr), 0);
  ::close(fd);

  for (const auto& path : {stale, dir_.file("missing.sock")}) {
    const auto r = cli({"--socket", path, "ping"});
    EXPECT_TRUE(exited_with(r.status, 1)) << path << ": " << show(r);
    EXPECT_TRUE(r.err.starts_with("pasyn: ")) << show(r);
    EXPECT_NE(r.err.find(path), std::string::npos) << "the message does not name the socket";
  }
}

TEST_F(CliTest, ShutdownStopsTheDaemonCleanly) {
  const auto r = cli_on_daemon({"shutdown"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  const auto status = daemon_.wait_exit(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "the daemon still runs after `pasyn shutdown`";
  EXPECT_TRUE(exited_with(*status, 0)) << describe_status(*status);
  EXPECT_FALSE(path_exists(sock_));
}

// ---- The operations API -----------------------------------------------------------------------

class OperationsTest : public DaemonTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_daemon());
    client_.emplace(connect_client());
    client_->execute("CREATE TABLE kv (k TEXT)");
  }
  void TearDown() override {
    client_.reset();
    DaemonTest::TearDown();
  }

  std::int64_t stat(const std::string& name) { return as_int(figure(client_->stats(), name)); }

  std::optional<pasyn::MultiplexedClient> client_;
};

TEST_F(OperationsTest, StatsCountRequestsAndBatchesThatGrowWithWrites) {
  const auto requests = stat("requests"), batches = stat("batches");
  for (int i = 0; i < 5; ++i) client_->execute("INSERT INTO kv (k) VALUES (?)", {std::int64_t{i}});
  EXPECT_GE(stat("requests"), requests + 5);
  EXPECT_GT(stat("batches"), batches);
  const auto stats = client_->stats();
  EXPECT_GT(std::get<double>(figure(stats, "mean_batch_size")), 0.0);
  EXPECT_GT(as_int(figure(stats, "commit_max_us")), 0);
  EXPECT_EQ(as_int(figure(stats, "transaction_age_ms")), -1);
  EXPECT_EQ(std::get<std::string>(figure(stats, "database")), db_);
}

TEST_F(OperationsTest, StatsReportTheDatabaseAsAnAbsolutePathWhenStartedWithARelativeOne) {
  // PROTOCOL.md §5: `database` is absolute, so that `pasyn query` works from any directory.
  Process relative;
  const std::string sock = dir_.file("rel.sock");
  relative.spawn({"/bin/sh", "-c",
                  "cd \"$0\" && exec \"$1\" --database rel.sqlite --socket rel.sock "
                  "--log-level warn",
                  dir_.path().string(), PASYN_WRITERD},
                 log_, log_);
  ASSERT_TRUE(wait_until_serving(relative, sock));
  pasyn::MultiplexedClient client(sock, bounded_options());
  EXPECT_EQ(std::get<std::string>(figure(client.stats(), "database")), dir_.file("rel.sqlite"));
  client.shutdown_server();
  EXPECT_TRUE(relative.wait_exit(kStopTimeout).has_value());
}

TEST_F(OperationsTest, StatsCountEveryOpenClientConnection) {
  // Connections close asynchronously in the daemon (the probe of start_daemon, `second`): wait.
  const auto connections_become = [&](std::int64_t n) {
    const auto deadline = Clock::now() + 5s;
    std::int64_t seen = -1;
    while ((seen = stat("connections")) != n && Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    return seen;
  };
  EXPECT_EQ(connections_become(1), 1);
  {
    auto second = connect_client();
    EXPECT_TRUE(second.ping());
    EXPECT_EQ(connections_become(2), 2);
  }
  EXPECT_EQ(connections_become(1), 1);
}

TEST_F(OperationsTest, CheckpointTruncateEmptiesTheWalWhenNoOneReads) {
  client_->execute("INSERT INTO kv (k) VALUES ('x')");
  EXPECT_GT(stat("wal_bytes"), 0) << "a write was acknowledged but the WAL is empty";
  const auto report = client_->checkpoint("TRUNCATE");
  EXPECT_EQ(std::get<std::string>(figure(report, "mode")), "TRUNCATE");
  EXPECT_EQ(as_int(figure(report, "busy")), 0);
  EXPECT_EQ(stat("wal_bytes"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM kv"), 1);
}

// A reader's snapshot keeps the frames after it from being copied back: every mode reports
// busy, PASSIVE too (which never waits, so SQLite does not say SQLITE_BUSY for it).
TEST_F(OperationsTest, CheckpointReportsBusyWhenAReaderKeptFramesInTheWal) {
  client_->execute("INSERT INTO kv (k) VALUES ('before')");
  auto reader = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  reader.begin();
  ASSERT_EQ(reader.execute_fetchall("SELECT count(*) FROM kv")[0][0],
            pasyn::Value(std::int64_t{1}));  // the snapshot is taken
  for (int i = 0; i < 20; ++i) client_->execute("INSERT INTO kv (k) VALUES ('after')");
  for (const char* mode : {"PASSIVE", "FULL"}) {
    const auto report = client_->checkpoint(mode, pasyn::Timeout{std::chrono::seconds(30)});
    EXPECT_EQ(as_int(figure(report, "busy")), 1) << mode;
    EXPECT_LT(as_int(figure(report, "checkpointed_frames")), as_int(figure(report, "wal_frames")))
        << mode;
  }
  reader.rollback();
  const auto report = client_->checkpoint("PASSIVE");
  EXPECT_EQ(as_int(figure(report, "busy")), 0);
  EXPECT_EQ(as_int(figure(report, "checkpointed_frames")), as_int(figure(report, "wal_frames")));
}

TEST_F(OperationsTest, CheckpointWithAnUnknownModeThrowsAndTheDaemonKeepsServing) {
  EXPECT_THROW(client_->checkpoint("bogus"), pasyn::ProgrammingError);
  EXPECT_EQ(client_->execute("INSERT INTO kv (k) VALUES ('after')"), 1);
}

TEST_F(OperationsTest, BackupOfAPathThrowsAndBackupOfANameCopiesIntoTheBackupDir) {
  client_->execute("INSERT INTO kv (k) VALUES ('x')");
  // Not the database, nor the files that go with it (overwriting the WAL would lose committed
  // writes), nor any path at all: BACKUP takes a file name inside --backup-dir.
  EXPECT_THROW(client_->backup(db_), pasyn::ProgrammingError);
  for (const char* suffix : {"-wal", "-shm", "-pasyn.lock"}) {
    EXPECT_THROW(client_->backup(db_ + suffix), pasyn::ProgrammingError) << suffix;
  }
  EXPECT_EQ(count_rows(db_, "kv"), 1);
  const std::string copy = dir_.file("backups/copy.sqlite");
  const auto report = client_->backup("copy.sqlite");
  EXPECT_EQ(std::get<std::string>(figure(report, "path")), copy);
  EXPECT_GT(as_int(figure(report, "pages")), 0);
  EXPECT_EQ(count_rows(copy, "kv"), 1);
  EXPECT_EQ(count_rows(db_, "kv"), 1);
}

}  // namespace
