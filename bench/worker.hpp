// pasyn-bench worker side: what every worker process shares. A worker runs in a process started
// with `--worker KIND key=value...` (see worker_protocol.hpp for what it exchanges with the
// orchestrator); its measurements live in workers_write.cpp, workers_read.cpp and
// workers_ceiling.cpp.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <pasyn/pasyn.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "stats.hpp"
#include "worker_protocol.hpp"
#include "workload.hpp"

namespace pasyn_bench {

// The key=value arguments of a worker.
using Args = std::map<std::string, std::string>;
// The value of `key`; throws when it is missing.
const std::string& arg(const Args& a, const std::string& key);
std::int64_t arg_int(const Args& a, const std::string& key);
double arg_double(const Args& a, const std::string& key);

// Client options of every pasyn client in the workers: calls bounded by kCallTimeout.
pasyn::ClientOptions client_options();

// Full read/write on a stream socket; false on EOF or error. A read that is `polling` does not
// sleep: it retries a non-blocking recv() until the bytes are there.
bool read_exact(int fd, char* buf, std::size_t n, bool polling = false);
bool write_all(int fd, const char* buf, std::size_t n);

// Lets a worker's threads finish their setup, then starts them together.
class StartGate {
 public:
  explicit StartGate(int parties) : waiting_for_(parties) {}
  // Thread: setup done. Blocks until open(); false if that did not happen in time.
  bool arrive_and_wait() {
    std::unique_lock lock(mu_);
    if (--waiting_for_ == 0) cv_.notify_all();
    return cv_.wait_for(lock, kGateTimeout, [&] { return open_; });
  }
  // Main thread: waits until every party has arrived.
  bool wait_arrivals() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kGateTimeout, [&] { return waiting_for_ <= 0; });
  }
  // Sets the shared deadline, then releases the threads (the mutex publishes the deadline).
  void open(Clock::time_point deadline) {
    {
      std::lock_guard lock(mu_);
      deadline_ = deadline;
      open_ = true;
    }
    cv_.notify_all();
  }
  Clock::time_point deadline() const {
    std::lock_guard lock(mu_);
    return deadline_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int waiting_for_;               // GUARDED_BY(mu_)
  bool open_ = false;             // GUARDED_BY(mu_)
  Clock::time_point deadline_{};  // GUARDED_BY(mu_)
};

struct ThreadStats {
  std::int64_t ops = 0;
  std::int64_t busy = 0;    // SQLITE_BUSY after busy_timeout (direct baselines only)
  std::int64_t errors = 0;  // anything else that failed
  Histogram hist;
  std::string first_error;
  void fail(const std::string& what) {
    ++errors;
    if (first_error.empty()) first_error = what;
  }
};

// Runs `body(t, gate, stats[t])` on `threads` threads, opens the gate when all are set up, lets
// them run until `seconds` after that (or to completion when seconds is 0), and reports.
template <typename Body>
void run_threads_and_report(int threads, double seconds, Body body) {
  std::vector<ThreadStats> stats(threads);
  StartGate gate(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        body(t, gate, stats[t]);
      } catch (const std::exception& e) {
        stats[t].fail(e.what());
      }
    });
  }
  // On failure the gate still opens (with a deadline already past) so that the threads end
  // and are joined before the error leaves this function.
  std::string failure;
  if (!gate.wait_arrivals()) {
    failure = "worker threads did not get ready";
  } else {
    try {
      ready_then_wait_for_go();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  const auto start = Clock::now();
  Clock::time_point deadline = start;
  if (failure.empty()) {
    deadline = seconds > 0 ? start + std::chrono::duration_cast<Clock::duration>(Seconds(seconds))
                           : Clock::time_point::max();
  }
  gate.open(deadline);
  for (auto& th : pool) th.join();
  if (!failure.empty()) throw std::runtime_error(failure);
  const double elapsed = Seconds(Clock::now() - start).count();
  ThreadStats total;
  std::int64_t fewest = std::numeric_limits<std::int64_t>::max(), most = 0;
  for (auto& s : stats) {
    fewest = std::min(fewest, s.ops);
    most = std::max(most, s.ops);
    total.ops += s.ops;
    total.busy += s.busy;
    total.errors += s.errors;
    total.hist.merge(s.hist);
    if (total.first_error.empty()) total.first_error = s.first_error;
  }
  put("ops", static_cast<double>(total.ops));
  put("busy", static_cast<double>(total.busy));
  put("thread_ops_min", static_cast<double>(fewest));
  put("thread_ops_max", static_cast<double>(most));
  put("errors", static_cast<double>(total.errors));
  put("seconds", seconds > 0 ? seconds : elapsed);
  put_hist(total.hist);
  if (!total.first_error.empty()) put_note(total.first_error);
  finish_report();
}

// The worker kinds (`--worker KIND`).
void worker_writers(const Args& a);
void worker_clients(const Args& a);
void worker_inflight(const Args& a);
void worker_many(const Args& a);
void worker_direct_txn(const Args& a);
void worker_point_select(const Args& a);
void worker_round_trip(const Args& a);
void worker_seed(const Args& a);
void worker_echo_server(const Args& a);
void worker_echo_clients(const Args& a);
void worker_commit_txns(const Args& a);
void worker_subscriber(const Args& a);

}  // namespace pasyn_bench
