// Idempotency keys scoped by uid and bound to their request. See idempotency.hpp.
#include "idempotency.hpp"

#include <boost/uuid/name_generator_sha1.hpp>
#include <boost/uuid/nil_generator.hpp>
#include <cstring>

#include "log.hpp"

namespace pasyn::server {
namespace {

constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS pasyn_idempotency ("
    "id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, key TEXT NOT NULL, digest BLOB NOT NULL, "
    "reply BLOB NOT NULL, UNIQUE (uid, key))";

// Records are deleted in steps of this many (PROTOCOL.md §6.3).
constexpr sqlite3_int64 kPruneStep = 1024;

/// Resets (and unbinds) a statement at the end of the scope.
struct Reset {
  sqlite3_stmt* s;
  ~Reset() {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
};

/// One integer from `sql` (0 when there is no row).
std::int64_t query_int(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  std::int64_t v = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
    v = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  return v;
}

}  // namespace

RequestDigest request_digest(proto::MsgType type, std::string_view sql,
                             std::span<const std::uint8_t> params, std::uint32_t rows) {
  using boost::uuids::name_generator_sha1;
  // Each part is hashed in the "namespace" of the previous ones: no copy of the request, and
  // no ambiguity between where the SQL ends and the parameters begin.
  std::uint8_t head[5] = {static_cast<std::uint8_t>(type)};
  std::memcpy(head + 1, &rows, sizeof rows);
  const auto h1 = name_generator_sha1(boost::uuids::nil_uuid())(head, sizeof head);
  const auto h2 = name_generator_sha1(h1)(sql.data(), sql.size());
  const auto h3 = name_generator_sha1(h2)(params.data(), params.size());
  RequestDigest d;
  std::memcpy(d.data(), h3.data, d.size());
  return d;
}

IdempotencyStore::IdempotencyStore(sqlite3* db, Authorizer& authorizer, std::size_t keep)
    : db_(db), authorizer_(authorizer), keep_(keep) {
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  const bool exists =
      query_int(db_, "SELECT count(*) FROM sqlite_master WHERE name = 'pasyn_idempotency'") > 0;
  if (!exists) return;  // created on first use
  const bool current = query_int(db_,
                                 "SELECT count(*) FROM pragma_table_info('pasyn_idempotency') "
                                 "WHERE name IN ('uid', 'digest')") == 2;
  if (current) {
    prepare();
    return;
  }
  // Version 1: keys were neither scoped to a uid nor bound to a request, so a recorded reply
  // cannot be attributed to anyone. They are dropped (a retry across this upgrade runs again).
  const std::int64_t dropped = query_int(db_, "SELECT count(*) FROM pasyn_idempotency");
  char* error = nullptr;
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE; DROP TABLE pasyn_idempotency; COMMIT", nullptr, nullptr,
                   &error) != SQLITE_OK) {
    log().error("cannot migrate pasyn_idempotency: {}", error ? error : "?");
    sqlite3_free(error);
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return;
  }
  log().warn(
      "pasyn_idempotency of version 1 replaced: its {} keys had no owner uid nor request digest "
      "and are forgotten",
      dropped);
  prepare();
}

IdempotencyStore::~IdempotencyStore() { close(); }

void IdempotencyStore::close() {
  for (auto* s : {lookup_, insert_, prune_}) sqlite3_finalize(s);
  lookup_ = insert_ = prune_ = nullptr;
}

sqlite3_stmt* IdempotencyStore::prepare_statement(const char* sql) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  return s;
}

bool IdempotencyStore::prepare() {
  if (ready()) return true;
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  if (sqlite3_exec(db_, kCreateTable, nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  lookup_ =
      prepare_statement("SELECT digest, reply FROM pasyn_idempotency WHERE uid = ? AND key = ?");
  insert_ = prepare_statement(
      "INSERT INTO pasyn_idempotency (uid, key, digest, reply) VALUES (?, ?, ?, ?)");
  prune_ = prepare_statement(
      "DELETE FROM pasyn_idempotency WHERE id <= (SELECT max(id) FROM pasyn_idempotency) - ?");
  if (!lookup_ || !insert_ || !prune_) {
    close();
    return false;
  }
  return true;
}

bool IdempotencyStore::exec(sqlite3_stmt* stmt) {
  Authorizer::Scope internal(authorizer_, Mode::kInternal);
  const int rc = sqlite3_step(stmt);
  return rc == SQLITE_DONE || rc == SQLITE_ROW;
}

IdempotencyStore::Lookup IdempotencyStore::replay(std::uint32_t uid, std::string_view key,
                                                  const RequestDigest& digest, std::uint64_t id,
                                                  std::vector<std::uint8_t>& replies) {
  if (!ready()) return Lookup::kError;
  Reset reset{lookup_};
  sqlite3_bind_int64(lookup_, 1, uid);
  sqlite3_bind_text(lookup_, 2, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc;
  {
    Authorizer::Scope internal(authorizer_, Mode::kInternal);
    rc = sqlite3_step(lookup_);
  }
  if (rc == SQLITE_DONE) return Lookup::kNew;
  if (rc != SQLITE_ROW) return Lookup::kError;
  const auto* recorded = static_cast<const std::uint8_t*>(sqlite3_column_blob(lookup_, 0));
  if (sqlite3_column_bytes(lookup_, 0) != static_cast<int>(digest.size()) || !recorded ||
      std::memcmp(recorded, digest.data(), digest.size()) != 0) {
    return Lookup::kOtherRequest;
  }
  // The record: the reply's type byte, then its payload.
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(lookup_, 1));
  const auto n = static_cast<std::size_t>(sqlite3_column_bytes(lookup_, 1));
  if (!p || n == 0) return Lookup::kError;
  proto::FrameWriter w(replies, static_cast<proto::MsgType>(p[0]), id);
  replies.insert(replies.end(), p + 1, p + n);
  w.finish();
  return Lookup::kReplayed;
}

bool IdempotencyStore::record(std::uint32_t uid, std::string_view key, const RequestDigest& digest,
                              const std::vector<std::uint8_t>& replies, std::size_t offset) {
  if (!ready()) return false;
  // Frame layout: u32 length, u8 type, u64 id, payload. Record the type and the payload.
  std::uint32_t length;
  std::memcpy(&length, replies.data() + offset, sizeof length);
  const std::size_t end = offset + proto::kLengthFieldSize + length;
  std::vector<std::uint8_t> rec;
  rec.reserve(end - offset - proto::kHeaderSize + 1);
  rec.push_back(replies[offset + proto::kLengthFieldSize]);
  rec.insert(rec.end(), replies.begin() + static_cast<std::ptrdiff_t>(offset + proto::kHeaderSize),
             replies.begin() + static_cast<std::ptrdiff_t>(end));
  {
    Reset reset{insert_};
    sqlite3_bind_int64(insert_, 1, uid);
    sqlite3_bind_text(insert_, 2, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
    sqlite3_bind_blob(insert_, 3, digest.data(), static_cast<int>(digest.size()), SQLITE_STATIC);
    sqlite3_bind_blob(insert_, 4, rec.data(), static_cast<int>(rec.size()), SQLITE_STATIC);
    if (!exec(insert_)) return false;
  }
  // Forget all but the most recent keys, in steps (a cheap delete by rowid). The step is taken
  // from the new record's id, which goes on over daemon runs: a count of this run's records
  // never reached a step in runs shorter than one, and the table grew with every restart.
  if (sqlite3_last_insert_rowid(db_) % kPruneStep == 0) {
    Reset reset{prune_};
    sqlite3_bind_int64(prune_, 1, static_cast<sqlite3_int64>(keep_));
    exec(prune_);
  }
  return true;
}

}  // namespace pasyn::server
