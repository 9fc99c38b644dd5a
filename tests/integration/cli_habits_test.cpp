// The `pasyn` command line's habits (issue 13): options before or after the subcommand, a
// --timeout that bounds every request, `query --database` without a daemon, every error reported
// with a non-zero exit, always-valid JSON, explicit parameter types, Prometheus output.
#include <string>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;

class CliHabitsTest : public DaemonTest {
 protected:
  void SetUp() override {
    // A long lock wait and idle timeout: a request behind another connection's transaction waits
    // for as long as that transaction stays open (the --timeout test below).
    ASSERT_NO_FATAL_FAILURE(
        start_daemon({"--lock-wait", "60s", "--transaction-idle-timeout", "60s"}));
    connect_client().execute("CREATE TABLE t (id INTEGER, name TEXT, score REAL)");
  }

  Completed cli(std::vector<std::string> args) const {
    args.insert(args.begin(), PASYN_CLI);
    return run_to_completion(args, dir_);
  }
};

std::string show(const Completed& r) {
  return describe_status(r.status) + (r.killed ? " (killed after the timeout)" : "") +
         "\nstdout: " + r.out + "\nstderr: " + r.err;
}

TEST_F(CliHabitsTest, GlobalOptionsWorkBeforeAndAfterTheSubcommand) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--socket", sock_, "stats", "--json"},
           {"stats", "--socket", sock_, "--json"},
           {"--json", "stats", "--socket", sock_},
           {"stats", "--json", "--timeout", "5000", "--socket", sock_}}) {
    const auto r = cli(args);
    EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
    EXPECT_TRUE(r.out.starts_with("{\"version\":")) << show(r);
  }
}

TEST_F(CliHabitsTest, QueryWithDatabaseNeedsNoSocketNorDaemon) {
  connect_client().execute("INSERT INTO t VALUES (1, 'a', 0.5)");
  stop_daemon();
  const auto r = cli({"query", "--database", db_, "SELECT id, name FROM t"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "id\tname\n1\ta\n") << show(r);
}

TEST_F(CliHabitsTest, TimeoutBoundsARequestThatWaitsNotOnlyTheConnect) {
  auto holder = connect_client();
  auto tx = holder.begin();
  tx.execute("INSERT INTO t VALUES (1, 'held', 0)");
  // The exec waits behind the open transaction for up to the daemon's 60 s lock wait.
  const auto r =
      cli({"--socket", sock_, "--timeout", "500", "exec", "INSERT INTO t (id) VALUES (2)"});
  EXPECT_FALSE(r.killed) << "the CLI waited past --timeout: " << show(r);
  EXPECT_TRUE(exited_with(r.status, 75)) << show(r);  // sent: its outcome is unknown
  tx.rollback();
}

TEST_F(CliHabitsTest, EveryFailureIsReportedWithANonZeroExitNeverAnUncaughtException) {
  // std::filesystem::absolute("") throws std::filesystem::filesystem_error, not a pasyn::Error.
  const auto r = cli({"--socket", sock_, "backup", ""});
  EXPECT_TRUE(exited_with(r.status, 1)) << show(r);
  EXPECT_TRUE(r.err.starts_with("pasyn: ")) << show(r);
  const auto j = cli({"--socket", sock_, "--json", "backup", ""});
  EXPECT_TRUE(exited_with(j.status, 1)) << show(j);
  EXPECT_TRUE(j.out.starts_with("{\"ok\":false,\"error\":")) << show(j);
}

TEST_F(CliHabitsTest, JsonHasNoNanOrInfinityAndEscapesInvalidUtf8) {
  const auto r = cli({"query", "--database", db_, "--json",
                      "SELECT 1e999 AS inf, -1e999 AS minf, CAST(x'ff41c3a9' AS TEXT) AS bad"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  EXPECT_EQ(r.out, "[{\"inf\":null,\"minf\":null,\"bad\":\"\\ufffdA\xc3\xa9\"}]\n") << show(r);
}

TEST_F(CliHabitsTest, ParametersAreTypedExplicitlyWhenAsked) {
  const std::string sql = "SELECT typeof(?1), ?1, typeof(?2), typeof(?3), typeof(?4), typeof(?5)";
  const auto query = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"query", "--database", db_});
    return cli(args);
  };
  // Guessed from the text: "007" becomes the integer 7.
  auto r = query({sql, "007", "1.5", "NULL", "x", "00ff"});
  EXPECT_EQ(r.out,
            "typeof(?1)\t?1\ttypeof(?2)\ttypeof(?3)\ttypeof(?4)\ttypeof(?5)\n"
            "integer\t7\treal\tnull\ttext\ttext\n")
      << show(r);
  // --text (--text-params): all text, "007" stays "007".
  r = query({"--text", sql, "007", "1.5", "NULL", "x", "00ff"});
  EXPECT_TRUE(r.out.ends_with("\ntext\t007\ttext\ttext\ttext\ttext\n")) << show(r);
  // --typed-params: TYPE:VALUE.
  r = query({"--typed-params", sql, "text:007", "real:2", "null", "int:-3", "blob:00ff"});
  EXPECT_TRUE(r.out.ends_with("\ntext\t007\treal\tnull\tinteger\tblob\n")) << show(r);
  for (const char* bad : {"number:3", "int:x", "blob:0", "007"}) {
    r = query({"--typed-params", "SELECT ?", bad});
    EXPECT_TRUE(exited_with(r.status, 2)) << bad << ": " << show(r);  // bad usage
  }
  // The same through the daemon: a TEXT column keeps "007" only when it is bound as text.
  r = cli({"--socket", sock_, "exec", "INSERT INTO t (id, name) VALUES (1, ?)", "007"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  r = cli({"--socket", sock_, "exec", "--text", "INSERT INTO t (id, name) VALUES (2, ?)", "007"});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  r = query({"SELECT id, name FROM t ORDER BY id"});
  EXPECT_EQ(r.out, "id\tname\n1\t7\n2\t007\n") << show(r);
}

TEST_F(CliHabitsTest, StatsInPrometheusFormatHaveHelpTypeAndUnitSuffixes) {
  connect_client().execute("INSERT INTO t (id) VALUES (1)");
  const auto r = cli({"stats", "--prometheus", "--socket", sock_});
  EXPECT_TRUE(exited_with(r.status, 0)) << show(r);
  for (const char* line : {"# TYPE pasyn_requests_total counter\n",
                           "# TYPE pasyn_batches_total counter\n", "# TYPE pasyn_wal_bytes gauge\n",
                           "# TYPE pasyn_uptime_seconds gauge\n", "# HELP pasyn_requests_total "}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << show(r);
  }
  EXPECT_NE(r.out.find("pasyn_info{version=\""), std::string::npos) << show(r);
  // Real histograms, from STATS' cumulative buckets: two writes (CREATE, INSERT), each its own
  // batch of one.
  for (const char* line :
       {"# TYPE pasyn_batch_size histogram\n", "pasyn_batch_size_bucket{le=\"1\"} 2\n",
        "pasyn_batch_size_bucket{le=\"+Inf\"} 2\n", "pasyn_batch_size_sum 2\n",
        "pasyn_batch_size_count 2\n", "# TYPE pasyn_commit_seconds histogram\n",
        "pasyn_commit_seconds_bucket{le=\"0.0001\"} ", "pasyn_commit_seconds_count 2\n",
        "# TYPE pasyn_queue_wait_seconds histogram\n", "pasyn_queue_wait_seconds_count ",
        "pasyn_queue_wait_seconds_bucket{le=\"+Inf\"} "}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << show(r);
  }
  EXPECT_EQ(r.out.find("_ms "), std::string::npos) << "milliseconds are not a base unit";
  EXPECT_EQ(r.out.find("_us "), std::string::npos) << "microseconds are not a base unit";
}

}  // namespace
