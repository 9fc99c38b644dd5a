// pasyn-bench direct SQLite: the connections of the baselines and of the orchestrator, which
// prepares the databases. Not thread-safe: one SqliteDb per thread.
#pragma once

#include <sqlite3.h>

#include <stdexcept>
#include <string>
#include <string_view>

#include "workload.hpp"

namespace pasyn_bench {

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

inline constexpr int kDirectWriteFlags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
inline constexpr int kCreateFlags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

// A new WAL database with the `bench` table.
void create_bench_db(const std::string& path);

// users: `users` rows with ages spread over [kMinAge, kMaxAge]; events: `events` rows spread
// over the users. Deterministic.
void create_users_db(const std::string& path, int users, int events);

}  // namespace pasyn_bench
