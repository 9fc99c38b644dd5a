// pasyn-bench ceilings (see ceilings.hpp).
#include "ceilings.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <memory>

#include "sqlite_direct.hpp"

namespace pasyn_bench {

Throughput measure_echo(Context& ctx, int procs, int threads, double seconds) {
  const fs::path dir = ctx.fresh_dir("ceiling-echo");
  const std::string socket = (dir / "echo.sock").string();
  std::vector<std::unique_ptr<WorkerProcess>> server;
  server.push_back(std::make_unique<WorkerProcess>(
      ctx.self, std::vector<std::string>{"echo_server", "socket=" + socket}));
  await_line(server, "ready", Clock::now() + std::chrono::seconds(30));
  std::vector<std::vector<std::string>> specs;
  for (int p = 0; p < procs; ++p) {
    specs.push_back({"echo_clients", "socket=" + socket, "threads=" + std::to_string(threads),
                     "seconds=" + std::to_string(seconds),
                     "size=" + std::to_string(kCeilingMessageSize)});
  }
  const Throughput t = aggregate(run_workers(ctx, specs, seconds));
  server.front()->go();  // stop
  await_line(server, "done", Clock::now() + std::chrono::seconds(30));
  const int status = server.front()->wait(Clock::now() + std::chrono::seconds(10));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("echo server failed (" + describe_status(status) + ")");
  }
  const double echoed = server.front()->result().num("bytes") / kCeilingMessageSize;
  if (echoed < static_cast<double>(t.ops)) {
    throw std::runtime_error("the echo server echoed fewer messages than the clients counted");
  }
  fs::remove_all(dir);
  return t;
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
  const Throughput ipc = measure_echo(ctx, kProcesses, kCeilingWriters / kProcesses, seconds);
  if (ipc.errors) throw std::runtime_error("ceiling_ipc16: " + ipc.first_note);
  c.ipc16 = ipc.per_second;
  c.ipc16_p50_us = ipc.hist.quantile_us(0.50);
  c.ipc16_p99_us = ipc.hist.quantile_us(0.99);
  if (durable) {
    // The two means need less time than the throughput runs to settle.
    const double short_seconds = std::min(seconds, 2.0);
    const Throughput rtt = measure_echo(ctx, 1, 1, short_seconds);
    if (rtt.errors) throw std::runtime_error("t_rtt: " + rtt.first_note);
    c.t_rtt_us = 1e6 / rtt.per_second;
    const Throughput commit = measure_commits(ctx, kCeilingWriters, short_seconds);
    if (commit.errors) throw std::runtime_error("t_commit16: " + commit.first_note);
    c.t_commit16_us = 1e6 / commit.per_second;
  }
  return c;
}

}  // namespace pasyn_bench
