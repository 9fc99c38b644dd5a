// pasyn-bench rows: what every row shares (aggregation, ratios, the row list, the sweep).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "ceilings.hpp"
#include "rows.hpp"
#include "sqlite_direct.hpp"

namespace pasyn_bench {

Throughput aggregate(const std::vector<WorkerResult>& results) {
  Throughput t;
  double seconds = 0;
  for (const auto& r : results) {
    t.ops += static_cast<std::int64_t>(r.num("ops"));
    if (r.values.count("busy")) t.busy += static_cast<std::int64_t>(r.num("busy"));
    if (r.values.count("errors")) t.errors += static_cast<std::int64_t>(r.num("errors"));
    if (r.values.count("thread_ops_min")) {
      const double lo = r.num("thread_ops_min"), hi = r.num("thread_ops_max");
      t.thread_ops_min = std::isnan(t.thread_ops_min) ? lo : std::min(t.thread_ops_min, lo);
      t.thread_ops_max = std::isnan(t.thread_ops_max) ? hi : std::max(t.thread_ops_max, hi);
    }
    seconds = std::max(seconds, r.num("seconds"));
    t.hist.merge(r.hist);
    if (t.first_note.empty() && !r.notes.empty()) t.first_note = r.notes.front();
  }
  t.per_second = seconds > 0 ? static_cast<double>(t.ops) / seconds : kNaN;
  return t;
}

Throughput measure_writers(Context& ctx, bool pasyn_side, int procs, int threads, bool full,
                           double seconds, const std::vector<std::string>& daemon_flags,
                           FeedSubscribers* feed) {
  const fs::path dir = ctx.fresh_dir(std::string("writers-") + (pasyn_side ? "pasyn" : "direct"));
  const std::string db = (dir / "bench.sqlite").string();
  create_bench_db(db);
  std::optional<Daemon> daemon;
  if (pasyn_side) daemon.emplace(ctx, dir, db, full, daemon_flags);
  std::vector<std::vector<std::string>> specs;
  for (int p = 0; p < procs; ++p) {
    specs.push_back({"writers", std::string("backend=") + (pasyn_side ? "pasyn" : "direct"),
                     "target=" + (pasyn_side ? daemon->socket() : db),
                     "threads=" + std::to_string(threads), "seconds=" + std::to_string(seconds),
                     std::string("sync=") + (full ? "full" : "normal"),
                     "base=" + std::to_string(p * threads)});
  }
  for (int i = 0; feed && pasyn_side && i < feed->count; ++i) {
    specs.push_back({"subscriber", "socket=" + daemon->socket(),
                     "seconds=" + std::to_string(seconds), feed->read ? "read=1" : "read=0"});
  }
  std::vector<WorkerResult> results = run_workers(ctx, specs, seconds);
  if (feed && pasyn_side) {  // the subscribers' reports follow the writers'
    feed->changes_min = kNaN;
    for (std::size_t i = static_cast<std::size_t>(procs); i < results.size(); ++i) {
      const double seen = results[i].num("changes");
      feed->changes_min = std::isnan(feed->changes_min) ? seen : std::min(feed->changes_min, seen);
      feed->gaps += static_cast<std::int64_t>(results[i].num("gaps"));
    }
    results.resize(static_cast<std::size_t>(procs));
  }
  const Throughput t = aggregate(results);
  if (daemon) daemon->stop();
  fs::remove_all(dir);
  return t;
}

Throughput measure_direct_txn(Context& ctx, std::int64_t rows, bool from_params) {
  const fs::path dir = ctx.fresh_dir("direct-txn");
  const std::string db = (dir / "bench.sqlite").string();
  create_bench_db(db);
  const Throughput t =
      aggregate(run_workers(ctx,
                            {{"direct_txn", "db=" + db, "rows=" + std::to_string(rows), "sync=full",
                              from_params ? "params=1" : "params=0"}},
                            60));
  fs::remove_all(dir);
  return t;
}

RowResult throughput_row(const std::string& name, const std::string& unit, double target,
                         const Samples& pasyn_side, const Samples& base) {
  RowResult r;
  r.name = name;
  r.unit = unit;
  r.target = target;
  r.pasyn = median(pasyn_side.value);
  r.baseline = median(base.value);
  r.ratio = r.pasyn / r.baseline;
  r.p50 = median(pasyn_side.p50);
  r.p99 = median(pasyn_side.p99);
  r.base_p50 = median(base.p50);
  r.base_p99 = median(base.p99);
  r.extra["pasyn_errors"] = static_cast<double>(pasyn_side.errors);
  r.extra["baseline_errors"] = static_cast<double>(base.errors);
  return r;
}

void add_bound(RowResult& r, const std::string& name, double bound, bool latency) {
  const double bound_ratio = latency ? r.baseline / bound : bound / r.baseline;
  r.extra[name] = bound;
  r.extra["bound_ratio"] = bound_ratio;
  r.extra["of_bound"] = r.ratio / bound_ratio;
  r.note += "; bound: " + name + " " + figure(bound) + " " + r.unit + " = ratio " +
            format("%.2f", bound_ratio) + " (bound_ratio), pasyn reaches " +
            format("%.2f", r.ratio / bound_ratio) + " of it (of_bound)";
}

void progress(const Context& ctx, const std::string& what) {
  if (ctx.progress) std::fprintf(stderr, "pasyn-bench: %s\n", what.c_str());
}

std::string rep_label(const std::string& row, int rep, int reps) {
  return row + " rep " + std::to_string(rep + 1) + "/" + std::to_string(reps);
}

const std::vector<std::string> kRowNames = {"writers16_full",    "writers16_normal",
                                            "writers64_full",    "inflight1000",
                                            "execute_many_100k", "point_select",
                                            "idle_round_trip",   "clients1000",
                                            "seed_multiprocess", "feed16"};

std::string canonical_row(const std::string& name) {
  if (name == "idle_round_trip_p50" || name == "idle_round_trip_p99") return "idle_round_trip";
  if (name == "clients1000_rss_mib") return "clients1000";
  if (name == "feed16_full" || name == "feed16_normal") return "feed16";
  return name;
}

std::vector<RowResult> run_row(Context& ctx, const Settings& s, const std::string& name) {
  if (name == "writers16_full") return row_writers16(ctx, s, true);
  if (name == "writers16_normal") return row_writers16(ctx, s, false);
  if (name == "writers64_full") return row_writers64(ctx, s);
  if (name == "inflight1000") return row_inflight(ctx, s);
  if (name == "execute_many_100k") return row_execute_many(ctx, s);
  if (name == "point_select") return row_point_select(ctx, s);
  if (name == "idle_round_trip") return row_idle_round_trip(ctx, s);
  if (name == "clients1000") return row_clients1000(ctx, s);
  if (name == "feed16") return row_feed16(ctx, s);
  return row_seed(ctx, s);
}

void run_sweep(Context& ctx, const Settings& s) {
  std::printf(
      "writers,mode,pasyn_rows_s,direct_rows_s,groupcommit_rows_s,ceiling_ipc_s,"
      "pasyn_batch_wait_on_rows_s,pasyn_other_writer_io_rows_s\n");
  std::fflush(stdout);
  for (const int writers : {1, 2, 4, 8, 16, 32, 64}) {
    const int procs = writers >= kProcesses ? kProcesses : 1;
    const int threads = writers / procs;
    progress(ctx, "sweep " + std::to_string(writers) + " writers: bare echo");
    // The machine's ceiling for this many ack-waiting clients, with no SQLite at all (the same
    // for both modes).
    const double ipc = measure_echo(ctx, procs, threads, s.sweep_seconds).clients.per_second;
    for (const bool full : {true, false}) {
      progress(ctx, "sweep " + std::to_string(writers) + " writers " + (full ? "full" : "normal"));
      const Throughput direct = measure_writers(ctx, false, procs, threads, full, s.sweep_seconds);
      const EchoRun group = measure_echo(ctx, procs, threads, s.sweep_seconds,
                                         full ? EchoCommit::full : EchoCommit::normal);
      const Throughput via = measure_writers(ctx, true, procs, threads, full, s.sweep_seconds);
      // The batching policy's effect: the same daemon waiting for the connections of the last
      // batch before each batch (--batch-wait on; the default is off).
      const Throughput waiting =
          measure_writers(ctx, true, procs, threads, full, s.sweep_seconds, {"--batch-wait", "on"});
      // The I/O layout's effect: the same daemon with the other --writer-io than its default
      // for this mode (auto: on at normal, off at full).
      const Throughput other_io = measure_writers(ctx, true, procs, threads, full, s.sweep_seconds,
                                                  {"--writer-io", full ? "on" : "off"});
      std::printf("%d,%s,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n", writers, full ? "full" : "normal",
                  via.per_second, direct.per_second, group.clients.per_second, ipc,
                  waiting.per_second, other_io.per_second);
      std::fflush(stdout);
    }
  }
}

}  // namespace pasyn_bench
