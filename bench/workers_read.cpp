// pasyn-bench workers that read or only round-trip: point SELECTs (pasyn::Connection against
// a raw prepared statement) and the sequential round trip (pasyn against a socketpair ping-pong).
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "batch_committer.hpp"
#include "sqlite_direct.hpp"
#include "worker.hpp"

namespace pasyn_bench {

// point_select: the same keys looked up by primary key through pasyn::Connection and through a
// raw prepared statement (same open flags as Connection: read-only, NOMUTEX), and the bound
// (run_bound), in the order raw, bound, pasyn, pasyn, bound, raw so drift during the run
// cancels out.
void worker_point_select(const Args& a) {
  const std::string path = arg(a, "db");
  const std::int64_t ops = arg_int(a, "ops");
  const std::int64_t users = arg_int(a, "users");
  SqliteDb raw_db(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  Stmt stmt(raw_db, kUserById);
  pasyn::Connection conn = pasyn::connect(path, pasyn::OpenFlags::readonly());
  std::vector<std::int64_t> keys(static_cast<std::size_t>(ops));
  std::mt19937_64 rng(42);
  for (auto& k : keys) k = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(users));

  auto run_raw = [&](std::size_t from, std::size_t to) {
    std::int64_t sum = 0;
    for (std::size_t i = from; i < to; ++i) {
      sqlite3_bind_int64(stmt, 1, keys[i]);
      if (sqlite3_step(stmt) == SQLITE_ROW) {
        sum += sqlite3_column_int64(stmt, 0) + sqlite3_column_int64(stmt, 3);
        sqlite3_column_text(stmt, 1);
        sum += sqlite3_column_bytes(stmt, 1);
        sqlite3_column_text(stmt, 2);
        sum += sqlite3_column_bytes(stmt, 2);
      }
      sqlite3_reset(stmt);
    }
    return sum;
  };
  // The bound: the raw loop plus only what the API's types demand of any implementation: the
  // key passed in a pasyn::Params, the row copied out into a pasyn::Row (a vector of Values,
  // its strings owned). No statement cache, no checks.
  auto run_bound = [&](std::size_t from, std::size_t to) {
    std::int64_t sum = 0;
    for (std::size_t i = from; i < to; ++i) {
      const pasyn::Params params{keys[i]};
      sqlite3_bind_int64(stmt, 1, std::get<std::int64_t>(params[0]));
      std::optional<pasyn::Row> row;
      if (sqlite3_step(stmt) == SQLITE_ROW) {
        row.emplace();
        row->reserve(4);
        row->emplace_back(static_cast<std::int64_t>(sqlite3_column_int64(stmt, 0)));
        for (int c = 1; c <= 2; ++c) {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
          row->emplace_back(
              std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt, c))));
        }
        row->emplace_back(static_cast<std::int64_t>(sqlite3_column_int64(stmt, 3)));
      }
      sqlite3_reset(stmt);
      if (row) {
        sum += std::get<std::int64_t>((*row)[0]) + std::get<std::int64_t>((*row)[3]);
        sum += static_cast<std::int64_t>(std::get<std::string>((*row)[1]).size() +
                                         std::get<std::string>((*row)[2]).size());
      }
    }
    return sum;
  };
  auto run_pasyn = [&](std::size_t from, std::size_t to) {
    std::int64_t sum = 0;
    for (std::size_t i = from; i < to; ++i) {
      const auto row = conn.execute_fetchone(kUserById, {keys[i]});
      if (row) {
        sum += std::get<std::int64_t>((*row)[0]) + std::get<std::int64_t>((*row)[3]);
        sum += static_cast<std::int64_t>(std::get<std::string>((*row)[1]).size() +
                                         std::get<std::string>((*row)[2]).size());
      }
    }
    return sum;
  };
  const std::size_t n = keys.size(), half = n / 2;
  const std::size_t warm = std::min<std::size_t>(n, 10000);
  run_raw(0, warm);
  run_bound(0, warm);
  run_pasyn(0, warm);
  ready_then_wait_for_go();
  double raw_s = 0, pasyn_s = 0, bound_s = 0;
  std::int64_t raw_sum = 0, pasyn_sum = 0, bound_sum = 0;
  auto timed = [](auto&& f, double& acc, std::int64_t& sum) {
    const auto t0 = Clock::now();
    sum += f();
    acc += Seconds(Clock::now() - t0).count();
  };
  timed([&] { return run_raw(0, half); }, raw_s, raw_sum);
  timed([&] { return run_bound(0, half); }, bound_s, bound_sum);
  timed([&] { return run_pasyn(0, half); }, pasyn_s, pasyn_sum);
  timed([&] { return run_pasyn(half, n); }, pasyn_s, pasyn_sum);
  timed([&] { return run_bound(half, n); }, bound_s, bound_sum);
  timed([&] { return run_raw(half, n); }, raw_s, raw_sum);
  if (raw_sum != pasyn_sum || raw_sum != bound_sum) {
    throw std::runtime_error("pasyn, bound and raw reads returned different rows");
  }
  put("pasyn_ops_s", static_cast<double>(n) / pasyn_s);
  put("direct_ops_s", static_cast<double>(n) / raw_s);
  put("bound_ops_s", static_cast<double>(n) / bound_s);
  finish_report();
}

// round_trip: sequential calls, each timed. backend=pasyn: one-row INSERT through a
// MultiplexedClient, waiting for the ack. backend=pingpong: kInsertFrameSize bytes to an echo
// process over an AF_UNIX stream socketpair, kResultFrameSize bytes back; with db=PATH the echo
// process commits a one-row INSERT at synchronous=normal before each reply (the minimal program
// doing a round trip's work, the bound of idle_round_trip); with poll=1 both processes poll their
// socket (non-blocking reads in a loop) instead of sleeping in read().
void worker_round_trip(const Args& a) {
  const std::string backend = arg(a, "backend");
  const std::int64_t calls = arg_int(a, "calls");
  const std::int64_t warmup = arg_int(a, "warmup");
  Histogram hist;
  Clock::time_point start;  // set when "go" arrives
  if (backend == "pingpong") {
    const bool polling = a.count("poll") && a.at("poll") == "1";
    // Fork the echo process first: this process has no thread yet.
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      throw std::runtime_error("socketpair failed");
    }
    const pid_t echo = ::fork();
    if (echo < 0) throw std::runtime_error("fork failed");
    if (echo == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(sv[0]);
      std::optional<BatchCommitter> committer;
      if (const auto db = a.find("db"); db != a.end()) committer.emplace(db->second, false);
      const std::vector<std::pair<std::int64_t, std::int64_t>> one_row{{1, 1}};
      char req[kInsertFrameSize], reply[kResultFrameSize] = {};
      try {
        while (read_exact(sv[1], req, sizeof req, polling)) {
          if (committer) committer->commit(one_row);
          if (!write_all(sv[1], reply, sizeof reply)) break;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "pasyn-bench ping-pong echo: %s\n", e.what());
        ::_exit(1);
      }
      ::_exit(0);
    }
    ::close(sv[1]);
    char req[kInsertFrameSize] = {}, reply[kResultFrameSize];
    auto once = [&] {
      if (!write_all(sv[0], req, sizeof req) || !read_exact(sv[0], reply, sizeof reply, polling)) {
        throw std::runtime_error("echo process went away");
      }
    };
    for (std::int64_t i = 0; i < warmup; ++i) once();
    ready_then_wait_for_go();
    start = Clock::now();
    for (std::int64_t i = 0; i < calls; ++i) {
      const auto t0 = Clock::now();
      once();
      hist.add(nanos(Clock::now() - t0));
    }
    ::close(sv[0]);  // the echo process sees EOF and exits
    for (int i = 0; i < 500 && ::waitpid(echo, nullptr, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } else {
    pasyn::MultiplexedClient client(arg(a, "socket"), client_options());
    const pasyn::Params params{std::int64_t{1}, std::string(kPayload)};
    for (std::int64_t i = 0; i < warmup; ++i) client.execute(kInsertSql, params);
    ready_then_wait_for_go();
    start = Clock::now();
    for (std::int64_t i = 0; i < calls; ++i) {
      const auto t0 = Clock::now();
      client.execute(kInsertSql, params);
      hist.add(nanos(Clock::now() - t0));
    }
  }
  put("ops", static_cast<double>(calls));
  put("seconds", Seconds(Clock::now() - start).count());
  put_hist(hist);
  finish_report();
}

// subscriber: one change feed of every table (MultiplexedClient::subscribe) read for `seconds`
// from "go": reports the changes seen and the gap notices. read=0: subscribes and never reads
// (a stalled subscriber).
void worker_subscriber(const Args& a) {
  pasyn::MultiplexedClient client(arg(a, "socket"), client_options());
  pasyn::ChangeFeed feed = client.subscribe();
  const auto run = std::chrono::duration_cast<Clock::duration>(Seconds(arg_double(a, "seconds")));
  const bool read = arg_int(a, "read") != 0;
  ready_then_wait_for_go();
  const auto end = Clock::now() + run;
  std::int64_t changes = 0, gaps = 0;
  if (!read) std::this_thread::sleep_until(end);
  while (Clock::now() < end) {
    const auto c = feed.next(std::chrono::milliseconds(50));
    if (!c) continue;
    if (c->kind == pasyn::ChangeKind::gap || c->kind == pasyn::ChangeKind::reset) {
      ++gaps;
    } else {
      ++changes;
    }
  }
  put("changes", static_cast<double>(changes));
  put("gaps", static_cast<double>(gaps));
  put("seconds", Seconds(run).count());
  finish_report();
}

}  // namespace pasyn_bench
