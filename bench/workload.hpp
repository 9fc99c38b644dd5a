// pasyn-bench: what the workers run and the orchestrator prepares (schemas, SQL, payload, wire
// sizes, time limits), shared by both sides.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

namespace pasyn_bench {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

inline constexpr std::string_view kBenchSchema =
    "CREATE TABLE bench (id INTEGER PRIMARY KEY, thread INTEGER NOT NULL, payload TEXT NOT NULL)";
inline constexpr std::string_view kInsertSql = "INSERT INTO bench (thread, payload) VALUES (?, ?)";
inline constexpr std::string_view kPayload = "0123456789abcdef0123456789abcdef";

inline constexpr std::string_view kUsersSchema =
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,"
    " age INTEGER NOT NULL);"
    "CREATE INDEX users_age ON users(age);"
    "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, kind TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX events_user ON events(user_id);";
inline constexpr std::string_view kUserById = "SELECT id, name, email, age FROM users WHERE id = ?";
inline constexpr std::string_view kUsersByAge =
    "SELECT id, name, age FROM users WHERE age BETWEEN ? AND ? LIMIT 50";
inline constexpr std::string_view kCountEvents = "SELECT COUNT(*) FROM events WHERE user_id = ?";
inline constexpr std::string_view kInsertEvent =
    "INSERT INTO events (user_id, kind, created_at) VALUES (?, ?, ?)";
inline constexpr int kMinAge = 18, kMaxAge = 80;

// Wire sizes of one kInsertSql EXECUTE with (integer, 32-byte text) and of its RESULT reply,
// from proto/PROTOCOL.md: frame header u32 length + u8 type + u64 id (§2); EXECUTE = string sql +
// params (u32 count, then tag+i64, tag+u32+bytes) (§4, §5); RESULT = i64 changes, i64 last_rowid,
// u32 column_count, u32 row_count (§5). The ping-pong baseline sends exactly these sizes.
inline constexpr std::size_t kFrameHeader = 4 + 1 + 8;
inline constexpr std::size_t kInsertFrameSize =
    kFrameHeader + (4 + kInsertSql.size()) + 4 + (1 + 8) + (1 + 4 + kPayload.size());
inline constexpr std::size_t kResultFrameSize = kFrameHeader + 8 + 8 + 4 + 4;
// One row of kInsertSql inside EXECUTE_MANY: u32 count + integer + 32-byte text.
inline constexpr std::size_t kManyRowSize = 4 + (1 + 8) + (1 + 4 + kPayload.size());
inline constexpr std::uint32_t kDaemonDefaultMaxFrame = 16u << 20;  // ServerOptions::max_frame

inline constexpr auto kCallTimeout = std::chrono::seconds(60);   // one pasyn call, at most
inline constexpr auto kGateTimeout = std::chrono::seconds(120);  // threads waiting for "go"
inline constexpr int kBusyTimeoutMs = 5000;                      // direct baseline connections

}  // namespace pasyn_bench
