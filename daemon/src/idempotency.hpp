// Idempotency keys (PROTOCOL.md §6.3), kept in the table pasyn_idempotency of the database
// itself and written in the same transaction as the request they answer.
//
// A key belongs to the uid of the peer that sent it and is bound to the request it was first
// recorded with (a digest of the message type, the SQL and the parameters): the same key from
// another uid is another key, and the same key from the same uid with another request is
// answered MISUSE, never with a reply recorded for something else. Client SQL cannot read or
// write the table (the authorizer reserves the pasyn_ prefix).
#pragma once

#include <sqlite3.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <pasyn/proto/codec.hpp>

#include "authorizer.hpp"

namespace pasyn::server {

/// What a keyed request is bound to: 128 bits (an RFC 4122 name-based UUID, version 5, i.e. 122
/// bits of SHA-1, computed with Boost.UUID's name_generator_sha1) over the message type, the
/// SQL, and the parameters (of every row for EXECUTE_MANY).
using RequestDigest = std::array<std::uint8_t, 16>;
RequestDigest request_digest(proto::MsgType type, std::string_view sql,
                             std::span<const std::uint8_t> params, std::uint32_t rows);

/// The key table and its prepared statements, on the writer's connection.
///
/// Thread-safety: none; used on the writer thread. Errors are left on the connection (the
/// caller reads them with sqlite3_errmsg) and reported as false / Lookup::kError.
class IdempotencyStore {
 public:
  /// At open: replaces a version 1 table (keys without a uid or a digest, which could answer
  /// anyone) by the current one. Throws nothing; a failure is logged and left for first use.
  IdempotencyStore(sqlite3* db, Authorizer& authorizer, std::size_t keep);
  ~IdempotencyStore();
  IdempotencyStore(const IdempotencyStore&) = delete;
  IdempotencyStore& operator=(const IdempotencyStore&) = delete;

  /// Creates the table (if missing) and prepares the statements, once per connection. Call it
  /// outside any transaction, so that no rollback can undo the creation. True when ready.
  bool prepare();
  bool ready() const { return lookup_ != nullptr; }

  enum class Lookup { kNew, kReplayed, kOtherRequest, kError };
  /// Looks `key` of `uid` up; if it was recorded for the same digest, appends its reply (with
  /// request id `id`) to `replies`.
  Lookup replay(std::uint32_t uid, std::string_view key, const RequestDigest& digest,
                std::uint64_t id, std::vector<std::uint8_t>& replies);
  /// Records the reply frame at `offset` of `replies` under `key` of `uid`.
  bool record(std::uint32_t uid, std::string_view key, const RequestDigest& digest,
              const std::vector<std::uint8_t>& replies, std::size_t offset);

  /// Finalizes the statements (before the connection closes).
  void close();

 private:
  bool exec(sqlite3_stmt* stmt);
  sqlite3_stmt* prepare_statement(const char* sql);

  sqlite3* db_;
  Authorizer& authorizer_;
  std::size_t keep_;
  sqlite3_stmt* lookup_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* prune_ = nullptr;
};

}  // namespace pasyn::server
