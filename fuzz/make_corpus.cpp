// Writes the seed corpus of the fuzz targets with the real encoders (fuzz/corpus/ is its output):
//   pasyn-fuzz-make-corpus DIR    -> DIR/frames/NAME and DIR/session/NAME
// Each file is one input in the layout of input.hpp: a flag byte, then a byte stream.
#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/feed.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "input.hpp"

namespace {

using namespace pasyn;
using proto::MsgType;
using Bytes = std::vector<std::uint8_t>;

// A statement of transaction number `tx` (the request id of its BEGIN).
Bytes in_tx(MsgType t, std::uint64_t id, std::uint64_t tx, std::string_view sql,
            const Params& params = {}) {
  Bytes out;
  proto::encode_statement(out, t, id, sql, params);
  proto::add_transaction_number(out, 0, tx);
  return out;
}

Bytes tx_end(MsgType t, std::uint64_t id, std::uint64_t tx) {
  Bytes out;
  proto::encode_transaction_end(out, t, id, tx);
  return out;
}

// A frame whose type byte is `type` as is (the encoders take a MsgType; any byte goes).
Bytes statement(std::uint8_t type, std::uint64_t id, std::string_view sql, const Params& params) {
  Bytes out;
  proto::encode_statement(out, static_cast<MsgType>(type), id, sql, params);
  return out;
}

Bytes statement(MsgType type, std::uint64_t id, std::string_view sql, const Params& params = {}) {
  return statement(static_cast<std::uint8_t>(type), id, sql, params);
}

Bytes empty(MsgType type, std::uint64_t id) {
  Bytes out;
  proto::encode_empty(out, type, id);
  return out;
}

Bytes text(MsgType type, std::uint64_t id, std::string_view s) {
  Bytes out;
  proto::encode_text(out, type, id, s);
  return out;
}

Bytes hello() {
  Bytes out;
  proto::encode_hello(out, {});
  return out;
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const Params kAllTypes = {nullptr, std::int64_t{-42}, 2.5, std::string("text"),
                          Blob{0x00, 0xFF, 0x10}};
constexpr std::string_view kCreate = "CREATE TABLE IF NOT EXISTS t(a, b, c, d, e)";
constexpr std::string_view kInsert = "INSERT INTO t VALUES (?, ?, ?, ?, ?)";

struct Seed {
  std::string name;
  std::uint8_t session_flags;  // for the session corpus
  Bytes stream;
};

// The requests a client sends (the session corpus, and the frames corpus too).
std::vector<Seed> requests() {
  std::vector<Seed> s;
  s.push_back({"ping", 0, empty(MsgType::kPing, 1)});
  s.push_back({"hello-ping", fuzz::kSkipHello, cat({hello(), empty(MsgType::kPing, 1)})});
  s.push_back({"execute-params", 0,
               cat({statement(MsgType::kExecute, 1, kCreate),
                    statement(MsgType::kExecute, 2, kInsert, kAllTypes),
                    statement(MsgType::kExecuteRowid, 3, kInsert, kAllTypes),
                    statement(MsgType::kExecuteFetch, 4, "SELECT * FROM t WHERE b = ?",
                              {std::int64_t{-42}}),
                    statement(MsgType::kExecuteFetch, 5,
                              "UPDATE t SET c = ? WHERE a IS NULL RETURNING rowid, c", {0.5})})});
  {
    Bytes many;
    proto::encode_many(
        many, 2, kInsert,
        {kAllTypes, kAllTypes, {std::int64_t{1}, nullptr, nullptr, nullptr, nullptr}});
    s.push_back({"execute-many", 0, cat({statement(MsgType::kExecute, 1, kCreate), many})});
  }
  s.push_back({"execute-script", 0,
               text(MsgType::kExecuteScript, 1,
                    "CREATE TABLE IF NOT EXISTS u(x INTEGER PRIMARY KEY, y TEXT UNIQUE);"
                    "INSERT OR IGNORE INTO u(y) VALUES ('a'), ('b');")});
  s.push_back({"begin-commit", 0,
               cat({statement(MsgType::kExecute, 1, kCreate), empty(MsgType::kBegin, 2),
                    in_tx(MsgType::kExecute, 3, 2, kInsert, kAllTypes),
                    in_tx(MsgType::kExecuteFetch, 4, 2, "SELECT count(*) FROM t"),
                    tx_end(MsgType::kCommit, 5, 2)})});
  s.push_back(
      {"begin-savepoint-rollback", 0,
       cat({statement(MsgType::kExecute, 1, kCreate), empty(MsgType::kBegin, 2),
            in_tx(MsgType::kExecute, 3, 2, "SAVEPOINT s1"),
            in_tx(MsgType::kExecute, 4, 2, kInsert, kAllTypes),
            in_tx(MsgType::kExecute, 5, 2, "ROLLBACK TO s1"), tx_end(MsgType::kRollback, 6, 2)})});
  s.push_back({"stats-checkpoint", 0,
               cat({empty(MsgType::kStats, 1), text(MsgType::kCheckpoint, 2, "PASSIVE")})});
  s.push_back({"transaction-sql", 0, statement(MsgType::kExecute, 1, "BEGIN", {})});
  {
    const Bytes whole = statement(MsgType::kExecute, 1, kInsert, kAllTypes);
    s.push_back({"truncated", 0, Bytes(whole.begin(), whole.begin() + 20)});
  }
  // A length field far over any maximum frame, then a little of the body.
  s.push_back({"oversized", 0, {0xF0, 0xFF, 0xFF, 0xFF, 0x03, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}});
  s.push_back({"length-below-minimum", 0, {3, 0, 0, 0, 0x02, 1, 0, 0}});
  {
    Bytes bad = statement(MsgType::kExecute, 1, "SELECT ?", {nullptr});
    bad.back() = 9;  // the value tag
    s.push_back({"bad-value-tag", 0, bad});
  }
  s.push_back({"unknown-type", 0, empty(static_cast<MsgType>(0x7F), 1)});
  {
    // Protocol version 2: named parameters (the 0x10 type bit, PROTOCOL.md §4.1), alone, in
    // EXECUTE_MANY, in a transaction and with an idempotency key.
    const NamedParams named{{{":a", nullptr},
                             {"b", std::int64_t{-42}},
                             {"@c", 2.5},
                             {"$d", std::string("text")},
                             {"e", Blob{0x00, 0xFF, 0x10}}}};
    constexpr std::string_view kInsertNamed = "INSERT INTO t VALUES (:a, :b, @c, $d, :e)";
    Bytes stream = statement(MsgType::kExecute, 1, kCreate);
    proto::encode_statement_named(stream, MsgType::kExecuteRowid, 2, kInsertNamed, named);
    proto::encode_many_named(stream, 3, kInsertNamed, {named, named});
    const Bytes begin = empty(MsgType::kBegin, 4);
    stream.insert(stream.end(), begin.begin(), begin.end());
    std::size_t at = stream.size();
    proto::encode_statement_named(stream, MsgType::kExecuteFetch, 5,
                                  "SELECT count(*) FROM t WHERE b = :b",
                                  {{{"b", std::int64_t{-42}}}});
    proto::add_transaction_number(stream, at, 4);
    const Bytes commit = tx_end(MsgType::kCommit, 6, 4);
    stream.insert(stream.end(), commit.begin(), commit.end());
    at = stream.size();
    proto::encode_statement_named(stream, MsgType::kExecute, 7, kInsertNamed, named);
    proto::add_idempotency_key(stream, at, "named-key-1");
    s.push_back({"execute-named", 0, stream});
  }
  {
    // The change feed (PROTOCOL.md §8): a subscription resuming in the current epoch (first:
    // SUBSCRIBE behind a request not yet answered is refused), a write (refused: the
    // connection is a feed), a PING, and a second SUBSCRIBE (refused).
    Bytes stream;
    proto::encode_subscribe(stream, 2, {"t", "u"}, proto::FeedPoint{0, 0});
    const Bytes tail =
        cat({statement(MsgType::kExecute, 3, kInsert, kAllTypes), empty(MsgType::kPing, 4)});
    stream.insert(stream.end(), tail.begin(), tail.end());
    proto::encode_subscribe(stream, 5, {}, std::nullopt);
    s.push_back({"subscribe", 0, stream});
  }
  return s;
}

// What the daemon sends back (the frames corpus only).
std::vector<Seed> replies() {
  std::vector<Seed> s;
  {
    Bytes out;
    proto::encode_hello_ok(out, {proto::kVersion, proto::kServerCapabilities,
                                 proto::kDefaultMaxFrame, "pasyn-writerd 0.1.0"});
    s.push_back({"reply-hello-ok", 0, out});
  }
  {
    proto::Result r;
    r.changes = 2;
    r.last_rowid = 7;
    r.columns = {"a", "b", "c", "d", "e"};
    r.rows = {kAllTypes, kAllTypes};
    Bytes out;
    proto::encode_result(out, 3, r);
    proto::encode_report(out, 4, {{"requests", std::int64_t{10}}, {"mean_batch_size", 1.5}});
    s.push_back({"reply-result-report", 0, out});
  }
  {
    Bytes out;
    proto::encode_error(out, 5,
                        {proto::ErrorDomain::kSqlite, 19, 2067, "UNIQUE constraint failed"});
    proto::encode_pasyn_error(out, 0, proto::PasynCode::kProtocol, "bad frame");
    proto::encode_empty(out, MsgType::kPong, 6);
    proto::encode_empty(out, MsgType::kOk, 7);
    s.push_back({"reply-error-pong-ok", 0, out});
  }
  {
    Bytes out;
    proto::encode_subscribed(out, 2, {0x1234, 7, true});
    proto::FrameWriter w(out, MsgType::kChange, 2);
    w.u8(static_cast<std::uint8_t>(proto::FeedEvent::kCommitPart));
    w.u64(8);
    w.u32(1);
    w.string("t");
    w.u8(static_cast<std::uint8_t>(proto::ChangeOp::kInsert));
    w.i64(1);
    w.finish();
    proto::FrameWriter last(out, MsgType::kChange, 2);
    last.u8(static_cast<std::uint8_t>(proto::FeedEvent::kCommit));
    last.u64(8);
    last.u32(1);
    last.string("t");
    last.u8(static_cast<std::uint8_t>(proto::ChangeOp::kDelete));
    last.i64(1);
    last.finish();
    proto::encode_gap(out, 2, 9);
    s.push_back({"reply-subscribed-changes", 0, out});
  }
  return s;
}

bool write(const std::filesystem::path& path, std::uint8_t flags, const Bytes& stream) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.put(static_cast<char>(flags));
  f.write(reinterpret_cast<const char*>(stream.data()),
          static_cast<std::streamsize>(stream.size()));
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root(argv[1]);
  std::filesystem::create_directories(root / "frames");
  std::filesystem::create_directories(root / "session");
  bool ok = true;
  int n = 0;
  for (const auto& seed : requests()) {
    ok &= write(root / "session" / seed.name, seed.session_flags, seed.stream);
    // The frames corpus: each seed fed in chunks (a seed per file), under the default limit.
    ok &= write(root / "frames" / seed.name, fuzz::frames_flags(static_cast<std::uint8_t>(++n), 0),
                seed.stream);
  }
  for (const auto& seed : replies()) {
    ok &= write(root / "frames" / seed.name, fuzz::frames_flags(static_cast<std::uint8_t>(++n), 0),
                seed.stream);
  }
  // Request streams under the other maximum frames (the first one's frames exceed 64 bytes).
  const auto all = requests();
  ok &= write(root / "frames" / "execute-params-limit-64", fuzz::frames_flags(0, 1), all[2].stream);
  ok &= write(root / "frames" / "execute-many-limit-4096", fuzz::frames_flags(7, 2), all[3].stream);
  if (!ok) {
    std::fprintf(stderr, "%s: cannot write the corpus under %s\n", argv[0], argv[1]);
    return 1;
  }
  return 0;
}
