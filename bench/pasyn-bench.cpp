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
// Size: ~2,000 lines; issue 11 splits it (stats, worker protocol, orchestrator, rows, report).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <pasyn/pasyn.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#ifndef PASYN_WRITERD
#error "PASYN_WRITERD must name the pasyn-writerd binary (set by bench/CMakeLists.txt)"
#endif
#ifndef PASYN_BENCH_BUILD_TYPE
#define PASYN_BENCH_BUILD_TYPE "unknown"
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ------------------------------------------------------------------------------------------------
// Workload constants shared by the orchestrator and the workers.

constexpr std::string_view kBenchSchema =
    "CREATE TABLE bench (id INTEGER PRIMARY KEY, thread INTEGER NOT NULL, payload TEXT NOT NULL)";
constexpr std::string_view kInsertSql = "INSERT INTO bench (thread, payload) VALUES (?, ?)";
constexpr std::string_view kPayload = "0123456789abcdef0123456789abcdef";

constexpr std::string_view kUsersSchema =
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,"
    " age INTEGER NOT NULL);"
    "CREATE INDEX users_age ON users(age);"
    "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, kind TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX events_user ON events(user_id);";
constexpr std::string_view kUserById = "SELECT id, name, email, age FROM users WHERE id = ?";
constexpr std::string_view kUsersByAge =
    "SELECT id, name, age FROM users WHERE age BETWEEN ? AND ? LIMIT 50";
constexpr std::string_view kCountEvents = "SELECT COUNT(*) FROM events WHERE user_id = ?";
constexpr std::string_view kInsertEvent =
    "INSERT INTO events (user_id, kind, created_at) VALUES (?, ?, ?)";
constexpr int kMinAge = 18, kMaxAge = 80;

// Wire sizes of one kInsertSql EXECUTE with (integer, 32-byte text) and of its RESULT reply,
// from proto/PROTOCOL.md: frame header u32 length + u8 type + u64 id (§2); EXECUTE = string sql +
// params (u32 count, then tag+i64, tag+u32+bytes) (§4, §5); RESULT = i64 changes, i64 last_rowid,
// u32 column_count, u32 row_count (§5). The ping-pong baseline sends exactly these sizes.
constexpr std::size_t kFrameHeader = 4 + 1 + 8;
constexpr std::size_t kInsertFrameSize =
    kFrameHeader + (4 + kInsertSql.size()) + 4 + (1 + 8) + (1 + 4 + kPayload.size());
constexpr std::size_t kResultFrameSize = kFrameHeader + 8 + 8 + 4 + 4;
// One row of kInsertSql inside EXECUTE_MANY: u32 count + integer + 32-byte text.
constexpr std::size_t kManyRowSize = 4 + (1 + 8) + (1 + 4 + kPayload.size());
constexpr std::uint32_t kDaemonDefaultMaxFrame = 16u << 20;  // ServerOptions::max_frame

constexpr auto kCallTimeout = std::chrono::seconds(60);   // one pasyn call, at most
constexpr auto kGateTimeout = std::chrono::seconds(120);  // threads waiting for "go"
constexpr int kBusyTimeoutMs = 5000;                      // direct baseline connections

// ------------------------------------------------------------------------------------------------
// Small helpers.

std::int64_t nanos(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

double median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double max_of(const std::vector<double>& v) {
  double m = kNaN;
  for (double x : v) {
    if (!std::isnan(x) && (std::isnan(m) || x > m)) m = x;
  }
  return m;
}

std::string format(const char* fmt, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// A setting or target as written: 20, 1.5, 0.9.
std::string plain(double v) { return format("%g", v); }

// A figure with about four significant digits, without exponent notation.
std::string figure(double v) {
  if (std::isnan(v)) return "-";
  const double a = std::fabs(v);
  if (a >= 1000) return format("%.0f", v);
  if (a >= 100) return format("%.1f", v);
  if (a >= 10) return format("%.2f", v);
  return format("%.3f", v);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Latency histogram in nanoseconds: exact below 64 ns, then 64 sub-buckets per power of two
// (under 1.6% error). Mergeable across threads and processes (serialised as "index:count").
class Histogram {
 public:
  void add(std::int64_t ns) {
    ++counts_[index(ns < 0 ? 0 : static_cast<std::uint64_t>(ns))];
    ++total_;
  }
  void merge(const Histogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  std::uint64_t total() const { return total_; }
  // The value at quantile q (0..1), in microseconds; NaN when empty.
  double quantile_us(double q) const {
    if (total_ == 0) return kNaN;
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return midpoint(i) / 1000.0;
    }
    return midpoint(kBuckets - 1) / 1000.0;
  }
  std::string serialize() const {
    std::string out;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      if (counts_[i] == 0) continue;
      if (!out.empty()) out += ' ';
      out += std::to_string(i) + ':' + std::to_string(counts_[i]);
    }
    return out;
  }
  void parse(std::string_view text) {
    std::istringstream in{std::string(text)};
    std::string item;
    while (in >> item) {
      const auto colon = item.find(':');
      if (colon == std::string::npos) continue;
      const auto i = std::stoull(item.substr(0, colon));
      const auto c = std::stoull(item.substr(colon + 1));
      if (i < kBuckets) {
        counts_[i] += c;
        total_ += c;
      }
    }
  }

 private:
  static constexpr std::size_t kSub = 64;
  static constexpr std::size_t kBuckets = (64 - 5) * kSub;
  static std::size_t index(std::uint64_t ns) {
    if (ns < kSub) return static_cast<std::size_t>(ns);
    const int e = std::bit_width(ns) - 1;  // ns in [2^e, 2^(e+1)), e >= 6
    return static_cast<std::size_t>(e - 5) * kSub + ((ns >> (e - 6)) & (kSub - 1));
  }
  static double midpoint(std::size_t i) {
    if (i < kSub) return static_cast<double>(i);
    const int e = static_cast<int>(i / kSub) + 5;
    const double low = std::ldexp(static_cast<double>(kSub + i % kSub), e - 6);
    return low + std::ldexp(0.5, e - 6);
  }
  std::vector<std::uint64_t> counts_ = std::vector<std::uint64_t>(kBuckets, 0);
  std::uint64_t total_ = 0;
};

// ------------------------------------------------------------------------------------------------
// Direct SQLite, used by the baselines and by the orchestrator to prepare databases.

class SqliteDb {
 public:
  SqliteDb(const std::string& path, int flags) {
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close_v2(db_);
      throw std::runtime_error("open " + path + ": " + why);
    }
    sqlite3_extended_result_codes(db_, 0);
  }
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb() { sqlite3_close_v2(db_); }
  sqlite3* get() const { return db_; }
  void exec(std::string_view sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string why = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      throw std::runtime_error(std::string(sql.substr(0, 60)) + ": " + why);
    }
  }
  // A baseline writer's connection: WAL (set in the file), busy_timeout, the given durability.
  void configure_writer(bool full) {
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    exec(full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
  }

 private:
  sqlite3* db_ = nullptr;
};

class Stmt {
 public:
  Stmt(const SqliteDb& db, std::string_view sql) {
    if (sqlite3_prepare_v3(db.get(), sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK) {
      throw std::runtime_error("prepare " + std::string(sql) + ": " + sqlite3_errmsg(db.get()));
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(stmt_); }
  operator sqlite3_stmt*() const { return stmt_; }
  void text(int i, std::string_view s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

constexpr int kDirectWriteFlags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
constexpr int kCreateFlags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

void create_bench_db(const std::string& path) {
  SqliteDb db(path, kCreateFlags);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec(kBenchSchema);
}

// users: `users` rows with ages spread over [kMinAge, kMaxAge]; events: `events` rows spread
// over the users. Deterministic.
void create_users_db(const std::string& path, int users, int events) {
  SqliteDb db(path, kCreateFlags);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec("PRAGMA synchronous=OFF");
  db.exec(kUsersSchema);
  db.exec("BEGIN");
  {
    Stmt ins(db, "INSERT INTO users (id, name, email, age) VALUES (?, ?, ?, ?)");
    std::mt19937_64 rng(7);
    for (int id = 1; id <= users; ++id) {
      const std::string name = "user" + std::to_string(id);
      const std::string email = name + "@example.com";
      sqlite3_bind_int64(ins, 1, id);
      ins.text(2, name);
      ins.text(3, email);
      sqlite3_bind_int64(ins, 4, kMinAge + static_cast<int>(rng() % (kMaxAge - kMinAge + 1)));
      if (sqlite3_step(ins) != SQLITE_DONE) throw std::runtime_error("populate users");
      sqlite3_reset(ins);
    }
    Stmt ev(db, kInsertEvent);
    for (int i = 0; i < events; ++i) {
      sqlite3_bind_int64(ev, 1, 1 + static_cast<std::int64_t>(rng() % users));
      ev.text(2, i % 2 ? "view" : "click");
      sqlite3_bind_int64(ev, 3, 1700000000 + i);
      if (sqlite3_step(ev) != SQLITE_DONE) throw std::runtime_error("populate events");
      sqlite3_reset(ev);
    }
  }
  db.exec("COMMIT");
}

// ================================================================================================
// Worker side. Runs in a process started with `--worker KIND key=value...`.

using Args = std::map<std::string, std::string>;

const std::string& arg(const Args& a, const std::string& key) {
  const auto it = a.find(key);
  if (it == a.end()) throw std::runtime_error("worker argument missing: " + key);
  return it->second;
}
std::int64_t arg_int(const Args& a, const std::string& key) { return std::stoll(arg(a, key)); }
double arg_double(const Args& a, const std::string& key) { return std::stod(arg(a, key)); }

void put(const char* key, double value) { std::printf("%s %.17g\n", key, value); }
void put_hist(const Histogram& h) { std::printf("hist %s\n", h.serialize().c_str()); }
void put_note(const std::string& text) {
  std::string line = text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::printf("note %s\n", line.c_str());
}
void finish_report() {
  std::puts("done");
  std::fflush(stdout);
}

// Tells the orchestrator this worker is set up, then waits (bounded) for its "go" byte.
void ready_then_wait_for_go() {
  std::puts("ready");
  std::fflush(stdout);
  pollfd p{0, POLLIN, 0};
  const int timeout_ms =
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(kGateTimeout).count());
  char c = 0;
  if (::poll(&p, 1, timeout_ms) <= 0 || ::read(0, &c, 1) != 1) {
    throw std::runtime_error("no go from the orchestrator");
  }
}

pasyn::ClientOptions client_options() {
  pasyn::ClientOptions o;
  o.request_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(kCallTimeout);
  return o;
}

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

// writers: `threads` threads each inserting one row at a time, waiting for each, until the
// deadline. backend=pasyn: one MultiplexedClient shared by the threads (target = socket);
// backend=direct: one SQLite connection per thread (target = database).
void worker_writers(const Args& a) {
  const std::string backend = arg(a, "backend");
  const std::string target = arg(a, "target");
  const int threads = static_cast<int>(arg_int(a, "threads"));
  const double seconds = arg_double(a, "seconds");
  const bool full = arg(a, "sync") == "full";
  const std::int64_t base = arg_int(a, "base");
  std::optional<pasyn::MultiplexedClient> client;
  if (backend == "pasyn") client.emplace(target, client_options());

  run_threads_and_report(threads, seconds, [&](int t, StartGate& gate, ThreadStats& s) {
    const std::int64_t id = base + t;
    if (client) {
      const pasyn::Params params{id, std::string(kPayload)};
      if (!gate.arrive_and_wait()) return;
      const auto deadline = gate.deadline();
      for (;;) {
        const auto t0 = Clock::now();
        if (t0 >= deadline) break;
        try {
          client->execute(kInsertSql, params);
        } catch (const pasyn::Error& e) {
          s.fail(e.what());
          continue;
        }
        const auto t1 = Clock::now();
        if (t1 <= deadline) {
          ++s.ops;
          s.hist.add(nanos(t1 - t0));
        }
      }
      return;
    }
    std::optional<SqliteDb> db;
    std::optional<Stmt> insert;
    try {
      db.emplace(target, kDirectWriteFlags);
      db->configure_writer(full);
      insert.emplace(*db, kInsertSql);
    } catch (...) {
      gate.arrive_and_wait();
      throw;
    }
    if (!gate.arrive_and_wait()) return;
    const auto deadline = gate.deadline();
    for (;;) {
      const auto t0 = Clock::now();
      if (t0 >= deadline) break;
      sqlite3_bind_int64(*insert, 1, id);
      insert->text(2, kPayload);
      const int rc = sqlite3_step(*insert);
      sqlite3_reset(*insert);
      const auto t1 = Clock::now();
      if (rc == SQLITE_DONE) {
        if (t1 <= deadline) {
          ++s.ops;
          s.hist.add(nanos(t1 - t0));
        }
      } else if ((rc & 0xff) == SQLITE_BUSY) {
        ++s.busy;  // the failure mode pasyn removes; counted, not an error of the benchmark
      } else {
        s.fail(sqlite3_errmsg(db->get()));
      }
    }
  });
}

// clients: `clients` MultiplexedClients in this process, driven by `drivers` threads, each
// client with exactly one INSERT outstanding (execute_async; resubmitted when it completes)
// until the deadline. Latency is from submission to the driver seeing the completion.
void worker_clients(const Args& a) {
  const std::string socket = arg(a, "socket");
  const int clients = static_cast<int>(arg_int(a, "clients"));
  const int drivers = static_cast<int>(arg_int(a, "drivers"));
  const double seconds = arg_double(a, "seconds");
  const std::int64_t base = arg_int(a, "base");
  std::vector<pasyn::MultiplexedClient> pool;
  pool.reserve(clients);
  for (int i = 0; i < clients; ++i) pool.emplace_back(socket, client_options());

  run_threads_and_report(drivers, seconds, [&](int d, StartGate& gate, ThreadStats& s) {
    std::vector<int> mine;
    for (int i = d; i < clients; i += drivers) mine.push_back(i);
    std::vector<pasyn::Params> params;
    for (int i : mine) params.push_back({base + i, std::string(kPayload)});
    std::vector<std::future<std::int64_t>> pending(mine.size());
    std::vector<Clock::time_point> sent(mine.size());
    if (!gate.arrive_and_wait()) return;
    const auto deadline = gate.deadline();
    std::size_t live = 0;
    auto submit = [&](std::size_t k) {
      sent[k] = Clock::now();
      try {
        pending[k] = pool[mine[k]].execute_async(kInsertSql, params[k]);
        ++live;
      } catch (const pasyn::Error& e) {
        s.fail(e.what());
      }
    };
    for (std::size_t k = 0; k < mine.size(); ++k) submit(k);
    while (live > 0) {
      for (std::size_t k = 0; k < mine.size(); ++k) {
        if (!pending[k].valid()) continue;
        --live;
        if (pending[k].wait_for(kCallTimeout) != std::future_status::ready) {
          s.fail("no reply within the call timeout");
          pending[k] = {};
          continue;
        }
        try {
          pending[k].get();
          const auto t1 = Clock::now();
          if (t1 <= deadline) {
            ++s.ops;
            s.hist.add(nanos(t1 - sent[k]));
          }
        } catch (const pasyn::Error& e) {
          s.fail(e.what());
        }
        if (Clock::now() < deadline) submit(k);
      }
    }
  });
}

// inflight: one thread keeping `window` execute_async INSERTs in flight until `rows` are done.
void worker_inflight(const Args& a) {
  pasyn::MultiplexedClient client(arg(a, "socket"), client_options());
  const std::int64_t rows = arg_int(a, "rows");
  const std::size_t window = static_cast<std::size_t>(arg_int(a, "window"));
  const std::string payload(kPayload);
  ready_then_wait_for_go();
  const auto start = Clock::now();
  std::deque<std::future<std::int64_t>> queue;
  std::int64_t submitted = 0, done = 0, errors = 0;
  std::string first_error;
  auto submit = [&] {
    queue.push_back(client.execute_async(kInsertSql, {submitted, payload}));
    ++submitted;
  };
  while (submitted < rows && queue.size() < window) submit();
  while (!queue.empty()) {
    auto& f = queue.front();
    try {
      if (f.wait_for(kCallTimeout) != std::future_status::ready) {
        throw pasyn::TimeoutError("no reply within the call timeout");
      }
      done += f.get();
    } catch (const pasyn::Error& e) {
      ++errors;
      if (first_error.empty()) first_error = e.what();
    }
    queue.pop_front();
    if (submitted < rows) submit();
  }
  put("ops", static_cast<double>(done));
  put("errors", static_cast<double>(errors));
  put("seconds", Seconds(Clock::now() - start).count());
  if (!first_error.empty()) put_note(first_error);
  finish_report();
}

// many: one execute_many of `rows` rows; the time includes building the parameter lists.
void worker_many(const Args& a) {
  pasyn::MultiplexedClient client(arg(a, "socket"), client_options());
  const std::int64_t rows = arg_int(a, "rows");
  ready_then_wait_for_go();
  const auto start = Clock::now();
  std::vector<pasyn::Params> batch;
  batch.reserve(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i) batch.push_back({i, std::string(kPayload)});
  const auto built = Clock::now();
  const std::int64_t changed = client.execute_many(kInsertSql, batch);
  const auto end = Clock::now();
  put("ops", static_cast<double>(changed));
  put("seconds", Seconds(end - start).count());
  put("build_seconds", Seconds(built - start).count());
  finish_report();
}

// direct_txn: one direct connection inserting `rows` rows in one transaction.
void worker_direct_txn(const Args& a) {
  SqliteDb db(arg(a, "db"), kDirectWriteFlags);
  db.configure_writer(arg(a, "sync") == "full");
  Stmt insert(db, kInsertSql);
  const std::int64_t rows = arg_int(a, "rows");
  ready_then_wait_for_go();
  const auto start = Clock::now();
  db.exec("BEGIN");
  for (std::int64_t i = 0; i < rows; ++i) {
    sqlite3_bind_int64(insert, 1, i);
    insert.text(2, kPayload);
    if (sqlite3_step(insert) != SQLITE_DONE) {
      throw std::runtime_error(std::string("insert: ") + sqlite3_errmsg(db.get()));
    }
    sqlite3_reset(insert);
  }
  db.exec("COMMIT");
  put("ops", static_cast<double>(rows));
  put("seconds", Seconds(Clock::now() - start).count());
  finish_report();
}

// point_select: the same keys looked up by primary key through pasyn::Connection and through a
// raw prepared statement (same open flags as Connection: read-only, NOMUTEX), in the order
// raw, pasyn, pasyn, raw so drift during the run cancels out.
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
  run_pasyn(0, warm);
  ready_then_wait_for_go();
  double raw_s = 0, pasyn_s = 0;
  std::int64_t raw_sum = 0, pasyn_sum = 0;
  auto timed = [](auto&& f, double& acc, std::int64_t& sum) {
    const auto t0 = Clock::now();
    sum += f();
    acc += Seconds(Clock::now() - t0).count();
  };
  timed([&] { return run_raw(0, half); }, raw_s, raw_sum);
  timed([&] { return run_pasyn(0, half); }, pasyn_s, pasyn_sum);
  timed([&] { return run_pasyn(half, n); }, pasyn_s, pasyn_sum);
  timed([&] { return run_raw(half, n); }, raw_s, raw_sum);
  if (raw_sum != pasyn_sum) throw std::runtime_error("pasyn and raw reads returned different rows");
  put("pasyn_ops_s", static_cast<double>(n) / pasyn_s);
  put("direct_ops_s", static_cast<double>(n) / raw_s);
  finish_report();
}

bool read_exact(int fd, char* buf, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, buf + got, n - got);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

bool write_all(int fd, const char* buf, std::size_t n) {
  std::size_t sent = 0;
  while (sent < n) {
    const ssize_t r = ::send(fd, buf + sent, n - sent, MSG_NOSIGNAL);
    if (r > 0) {
      sent += static_cast<std::size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

// round_trip: sequential calls, each timed. backend=pasyn: one-row INSERT through a
// MultiplexedClient, waiting for the ack. backend=pingpong: kInsertFrameSize bytes to an echo
// process over an AF_UNIX stream socketpair, kResultFrameSize bytes back.
void worker_round_trip(const Args& a) {
  const std::string backend = arg(a, "backend");
  const std::int64_t calls = arg_int(a, "calls");
  const std::int64_t warmup = arg_int(a, "warmup");
  Histogram hist;
  Clock::time_point start;  // set when "go" arrives
  if (backend == "pingpong") {
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
      char req[kInsertFrameSize], reply[kResultFrameSize] = {};
      while (read_exact(sv[1], req, sizeof req) && write_all(sv[1], reply, sizeof reply)) {
      }
      ::_exit(0);
    }
    ::close(sv[1]);
    char req[kInsertFrameSize] = {}, reply[kResultFrameSize];
    auto once = [&] {
      if (!write_all(sv[0], req, sizeof req) || !read_exact(sv[0], reply, sizeof reply)) {
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

// seed: the original project's workload in one process: `threads` threads sharing `ops`
// operations, 80% reads (a user by id, users in an age range LIMIT 50, count of a user's
// events: about a third each) and 20% writes (insert an event). backend=pasyn: reads on one
// read-only pasyn::Connection per thread, writes through one MultiplexedClient per process;
// backend=direct: one SQLite connection per thread (WAL, busy_timeout) for both.
void worker_seed(const Args& a) {
  const std::string backend = arg(a, "backend");
  const std::string db_path = arg(a, "db");
  const int threads = static_cast<int>(arg_int(a, "threads"));
  const std::int64_t ops = arg_int(a, "ops");
  const std::int64_t users = arg_int(a, "users");
  const std::int64_t proc = arg_int(a, "proc");
  const bool full = arg(a, "sync") == "full";
  std::optional<pasyn::MultiplexedClient> client;
  if (backend == "pasyn") client.emplace(arg(a, "socket"), client_options());

  run_threads_and_report(threads, 0, [&](int t, StartGate& gate, ThreadStats& s) {
    const std::int64_t mine = ops / threads + (t < ops % threads ? 1 : 0);
    std::mt19937_64 rng(static_cast<std::uint64_t>(proc * 1000 + t));
    std::optional<pasyn::Connection> conn;
    std::optional<SqliteDb> db;
    std::optional<Stmt> by_id, by_age, count, insert;
    try {
      if (client) {
        conn.emplace(pasyn::connect(db_path, pasyn::OpenFlags::readonly()));
      } else {
        db.emplace(db_path, kDirectWriteFlags);
        db->configure_writer(full);
        by_id.emplace(*db, kUserById);
        by_age.emplace(*db, kUsersByAge);
        count.emplace(*db, kCountEvents);
        insert.emplace(*db, kInsertEvent);
      }
    } catch (...) {
      gate.arrive_and_wait();
      throw;
    }
    if (!gate.arrive_and_wait()) return;
    auto drain = [&](Stmt& st) {  // steps a read to the end; returns SQLite's final code
      int rc;
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < sqlite3_column_count(st); ++c) sqlite3_column_text(st, c);
      }
      sqlite3_reset(st);
      return rc;
    };
    const auto deadline = gate.deadline();  // only set when the run is cancelled
    for (std::int64_t i = 0; i < mine && Clock::now() < deadline; ++i) {
      const int dice = static_cast<int>(rng() % 100);
      const std::int64_t user = 1 + static_cast<std::int64_t>(rng() % users);
      const std::int64_t age = kMinAge + static_cast<std::int64_t>(rng() % (kMaxAge - kMinAge));
      const std::int64_t now = 1800000000 + i;
      const auto t0 = Clock::now();
      int rc = SQLITE_DONE;
      try {
        if (client) {
          if (dice < 20) {
            client->execute(kInsertEvent, {user, std::string("click"), now});
          } else if (dice < 47) {
            conn->execute_fetchone(kUserById, {user});
          } else if (dice < 74) {
            conn->execute_fetchall(kUsersByAge, {age, age + 5});
          } else {
            conn->execute_fetchone(kCountEvents, {user});
          }
        } else if (dice < 20) {
          sqlite3_bind_int64(*insert, 1, user);
          insert->text(2, "click");
          sqlite3_bind_int64(*insert, 3, now);
          rc = sqlite3_step(*insert);
          sqlite3_reset(*insert);
        } else if (dice < 47) {
          sqlite3_bind_int64(*by_id, 1, user);
          rc = drain(*by_id);
        } else if (dice < 74) {
          sqlite3_bind_int64(*by_age, 1, age);
          sqlite3_bind_int64(*by_age, 2, age + 5);
          rc = drain(*by_age);
        } else {
          sqlite3_bind_int64(*count, 1, user);
          rc = drain(*count);
        }
      } catch (const pasyn::Error& e) {
        s.fail(e.what());
        continue;
      }
      if ((rc & 0xff) == SQLITE_BUSY) {
        ++s.busy;
      } else if (rc != SQLITE_DONE) {
        s.fail(sqlite3_errmsg(db->get()));
      } else {
        ++s.ops;
        s.hist.add(nanos(Clock::now() - t0));
      }
    }
  });
}

int worker_main(int argc, char** argv) {
  const std::string kind = argc > 2 ? argv[2] : "";
  Args a;
  for (int i = 3; i < argc; ++i) {
    const std::string kv = argv[i];
    const auto eq = kv.find('=');
    if (eq != std::string::npos) a[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  try {
    if (kind == "writers") {
      worker_writers(a);
    } else if (kind == "clients") {
      worker_clients(a);
    } else if (kind == "inflight") {
      worker_inflight(a);
    } else if (kind == "many") {
      worker_many(a);
    } else if (kind == "direct_txn") {
      worker_direct_txn(a);
    } else if (kind == "point_select") {
      worker_point_select(a);
    } else if (kind == "round_trip") {
      worker_round_trip(a);
    } else if (kind == "seed") {
      worker_seed(a);
    } else {
      throw std::runtime_error("unknown worker kind '" + kind + "'");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pasyn-bench worker %s: %s\n", kind.c_str(), e.what());
    return 1;
  }
  return 0;
}

// ================================================================================================
// Orchestrator side: no threads, no pasyn clients; processes, pipes and deadlines.

// Waits for `pid` until `deadline`, then kills it; returns the wait status.
int reap(pid_t pid, Clock::time_point deadline) {
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::string describe_status(int status) {
  if (status == -1) return "vanished";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// fork/exec `argv` with the given descriptors as stdin/stdout/stderr; the child gets
// `death_signal` when this process dies.
pid_t spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd,
            int death_signal) {
  std::vector<char*> cargv;
  for (const auto& s : argv) cargv.push_back(const_cast<char*>(s.c_str()));
  cargv.push_back(nullptr);
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, death_signal);
    if (::getppid() != parent) ::_exit(127);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(in_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  return pid;
}

struct WorkerResult {
  std::map<std::string, double> values;
  Histogram hist;
  std::vector<std::string> notes;
  double num(const std::string& key) const {
    const auto it = values.find(key);
    if (it == values.end()) throw std::runtime_error("worker reported no '" + key + "'");
    return it->second;
  }
};

// A running worker process with a pipe to its stdin and one from its stdout.
class WorkerProcess {
 public:
  WorkerProcess(const std::string& self, const std::vector<std::string>& args) {
    kind_ = args.empty() ? "" : args.front();
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    if (::pipe2(out, O_CLOEXEC) != 0) {
      ::close(in[0]);
      ::close(in[1]);
      throw std::runtime_error("pipe failed");
    }
    std::vector<std::string> argv{self, "--worker"};
    argv.insert(argv.end(), args.begin(), args.end());
    try {
      pid_ = spawn(argv, in[0], out[1], 2, SIGKILL);
    } catch (...) {
      for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
      throw;
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;
  ~WorkerProcess() {
    if (to_ >= 0) ::close(to_);
    if (from_ >= 0) ::close(from_);
    if (pid_ > 0) reap(pid_, Clock::now());  // still running only on an error path: kill it
  }

  int from() const { return from_; }
  bool eof() const { return eof_; }
  const std::string& kind() const { return kind_; }
  bool has_line(std::string_view line) const {
    const std::string needle = "\n" + std::string(line) + "\n";
    return ("\n" + out_).find(needle) != std::string::npos;
  }
  // Reads what is available (the descriptor is readable).
  void read_some() {
    char buf[65536];
    const ssize_t n = ::read(from_, buf, sizeof buf);
    if (n > 0) {
      out_.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      eof_ = true;
    }
  }
  void go() {
    const char c = 'g';
    if (::write(to_, &c, 1) != 1) throw std::runtime_error("worker " + kind_ + " went away");
  }
  int wait(Clock::time_point deadline) {
    const int status = reap(pid_, deadline);
    pid_ = -1;
    return status;
  }
  WorkerResult result() const {
    WorkerResult r;
    std::istringstream in(out_);
    std::string line;
    while (std::getline(in, line)) {
      const auto sp = line.find(' ');
      if (sp == std::string::npos) continue;  // "ready", "done"
      const std::string key = line.substr(0, sp), value = line.substr(sp + 1);
      if (key == "hist") {
        r.hist.parse(value);
      } else if (key == "note") {
        r.notes.push_back(value);
      } else {
        r.values[key] = std::strtod(value.c_str(), nullptr);
      }
    }
    return r;
  }

 private:
  std::string kind_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string out_;
  bool eof_ = false;
};

// Reads from the workers until each has printed `line`; throws on EOF first or the deadline.
void await_line(std::vector<std::unique_ptr<WorkerProcess>>& workers, std::string_view line,
                Clock::time_point deadline) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<WorkerProcess*> owners;
    for (auto& w : workers) {
      if (w->has_line(line)) continue;
      if (w->eof()) {
        const int status = w->wait(Clock::now() + std::chrono::seconds(5));
        throw std::runtime_error("worker " + w->kind() + " ended before '" + std::string(line) +
                                 "' (" + describe_status(status) + ")");
      }
      fds.push_back({w->from(), POLLIN, 0});
      owners.push_back(w.get());
    }
    if (fds.empty()) return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error("workers did not report '" + std::string(line) + "' in time");
    }
    const int n = ::poll(fds.data(), fds.size(),
                         static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) throw std::runtime_error("poll failed");
    for (std::size_t i = 0; n > 0 && i < fds.size(); ++i) {
      if (fds[i].revents != 0) owners[i]->read_some();
    }
  }
}

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

// Starts the workers, lets them go together, collects their reports.
std::vector<WorkerResult> run_workers(Context& ctx,
                                      const std::vector<std::vector<std::string>>& specs,
                                      double expected_seconds) {
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (const auto& spec : specs) workers.push_back(std::make_unique<WorkerProcess>(ctx.self, spec));
  await_line(workers, "ready", Clock::now() + std::chrono::seconds(120));
  for (auto& w : workers) w->go();
  await_line(
      workers, "done",
      Clock::now() + std::chrono::duration_cast<Clock::duration>(Seconds(expected_seconds + 180)));
  std::vector<WorkerResult> results;
  for (auto& w : workers) {
    const int status = w->wait(Clock::now() + std::chrono::seconds(30));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("worker " + w->kind() + " failed (" + describe_status(status) + ")");
    }
    results.push_back(w->result());
  }
  return results;
}

bool socket_accepts(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// The real pasyn-writerd, started on `database` and stopped (SIGTERM, bounded) on destruction.
class Daemon {
 public:
  Daemon(Context& ctx, const fs::path& dir, const std::string& database, bool full,
         std::uint32_t max_frame = 0)
      : ctx_(ctx), socket_((dir / "pasyn.sock").string()), log_(dir / "daemon.log") {
    std::vector<std::string> argv{ctx.daemon,
                                  "--database",
                                  database,
                                  "--socket",
                                  socket_,
                                  "--synchronous",
                                  full ? "full" : "normal",
                                  "--log-level",
                                  "warn"};
    if (max_frame != 0) {
      argv.push_back("--max-frame");
      argv.push_back(std::to_string(max_frame));
    }
    const int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || null_fd < 0) throw std::runtime_error("cannot open the daemon's log");
    try {
      pid_ = spawn(argv, null_fd, log_fd, log_fd, SIGTERM);
    } catch (...) {
      ::close(log_fd);
      ::close(null_fd);
      throw;
    }
    ::close(log_fd);
    ::close(null_fd);
    const auto deadline = Clock::now() + std::chrono::seconds(15);
    while (!socket_accepts(socket_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("pasyn-writerd exited at start (" + describe_status(status) +
                                 "): " + read_file(log_));
      }
      if (Clock::now() >= deadline) {
        stop();
        throw std::runtime_error("pasyn-writerd did not accept connections within 15 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon() { stop(); }

  const std::string& socket() const { return socket_; }
  // Peak resident set size so far (VmHWM), in MiB.
  double peak_rss_mib() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    }
    return kNaN;
  }
  // SIGTERM, then waits for the drain (bounded; SIGKILL after). Anything the daemon logged
  // (at warn level and above) or an unclean exit goes into the row's notes.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const int status = reap(pid_, Clock::now() + std::chrono::seconds(60));
    pid_ = -1;
    std::string problem;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) problem = describe_status(status);
    std::string log = read_file(log_);
    if (!log.empty()) {
      std::replace(log.begin(), log.end(), '\n', ' ');
      problem += (problem.empty() ? "" : ", ") + std::string("log: ") + log.substr(0, 300);
    }
    if (!problem.empty() && ctx_.daemon_problems.size() < 1000) {
      ctx_.daemon_problems += "[pasyn-writerd " + problem + "] ";
    }
  }

 private:
  Context& ctx_;
  std::string socket_;
  fs::path log_;
  pid_t pid_ = -1;
};

// ------------------------------------------------------------------------------------------------
// Measurements.

struct Settings {
  int reps = 3;
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

constexpr int kProcesses = 4;

struct Throughput {
  double per_second = kNaN;
  std::int64_t ops = 0, busy = 0, errors = 0;
  double thread_ops_min = kNaN, thread_ops_max = kNaN;  // fairness across threads
  Histogram hist;
  std::string first_note;
};

// Sums the workers' operations over the longest of their times (they started together).
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

// `procs` processes × `threads` writer threads, one-row INSERTs each waiting for its ack.
Throughput measure_writers(Context& ctx, bool pasyn_side, int procs, int threads, bool full,
                           double seconds) {
  const fs::path dir = ctx.fresh_dir(std::string("writers-") + (pasyn_side ? "pasyn" : "direct"));
  const std::string db = (dir / "bench.sqlite").string();
  create_bench_db(db);
  std::optional<Daemon> daemon;
  if (pasyn_side) daemon.emplace(ctx, dir, db, full);
  std::vector<std::vector<std::string>> specs;
  for (int p = 0; p < procs; ++p) {
    specs.push_back({"writers", std::string("backend=") + (pasyn_side ? "pasyn" : "direct"),
                     "target=" + (pasyn_side ? daemon->socket() : db),
                     "threads=" + std::to_string(threads), "seconds=" + std::to_string(seconds),
                     std::string("sync=") + (full ? "full" : "normal"),
                     "base=" + std::to_string(p * threads)});
  }
  const Throughput t = aggregate(run_workers(ctx, specs, seconds));
  if (daemon) daemon->stop();
  fs::remove_all(dir);
  return t;
}

// One row of the report. Ratios are oriented so that higher is better.
struct RowResult {
  std::string name;
  std::string unit;
  double pasyn = kNaN, baseline = kNaN, ratio = kNaN, target = kNaN;
  double p50 = kNaN, p99 = kNaN, base_p50 = kNaN, base_p99 = kNaN;
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

void progress(const Context& ctx, const std::string& what) {
  if (ctx.progress) std::fprintf(stderr, "pasyn-bench: %s\n", what.c_str());
}

std::string rep_label(const std::string& row, int rep, int reps) {
  return row + " rep " + std::to_string(rep + 1) + "/" + std::to_string(reps);
}

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

Throughput measure_direct_txn(Context& ctx, std::int64_t rows) {
  const fs::path dir = ctx.fresh_dir("direct-txn");
  const std::string db = (dir / "bench.sqlite").string();
  create_bench_db(db);
  const Throughput t = aggregate(run_workers(
      ctx, {{"direct_txn", "db=" + db, "rows=" + std::to_string(rows), "sync=full"}}, 60));
  fs::remove_all(dir);
  return t;
}

std::vector<RowResult> row_inflight(Context& ctx, const Settings& s) {
  Samples via, direct;
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("inflight1000", rep, s.reps));
    direct.add(measure_direct_txn(ctx, s.inflight_rows));
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
  r.p50 = r.p99 = r.base_p50 = r.base_p99 = kNaN;  // no per-call latency in this row
  r.note = "one thread, " + std::to_string(s.inflight_window) +
           " execute_async INSERTs in flight (a new one as the oldest completes), " +
           std::to_string(s.inflight_rows) +
           " rows, daemon synchronous=full; baseline: one direct connection, the same rows in "
           "one transaction (prepared INSERT, synchronous=FULL)";
  if (via.errors) r.note += "; pasyn errors: " + std::to_string(via.errors) + " (" + via.note + ")";
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
  std::vector<double> build_share;
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("execute_many_100k", rep, s.reps));
    direct.add(measure_direct_txn(ctx, s.many_rows));
    const fs::path dir = ctx.fresh_dir("many");
    const std::string db = (dir / "bench.sqlite").string();
    create_bench_db(db);
    Daemon daemon(ctx, dir, db, true, max_frame);
    const auto results = run_workers(
        ctx, {{"many", "socket=" + daemon.socket(), "rows=" + std::to_string(s.many_rows)}}, 60);
    via.add(aggregate(results));
    build_share.push_back(results[0].num("build_seconds") / results[0].num("seconds"));
    daemon.stop();
    fs::remove_all(dir);
  }
  RowResult r = throughput_row("execute_many_100k", "rows/s", 0.8, via, direct);
  r.p50 = r.p99 = r.base_p50 = r.base_p99 = kNaN;
  r.extra["frame_bytes"] = static_cast<double>(frame);
  r.note = "one execute_many of " + std::to_string(s.many_rows) +
           " rows through the daemon (synchronous=full), timed from building the parameter "
           "lists (" +
           format("%.0f", median(build_share) * 100) + "% of the time) to the ack; request frame " +
           format("%.1f", static_cast<double>(frame) / (1 << 20)) + " MiB, " +
           (max_frame ? "daemon started with --max-frame " + std::to_string(max_frame)
                      : std::string("within the daemon's default --max-frame (16 MiB)")) +
           "; baseline: the same rows in one direct transaction, prepared INSERT";
  return {r};
}

std::vector<RowResult> row_point_select(Context& ctx, const Settings& s) {
  const fs::path dir = ctx.fresh_dir("point-select");
  const std::string db = (dir / "users.sqlite").string();
  create_users_db(db, s.select_users, 0);
  Samples via, direct;
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("point_select", rep, s.reps));
    const auto results =
        run_workers(ctx,
                    {{"point_select", "db=" + db, "ops=" + std::to_string(s.select_ops),
                      "users=" + std::to_string(s.select_users)}},
                    60);
    via.value.push_back(results[0].num("pasyn_ops_s"));
    direct.value.push_back(results[0].num("direct_ops_s"));
  }
  fs::remove_all(dir);
  RowResult r = throughput_row("point_select", "ops/s", 0.9, via, direct);
  r.extra.clear();
  r.note = "SELECT id, name, email, age FROM users WHERE id = ? on a " +
           std::to_string(s.select_users) + "-row table, " + std::to_string(s.select_ops) +
           " random keys, one thread: pasyn::Connection::execute_fetchone(sql, {key}) (cached "
           "statement, values copied into a Row) vs bind/step/read 4 columns/reset on a raw "
           "prepared statement, both read-only NOMUTEX connections, run raw-pasyn-pasyn-raw";
  return {r};
}

std::vector<RowResult> row_idle_round_trip(Context& ctx, const Settings& s) {
  Samples via, ping;
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
  p50.target = 0.5;
  p50.pasyn = median(via.p50);
  p50.baseline = median(ping.p50);
  p50.ratio = p50.baseline / p50.pasyn;
  p50.p50 = p50.pasyn;
  p50.p99 = median(via.p99);
  p50.base_p50 = p50.baseline;
  p50.base_p99 = median(ping.p99);
  p50.note = note;
  RowResult p99 = p50;
  p99.name = "idle_round_trip_p99";
  p99.target = 0.2;
  p99.pasyn = p50.p99;
  p99.baseline = p50.base_p99;
  p99.ratio = p99.baseline / p99.pasyn;
  p99.note = "p99 of the same runs";
  return {p50, p99};
}

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
  for (int rep = 0; rep < s.reps; ++rep) {
    progress(ctx, rep_label("clients1000", rep, s.reps));
    double rss = kNaN;
    few.add(measure(4, rss));
    rss_few.push_back(rss);
    many.add(measure(per_process, rss));
    rss_many.push_back(rss);
  }
  const int total = per_process * kProcesses;
  RowResult r = throughput_row("clients1000", "rows/s", 0.8, many, few);
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

// ------------------------------------------------------------------------------------------------
// Reporting.

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (std::isnan(v) || std::isinf(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::map<std::string, std::string> machine_info(const fs::path& temp_root) {
  std::map<std::string, std::string> m;  // values are JSON
  {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("model name", 0) == 0) {
        m["cpu"] = json_string(line.substr(line.find(':') + 2));
        break;
      }
    }
  }
  m["cores"] = std::to_string(std::thread::hardware_concurrency());
  {
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kib = 0;
    if (in >> key >> kib) m["memory_mib"] = json_number(std::round(kib / 1024));
  }
  utsname u{};
  if (::uname(&u) == 0) {
    m["kernel"] = json_string(std::string(u.sysname) + " " + u.release + " " + u.machine);
  }
  struct statfs st {};
  std::string fs_name = "other";
  if (::statfs(temp_root.c_str(), &st) == 0) {
    switch (static_cast<unsigned long>(st.f_type)) {
      case 0xEF53:
        fs_name = "ext2/3/4";
        break;
      case 0x01021994:
        fs_name = "tmpfs";
        break;
      case 0x58465342:
        fs_name = "xfs";
        break;
      case 0x9123683E:
        fs_name = "btrfs";
        break;
      case 0x794C7630:
        fs_name = "overlayfs";
        break;
      default:
        break;
    }
  }
  m["temp_dir"] = json_string(temp_root.parent_path().string());
  m["temp_fs"] = json_string(fs_name);
  m["sqlite"] = json_string(sqlite3_libversion());
  m["compiler"] = json_string(__VERSION__);
  m["build_type"] = json_string(PASYN_BENCH_BUILD_TYPE);
  m["pasyn"] = json_string(PASYN_VERSION_STRING);
  return m;
}

void print_json(const std::vector<RowResult>& rows,
                const std::map<std::string, std::string>& machine, const Settings& s,
                const std::string& command) {
  std::string out = "{\"rows\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const RowResult& r = rows[i];
    out += i ? ",\n  {" : "\n  {";
    out += "\"name\": " + json_string(r.name);
    out += ", \"ratio\": " + json_number(r.ratio);
    out += ", \"target\": " + json_number(r.target);
    out += ", \"pasyn\": " + json_number(r.pasyn);
    out += ", \"baseline\": " + json_number(r.baseline);
    out += ", \"unit\": " + json_string(r.unit);
    out += ", \"p50_us\": " + json_number(r.p50);
    out += ", \"p99_us\": " + json_number(r.p99);
    out += ", \"pass\": " + std::string(r.pass() ? "true" : "false");
    out += ", \"baseline_p50_us\": " + json_number(r.base_p50);
    out += ", \"baseline_p99_us\": " + json_number(r.base_p99);
    for (const auto& [k, v] : r.extra) out += ", " + json_string(k) + ": " + json_number(v);
    if (!r.error.empty()) out += ", \"error\": " + json_string(r.error);
    out += ", \"note\": " + json_string(r.note) + "}";
  }
  out += "\n],\n\"machine\": {";
  bool first = true;
  for (const auto& [k, v] : machine) {
    out += (first ? "" : ", ") + json_string(k) + ": " + v;
    first = false;
  }
  out += "},\n\"settings\": {\"reps\": " + std::to_string(s.reps) +
         ", \"seconds\": " + json_number(s.seconds) +
         ", \"quick\": " + (s.quick ? "true" : "false") +
         ", \"statistic\": \"median over reps of each figure; ratio = median(pasyn) / "
         "median(baseline), or baseline / pasyn for latency\"}";
  out += ",\n\"command\": " + json_string(command) + "}\n";
  std::fputs(out.c_str(), stdout);
}

void print_table(const std::vector<RowResult>& rows,
                 const std::map<std::string, std::string>& machine, const Settings& s,
                 double wall_seconds) {
  auto unquote = [](const std::string& v) {
    return v.size() >= 2 && v.front() == '"' ? v.substr(1, v.size() - 2) : v;
  };
  const auto get = [&](const char* k) {
    const auto it = machine.find(k);
    return it == machine.end() ? std::string("?") : unquote(it->second);
  };
  std::printf("pasyn-bench %s (%s build): %s, %s cores, %s MiB RAM, %s, SQLite %s, temp on %s\n",
              get("pasyn").c_str(), get("build_type").c_str(), get("cpu").c_str(),
              get("cores").c_str(), get("memory_mib").c_str(), get("kernel").c_str(),
              get("sqlite").c_str(), get("temp_fs").c_str());
  std::printf("%d repetition%s per row (median), %s s per timed run%s\n\n", s.reps,
              s.reps == 1 ? "" : "s", plain(s.seconds).c_str(), s.quick ? ", --quick" : "");
  std::printf("%-21s %11s %11s %-7s %8s %7s %-5s %9s %9s\n", "workload", "pasyn", "baseline",
              "unit", "ratio", "target", "pass", "p50_us", "p99_us");
  for (const RowResult& r : rows) {
    if (!r.error.empty()) {
      std::printf("%-21s ERROR: %s\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    std::printf("%-21s %11s %11s %-7s %8s %7s %-5s %9s %9s\n", r.name.c_str(),
                figure(r.pasyn).c_str(), figure(r.baseline).c_str(), r.unit.c_str(),
                format("%.2fx", r.ratio).c_str(), plain(r.target).c_str(),
                r.pass() ? "PASS" : "FAIL", figure(r.p50).c_str(), figure(r.p99).c_str());
  }
  std::printf(
      "\nratio: higher is better (throughput pasyn/baseline; latency baseline/pasyn; "
      "RSS 64 MiB/measured)\n");
  for (const RowResult& r : rows) {
    if (!r.note.empty()) std::printf("- %s: %s\n", r.name.c_str(), r.note.c_str());
  }
  std::printf("total time %.1f s\n", wall_seconds);
}

// ------------------------------------------------------------------------------------------------

const std::vector<std::string> kRowNames{"writers16_full",    "writers16_normal", "inflight1000",
                                         "execute_many_100k", "point_select",     "idle_round_trip",
                                         "clients1000",       "seed_multiprocess"};

std::string canonical_row(const std::string& name) {
  if (name == "idle_round_trip_p50" || name == "idle_round_trip_p99") return "idle_round_trip";
  if (name == "clients1000_rss_mib") return "clients1000";
  return name;
}

std::vector<RowResult> run_row(Context& ctx, const Settings& s, const std::string& name) {
  if (name == "writers16_full") return row_writers16(ctx, s, true);
  if (name == "writers16_normal") return row_writers16(ctx, s, false);
  if (name == "inflight1000") return row_inflight(ctx, s);
  if (name == "execute_many_100k") return row_execute_many(ctx, s);
  if (name == "point_select") return row_point_select(ctx, s);
  if (name == "idle_round_trip") return row_idle_round_trip(ctx, s);
  if (name == "clients1000") return row_clients1000(ctx, s);
  return row_seed(ctx, s);
}

// Writer throughput for 1..64 writer threads (over 4 processes from 4 on), full and normal.
void run_sweep(Context& ctx, const Settings& s) {
  std::printf("writers,mode,pasyn_rows_s,direct_rows_s\n");
  std::fflush(stdout);
  for (const int writers : {1, 2, 4, 8, 16, 32, 64}) {
    const int procs = writers >= kProcesses ? kProcesses : 1;
    for (const bool full : {true, false}) {
      progress(ctx, "sweep " + std::to_string(writers) + " writers " + (full ? "full" : "normal"));
      const Throughput direct =
          measure_writers(ctx, false, procs, writers / procs, full, s.sweep_seconds);
      const Throughput via =
          measure_writers(ctx, true, procs, writers / procs, full, s.sweep_seconds);
      std::printf("%d,%s,%.0f,%.0f\n", writers, full ? "full" : "normal", via.per_second,
                  direct.per_second);
      std::fflush(stdout);
    }
  }
}

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
               "shorter runs, one repetition, fewer rows: under a minute on 2 cores");
  app.add_flag("--json", json, "print one JSON object instead of the table");
  std::vector<std::string> accepted = kRowNames;
  accepted.insert(accepted.end(),
                  {"idle_round_trip_p50", "idle_round_trip_p99", "clients1000_rss_mib"});
  app.add_option("--only", only, "run one row")->check(CLI::IsMember(accepted));
  app.add_flag("--sweep", sweep,
               "print CSV writers,mode,pasyn_rows_s,direct_rows_s for 1..64 writers instead");
  app.add_option("--sweep-seconds", s.sweep_seconds, "duration of each sweep run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dir", dir, "where the temporary databases go")->capture_default_str();
  app.add_option("--daemon", daemon, "pasyn-writerd binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

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
