// pasyn-bench rows of many clients: 1,000 connected clients (throughput and daemon RSS) and the
// original project's multi-process read/write mix.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "rows.hpp"
#include "sqlite_direct.hpp"

namespace pasyn_bench {

std::vector<RowResult> row_clients1000(Context& ctx, const Settings& s) {
  Samples many, few;
  std::vector<double> rss_many, rss_few;
  const int per_process = s.clients / kProcesses;
  auto measure = [&](int clients_per_process, double& rss) {
    const fs::path dir = ctx.fresh_dir("clients");
    const std::string db = (dir / "bench.sqlite").string();
    create_bench_db(db);
    Daemon daemon(ctx, dir, db, false);
    std::vector<std::vector<std::string>> specs;
    for (int p = 0; p < kProcesses; ++p) {
      specs.push_back({"clients", "socket=" + daemon.socket(),
                       "clients=" + std::to_string(clients_per_process),
                       "drivers=" + std::to_string(std::min(4, clients_per_process)),
                       "seconds=" + std::to_string(s.seconds),
                       "base=" + std::to_string(p * clients_per_process)});
    }
    const Throughput t = aggregate(run_workers(ctx, specs, s.seconds + 60));
    rss = daemon.peak_rss_mib();
    daemon.stop();
    fs::remove_all(dir);
    return t;
  };
  for (int rep = 0; rep < s.count_reps; ++rep) {
    progress(ctx, rep_label("clients1000", rep, s.count_reps));
    double rss = kNaN;
    few.add(measure(4, rss));
    rss_few.push_back(rss);
    many.add(measure(per_process, rss));
    rss_many.push_back(rss);
  }
  const int total = per_process * kProcesses;
  RowResult r = throughput_row("clients1000", "rows/s", 0.8, many, few);
  r.ratio_of = "pasyn with 1,000 clients / pasyn with 16 clients";
  r.note =
      std::to_string(total) + " MultiplexedClients (4 processes x " + std::to_string(per_process) +
      ", each client with its own socket and I/O thread, 4 driver threads per process) each "
      "keeping one INSERT outstanding via execute_async, synchronous=normal, " +
      plain(s.seconds) +
      " s; baseline: 16 clients (4 processes x 4) doing the same; p50/p99 = submit-to-ack of the " +
      std::to_string(total) + "-client run; baseline p50/p99 " + figure(r.base_p50) + "/" +
      figure(r.base_p99) + " us";
  if (many.errors)
    r.note += "; pasyn errors: " + std::to_string(many.errors) + " (" + many.note + ")";
  RowResult rss;
  rss.name = "clients1000_rss_mib";
  rss.unit = "MiB";
  rss.target = 1.0;
  rss.ratio_of = "64 MiB / daemon peak RSS";
  rss.pasyn = max_of(rss_many);
  rss.baseline = 64;
  rss.ratio = rss.baseline / rss.pasyn;
  rss.extra["rss_16_clients_mib"] = max_of(rss_few);
  rss.note = "daemon peak RSS (VmHWM of /proc/PID/status, read at the end of the " +
             std::to_string(total) +
             "-client run, fresh daemon per run), worst of the repetitions; baseline column = the "
             "64 MiB limit; "
             "ratio = 64 / MiB; the 16-client daemon peaked at " +
             format("%.1f", max_of(rss_few)) + " MiB";
  return {r, rss};
}

std::vector<RowResult> row_seed(Context& ctx, const Settings& s) {
  const fs::path tmpl_dir = ctx.fresh_dir("seed-template");
  const fs::path tmpl = tmpl_dir / "seed.sqlite";
  create_users_db(tmpl.string(), s.seed_users, s.seed_events);
  constexpr int kThreads = 10;
  Samples via, direct;
  auto measure = [&](bool pasyn_side) {
    const fs::path dir = ctx.fresh_dir(pasyn_side ? "seed-pasyn" : "seed-direct");
    const std::string db = (dir / "seed.sqlite").string();
    fs::copy_file(tmpl, db);
    std::optional<Daemon> daemon;
    if (pasyn_side) daemon.emplace(ctx, dir, db, true);
    std::vector<std::vector<std::string>> specs;
    for (int p = 0; p < kProcesses; ++p) {
      specs.push_back({"seed", std::string("backend=") + (pasyn_side ? "pasyn" : "direct"),
                       "db=" + db, "socket=" + (daemon ? daemon->socket() : std::string()),
                       "threads=" + std::to_string(kThreads), "ops=" + std::to_string(s.seed_ops),
                       "users=" + std::to_string(s.seed_users), "proc=" + std::to_string(p),
                       "sync=full"});
    }
    const Throughput t = aggregate(run_workers(ctx, specs, 120));
    if (daemon) daemon->stop();
    fs::remove_all(dir);
    return t;
  };
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("seed_multiprocess", rep, s.reps));
    direct.add(measure(false));
    via.add(measure(true));
  }
  fs::remove_all(tmpl_dir);
  RowResult r = throughput_row("seed_multiprocess", "ops/s", 1.0, via, direct);
  r.ratio_of = "pasyn / direct";
  r.extra["baseline_busy"] = static_cast<double>(direct.busy);
  r.note =
      "4 processes x 10 threads, " + std::to_string(s.seed_ops) +
      " operations per process (80% reads: user by id / users in an age range LIMIT 50 / count of "
      "a user's events; 20% INSERT of an event), " +
      std::to_string(s.seed_users) + " users and " + std::to_string(s.seed_events) +
      " events pre-populated, synchronous=full; pasyn: read-only pasyn::Connection per thread, one "
      "MultiplexedClient per process for writes; baseline: one direct SQLite connection per thread "
      "(WAL, busy_timeout) for both; ops/s = all operations / slowest process's time; p50/p99 over "
      "all operations; SPEC §6 gives no target (1.0 used); baseline SQLITE_BUSY failures: " +
      std::to_string(direct.busy);
  if (via.errors) r.note += "; pasyn errors: " + std::to_string(via.errors) + " (" + via.note + ")";
  if (direct.errors)
    r.note += "; baseline errors: " + std::to_string(direct.errors) + " (" + direct.note + ")";
  return {r};
}

}  // namespace pasyn_bench
