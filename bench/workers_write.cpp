// pasyn-bench workers that write: acked writers (pasyn or direct), many clients, a window of
// futures, execute_many, one direct transaction, and the original project's read/write mix.
#include <sqlite3.h>

#include <deque>
#include <future>
#include <optional>
#include <random>

#include "sqlite_direct.hpp"
#include "worker.hpp"

namespace pasyn_bench {

// writers: `threads` threads each inserting one row at a time, waiting for each, until the
// deadline. backend=pasyn: one MultiplexedClient shared by the threads (target = socket), or one
// per thread with connections=per_thread (not a bench row: for comparing the two by hand);
// backend=direct: one SQLite connection per thread (target = database).
void worker_writers(const Args& a) {
  const std::string backend = arg(a, "backend");
  const std::string target = arg(a, "target");
  const int threads = static_cast<int>(arg_int(a, "threads"));
  const double seconds = arg_double(a, "seconds");
  const bool full = arg(a, "sync") == "full";
  const std::int64_t base = arg_int(a, "base");
  const bool per_thread = a.count("connections") && a.at("connections") == "per_thread";
  std::optional<pasyn::MultiplexedClient> shared;
  if (backend == "pasyn" && !per_thread) shared.emplace(target, client_options());

  run_threads_and_report(threads, seconds, [&](int t, StartGate& gate, ThreadStats& s) {
    const std::int64_t id = base + t;
    std::optional<pasyn::MultiplexedClient> own;
    if (backend == "pasyn" && per_thread) own.emplace(target, client_options());
    pasyn::MultiplexedClient* client = own ? &*own : shared ? &*shared : nullptr;
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
  // One parameter list, its integer set per call (execute_async copies what it needs into the
  // request): the direct baseline binds its values without building anything per row either,
  // and the writers rows reuse theirs the same way.
  pasyn::Params params{std::int64_t{0}, std::string(kPayload)};
  ready_then_wait_for_go();
  const auto start = Clock::now();
  std::deque<std::future<std::int64_t>> queue;
  std::int64_t submitted = 0, done = 0, errors = 0;
  std::string first_error;
  auto submit = [&] {
    params[0] = submitted;
    queue.push_back(client.execute_async(kInsertSql, params));
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

// direct_txn: one direct connection inserting `rows` rows in one transaction. With params=1,
// the rows are first built as the std::vector<pasyn::Params> that execute_many takes (as the
// many worker does, timed) and bound from it: execute_many's bound, what any implementation
// of that call costs at least.
void worker_direct_txn(const Args& a) {
  SqliteDb db(arg(a, "db"), kDirectWriteFlags);
  db.configure_writer(arg(a, "sync") == "full");
  Stmt insert(db, kInsertSql);
  const std::int64_t rows = arg_int(a, "rows");
  const bool params = a.count("params") != 0 && arg(a, "params") == "1";
  ready_then_wait_for_go();
  const auto start = Clock::now();
  std::vector<pasyn::Params> batch;
  if (params) {
    batch.reserve(static_cast<std::size_t>(rows));
    for (std::int64_t i = 0; i < rows; ++i) batch.push_back({i, std::string(kPayload)});
  }
  db.exec("BEGIN");
  for (std::int64_t i = 0; i < rows; ++i) {
    if (params) {
      const auto& p = batch[static_cast<std::size_t>(i)];
      sqlite3_bind_int64(insert, 1, std::get<std::int64_t>(p[0]));
      insert.text(2, std::get<std::string>(p[1]));
    } else {
      sqlite3_bind_int64(insert, 1, i);
      insert.text(2, kPayload);
    }
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

}  // namespace pasyn_bench
