// pasyn-bench rows: the SPEC §6 workloads, each measured against its baseline by worker
// processes (orchestrator side: no threads, no pasyn client). Every ratio is higher-is-better.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "orchestrator.hpp"
#include "stats.hpp"

namespace pasyn_bench {

struct Settings {
  int reps = 3;
  // Repetitions of the rows whose one run alone swings by a third or more on a noisy machine,
  // so --quick keeps three of them: the two that time a fixed count of rows rather than a
  // duration (inflight1000, execute_many_100k: each takes well under a second), and clients1000
  // (1,000 clients for --quick's 1.5 s: 0.77-1.23 in one session's quick runs, one machine,
  // where its full runs' medians were 0.96-1.28). --reps sets both.
  int count_reps = 3;
  double seconds = 5;
  bool quick = false;
  std::int64_t inflight_rows = 100000;
  std::int64_t inflight_window = 1000;
  std::int64_t many_rows = 100000;
  std::int64_t select_ops = 500000;
  int select_users = 100000;
  std::int64_t rtt_calls = 5000;
  std::int64_t rtt_warmup = 500;
  int clients = 1000;
  int seed_users = 10000;
  int seed_events = 50000;
  std::int64_t seed_ops = 1000;  // per process
  double sweep_seconds = 2;
};

inline constexpr int kProcesses = 4;

struct Throughput {
  double per_second = kNaN;
  std::int64_t ops = 0, busy = 0, errors = 0;
  double thread_ops_min = kNaN, thread_ops_max = kNaN;  // fairness across threads
  Histogram hist;
  std::string first_note;
};

// Sums the workers' operations over the longest of their times (they started together).
Throughput aggregate(const std::vector<WorkerResult>& results);

// Change-feed subscribers beside the writers of measure_writers (pasyn side only): `count`
// processes each subscribed to every table; filled in with the fewest changes one of them saw
// in the run and the gap notices they got.
struct FeedSubscribers {
  int count = 0;
  bool read = true;  // false: they subscribe and never read (stalled readers)
  double changes_min = kNaN;
  std::int64_t gaps = 0;
};

// `procs` processes × `threads` writer threads, one-row INSERTs each waiting for its ack
// (pasyn_side: through a daemon started with `daemon_flags`, and `feed`'s subscribers).
Throughput measure_writers(Context& ctx, bool pasyn_side, int procs, int threads, bool full,
                           double seconds, const std::vector<std::string>& daemon_flags = {},
                           FeedSubscribers* feed = nullptr);

// One direct connection inserting `rows` rows in one transaction at synchronous=FULL.
Throughput measure_direct_txn(Context& ctx, std::int64_t rows, bool from_params = false);

// One row of the report. Ratios are oriented so that higher is better.
struct RowResult {
  std::string name;
  std::string unit;
  double pasyn = kNaN, baseline = kNaN, ratio = kNaN, target = kNaN;
  double p50 = kNaN, p99 = kNaN, base_p50 = kNaN, base_p99 = kNaN;
  std::string ratio_of;                 // what `ratio` divides, e.g. "pasyn / direct"
  std::map<std::string, double> extra;  // further numbers for the JSON (error counts, ...)
  std::string note;
  std::string error;  // the row could not be measured
  bool pass() const { return error.empty() && !std::isnan(ratio) && ratio >= target; }
};

// Per-repetition figures of one side of a row.
struct Samples {
  std::vector<double> value, p50, p99, p999, max, thread_min, thread_max;
  std::int64_t busy = 0, errors = 0;
  std::string note;
  void add(const Throughput& t) {
    value.push_back(t.per_second);
    p50.push_back(t.hist.quantile_us(0.50));
    p99.push_back(t.hist.quantile_us(0.99));
    p999.push_back(t.hist.quantile_us(0.999));
    max.push_back(t.hist.quantile_us(1.0));
    thread_min.push_back(t.thread_ops_min);
    thread_max.push_back(t.thread_ops_max);
    busy += t.busy;
    errors += t.errors;
    if (note.empty()) note = t.first_note;
  }
};

// A row whose ratio is median(pasyn) / median(baseline).
RowResult throughput_row(const std::string& name, const std::string& unit, double target,
                         const Samples& pasyn_side, const Samples& base);

// The bound of a row (SPEC §6: a target is lowered only by a measurement that shows the bound):
// `name`, the minimal program doing only the row's work, measured in the same repetitions, and
// its figure `bound` in the row's unit. Adds bound_ratio (the bound in place of pasyn: the ratio
// the leanest design reaches on this machine) and of_bound = ratio / bound_ratio (how much of
// that pasyn reaches), both higher-is-better, and says so in the note.
void add_bound(RowResult& r, const std::string& name, double bound, bool latency = false);

// "what" on stderr when the run shows progress.
void progress(const Context& ctx, const std::string& what);
// "row rep 2/3".
std::string rep_label(const std::string& row, int rep, int reps);

// The rows, by group (rows_writers.cpp, rows_single_client.cpp, rows_many_clients.cpp).
std::vector<RowResult> row_writers16(Context& ctx, const Settings& s, bool full);
std::vector<RowResult> row_writers64(Context& ctx, const Settings& s);
std::vector<RowResult> row_feed16(Context& ctx, const Settings& s);
std::vector<RowResult> row_inflight(Context& ctx, const Settings& s);
std::vector<RowResult> row_execute_many(Context& ctx, const Settings& s);
std::vector<RowResult> row_point_select(Context& ctx, const Settings& s);
std::vector<RowResult> row_idle_round_trip(Context& ctx, const Settings& s);
std::vector<RowResult> row_clients1000(Context& ctx, const Settings& s);
std::vector<RowResult> row_seed(Context& ctx, const Settings& s);

// The rows `--only` selects by, in the order they run.
extern const std::vector<std::string> kRowNames;
// The row that produces `name` (idle_round_trip_p99 comes from idle_round_trip).
std::string canonical_row(const std::string& name);
// Measures the row `name` (one of kRowNames); throws when it cannot be measured.
std::vector<RowResult> run_row(Context& ctx, const Settings& s, const std::string& name);
// Writer throughput for 1..64 writer threads (over 4 processes from 4 on), full and normal,
// as CSV on stdout: pasyn, direct, the single-threaded group commit of the echo server
// (groupcommit16's program), the bare echo (ceiling_ipc16's) with as many clients, and pasyn
// with the batching policy's wait on (--batch-wait on; the default is off).
void run_sweep(Context& ctx, const Settings& s);

}  // namespace pasyn_bench
