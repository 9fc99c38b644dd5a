// pasyn-bench-writers: N writer threads doing one-row INSERTs, each waiting for its ack, through
// pasyn and, as the baseline in the same run, through direct SQLite connections (one per thread,
// WAL, busy_timeout, autocommit). Prints rows/s for both and the ratio.
#include <sqlite3.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Run {
  std::int64_t rows = 0;
  double seconds = 0;
  std::int64_t errors = 0;
  double rate() const { return seconds > 0 ? rows / seconds : 0; }
};

// Runs `work(thread_index, stop)` on `threads` threads for `duration`; each returns its row count.
template <typename Work>
Run run_threads(int threads, std::chrono::duration<double> duration, Work work) {
  std::atomic<bool> stop{false};
  std::vector<std::int64_t> counts(threads, 0);
  std::vector<std::thread> pool;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] { counts[t] = work(t, stop); });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& th : pool) th.join();
  Run r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto c : counts) r.rows += c;
  return r;
}

void check(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    std::fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
    std::exit(1);
  }
}

Run bench_direct(const std::string& db, int threads, std::chrono::duration<double> duration,
                 bool full) {
  std::atomic<std::int64_t> errors{0};
  Run r = run_threads(threads, duration, [&](int t, std::atomic<bool>& stop) -> std::int64_t {
    sqlite3* conn = nullptr;
    check(sqlite3_open(db.c_str(), &conn), conn, "open");
    sqlite3_busy_timeout(conn, 5000);
    check(sqlite3_exec(conn, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                       nullptr, nullptr, nullptr),
          conn, "pragma");
    sqlite3_stmt* stmt = nullptr;
    check(sqlite3_prepare_v2(conn, "INSERT INTO bench (thread, payload) VALUES (?, ?)", -1, &stmt,
                             nullptr),
          conn, "prepare");
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      sqlite3_bind_int(stmt, 1, t);
      sqlite3_bind_text(stmt, 2, "0123456789abcdef0123456789abcdef", -1, SQLITE_STATIC);
      if (sqlite3_step(stmt) == SQLITE_DONE) {
        ++n;
      } else {
        ++errors;  // SQLITE_BUSY after busy_timeout: the failure mode pasyn removes
      }
      sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
    sqlite3_close(conn);
    return n;
  });
  r.errors = errors;
  return r;
}

Run bench_pasyn(const std::string& socket, int threads, std::chrono::duration<double> duration) {
  pasyn::MultiplexedClient client(socket);
  std::atomic<std::int64_t> errors{0};
  Run r = run_threads(threads, duration, [&](int t, std::atomic<bool>& stop) -> std::int64_t {
    std::int64_t n = 0;
    const pasyn::Params params{t, "0123456789abcdef0123456789abcdef"};
    while (!stop.load(std::memory_order_relaxed)) {
      try {
        client.execute("INSERT INTO bench (thread, payload) VALUES (?, ?)", params);
        ++n;
      } catch (const pasyn::Error&) {
        ++errors;
      }
    }
    return n;
  });
  r.errors = errors;
  return r;
}

void create_table(const std::string& db) {
  sqlite3* conn = nullptr;
  check(sqlite3_open(db.c_str(), &conn), conn, "open");
  check(sqlite3_exec(conn,
                     "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS bench "
                     "(id INTEGER PRIMARY KEY, thread INTEGER, payload TEXT)",
                     nullptr, nullptr, nullptr),
        conn, "create");
  sqlite3_close(conn);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 16;
  double seconds = 3;
  std::string synchronous = "full";
  std::string dir = "/tmp";
  CLI::App app{"pasyn-bench-writers: concurrent one-row INSERTs, pasyn vs direct SQLite"};
  app.add_option("--threads", threads, "writer threads")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--seconds", seconds, "duration of each run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--synchronous", synchronous, "full or normal")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--dir", dir, "where the benchmark databases go")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const bool full = synchronous == "full";
  const std::chrono::duration<double> duration(seconds);

  char tmpl[4096];
  std::snprintf(tmpl, sizeof tmpl, "%s/pasyn-bench-XXXXXX", dir.c_str());
  if (!::mkdtemp(tmpl)) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::filesystem::path work = tmpl;

  const std::string direct_db = (work / "direct.sqlite").string();
  create_table(direct_db);
  const Run direct = bench_direct(direct_db, threads, duration, full);

  const std::string pasyn_db = (work / "pasyn.sqlite").string();
  create_table(pasyn_db);
  Run via;
  {
    pasyn::ServerOptions options;
    options.synchronous = full ? pasyn::Synchronous::kFull : pasyn::Synchronous::kNormal;
    auto server = pasyn::start_writer_server(pasyn_db, options);
    via = bench_pasyn(server.socket_path(), threads, duration);
    server.stop();
  }
  std::filesystem::remove_all(work);

  std::printf(
      "%d writer threads, one-row INSERT each waiting for its ack, synchronous=%s, %.1f s\n",
      threads, synchronous.c_str(), seconds);
  std::printf("%-34s %12s %8s\n", "", "rows/s", "errors");
  std::printf("%-34s %12.0f %8lld\n", "pasyn (one shared client)", via.rate(),
              static_cast<long long>(via.errors));
  std::printf("%-34s %12.0f %8lld\n", "direct SQLite (WAL, busy_timeout)", direct.rate(),
              static_cast<long long>(direct.errors));
  std::printf("ratio pasyn/direct: %.2fx\n", direct.rate() > 0 ? via.rate() / direct.rate() : 0.0);
  return 0;
}
