// pasyn-bench rows of acked writers in several processes: pasyn against direct SQLite.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "rows.hpp"
#include "sqlite_direct.hpp"

namespace pasyn_bench {

std::vector<RowResult> row_writers16(Context& ctx, const Settings& s, bool full) {
  const std::string name = full ? "writers16_full" : "writers16_normal";
  Samples via, direct;
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label(name, rep, s.reps));
    direct.add(measure_writers(ctx, false, kProcesses, 4, full, s.seconds));
    via.add(measure_writers(ctx, true, kProcesses, 4, full, s.seconds));
  }
  RowResult r = throughput_row(name, "rows/s", full ? 20 : 1.5, via, direct);
  r.extra["baseline_busy"] = static_cast<double>(direct.busy);
  r.note = "16 threads in 4 processes, one-row INSERT each waiting for its ack, synchronous=" +
           std::string(full ? "full" : "normal") + ", " + plain(s.seconds) +
           " s per run; baseline: one SQLite connection per thread (WAL, busy_timeout " +
           std::to_string(kBusyTimeoutMs) +
           " ms, autocommit); baseline SQLITE_BUSY failures: " + std::to_string(direct.busy) +
           " (not counted as rows); latency p50/p99/p99.9/max in us: pasyn " + figure(r.p50) + "/" +
           figure(r.p99) + "/" + figure(median(via.p999)) + "/" + figure(median(via.max)) +
           ", baseline " + figure(r.base_p50) + "/" + figure(r.base_p99) + "/" +
           figure(median(direct.p999)) + "/" + figure(median(direct.max)) +
           " (completed inserts only); rows per thread min/max (median of reps): pasyn " +
           format("%.0f", median(via.thread_min)) + "/" + format("%.0f", median(via.thread_max)) +
           ", baseline " + format("%.0f", median(direct.thread_min)) + "/" +
           format("%.0f", median(direct.thread_max));
  if (via.errors) r.note += "; pasyn errors: " + std::to_string(via.errors) + " (" + via.note + ")";
  if (direct.errors) r.note += "; baseline errors: " + std::to_string(direct.errors);
  return {r};
}

}  // namespace pasyn_bench
