// pasyn-bench direct SQLite (see sqlite_direct.hpp).
#include "sqlite_direct.hpp"

#include <random>

namespace pasyn_bench {

void create_bench_db(const std::string& path) {
  SqliteDb db(path, kCreateFlags);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec(kBenchSchema);
}

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

}  // namespace pasyn_bench
