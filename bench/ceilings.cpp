// pasyn-bench ceilings (see ceilings.hpp).
#include "ceilings.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <memory>

#include "sqlite_direct.hpp"

namespace pasyn_bench {

namespace {

// The echo server (with `commit`, checked against its database afterwards) and the clients
// `specs` run against it for `seconds` (`{socket}` in a spec is replaced by the server's socket).
EchoRun run_echo(Context& ctx, std::vector<std::vector<std::string>> specs, double seconds,
                 EchoCommit commit, int gather_us = 0) {
  const fs::path dir = ctx.fresh_dir("ceiling-echo");
  const std::string socket = (dir / "echo.sock").string();
  const std::string db = (dir / "bench.sqlite").string();
  std::vector<std::string> server_args{"echo_server", "socket=" + socket};
  if (commit != EchoCommit::none) {
    create_bench_db(db);
    server_args.push_back(commit == EchoCommit::full        ? "commit=full"
                          : commit == EchoCommit::pipelined ? "commit=pipelined"
                                                            : "commit=normal");
    server_args.push_back("db=" + db);
    server_args.push_back("size=" + std::to_string(kCeilingMessageSize));
    if (gather_us > 0) server_args.push_back("gather_us=" + std::to_string(gather_us));
  }
  std::vector<std::unique_ptr<WorkerProcess>> server;
  server.push_back(std::make_unique<WorkerProcess>(ctx.self, server_args));
  await_line(server, "ready", Clock::now() + std::chrono::seconds(30));
  for (auto& spec : specs) {
    for (auto& arg : spec) {
      if (arg == "{socket}") arg = "socket=" + socket;
    }
  }
  EchoRun run;
  run.clients = aggregate(run_workers(ctx, specs, seconds));
  server.front()->go();  // stop
  await_line(server, "done", Clock::now() + std::chrono::seconds(30));
  const int status = server.front()->wait(Clock::now() + std::chrono::seconds(10));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("echo server failed (" + describe_status(status) + ")");
  }
  const WorkerResult report = server.front()->result();
  const double echoed = report.num("bytes") / kCeilingMessageSize;
  if (echoed < static_cast<double>(run.clients.ops)) {
    throw std::runtime_error("the echo server echoed fewer messages than the clients counted");
  }
  if (commit != EchoCommit::none) {
    run.rows = report.num("rows");
    run.commits = report.num("commits");
    SqliteDb check(db, kDirectWriteFlags);
    Stmt count(check, "SELECT COUNT(*) FROM bench");
    if (sqlite3_step(count) != SQLITE_ROW ||
        static_cast<double>(sqlite3_column_int64(count, 0)) != run.rows || run.rows < echoed) {
      throw std::runtime_error("the group-commit server replied to rows it did not commit");
    }
  }
  fs::remove_all(dir);
  return run;
}

}  // namespace

EchoRun measure_echo(Context& ctx, int procs, int threads, double seconds, EchoCommit commit,
                     int gather_us) {
  std::vector<std::vector<std::string>> specs;
  for (int p = 0; p < procs; ++p) {
    specs.push_back({"echo_clients", "{socket}", "threads=" + std::to_string(threads),
                     "seconds=" + std::to_string(seconds),
                     "size=" + std::to_string(kCeilingMessageSize)});
  }
  return run_echo(ctx, std::move(specs), seconds, commit, gather_us);
}

EchoRun measure_echo_pipelined(Context& ctx, std::int64_t window, std::int64_t ops,
                               EchoCommit commit) {
  return run_echo(ctx,
                  {{"echo_clients", "{socket}", "window=" + std::to_string(window),
                    "ops=" + std::to_string(ops), "size=" + std::to_string(kCeilingMessageSize)}},
                  60, commit);
}

EchoRun measure_group_commit64(Context& ctx, double seconds) {
  return measure_echo(ctx, kProcesses, 64 / kProcesses, seconds, EchoCommit::full);
}

EchoRun measure_group_commit16(Context& ctx, double seconds, bool full, GroupDesign design) {
  if (design == GroupDesign::pipelined && !full) {
    throw std::logic_error("groupcommit16_pipelined is a design for synchronous=full only");
  }
  const EchoCommit commit = design == GroupDesign::pipelined ? EchoCommit::pipelined
                            : full                           ? EchoCommit::full
                                                             : EchoCommit::normal;
  return measure_echo(ctx, kProcesses, kCeilingWriters / kProcesses, seconds, commit,
                      design == GroupDesign::gathered ? kGatherMicros : 0);
}

Throughput measure_commits(Context& ctx, int rows, double seconds) {
  const fs::path dir = ctx.fresh_dir("ceiling-commit");
  const std::string db = (dir / "bench.sqlite").string();
  create_bench_db(db);
  const Throughput t =
      aggregate(run_workers(ctx,
                            {{"commit_txns", "db=" + db, "rows=" + std::to_string(rows),
                              "seconds=" + std::to_string(seconds)}},
                            seconds));
  fs::remove_all(dir);
  return t;
}

Ceilings measure_ceilings(Context& ctx, double seconds, bool durable) {
  Ceilings c;
  const Throughput ipc =
      measure_echo(ctx, kProcesses, kCeilingWriters / kProcesses, seconds).clients;
  if (ipc.errors) throw std::runtime_error("ceiling_ipc16: " + ipc.first_note);
  c.ipc16 = ipc.per_second;
  c.ipc16_p50_us = ipc.hist.quantile_us(0.50);
  c.ipc16_p99_us = ipc.hist.quantile_us(0.99);
  if (durable) {
    // The two means need less time than the throughput runs to settle.
    const double short_seconds = std::min(seconds, 2.0);
    const Throughput rtt = measure_echo(ctx, 1, 1, short_seconds).clients;
    if (rtt.errors) throw std::runtime_error("t_rtt: " + rtt.first_note);
    c.t_rtt_us = 1e6 / rtt.per_second;
    const Throughput commit = measure_commits(ctx, kCeilingWriters, short_seconds);
    if (commit.errors) throw std::runtime_error("t_commit16: " + commit.first_note);
    c.t_commit16_us = 1e6 / commit.per_second;
  }
  return c;
}

}  // namespace pasyn_bench
