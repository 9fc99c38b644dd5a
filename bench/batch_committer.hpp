// pasyn-bench BatchCommitter: the commit step of the minimal programs that bound the acked rows
// (workers_ceiling.cpp's echo_server commit=..., workers_read.cpp's ping-pong with db=...): one
// connection (WAL, the given synchronous) committing one transaction of one-row INSERTs (the
// writers rows' row: a writer id and kPayload) per call. Not thread-safe: one per thread.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sqlite_direct.hpp"

namespace pasyn_bench {

class BatchCommitter {
 public:
  BatchCommitter(const std::string& path, bool full)
      : db_(path, kDirectWriteFlags),
        begin_(configured(db_, full), "BEGIN IMMEDIATE"),
        insert_(db_, kInsertSql),
        commit_(db_, "COMMIT") {}
  // BEGIN IMMEDIATE; `count` INSERTs of `writer`, for each (writer, count); COMMIT. Throws when
  // a step fails: the clients then see the server go away.
  void commit(const std::vector<std::pair<std::int64_t, std::int64_t>>& batch) {
    step(begin_);
    for (const auto& [writer, count] : batch) {
      for (std::int64_t i = 0; i < count; ++i) {
        sqlite3_bind_int64(insert_, 1, writer);
        insert_.text(2, kPayload);
        step(insert_);
        ++rows_;
      }
    }
    step(commit_);
    ++commits_;
  }
  std::uint64_t rows() const { return rows_; }
  std::uint64_t commits() const { return commits_; }

 private:
  static const SqliteDb& configured(SqliteDb& db, bool full) {
    db.configure_writer(full);
    return db;
  }
  void step(sqlite3_stmt* st) {
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(db_.get()));
  }
  SqliteDb db_;
  Stmt begin_, insert_, commit_;
  std::uint64_t rows_ = 0, commits_ = 0;
};

}  // namespace pasyn_bench
