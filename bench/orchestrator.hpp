// pasyn-bench orchestrator: processes, pipes and deadlines. The orchestrating process never
// creates a thread or a pasyn client (this header and its users do not include <pasyn/pasyn.hpp>):
// it starts worker processes and the real daemon, lets the workers of one run go together and
// collects their reports. Every wait is bounded; children die with this process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "worker_protocol.hpp"
#include "workload.hpp"

namespace pasyn_bench {

namespace fs = std::filesystem;

// The whole content of a file ("" when it cannot be read).
std::string read_file(const fs::path& path);

// Waits for `pid` until `deadline`, then kills it; returns the wait status.
int reap(pid_t pid, Clock::time_point deadline);

// "exit 1", "killed by signal ...".
std::string describe_status(int status);

// fork/exec `argv` with the given descriptors as stdin/stdout/stderr; the child gets
// `death_signal` when this process dies.
pid_t spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd,
            int death_signal);

// A running worker process (`self --worker ARGS...`) with a pipe to its stdin and one from its
// stdout. Used by one thread; killed on destruction if still running.
class WorkerProcess {
 public:
  WorkerProcess(const std::string& self, const std::vector<std::string>& args);
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;
  ~WorkerProcess();

  int from() const { return from_; }
  bool eof() const { return eof_; }
  const std::string& kind() const { return kind_; }
  // True when the worker has written `line` as a whole line.
  bool has_line(std::string_view line) const;
  // Reads what is available (the descriptor is readable).
  void read_some();
  // Sends the "go" byte.
  void go();
  // Waits for the exit until `deadline`, then kills; returns the wait status.
  int wait(Clock::time_point deadline);
  WorkerResult result() const { return parse_worker_report(out_); }

 private:
  std::string kind_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string out_;
  bool eof_ = false;
};

// Reads from the workers until each has printed `line`; throws on EOF first or the deadline.
void await_line(std::vector<std::unique_ptr<WorkerProcess>>& workers, std::string_view line,
                Clock::time_point deadline);

// Everything a measurement needs from the orchestrator.
struct Context {
  std::string self;    // this binary
  std::string daemon;  // pasyn-writerd
  fs::path root;       // the temporary directory of this invocation
  int run_counter = 0;
  bool progress = false;
  std::string daemon_problems;  // log lines or bad exits of daemons in the current row

  // A fresh, empty directory for one run.
  fs::path fresh_dir(const std::string& label) {
    const fs::path dir = root / (label + "-" + std::to_string(++run_counter));
    fs::create_directories(dir);
    return dir;
  }
};

// Starts the workers (one per spec: KIND key=value...), lets them go together, collects their
// reports; throws when one fails or misses its deadline.
std::vector<WorkerResult> run_workers(Context& ctx,
                                      const std::vector<std::vector<std::string>>& specs,
                                      double expected_seconds);

// True when something accepts connections on the Unix socket `path`.
bool socket_accepts(const std::string& path);

// The real pasyn-writerd, started on `database` and stopped (SIGTERM, bounded) on destruction.
class Daemon {
 public:
  // Starts the daemon (with `flags` after the bench's own) and waits (15 s at most) until its
  // socket accepts connections.
  Daemon(Context& ctx, const fs::path& dir, const std::string& database, bool full,
         const std::vector<std::string>& flags = {});
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon() { stop(); }

  const std::string& socket() const { return socket_; }
  // Peak resident set size so far (VmHWM), in MiB.
  double peak_rss_mib() const;
  // SIGTERM, then waits for the drain (bounded; SIGKILL after). Anything the daemon logged
  // (at warn level and above) or an unclean exit goes into the row's notes.
  void stop();

 private:
  Context& ctx_;
  std::string socket_;
  fs::path log_;
  pid_t pid_ = -1;
};

}  // namespace pasyn_bench
