// pasyn-bench rows of one client: a window of futures, execute_many, point SELECTs and the idle
// round trip.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "ceilings.hpp"
#include "rows.hpp"
#include "sqlite_direct.hpp"

namespace pasyn_bench {

std::vector<RowResult> row_inflight(Context& ctx, const Settings& s) {
  Samples via, direct;
  std::vector<double> bound;
  for (int rep = 0; rep < s.count_reps; ++rep) {
    progress(ctx, rep_label("inflight1000", rep, s.count_reps));
    direct.add(measure_direct_txn(ctx, s.inflight_rows));
    const EchoRun b =
        measure_echo_pipelined(ctx, s.inflight_window, s.inflight_rows, EchoCommit::full);
    if (b.clients.errors)
      throw std::runtime_error("groupcommit_pipelined: " + b.clients.first_note);
    bound.push_back(b.clients.per_second);
    const fs::path dir = ctx.fresh_dir("inflight");
    const std::string db = (dir / "bench.sqlite").string();
    create_bench_db(db);
    Daemon daemon(ctx, dir, db, true);
    via.add(aggregate(run_workers(
        ctx,
        {{"inflight", "socket=" + daemon.socket(), "rows=" + std::to_string(s.inflight_rows),
          "window=" + std::to_string(s.inflight_window)}},
        60)));
    daemon.stop();
    fs::remove_all(dir);
  }
  RowResult r = throughput_row("inflight1000", "rows/s", 0.5, via, direct);
  r.ratio_of = "pasyn / direct (one transaction)";
  r.p50 = r.p99 = r.base_p50 = r.base_p99 = kNaN;  // no per-call latency in this row
  r.note = "one thread, " + std::to_string(s.inflight_window) +
           " execute_async INSERTs in flight (a new one as the oldest completes), " +
           std::to_string(s.inflight_rows) +
           " rows, daemon synchronous=full; baseline: one direct connection, the same rows in "
           "one transaction (prepared INSERT, synchronous=FULL)";
  if (via.errors) r.note += "; pasyn errors: " + std::to_string(via.errors) + " (" + via.note + ")";
  r.note +=
      "; groupcommit_pipelined: groupcommit16's echo server at synchronous=full (each read of up "
      "to 64 KiB committed as one transaction, one INSERT per request) and one client keeping "
      "the same window of 64-byte requests in flight";
  add_bound(r, "groupcommit_pipelined", median(bound));
  return {r};
}

std::vector<RowResult> row_execute_many(Context& ctx, const Settings& s) {
  const std::uint64_t frame = kFrameHeader + 4 + kInsertSql.size() + 4 +
                              static_cast<std::uint64_t>(s.many_rows) * kManyRowSize;
  std::uint32_t max_frame = 0;  // 0: the daemon's default
  if (frame + 4096 > kDaemonDefaultMaxFrame) {
    max_frame = static_cast<std::uint32_t>(std::bit_ceil(frame * 2));
  }
  Samples via, direct;
  std::vector<double> build_share, bound;
  for (int rep = 0; rep < s.count_reps; ++rep) {
    progress(ctx, rep_label("execute_many_100k", rep, s.count_reps));
    direct.add(measure_direct_txn(ctx, s.many_rows));
    bound.push_back(measure_direct_txn(ctx, s.many_rows, true).per_second);
    const fs::path dir = ctx.fresh_dir("many");
    const std::string db = (dir / "bench.sqlite").string();
    create_bench_db(db);
    std::vector<std::string> flags;
    if (max_frame != 0) flags = {"--max-frame", std::to_string(max_frame)};
    Daemon daemon(ctx, dir, db, true, flags);
    const auto results = run_workers(
        ctx, {{"many", "socket=" + daemon.socket(), "rows=" + std::to_string(s.many_rows)}}, 60);
    via.add(aggregate(results));
    build_share.push_back(results[0].num("build_seconds") / results[0].num("seconds"));
    daemon.stop();
    fs::remove_all(dir);
  }
  RowResult r = throughput_row("execute_many_100k", "rows/s", 0.8, via, direct);
  r.ratio_of = "pasyn / direct (one transaction)";
  r.p50 = r.p99 = r.base_p50 = r.base_p99 = kNaN;
  r.extra["frame_bytes"] = static_cast<double>(frame);
  r.note = "one execute_many of " + std::to_string(s.many_rows) +
           " rows through the daemon (synchronous=full), timed from building the parameter "
           "lists (" +
           format("%.0f", median(build_share) * 100) + "% of the time) to the ack; request frame " +
           format("%.1f", static_cast<double>(frame) / (1 << 20)) + " MiB, " +
           (max_frame ? "daemon started with --max-frame " + std::to_string(max_frame)
                      : std::string("within the daemon's default --max-frame (16 MiB)")) +
           "; baseline: the same rows in one direct transaction, prepared INSERT; "
           "direct_from_params: that transaction binding the rows from the "
           "std::vector<pasyn::Params> execute_many takes, built first and timed (the call's "
           "input type, which any implementation costs)";
  add_bound(r, "direct_from_params", median(bound));
  return {r};
}

std::vector<RowResult> row_point_select(Context& ctx, const Settings& s) {
  const fs::path dir = ctx.fresh_dir("point-select");
  const std::string db = (dir / "users.sqlite").string();
  create_users_db(db, s.select_users, 0);
  Samples via, direct, bound;
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("point_select", rep, s.reps));
    const auto results =
        run_workers(ctx,
                    {{"point_select", "db=" + db, "ops=" + std::to_string(s.select_ops),
                      "users=" + std::to_string(s.select_users)}},
                    60);
    via.value.push_back(results[0].num("pasyn_ops_s"));
    direct.value.push_back(results[0].num("direct_ops_s"));
    bound.value.push_back(results[0].num("bound_ops_s"));
  }
  fs::remove_all(dir);
  RowResult r = throughput_row("point_select", "ops/s", 0.9, via, direct);
  r.ratio_of = "pasyn / direct (raw sqlite3_step)";
  r.extra.clear();
  r.note = "SELECT id, name, email, age FROM users WHERE id = ? on a " +
           std::to_string(s.select_users) + "-row table, " + std::to_string(s.select_ops) +
           " random keys, one thread: pasyn::Connection::execute_fetchone(sql, {key}) (cached "
           "statement, values copied into a Row) vs bind/step/read 4 columns/reset on a raw "
           "prepared statement, both read-only NOMUTEX connections, run "
           "raw-bound-pasyn-pasyn-bound-raw; api_types: the raw loop that also passes the key "
           "in a pasyn::Params and copies the row into a pasyn::Row, what the call's types "
           "demand of any implementation (by callgrind: raw 7,463, api_types 8,381, pasyn 8,509 "
           "instructions per SELECT)";
  add_bound(r, "api_types", median(bound.value));
  return {r};
}

std::vector<RowResult> row_idle_round_trip(Context& ctx, const Settings& s) {
  Samples via, ping, bound, polling;
  const std::vector<std::string> counts{"calls=" + std::to_string(s.rtt_calls),
                                        "warmup=" + std::to_string(s.rtt_warmup)};
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("idle_round_trip", rep, s.reps));
    std::vector<std::string> spec{"round_trip", "backend=pingpong"};
    spec.insert(spec.end(), counts.begin(), counts.end());
    ping.add(aggregate(run_workers(ctx, {spec}, 60)));

    const fs::path dir = ctx.fresh_dir("round-trip");
    const std::string db = (dir / "bench.sqlite").string();
    create_bench_db(db);
    spec.push_back("db=" + db);  // the same ping-pong, committing a row before each reply
    bound.add(aggregate(run_workers(ctx, {spec}, 60)));
    spec.push_back("poll=1");  // ... with both processes polling instead of sleeping
    polling.add(aggregate(run_workers(ctx, {spec}, 60)));
    Daemon daemon(ctx, dir, db, false);
    spec = {"round_trip", "backend=pasyn", "socket=" + daemon.socket()};
    spec.insert(spec.end(), counts.begin(), counts.end());
    via.add(aggregate(run_workers(ctx, {spec}, 60)));
    daemon.stop();
    fs::remove_all(dir);
  }
  const std::string note =
      std::to_string(s.rtt_calls) +
      " sequential one-row INSERTs from one MultiplexedClient, each waiting for its ack, "
      "synchronous=normal (after " +
      std::to_string(s.rtt_warmup) +
      " warm-up calls); baseline: ping-pong between two processes over an AF_UNIX stream "
      "socketpair, " +
      std::to_string(kInsertFrameSize) + " bytes out (the INSERT's EXECUTE frame) and " +
      std::to_string(kResultFrameSize) + " bytes back (its RESULT frame); ratio = baseline / pasyn";
  RowResult p50;
  p50.name = "idle_round_trip_p50";
  p50.unit = "us";
  p50.target = 0.67;  // SPEC §6: p50 at most 1.5x the bare ping-pong
  p50.ratio_of = "ping-pong p50 / pasyn p50";
  p50.pasyn = median(via.p50);
  p50.baseline = median(ping.p50);
  p50.ratio = p50.baseline / p50.pasyn;
  p50.p50 = p50.pasyn;
  p50.p99 = median(via.p99);
  p50.base_p50 = p50.baseline;
  p50.base_p99 = median(ping.p99);
  p50.note = note;
  const std::string bound_note =
      "; commit_pingpong: the same ping-pong, the echo process committing a one-row INSERT "
      "(BEGIN IMMEDIATE, INSERT, COMMIT; WAL, synchronous=normal) before each reply, once with "
      "both processes sleeping in read() between messages and once polling their socket "
      "(commit_pingpong_polling_us), the faster of the two bounding";
  RowResult p99 = p50;
  p99.name = "idle_round_trip_p99";
  p99.target = 0.2;  // SPEC §6: p99 at most 5x
  p99.ratio_of = "ping-pong p99 / pasyn p99";
  p99.pasyn = p50.p99;
  p99.baseline = p50.base_p99;
  p99.ratio = p99.baseline / p99.pasyn;
  p99.note = "p99 of the same runs";
  // The bound is the faster of the sleeping and the polling program, per quantile.
  const auto bound_of = [&](RowResult& r, const std::vector<double>& sleeping,
                            const std::vector<double>& polled) {
    r.note += bound_note;
    r.extra["commit_pingpong_sleeping_us"] = median(sleeping);
    r.extra["commit_pingpong_polling_us"] = median(polled);
    add_bound(r, "commit_pingpong_us", std::min(median(sleeping), median(polled)), true);
  };
  bound_of(p50, bound.p50, polling.p50);
  bound_of(p99, bound.p99, polling.p99);
  return {p50, p99};
}

}  // namespace pasyn_bench
