// pasyn-bench: the performance targets of SPEC §6, each pasyn figure measured against its
// baseline in the same invocation; prints a table, one JSON object (--json) or a CSV sweep.
//
// Process model
// -------------
// The orchestrating process never creates a thread or a pasyn client. It prepares databases with
// plain SQLite, starts the real daemon (fork/exec of PASYN_WRITERD) and runs every measurement
// in worker processes: fork/exec of this same binary with the hidden first argument
// `--worker KIND key=value...`. A worker sets up (connects, prepares statements, starts its
// threads), writes "ready" on stdout, waits for one byte on stdin ("go"), measures, and writes
// its results as "key value" lines ending with "done". Workers of one run start together.
//
// Every wait is bounded: pipe reads and process exits by deadlines (then SIGKILL), client calls
// by ClientOptions::request_timeout, direct SQLite writes by busy_timeout, thread start gates by
// a timeout. Workers and the daemon die with the orchestrator (PR_SET_PDEATHSIG).
//
// Files: workload.hpp (what is run), stats (histogram, medians, number formats),
// sqlite_direct (baseline connections, database preparation), worker_protocol (the text between
// a worker and the orchestrator), worker.hpp + worker_main.cpp + workers_*.cpp (the worker side),
// orchestrator (processes, the daemon), rows*.cpp (the SPEC §6 rows), ceilings (this machine's
// limits for the 16-writer rows; their workers in workers_ceiling.cpp), report (table and JSON),
// this file (options, the temporary directory, the dispatch between the two sides).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "report.hpp"
#include "rows.hpp"
#include "worker_protocol.hpp"

#ifndef PASYN_WRITERD
#error "PASYN_WRITERD must name the pasyn-writerd binary (set by bench/CMakeLists.txt)"
#endif

using namespace pasyn_bench;  // NOLINT: this file is the bench's own main

namespace {

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_./=:,+") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The temporary directory of one invocation, removed with everything in it.
class TempRoot {
 public:
  explicit TempRoot(const std::string& parent) {
    std::string tmpl = (fs::path(parent) / "pasyn-bench-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp in " + parent + " failed");
    path_ = tmpl;
  }
  TempRoot(const TempRoot&) = delete;
  TempRoot& operator=(const TempRoot&) = delete;
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Lets a thousand clients per daemon and a few hundred per worker have their descriptors.
void raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--worker") return worker_main(argc, argv);

  Settings s;
  bool json = false, sweep = false;
  std::string only;
  const char* tmpdir_env = std::getenv("TMPDIR");
  std::string dir = tmpdir_env && *tmpdir_env ? tmpdir_env : "/tmp";
  std::string daemon = PASYN_WRITERD;

  CLI::App app{"pasyn-bench: the SPEC §6 performance targets, pasyn against its baselines"};
  app.add_option("--reps", s.reps, "repetitions per row; the median is reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--seconds", s.seconds, "duration of each timed run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--quick", s.quick,
               "shorter runs, one repetition (three of inflight1000, execute_many_100k and "
               "clients1000, two of feed16), fewer rows: about a minute on 2 cores");
  app.add_flag("--json", json, "print one JSON object instead of the table");
  std::vector<std::string> accepted = kRowNames;
  accepted.insert(accepted.end(), {"idle_round_trip_p50", "idle_round_trip_p99",
                                   "clients1000_rss_mib", "feed16_full", "feed16_normal"});
  app.add_option("--only", only, "run one row")->check(CLI::IsMember(accepted));
  app.add_flag("--sweep", sweep,
               "print CSV writers,mode,pasyn_rows_s,direct_rows_s for 1..64 writers instead");
  app.add_option("--sweep-seconds", s.sweep_seconds, "duration of each sweep run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dir", dir, "where the temporary databases go")->capture_default_str();
  app.add_option("--daemon", daemon, "pasyn-writerd binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (app.count("--reps")) s.count_reps = s.reps;
  if (s.quick) {
    if (!app.count("--reps")) s.reps = 1;
    if (!app.count("--seconds")) s.seconds = 1.5;
    if (!app.count("--sweep-seconds")) s.sweep_seconds = 1;
    s.select_ops = 200000;
    s.rtt_calls = 1000;
    s.rtt_warmup = 200;
  }
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + shell_quote(argv[i]);

  ::signal(SIGPIPE, SIG_IGN);  // a dead worker's pipe must be an error, not our death
  raise_fd_limit();
  const auto wall_start = Clock::now();
  try {
    Context ctx;
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) throw std::runtime_error("cannot find this executable (/proc/self/exe)");
    ctx.self.assign(self, static_cast<std::size_t>(n));
    ctx.daemon = daemon;
    if (::access(daemon.c_str(), X_OK) != 0) throw std::runtime_error("no daemon at " + daemon);
    ctx.progress = ::isatty(2);
    TempRoot root(dir);
    ctx.root = root.path();

    if (sweep) {
      run_sweep(ctx, s);
      return 0;
    }
    std::vector<RowResult> rows;
    for (const auto& name : kRowNames) {
      if (!only.empty() && canonical_row(only) != name) continue;
      ctx.daemon_problems.clear();
      try {
        for (auto& r : run_row(ctx, s, name)) {
          if (!ctx.daemon_problems.empty()) r.note += "; daemon: " + ctx.daemon_problems;
          rows.push_back(std::move(r));
        }
      } catch (const std::exception& e) {
        RowResult r;
        r.name = name;
        r.error = e.what();
        rows.push_back(r);
      }
    }
    if (!only.empty() && canonical_row(only) != only) {
      std::erase_if(rows, [&](const RowResult& r) { return r.name != only && r.error.empty(); });
    }
    const auto machine = machine_info(ctx.root);
    const double wall = Seconds(Clock::now() - wall_start).count();
    if (json) {
      print_json(rows, machine, s, command);
    } else {
      print_table(rows, machine, s, wall);
    }
    const bool all_measured =
        std::all_of(rows.begin(), rows.end(), [](const RowResult& r) { return r.error.empty(); });
    return all_measured ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pasyn-bench: %s\n", e.what());
    return 1;
  }
}
