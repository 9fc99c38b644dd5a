// Tests for the I/O-free codec of proto/PROTOCOL.md (proto/src/codec.cpp): round trips, the exact
// wire layout, frame splitting and its limits, and rejection of malformed or hostile input.
// Size: over 800 lines: its five sections (round trips, wire layout, FrameDecoder, malformed
// payloads, mutation) share ~400 lines of helpers and the allocation watch, which replaces the
// global operator new and so must live in exactly one file of the executable; splitting it means
// moving those helpers to a header of their own first.
#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <limits>
#include <new>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "../replaced_new.hpp"

// ---- Allocation watch ---------------------------------------------------------------------------
// The codec promises never to allocate on the strength of an unchecked length. Asking the machine
// for a huge block does not reliably fail (overcommit and the sanitizers' allocators may grant it
// without touching it), so this binary replaces the global operator new (replaced_new.hpp): while
// an AllocationWatch is alive it records the largest single request and refuses, with
// std::bad_alloc, any request above the watch's limit. Outside a watch it is plain malloc.

namespace {

std::atomic<bool> g_watching{false};
std::atomic<std::size_t> g_largest_request{0};
std::atomic<std::size_t> g_request_limit{0};

}  // namespace

bool test_allocation_allowed(std::size_t n) {
  if (g_watching.load(std::memory_order_relaxed)) {
    std::size_t seen = g_largest_request.load(std::memory_order_relaxed);
    while (n > seen &&
           !g_largest_request.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
    if (n > g_request_limit.load(std::memory_order_relaxed)) return false;
  }
  return true;
}

namespace pasyn::proto {
namespace {

using Bytes = std::vector<std::uint8_t>;
using Status = FrameDecoder::Status;

// Far above what any payload in these tests justifies, far below what an unchecked u32 count
// would ask for.
constexpr std::size_t kSaneAllocation = 1 << 20;

class AllocationWatch {
 public:
  explicit AllocationWatch(std::size_t limit) {
    g_largest_request.store(0);
    g_request_limit.store(limit);
    g_watching.store(true);
  }
  ~AllocationWatch() { g_watching.store(false); }
  AllocationWatch(const AllocationWatch&) = delete;
  AllocationWatch& operator=(const AllocationWatch&) = delete;

  std::size_t largest() const { return g_largest_request.load(); }
};

// ---- Helpers ------------------------------------------------------------------------------------

std::string hex(std::span<const std::uint8_t> b, std::size_t max = 128) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < b.size() && i < max; ++i) {
    if (i > 0) s += ' ';
    s += kDigits[b[i] >> 4];
    s += kDigits[b[i] & 0xF];
  }
  if (b.size() > max) s += " ... (" + std::to_string(b.size()) + " bytes)";
  return s;
}

// Payload bytes written by hand, little-endian by explicit shifts, independently of FrameWriter.
class Raw {
 public:
  Raw& u8(std::uint8_t v) {
    bytes_.push_back(v);
    return *this;
  }
  Raw& u16(std::uint16_t v) { return le(v, 2); }
  Raw& u32(std::uint32_t v) { return le(v, 4); }
  Raw& u64(std::uint64_t v) { return le(v, 8); }
  Raw& i32(std::int32_t v) { return le(static_cast<std::uint32_t>(v), 4); }
  Raw& i64(std::int64_t v) { return le(static_cast<std::uint64_t>(v), 8); }
  Raw& chars(std::string_view s) {
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Raw& string(std::string_view s) { return u32(static_cast<std::uint32_t>(s.size())).chars(s); }

  const Bytes& bytes() const { return bytes_; }

 private:
  Raw& le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return *this;
  }

  Bytes bytes_;
};

void write_u32_le(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// A frame copied out of the decoder, so that it outlives the decoder's buffer.
struct Frame {
  std::uint8_t type = 0;
  std::uint64_t request_id = 0;
  Bytes payload;

  bool operator==(const Frame&) const = default;
};

void PrintTo(const Frame& f, std::ostream* os) {
  *os << "{type 0x" << hex(std::span(&f.type, 1)) << ", id " << f.request_id << ", payload ["
      << hex(f.payload) << "]}";
}

Frame copy_frame(const FrameView& v) {
  return {v.type, v.request_id, Bytes(v.payload.begin(), v.payload.end())};
}

// Calls next() until it stops returning frames; returns the status that stopped it.
Status drain(FrameDecoder& decoder, std::vector<Frame>& frames) {
  FrameView view;
  for (;;) {
    const Status status = decoder.next(view);
    if (status != Status::kFrame) return status;
    frames.push_back(copy_frame(view));
  }
}

// Splits a byte string made of whole frames.
std::vector<Frame> split(std::span<const std::uint8_t> wire) {
  FrameDecoder decoder;
  decoder.feed(wire);
  std::vector<Frame> frames;
  EXPECT_EQ(drain(decoder, frames), Status::kNeedMore) << decoder.error();
  EXPECT_EQ(decoder.buffered(), 0u);
  return frames;
}

Frame only_frame(const Bytes& wire) {
  const auto frames = split(wire);
  EXPECT_EQ(frames.size(), 1u);
  return frames.empty() ? Frame{} : frames.front();
}

std::span<const std::uint8_t> payload_of(const Bytes& wire) {
  return std::span(wire).subspan(kHeaderSize);
}

std::uint8_t byte(MsgType type) { return static_cast<std::uint8_t>(type); }

// Equal values, with doubles compared bit for bit (so -0.0 is not 0.0).
bool identical(const Value& a, const Value& b) {
  if (a.index() != b.index()) return false;
  if (const auto* x = std::get_if<double>(&a)) {
    return std::bit_cast<std::uint64_t>(*x) == std::bit_cast<std::uint64_t>(std::get<double>(b));
  }
  return a == b;
}

::testing::AssertionResult identical(const std::vector<Value>& got,
                                     const std::vector<Value>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " values, expected " << want.size();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!identical(got[i], want[i])) {
      return ::testing::AssertionFailure() << "value " << i << " differs (type " << got[i].index()
                                           << ", expected type " << want[i].index() << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

Blob every_byte() {
  Blob b(256);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i);
  return b;
}

// One of each kind of value, with the edge cases of each.
Params every_value_type() {
  using I = std::numeric_limits<std::int64_t>;
  using D = std::numeric_limits<double>;
  return {
      nullptr,
      std::int64_t{0},
      std::int64_t{-1},
      std::int64_t{1} << 40,
      I::min(),
      I::max(),
      0.0,
      -0.0,
      1.5,
      -2.25e-300,
      D::denorm_min(),
      D::min(),
      D::max(),
      D::lowest(),
      D::infinity(),
      -D::infinity(),
      std::string(),
      std::string("plain"),
      std::string("h\xC3\xA9llo \xE2\x82\xAC"),  // UTF-8
      std::string("nul\0inside", 10),
      Blob{},
      Blob{0x00},
      every_byte(),
  };
}

// The payload layouts of PROTOCOL.md §3–5, one decoder each.
enum class Layout { kHello, kHelloOk, kEmpty, kStatement, kMany, kScript, kResult, kError };

constexpr std::array kAllLayouts = {Layout::kHello,     Layout::kHelloOk, Layout::kEmpty,
                                    Layout::kStatement, Layout::kMany,    Layout::kScript,
                                    Layout::kResult,    Layout::kError};

const char* name(Layout layout) {
  switch (layout) {
    case Layout::kHello:
      return "decode_hello";
    case Layout::kHelloOk:
      return "decode_hello_ok";
    case Layout::kEmpty:
      return "decode_empty";
    case Layout::kStatement:
      return "decode_statement";
    case Layout::kMany:
      return "decode_many";
    case Layout::kScript:
      return "decode_script";
    case Layout::kResult:
      return "decode_result";
    case Layout::kError:
      return "decode_error";
  }
  return "?";
}

struct DecodeOutcome {
  bool ok = false;
  bool threw = false;
  std::string why;
  Bytes reencoded;  // the payload that encoding the decoded message gives back, if ok
};

// Decodes `payload` with one decoder under an allocation watch, and re-encodes what it accepted.
DecodeOutcome decode_as(Layout layout, std::span<const std::uint8_t> payload) {
  DecodeOutcome out;
  Bytes wire;
  try {
    AllocationWatch watch(kSaneAllocation);
    switch (layout) {
      case Layout::kHello: {
        Hello m;
        if ((out.ok = decode_hello(payload, m, out.why))) encode_hello(wire, m);
        break;
      }
      case Layout::kHelloOk: {
        HelloOk m;
        if ((out.ok = decode_hello_ok(payload, m, out.why))) encode_hello_ok(wire, m);
        break;
      }
      case Layout::kEmpty: {
        if ((out.ok = decode_empty(payload, out.why))) encode_empty(wire, MsgType::kPing, 0);
        break;
      }
      case Layout::kStatement: {
        Statement m;
        if ((out.ok = decode_statement(payload, m, out.why))) {
          encode_statement(wire, MsgType::kExecute, 0, m.sql, m.params);
        }
        break;
      }
      case Layout::kMany: {
        Many m;
        if ((out.ok = decode_many(payload, m, out.why))) encode_many(wire, 0, m.sql, m.rows);
        break;
      }
      case Layout::kScript: {
        std::string sql;
        if ((out.ok = decode_script(payload, sql, out.why))) encode_script(wire, 0, sql);
        break;
      }
      case Layout::kResult: {
        Result m;
        if ((out.ok = decode_result(payload, m, out.why))) encode_result(wire, 0, m);
        break;
      }
      case Layout::kError: {
        ErrorReply m;
        if ((out.ok = decode_error(payload, m, out.why))) encode_error(wire, 0, m);
        break;
      }
    }
  } catch (const std::exception& e) {
    out.ok = false;
    out.threw = true;
    out.why = e.what();
    return out;
  }
  if (out.ok) out.reencoded.assign(wire.begin() + kHeaderSize, wire.end());
  return out;
}

// The decoder of `layout` refuses `payload`, says why, does not throw and does not allocate more
// than kSaneAllocation in one request.
::testing::AssertionResult rejected(Layout layout, std::span<const std::uint8_t> payload) {
  const DecodeOutcome out = decode_as(layout, payload);
  if (out.threw) {
    return ::testing::AssertionFailure() << name(layout) << " threw (" << out.why
                                         << ") instead of rejecting [" << hex(payload) << "]";
  }
  if (out.ok) {
    return ::testing::AssertionFailure()
           << name(layout) << " accepted malformed [" << hex(payload) << "]";
  }
  if (out.why.empty()) {
    return ::testing::AssertionFailure()
           << name(layout) << " rejected [" << hex(payload) << "] without a reason";
  }
  return ::testing::AssertionSuccess() << name(layout) << " rejected: " << out.why;
}

::testing::AssertionResult accepted(Layout layout, std::span<const std::uint8_t> payload) {
  const DecodeOutcome out = decode_as(layout, payload);
  if (!out.ok) {
    return ::testing::AssertionFailure()
           << name(layout) << " rejected [" << hex(payload) << "]: " << out.why;
  }
  return ::testing::AssertionSuccess();
}

// One valid frame of every message, for the truncation, trailing-byte and mutation tests.
struct Sample {
  Layout layout;
  std::string what;
  Bytes wire;
};

std::vector<Sample> valid_samples() {
  std::vector<Sample> samples;
  auto add = [&](Layout layout, std::string what, auto&& encode) {
    Bytes wire;
    encode(wire);
    samples.push_back({layout, std::move(what), std::move(wire)});
  };
  add(Layout::kHello, "HELLO", [](Bytes& w) { encode_hello(w, Hello{}); });
  add(Layout::kHelloOk, "HELLO_OK", [](Bytes& w) {
    encode_hello_ok(w, HelloOk{.max_frame = 1 << 20, .server = "pasyn-writerd 0.1.0"});
  });
  add(Layout::kEmpty, "PING", [](Bytes& w) { encode_empty(w, MsgType::kPing, 1); });
  add(Layout::kStatement, "EXECUTE small", [](Bytes& w) {
    encode_statement(w, MsgType::kExecute, 2, "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                     {nullptr, std::int64_t{-7}, 2.5, std::string("txt"), Blob{1, 2, 3}});
  });
  add(Layout::kStatement, "EXECUTE_FETCH every value type", [](Bytes& w) {
    encode_statement(w, MsgType::kExecuteFetch, 3, "SELECT ?", every_value_type());
  });
  add(Layout::kStatement, "EXECUTE no params",
      [](Bytes& w) { encode_statement(w, MsgType::kExecute, 4, "DELETE FROM t", {}); });
  add(Layout::kMany, "EXECUTE_MANY", [](Bytes& w) {
    encode_many(w, 5, "INSERT INTO t VALUES (?, ?)",
                {{std::int64_t{1}, std::string("a")}, {nullptr, Blob{9}}, {}, {0.25, nullptr}});
  });
  add(Layout::kScript, "EXECUTE_SCRIPT",
      [](Bytes& w) { encode_script(w, 6, "CREATE TABLE t(a); INSERT INTO t VALUES (1);"); });
  add(Layout::kResult, "RESULT with rows", [](Bytes& w) {
    encode_result(w, 7,
                  Result{.changes = 2,
                         .last_rowid = 9,
                         .columns = {"a", "bc", ""},
                         .rows = {{std::int64_t{1}, nullptr, std::string("x")},
                                  {-1.0, Blob{0xFF}, std::string()}}});
  });
  add(Layout::kResult, "RESULT changes only", [](Bytes& w) {
    encode_result(w, 8, Result{.changes = 3, .last_rowid = 4, .columns = {}, .rows = {}});
  });
  add(Layout::kError, "ERROR sqlite", [](Bytes& w) {
    encode_error(w, 9,
                 ErrorReply{.domain = ErrorDomain::kSqlite,
                            .code = 19,
                            .extended_code = 2067,
                            .message = "UNIQUE constraint failed: t.a"});
  });
  add(Layout::kError, "ERROR pasyn",
      [](Bytes& w) { encode_pasyn_error(w, 10, PasynCode::kMisuse, "several statements"); });
  return samples;
}

// ---- Round trips
// ----------------------------------------------------------------------------------

TEST(MsgTypeName, NamesEveryTypeAndCallsOthersUnknown) {
  EXPECT_STREQ(to_string(MsgType::kHello), "HELLO");
  EXPECT_STREQ(to_string(MsgType::kPing), "PING");
  EXPECT_STREQ(to_string(MsgType::kExecute), "EXECUTE");
  EXPECT_STREQ(to_string(MsgType::kExecuteRowid), "EXECUTE_ROWID");
  EXPECT_STREQ(to_string(MsgType::kExecuteFetch), "EXECUTE_FETCH");
  EXPECT_STREQ(to_string(MsgType::kExecuteMany), "EXECUTE_MANY");
  EXPECT_STREQ(to_string(MsgType::kExecuteScript), "EXECUTE_SCRIPT");
  EXPECT_STREQ(to_string(MsgType::kShutdown), "SHUTDOWN");
  EXPECT_STREQ(to_string(MsgType::kBegin), "BEGIN");
  EXPECT_STREQ(to_string(MsgType::kCommit), "COMMIT");
  EXPECT_STREQ(to_string(MsgType::kRollback), "ROLLBACK");
  EXPECT_STREQ(to_string(MsgType::kHelloOk), "HELLO_OK");
  EXPECT_STREQ(to_string(MsgType::kPong), "PONG");
  EXPECT_STREQ(to_string(MsgType::kResult), "RESULT");
  EXPECT_STREQ(to_string(MsgType::kShutdownOk), "SHUTDOWN_OK");
  EXPECT_STREQ(to_string(MsgType::kOk), "OK");
  EXPECT_STREQ(to_string(MsgType::kError), "ERROR");
  EXPECT_STREQ(to_string(static_cast<MsgType>(0x00)), "UNKNOWN");
  EXPECT_STREQ(to_string(MsgType::kStats), "STATS");
  EXPECT_STREQ(to_string(MsgType::kCheckpoint), "CHECKPOINT");
  EXPECT_STREQ(to_string(MsgType::kBackup), "BACKUP");
  EXPECT_STREQ(to_string(MsgType::kSubscribe), "SUBSCRIBE");
  EXPECT_STREQ(to_string(MsgType::kSubscribed), "SUBSCRIBED");
  EXPECT_STREQ(to_string(MsgType::kChange), "CHANGE");
  EXPECT_STREQ(to_string(static_cast<MsgType>(0x10)), "UNKNOWN");
  EXPECT_STREQ(to_string(static_cast<MsgType>(0x80)), "UNKNOWN");
}

TEST(IdempotentBit, IsAllowedOnlyOnTheExecuteFamilyAndNotWithTheTransactionBit) {
  for (std::uint8_t t = 0x03; t <= 0x07; ++t) {
    EXPECT_TRUE(has_idempotency_key(t | kIdempotent)) << int(t);
    EXPECT_FALSE(in_transaction(t | kIdempotent)) << int(t);
    EXPECT_EQ(base_type(t | kIdempotent), t);
    const auto both = static_cast<std::uint8_t>(t | kIdempotent | kInTransaction);
    EXPECT_EQ(base_type(both), both) << "both bits make an unknown type";
    EXPECT_FALSE(has_idempotency_key(both));
    EXPECT_FALSE(in_transaction(both));
  }
  for (const std::uint8_t t : {0x01, 0x02, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E}) {
    const auto flagged = static_cast<std::uint8_t>(t | kIdempotent);
    EXPECT_FALSE(has_idempotency_key(flagged)) << int(t);
    EXPECT_EQ(base_type(flagged), flagged);
  }
}

TEST(TransactionBit, IsAllowedOnlyOnTheExecuteFamily) {
  for (std::uint8_t t = 0x03; t <= 0x07; ++t) {
    EXPECT_TRUE(in_transaction(t | kInTransaction)) << int(t);
    EXPECT_EQ(base_type(t | kInTransaction), t);
    EXPECT_FALSE(in_transaction(t));
  }
  for (std::uint8_t t : {0x01, 0x02, 0x08, 0x09, 0x0A, 0x0B, 0x3F}) {
    const auto flagged = static_cast<std::uint8_t>(t | kInTransaction);
    EXPECT_FALSE(in_transaction(flagged)) << int(t);
    EXPECT_EQ(base_type(flagged), flagged);  // stays an unknown type
  }
}

TEST(TransactionNumber, PrecedesTheStatementPayloadAndSetsTheTransactionBit) {
  Bytes plain;
  encode_statement(plain, MsgType::kExecute, 5, "SELECT ?", {std::int64_t{1}});
  Bytes wire = plain;
  add_transaction_number(wire, 0, 0x0102030405060708ull);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kExecute) | kInTransaction);
  EXPECT_EQ(f.request_id, 5u);
  PayloadReader r(f.payload);
  std::uint64_t tx = 0;
  ASSERT_TRUE(r.u64(tx));
  EXPECT_EQ(tx, 0x0102030405060708ull);
  Statement m;
  std::string why;
  ASSERT_TRUE(decode_statement(
      std::span<const std::uint8_t>(f.payload).subspan(kTransactionNumberSize), m, why))
      << why;
  EXPECT_EQ(m.sql, "SELECT ?");
  EXPECT_EQ(wire.size(), plain.size() + kTransactionNumberSize);
}

TEST(TransactionNumber, IsTheWholePayloadOfCommitAndRollback) {
  for (const auto type : {MsgType::kCommit, MsgType::kRollback}) {
    Bytes wire;
    encode_transaction_end(wire, type, 9, 42);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(type));
    std::uint64_t tx = 0;
    std::string why;
    ASSERT_TRUE(decode_transaction_end(f.payload, tx, why)) << why;
    EXPECT_EQ(tx, 42u);
    EXPECT_FALSE(decode_transaction_end({}, tx, why)) << "a version-1 (empty) COMMIT";
    EXPECT_FALSE(decode_empty(f.payload, why));
  }
}

TEST(HelloCodec, SpeaksVersion2) { EXPECT_EQ(Hello{}.version, 2); }

TEST(HelloCodec, RoundTripsTheDefaultHelloWithRequestIdZero) {
  Bytes wire;
  encode_hello(wire, Hello{});
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kHello));
  EXPECT_EQ(f.request_id, 0u);
  Hello m{.magic = 0, .version = 0, .capabilities = 1};
  std::string why;
  ASSERT_TRUE(decode_hello(f.payload, m, why)) << why;
  EXPECT_EQ(m.magic, kMagic);
  EXPECT_EQ(m.version, kVersion);
  EXPECT_EQ(m.capabilities, 0u);
}

TEST(HelloCodec, RoundTripsArbitraryFieldsForTheDaemonToJudge) {
  // The codec carries a wrong magic or version unchanged; refusing them is the daemon's job.
  const Hello sent{.magic = 0xDEADBEEF, .version = 0xFFFF, .capabilities = 0x8000000000000001};
  Bytes wire;
  encode_hello(wire, sent);
  Hello m;
  std::string why;
  ASSERT_TRUE(decode_hello(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.magic, sent.magic);
  EXPECT_EQ(m.version, sent.version);
  EXPECT_EQ(m.capabilities, sent.capabilities);
}

TEST(HelloOkCodec, RoundTripsEveryField) {
  for (const HelloOk& sent :
       {HelloOk{.server = "pasyn-writerd 0.1.0"},
        HelloOk{.version = 1, .capabilities = ~0ull, .max_frame = kMinMaxFrame, .server = ""},
        HelloOk{.version = 2, .capabilities = 0, .max_frame = 0xFFFFFFFF, .server = "x"}}) {
    Bytes wire;
    encode_hello_ok(wire, sent);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(MsgType::kHelloOk));
    EXPECT_EQ(f.request_id, 0u);
    HelloOk m{.server = "stale"};
    std::string why;
    ASSERT_TRUE(decode_hello_ok(f.payload, m, why)) << why;
    EXPECT_EQ(m.version, sent.version);
    EXPECT_EQ(m.capabilities, sent.capabilities);
    EXPECT_EQ(m.max_frame, sent.max_frame);
    EXPECT_EQ(m.server, sent.server);
  }
}

TEST(EmptyFrameCodec, RoundTripsEveryEmptyTypeWithItsRequestId) {
  for (MsgType type : {MsgType::kPing, MsgType::kPong, MsgType::kShutdown, MsgType::kShutdownOk}) {
    for (std::uint64_t id : {std::uint64_t{0}, std::uint64_t{1}, ~std::uint64_t{0}}) {
      SCOPED_TRACE(std::string(to_string(type)) + " id " + std::to_string(id));
      Bytes wire;
      encode_empty(wire, type, id);
      EXPECT_EQ(wire.size(), kHeaderSize);
      const Frame f = only_frame(wire);
      EXPECT_EQ(f.type, byte(type));
      EXPECT_EQ(f.request_id, id);
      EXPECT_TRUE(f.payload.empty());
      std::string why;
      EXPECT_TRUE(decode_empty(f.payload, why)) << why;
    }
  }
}

TEST(StatementCodec, RoundTripsEveryValueTypeForEachStatementRequest) {
  const Params params = every_value_type();
  for (MsgType type : {MsgType::kExecute, MsgType::kExecuteRowid, MsgType::kExecuteFetch}) {
    SCOPED_TRACE(to_string(type));
    Bytes wire;
    encode_statement(wire, type, 42, "INSERT INTO t VALUES (?)", params);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(type));
    EXPECT_EQ(f.request_id, 42u);
    Statement m;
    std::string why;
    ASSERT_TRUE(decode_statement(f.payload, m, why)) << why;
    EXPECT_EQ(m.sql, "INSERT INTO t VALUES (?)");
    EXPECT_TRUE(identical(m.params, params));
  }
}

TEST(StatementCodec, RoundTripsInt64ExtremesAndDoublesBitForBit) {
  using I = std::numeric_limits<std::int64_t>;
  using D = std::numeric_limits<double>;
  const Params params = {
      I::min(),    I::max(),      std::int64_t{-1}, 0.0, -0.0,   D::denorm_min(), D::max(),
      D::lowest(), D::infinity(), -D::infinity(),   0.1, -1e-310};
  Bytes wire;
  encode_statement(wire, MsgType::kExecute, 1, "SELECT ?", params);
  Statement m;
  std::string why;
  ASSERT_TRUE(decode_statement(only_frame(wire).payload, m, why)) << why;
  ASSERT_TRUE(identical(m.params, params));
  EXPECT_EQ(std::get<std::int64_t>(m.params[0]), I::min());
  EXPECT_EQ(std::get<std::int64_t>(m.params[1]), I::max());
  EXPECT_TRUE(std::signbit(std::get<double>(m.params[4])));
}

TEST(StatementCodec, KeepsEmptyTextEmptyBlobAndNullDistinct) {
  const Params params = {std::string(), Blob{}, nullptr};
  Bytes wire;
  encode_statement(wire, MsgType::kExecute, 1, "SELECT ?, ?, ?", params);
  Statement m;
  std::string why;
  ASSERT_TRUE(decode_statement(only_frame(wire).payload, m, why)) << why;
  ASSERT_EQ(m.params.size(), 3u);
  EXPECT_EQ(type_of(m.params[0]), ValueType::kText);
  EXPECT_EQ(type_of(m.params[1]), ValueType::kBlob);
  EXPECT_EQ(type_of(m.params[2]), ValueType::kNull);
  EXPECT_TRUE(std::get<std::string>(m.params[0]).empty());
  EXPECT_TRUE(std::get<Blob>(m.params[1]).empty());
}

TEST(StatementCodec, RoundTripsEmptySqlWithoutParams) {
  Bytes wire;
  encode_statement(wire, MsgType::kExecuteRowid, 5, "", {});
  Statement m{.sql = "stale", .params = {std::int64_t{1}}};
  std::string why;
  ASSERT_TRUE(decode_statement(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.sql, "");
  EXPECT_TRUE(m.params.empty());
}

TEST(ManyCodec, RoundTripsSeveralRowsOfDifferentShapes) {
  const std::vector<Params> rows = {
      {std::int64_t{1}, std::string("one"), Blob{1}}, {}, {nullptr}, every_value_type(),
      {std::int64_t{3}, 3.5, std::string()},
  };
  Bytes wire;
  encode_many(wire, 77, "INSERT INTO t VALUES (?, ?, ?)", rows);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kExecuteMany));
  EXPECT_EQ(f.request_id, 77u);
  Many m;
  std::string why;
  ASSERT_TRUE(decode_many(f.payload, m, why)) << why;
  EXPECT_EQ(m.sql, "INSERT INTO t VALUES (?, ?, ?)");
  ASSERT_EQ(m.rows.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_TRUE(identical(m.rows[i], rows[i])) << "row " << i;
  }
}

TEST(ManyCodec, RoundTripsZeroRows) {
  Bytes wire;
  encode_many(wire, 1, "INSERT INTO t VALUES (?)", {});
  Many m{.sql = "stale", .rows = {{nullptr}}};
  std::string why;
  ASSERT_TRUE(decode_many(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.sql, "INSERT INTO t VALUES (?)");
  EXPECT_TRUE(m.rows.empty());
}

TEST(ScriptCodec, RoundTripsMultiStatementAndEmptySql) {
  for (std::string_view sql :
       {std::string_view("CREATE TABLE t(a);\nINSERT INTO t VALUES ('x;y');"),
        std::string_view()}) {
    Bytes wire;
    encode_script(wire, 12, sql);
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(MsgType::kExecuteScript));
    EXPECT_EQ(f.request_id, 12u);
    std::string got = "stale";
    std::string why;
    ASSERT_TRUE(decode_script(f.payload, got, why)) << why;
    EXPECT_EQ(got, sql);
  }
}

TEST(TextCodec, CarriesTheCheckpointModeAndTheBackupPath) {
  for (const auto type : {MsgType::kCheckpoint, MsgType::kBackup}) {
    Bytes wire;
    encode_text(wire, type, 5, "/var/lib/pasyn/copy of db.sqlite");
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(type));
    EXPECT_EQ(f.request_id, 5u);
    std::string got, why;
    ASSERT_TRUE(decode_text(f.payload, got, why)) << why;
    EXPECT_EQ(got, "/var/lib/pasyn/copy of db.sqlite");
    // Anything after the string is a malformed payload.
    Bytes longer(f.payload.begin(), f.payload.end());
    longer.push_back(0);
    EXPECT_FALSE(decode_text(longer, got, why));
  }
}

TEST(ReportCodec, IsAResultWithNameAndValueColumns) {
  const Report sent{{"requests", std::int64_t{42}},
                    {"mean_batch_size", 3.5},
                    {"database", std::string("/var/lib/pasyn/a.sqlite")},
                    {"nothing", nullptr}};
  Bytes wire;
  encode_report(wire, 8, sent);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kResult));
  EXPECT_EQ(f.request_id, 8u);
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(f.payload, m, why)) << why;
  EXPECT_EQ(m.columns, (std::vector<std::string>{"name", "value"}));
  ASSERT_EQ(m.rows.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    EXPECT_TRUE(identical(m.rows[i], Row{sent[i].first, sent[i].second})) << "row " << i;
  }
}

TEST(ResultCodec, RoundTripsColumnsAndRows) {
  const Result sent{
      .changes = std::numeric_limits<std::int64_t>::max(),
      .last_rowid = std::numeric_limits<std::int64_t>::min(),
      .columns = {"id", "name", "score", "data", "nothing", ""},
      .rows = {{std::int64_t{1}, std::string("ann"), 1.5, Blob{1, 2}, nullptr, std::string()},
               {std::int64_t{2}, std::string(), -0.0, Blob{}, nullptr, Blob{0}},
               {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}},
  };
  Bytes wire;
  encode_result(wire, 99, sent);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kResult));
  EXPECT_EQ(f.request_id, 99u);
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(f.payload, m, why)) << why;
  EXPECT_EQ(m.changes, sent.changes);
  EXPECT_EQ(m.last_rowid, sent.last_rowid);
  EXPECT_EQ(m.columns, sent.columns);
  ASSERT_EQ(m.rows.size(), sent.rows.size());
  for (std::size_t i = 0; i < sent.rows.size(); ++i) {
    EXPECT_TRUE(identical(m.rows[i], sent.rows[i])) << "row " << i;
  }
}

TEST(ResultCodec, RoundTripsAChangesOnlyReply) {
  Bytes wire;
  encode_result(wire, 3, Result{.changes = 5, .last_rowid = 17, .columns = {}, .rows = {}});
  Result m{.changes = 0, .last_rowid = 0, .columns = {"stale"}, .rows = {{nullptr}}};
  std::string why;
  ASSERT_TRUE(decode_result(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.changes, 5);
  EXPECT_EQ(m.last_rowid, 17);
  EXPECT_TRUE(m.columns.empty());
  EXPECT_TRUE(m.rows.empty());
}

TEST(ResultCodec, RoundTripsColumnsWithoutRows) {
  Bytes wire;
  encode_result(wire, 3, Result{.changes = 0, .last_rowid = 0, .columns = {"a", "b"}, .rows = {}});
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.columns, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(m.rows.empty());
}

TEST(ErrorCodec, RoundTripsSqliteDomainWithExtendedCode) {
  const ErrorReply sent{.domain = ErrorDomain::kSqlite,
                        .code = 19,
                        .extended_code = 2067,
                        .message = "UNIQUE constraint failed: t.id"};
  Bytes wire;
  encode_error(wire, 8, sent);
  const Frame f = only_frame(wire);
  EXPECT_EQ(f.type, byte(MsgType::kError));
  EXPECT_EQ(f.request_id, 8u);
  ErrorReply m;
  std::string why;
  ASSERT_TRUE(decode_error(f.payload, m, why)) << why;
  EXPECT_EQ(m.domain, ErrorDomain::kSqlite);
  EXPECT_EQ(m.code, 19);
  EXPECT_EQ(m.extended_code, 2067);
  EXPECT_EQ(m.message, sent.message);
}

TEST(ErrorCodec, RoundTripsPasynDomainAndSignedCodes) {
  const ErrorReply sent{.domain = ErrorDomain::kPasyn,
                        .code = std::numeric_limits<std::int32_t>::min(),
                        .extended_code = -1,
                        .message = ""};
  Bytes wire;
  encode_error(wire, 0, sent);
  ErrorReply m{.domain = ErrorDomain::kSqlite, .message = "stale"};
  std::string why;
  ASSERT_TRUE(decode_error(only_frame(wire).payload, m, why)) << why;
  EXPECT_EQ(m.domain, ErrorDomain::kPasyn);
  EXPECT_EQ(m.code, sent.code);
  EXPECT_EQ(m.extended_code, -1);
  EXPECT_EQ(m.message, "");
}

TEST(ErrorCodec, PasynErrorCarriesItsCodeAsBothCodes) {
  for (PasynCode code : {PasynCode::kProtocol, PasynCode::kMisuse, PasynCode::kShuttingDown,
                         PasynCode::kTimeout, PasynCode::kTooLarge}) {
    SCOPED_TRACE(static_cast<int>(code));
    Bytes wire;
    encode_pasyn_error(wire, 31, code, "because");
    const Frame f = only_frame(wire);
    EXPECT_EQ(f.type, byte(MsgType::kError));
    EXPECT_EQ(f.request_id, 31u);
    ErrorReply m;
    std::string why;
    ASSERT_TRUE(decode_error(f.payload, m, why)) << why;
    EXPECT_EQ(m.domain, ErrorDomain::kPasyn);
    EXPECT_EQ(m.code, static_cast<std::int32_t>(code));
    EXPECT_EQ(m.extended_code, static_cast<std::int32_t>(code));
    EXPECT_EQ(m.message, "because");
  }
}

TEST(FrameWriter, AppendsFramesBackToBackThatSplitInOrder) {
  Bytes wire;
  encode_hello(wire, Hello{});
  encode_empty(wire, MsgType::kPing, 1);
  encode_statement(wire, MsgType::kExecute, 2, "SELECT 1", {});
  encode_result(wire, 2, Result{.changes = 1, .last_rowid = 0, .columns = {}, .rows = {}});
  encode_pasyn_error(wire, 3, PasynCode::kTimeout, "slow");
  const auto frames = split(wire);
  ASSERT_EQ(frames.size(), 5u);
  const std::pair<MsgType, std::uint64_t> want[] = {{MsgType::kHello, 0},
                                                    {MsgType::kPing, 1},
                                                    {MsgType::kExecute, 2},
                                                    {MsgType::kResult, 2},
                                                    {MsgType::kError, 3}};
  for (std::size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].type, byte(want[i].first)) << "frame " << i;
    EXPECT_EQ(frames[i].request_id, want[i].second) << "frame " << i;
  }
}

TEST(FrameWriter, PatchedCountIsWhatTheReaderSees) {
  Bytes wire;
  encode_empty(wire, MsgType::kPong, 1);  // the frame under test does not start at offset 0
  FrameWriter w(wire, MsgType::kResult, 4);
  EXPECT_EQ(w.start(), kHeaderSize);
  w.i64(1);
  w.i64(0);
  w.u32(1);
  w.string("n");
  const std::size_t row_count_at = w.position();
  w.u32(0);
  w.value(std::int64_t{10});
  w.value(std::string("eleven"));
  w.patch_u32(row_count_at, 2);
  EXPECT_EQ(w.finish(), wire.size() - kHeaderSize);

  const auto frames = split(wire);
  ASSERT_EQ(frames.size(), 2u);
  Result m;
  std::string why;
  ASSERT_TRUE(decode_result(frames[1].payload, m, why)) << why;
  ASSERT_EQ(m.rows.size(), 2u);
  EXPECT_EQ(m.rows[0], Row{std::int64_t{10}});
  EXPECT_EQ(m.rows[1], Row{std::string("eleven")});
}

TEST(FrameWriter, AbandonRemovesOnlyTheUnfinishedFrame) {
  Bytes wire;
  encode_empty(wire, MsgType::kPong, 1);
  const Bytes before = wire;
  FrameWriter w(wire, MsgType::kResult, 2);
  w.i64(1);
  w.string("a reply that turned out too large");
  w.abandon();
  EXPECT_EQ(wire, before);
}

// ---- Wire layout, byte for byte against PROTOCOL.md
// ------------------------------------------------

TEST(WireLayout, HelloMatchesTheSpec) {
  Bytes wire;
  encode_hello(wire, Hello{});
  const Bytes expected = {
      0x17, 0x00, 0x00, 0x00,                          // length 23 = 9 + 14, little-endian
      0x01,                                            // type HELLO
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 0
      'P',  'S',  'Y',  'N',                           // magic 0x4E595350
      0x02, 0x00,                                      // version 2
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // capabilities 0
  };
  EXPECT_EQ(hex(wire), hex(expected));
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(wire.data()) + kHeaderSize, 4), "PSYN");
}

TEST(WireLayout, HelloOkMatchesTheSpec) {
  Bytes wire;
  encode_hello_ok(wire, HelloOk{.max_frame = kDefaultMaxFrame, .server = "d1"});
  const Bytes expected = {
      0x1D, 0x00, 0x00, 0x00,                          // length 29 = 9 + 20
      0x81,                                            // type HELLO_OK
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 0
      0x02, 0x00,                                      // version 2
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // capabilities 0
      0x00, 0x00, 0x00, 0x01,                          // max_frame 16 MiB
      0x02, 0x00, 0x00, 0x00, 'd',  '1',               // server "d1"
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, CommitMatchesTheSpec) {
  Bytes wire;
  encode_transaction_end(wire, MsgType::kCommit, 3, 2);
  const Bytes expected = {
      0x11, 0x00, 0x00, 0x00,                          // length 17 = 9 + 8
      0x0A,                                            // type COMMIT
      0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 3
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // transaction 2 (its BEGIN's id)
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ExecuteMatchesTheSpec) {
  Bytes wire;
  encode_statement(wire, MsgType::kExecute, 0x0102030405060708, "SELECT ?,?,?,?,?",
                   {nullptr, std::int64_t{-2}, 1.5, std::string("hi"), Blob{0xAB}});
  const Bytes expected = {
      0x41, 0x00, 0x00, 0x00,                          // length 65 = 9 + 56
      0x03,                                            // type EXECUTE
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // request id, little-endian
      0x10, 0x00, 0x00, 0x00,                          // sql length 16
      'S',  'E',  'L',  'E',  'C',  'T',  ' ',  '?',  ',',  '?',
      ',',  '?',  ',',  '?',  ',',  '?',  0x05, 0x00, 0x00, 0x00,  // 5 params
      0x00,                                                        // NULL
      0x01, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,        // INTEGER -2
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0x3F,        // REAL 1.5
      0x03, 0x02, 0x00, 0x00, 0x00, 'h',  'i',                     // TEXT "hi"
      0x04, 0x01, 0x00, 0x00, 0x00, 0xAB,                          // BLOB {0xAB}
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ExecuteManyMatchesTheSpec) {
  Bytes wire;
  encode_many(wire, 1, "?", {{std::int64_t{1}}, {}});
  const Bytes expected = {
      0x23, 0x00, 0x00, 0x00,                                // length 35 = 9 + 26
      0x06,                                                  // type EXECUTE_MANY
      0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // request id 1
      0x01, 0x00, 0x00, 0x00, '?',                           // sql "?"
      0x02, 0x00, 0x00, 0x00,                                // 2 parameter lists
      0x01, 0x00, 0x00, 0x00,                                // first: 1 value
      0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //   INTEGER 1
      0x00, 0x00, 0x00, 0x00,                                // second: no values
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ResultMatchesTheSpec) {
  Bytes wire;
  encode_result(wire, 7,
                Result{.changes = 2,
                       .last_rowid = 9,
                       .columns = {"a", "bc"},
                       .rows = {{std::int64_t{1}, nullptr}}});
  const Bytes expected = {
      0x36, 0x00, 0x00, 0x00,                                // length 54 = 9 + 45
      0x83,                                                  // type RESULT
      0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // request id 7
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // changes 2
      0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // last_rowid 9
      0x02, 0x00, 0x00, 0x00,                                // 2 columns
      0x01, 0x00, 0x00, 0x00, 'a',                           // "a"
      0x02, 0x00, 0x00, 0x00, 'b',  'c',                     // "bc"
      0x01, 0x00, 0x00, 0x00,                                // 1 row
      0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // INTEGER 1
      0x00,                                                  // NULL
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, ErrorMatchesTheSpec) {
  Bytes wire;
  encode_error(
      wire, 5,
      ErrorReply{
          .domain = ErrorDomain::kSqlite, .code = 19, .extended_code = 2067, .message = "x"});
  encode_pasyn_error(wire, 6, PasynCode::kTooLarge, "");
  const Bytes expected = {
      0x17, 0x00, 0x00, 0x00,                          // length 23 = 9 + 14
      0xFF,                                            // type ERROR
      0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 5
      0x00,                                            // domain SQLite
      0x13, 0x00, 0x00, 0x00,                          // code 19 (CONSTRAINT)
      0x13, 0x08, 0x00, 0x00,                          // extended 2067 (CONSTRAINT_UNIQUE)
      0x01, 0x00, 0x00, 0x00, 'x',                     // message "x"
      0x16, 0x00, 0x00, 0x00,                          // length 22 = 9 + 13
      0xFF,                                            // type ERROR
      0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // request id 6
      0x01,                                            // domain pasyn
      0x05, 0x00, 0x00, 0x00,                          // code TOO_LARGE
      0x05, 0x00, 0x00, 0x00,                          // extended code equal to code
      0x00, 0x00, 0x00, 0x00,                          // empty message
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

TEST(WireLayout, EmptyFrameIsOnlyTheHeader) {
  Bytes wire;
  encode_empty(wire, MsgType::kPing, 0x1122334455667788);
  const Bytes expected = {
      0x09, 0x00, 0x00, 0x00,                          // length 9
      0x02,                                            // type PING
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // request id
  };
  EXPECT_EQ(hex(wire), hex(expected));
}

// ---- FrameDecoder
// ---------------------------------------------------------------------------------

// A few frames of different types back to back, and the frames they are.
Bytes three_frames() {
  Bytes wire;
  encode_hello(wire, Hello{});
  encode_statement(wire, MsgType::kExecute, 2, "INSERT INTO t VALUES (?)", {std::string("value")});
  encode_empty(wire, MsgType::kPing, 3);
  return wire;
}

TEST(FrameDecoder, DefaultsToTheSpecMaximum) {
  EXPECT_EQ(FrameDecoder().max_frame(), kDefaultMaxFrame);
  EXPECT_EQ(kDefaultMaxFrame, 16u * 1024 * 1024);
  EXPECT_EQ(FrameDecoder(kMinMaxFrame).max_frame(), kMinMaxFrame);
}

TEST(FrameDecoder, NeedsMoreUntilTheLastByteArrivesOneByteAtATime) {
  Bytes wire;
  encode_statement(wire, MsgType::kExecuteFetch, 0xABCDEF, "SELECT ?", {std::int64_t{5}});
  FrameDecoder decoder;
  FrameView view;
  for (std::size_t i = 0; i + 1 < wire.size(); ++i) {
    decoder.feed(std::span(&wire[i], 1));
    ASSERT_EQ(decoder.next(view), Status::kNeedMore) << "after byte " << i;
    ASSERT_EQ(decoder.buffered(), i + 1);
  }
  decoder.feed(std::span(&wire.back(), 1));
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  EXPECT_EQ(view.type, byte(MsgType::kExecuteFetch));
  EXPECT_EQ(view.request_id, 0xABCDEFu);
  EXPECT_EQ(hex(view.payload), hex(payload_of(wire)));
  EXPECT_EQ(decoder.buffered(), 0u);
  EXPECT_EQ(decoder.next(view), Status::kNeedMore);
}

TEST(FrameDecoder, ReturnsEveryFrameOfOneFeedInOrder) {
  const Bytes wire = three_frames();
  FrameDecoder decoder;
  decoder.feed(wire);
  std::vector<Frame> frames;
  EXPECT_EQ(drain(decoder, frames), Status::kNeedMore);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, byte(MsgType::kHello));
  EXPECT_EQ(frames[1].type, byte(MsgType::kExecute));
  EXPECT_EQ(frames[1].request_id, 2u);
  EXPECT_EQ(frames[2].type, byte(MsgType::kPing));
  EXPECT_EQ(frames[2].request_id, 3u);
  EXPECT_TRUE(frames[2].payload.empty());
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(FrameDecoder, KeepsTheUnfinishedTailBufferedAfterCompleteFrames) {
  Bytes wire = three_frames();
  Bytes next;
  encode_script(next, 4, "VACUUM");
  wire.insert(wire.end(), next.begin(), next.begin() + 6);  // header cut mid request id

  FrameDecoder decoder;
  decoder.feed(wire);
  std::vector<Frame> frames;
  EXPECT_EQ(drain(decoder, frames), Status::kNeedMore);
  EXPECT_EQ(frames.size(), 3u);
  EXPECT_EQ(decoder.buffered(), 6u);

  decoder.feed(std::span(next).subspan(6));
  EXPECT_EQ(drain(decoder, frames), Status::kNeedMore);
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_EQ(frames[3], (Frame{byte(MsgType::kExecuteScript), 4,
                              Bytes(payload_of(next).begin(), payload_of(next).end())}));
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(FrameDecoder, ReassemblesFramesSplitAcrossFeedsAtEveryOffset) {
  const Bytes wire = three_frames();
  const auto want = split(wire);
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    for (std::size_t cut2 = cut; cut2 <= wire.size(); cut2 += 7) {
      FrameDecoder decoder;
      std::vector<Frame> frames;
      decoder.feed(std::span(wire).first(cut));
      ASSERT_EQ(drain(decoder, frames), Status::kNeedMore);
      decoder.feed(std::span(wire).subspan(cut, cut2 - cut));
      ASSERT_EQ(drain(decoder, frames), Status::kNeedMore);
      decoder.feed(std::span(wire).subspan(cut2));
      ASSERT_EQ(drain(decoder, frames), Status::kNeedMore);
      ASSERT_EQ(frames, want) << "cut at " << cut << " and " << cut2;
      ASSERT_EQ(decoder.buffered(), 0u);
    }
  }
}

TEST(FrameDecoder, AcceptsShortReadsThroughPrepareAndCommit) {
  const Bytes wire = three_frames();
  const auto want = split(wire);
  for (std::size_t read_size : {1u, 3u, 5u, 13u, 64u}) {
    SCOPED_TRACE("reads of " + std::to_string(read_size));
    FrameDecoder decoder;
    std::vector<Frame> frames;
    std::size_t pos = 0;
    while (pos < wire.size()) {
      const std::span<std::uint8_t> space = decoder.prepare(32);
      ASSERT_GE(space.size(), 32u);
      // Like read(2): fewer bytes than the space offered.
      const std::size_t n = std::min({read_size, space.size(), wire.size() - pos});
      std::memcpy(space.data(), wire.data() + pos, n);
      decoder.commit(n);
      pos += n;
      ASSERT_EQ(drain(decoder, frames), Status::kNeedMore);
    }
    EXPECT_EQ(frames, want);
    EXPECT_EQ(decoder.buffered(), 0u);
  }
}

TEST(FrameDecoder, TakesTheRestOfAnAnnouncedFrameInOneRead) {
  Bytes wire;
  encode_script(wire, 1, std::string(5000, 'x'));
  FrameDecoder decoder;
  decoder.feed(std::span(wire).first(kLengthFieldSize));
  FrameView view;
  ASSERT_EQ(decoder.next(view), Status::kNeedMore);
  const std::size_t rest = wire.size() - kLengthFieldSize;
  const std::span<std::uint8_t> space = decoder.prepare(rest);
  ASSERT_GE(space.size(), rest);
  std::memcpy(space.data(), wire.data() + kLengthFieldSize, rest);
  decoder.commit(rest);
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  std::string sql;
  std::string why;
  ASSERT_TRUE(decode_script(view.payload, sql, why)) << why;
  EXPECT_EQ(sql, std::string(5000, 'x'));
}

TEST(FrameDecoder, RejectsALengthBelowNine) {
  for (std::uint32_t length = 0; length < kMinLength; ++length) {
    SCOPED_TRACE(length);
    // The length, then the bytes it claims (zeros), so only the length is wrong. (Built in one
    // piece: g++ 12 at -O3 warns falsely, -Wstringop-overflow, on growing the 4-byte vector.)
    const Bytes prefix = Raw().u32(length).bytes();
    Bytes wire(prefix.size() + length, 0);
    std::copy(prefix.begin(), prefix.end(), wire.begin());
    FrameDecoder decoder;
    decoder.feed(wire);
    FrameView view;
    EXPECT_EQ(decoder.next(view), Status::kError);
    EXPECT_FALSE(decoder.error().empty());
  }
}

TEST(FrameDecoder, AcceptsALengthOfExactlyNine) {
  const Bytes wire = Raw().u32(9).u8(0x02).u64(1).bytes();
  FrameDecoder decoder(kMinMaxFrame);
  decoder.feed(wire);
  FrameView view;
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  EXPECT_TRUE(view.payload.empty());
  EXPECT_EQ(decoder.error(), "");
}

TEST(FrameDecoder, RejectsOversizedFrameFromTheLengthFieldAlone) {
  constexpr std::uint32_t kMax = 1024;
  // Whole-frame sizes just over the maximum, far over it, and ones that wrap a 32-bit sum.
  for (std::uint32_t length : {kMax - 3, kMax, 1u << 24, 0xFFFFFFFCu, 0xFFFFFFFFu}) {
    SCOPED_TRACE(length);
    FrameDecoder decoder(kMax);
    FrameView view;
    std::size_t largest = 0;
    Status status;
    {
      AllocationWatch watch(kSaneAllocation);
      decoder.feed(Raw().u32(length).bytes());  // the body never arrives
      status = decoder.next(view);
      largest = watch.largest();
    }
    EXPECT_EQ(status, Status::kError);
    EXPECT_FALSE(decoder.error().empty());
    EXPECT_EQ(decoder.buffered(), kLengthFieldSize);
    EXPECT_LT(largest, std::size_t{kMax}) << "buffer grew towards the announced size";
  }
}

TEST(FrameDecoder, DoesNotBufferTowardsAnOversizedFrameFedWithPartOfItsBody) {
  FrameDecoder decoder(kDefaultMaxFrame);
  Bytes wire = Raw().u32(kDefaultMaxFrame).u8(0x03).u64(1).bytes();  // 4 bytes over
  wire.resize(100, 'x');
  std::size_t largest = 0;
  Status status;
  {
    AllocationWatch watch(kSaneAllocation);
    decoder.feed(wire);
    FrameView view;
    status = decoder.next(view);
    largest = watch.largest();
  }
  EXPECT_EQ(status, Status::kError);
  EXPECT_LE(decoder.buffered(), wire.size());
  EXPECT_LT(largest, std::size_t{4096});
}

// Review C3: four bytes announcing a frame within the maximum cost the memory of the bytes
// that arrived, not of the announced length (which used to be allocated and zero-filled).
TEST(FrameDecoder, AnAnnouncedLengthDoesNotAllocateBeyondTheBytesReceived) {
  FrameDecoder decoder(kDefaultMaxFrame);
  const Bytes header = Raw().u32(kDefaultMaxFrame - kLengthFieldSize).u8(0x03).u64(1).bytes();
  std::size_t largest = 0;
  {
    AllocationWatch watch(kSaneAllocation);
    decoder.feed(header);
    FrameView view;
    ASSERT_EQ(decoder.next(view), Status::kNeedMore);
    // What the daemon's read loop does next: ask for room for one more read.
    const auto space = decoder.prepare(64 * 1024);
    EXPECT_GE(space.size(), 64u * 1024);
    largest = watch.largest();
  }
  EXPECT_LT(largest, std::size_t{256 * 1024});
  EXPECT_LT(decoder.capacity(), std::size_t{256 * 1024});
}

TEST(FrameDecoder, GrowsGeometricallyWithTheBytesOfALargeFrameAndStillReassemblesIt) {
  Bytes wire;
  encode_script(wire, 7, std::string(3 << 20, 'g'));
  FrameDecoder decoder(kDefaultMaxFrame);
  std::size_t reallocations = 0;
  std::size_t last_capacity = 0;
  std::size_t pos = 0;
  FrameView view;
  Status status = Status::kNeedMore;
  while (status == Status::kNeedMore && pos < wire.size()) {
    const auto space = decoder.prepare(4096);
    // Never more than twice what was received plus one read: growth follows the bytes.
    EXPECT_LE(decoder.capacity(), 2 * decoder.buffered() + 2 * 4096 + 64);
    if (decoder.capacity() != last_capacity) ++reallocations;
    last_capacity = decoder.capacity();
    const std::size_t n = std::min(space.size(), wire.size() - pos);
    std::memcpy(space.data(), wire.data() + pos, n);
    decoder.commit(n);
    pos += n;
    status = decoder.next(view);
  }
  ASSERT_EQ(status, Status::kFrame) << decoder.error();
  EXPECT_EQ(view.request_id, 7u);
  EXPECT_EQ(view.payload.size(), wire.size() - kHeaderSize);
  EXPECT_LE(decoder.capacity(), wire.size());  // capped at the frame's own size
  EXPECT_LT(reallocations, 20u);               // doubling, not one step per read
}

TEST(FrameDecoder, SetMaxFrameCapsTheHandshakeThenRaisesTheLimit) {
  FrameDecoder decoder(kMaxHandshakeFrame);
  Bytes hello;
  encode_hello(hello, Hello{});
  ASSERT_LE(hello.size(), std::size_t{kMaxHandshakeFrame});
  decoder.feed(hello);
  FrameView view;
  ASSERT_EQ(decoder.next(view), Status::kFrame) << decoder.error();
  decoder.set_max_frame(kDefaultMaxFrame);
  Bytes big;
  encode_script(big, 1, std::string(4096, 'b'));
  decoder.feed(big);
  EXPECT_EQ(decoder.next(view), Status::kFrame) << decoder.error();

  FrameDecoder early(kMaxHandshakeFrame);
  early.feed(std::span(big).first(kLengthFieldSize));
  EXPECT_EQ(early.next(view), Status::kError);
  EXPECT_NE(early.error().find("exceeds the maximum of 256"), std::string::npos) << early.error();
}

TEST(FrameDecoder, AcceptsAFrameOfExactlyMaxFrameAndRejectsOneByteMore) {
  const std::size_t sql_size = kMinMaxFrame - kHeaderSize - 4;  // the string's own length field
  Bytes fits;
  encode_script(fits, 1, std::string(sql_size, 's'));
  ASSERT_EQ(fits.size(), kMinMaxFrame);
  {
    FrameDecoder decoder(kMinMaxFrame);
    decoder.feed(fits);
    FrameView view;
    ASSERT_EQ(decoder.next(view), Status::kFrame) << decoder.error();
    std::string sql;
    std::string why;
    EXPECT_TRUE(decode_script(view.payload, sql, why)) << why;
    EXPECT_EQ(sql.size(), sql_size);
  }
  Bytes too_big;
  encode_script(too_big, 1, std::string(sql_size + 1, 's'));
  {
    FrameDecoder decoder(kMinMaxFrame);
    decoder.feed(std::span(too_big).first(kLengthFieldSize));
    FrameView view;
    EXPECT_EQ(decoder.next(view), Status::kError);
    EXPECT_FALSE(decoder.error().empty());
  }
}

TEST(FrameDecoder, StaysInTheErrorStateOnceItRejectedTheStream) {
  FrameDecoder decoder(kMinMaxFrame);
  decoder.feed(Raw().u32(3).bytes());
  FrameView view;
  ASSERT_EQ(decoder.next(view), Status::kError);
  const std::string reason = decoder.error();
  ASSERT_FALSE(reason.empty());

  Bytes valid;
  encode_empty(valid, MsgType::kPing, 1);
  decoder.feed(valid);
  EXPECT_EQ(decoder.next(view), Status::kError);
  EXPECT_EQ(decoder.next(view), Status::kError);
  EXPECT_EQ(decoder.error(), reason);
}

TEST(FrameDecoder, ErrorAfterGoodFramesStillDeliversTheGoodFrames) {
  Bytes wire;
  encode_empty(wire, MsgType::kPing, 1);
  encode_empty(wire, MsgType::kPing, 2);
  const Bytes bad = Raw().u32(0xFFFFFFFF).bytes();
  wire.insert(wire.end(), bad.begin(), bad.end());
  FrameDecoder decoder(kMinMaxFrame);
  decoder.feed(wire);
  std::vector<Frame> frames;
  EXPECT_EQ(drain(decoder, frames), Status::kError);
  EXPECT_EQ(frames.size(), 2u);
}

// ---- Malformed payloads
// ---------------------------------------------------------------------------

TEST(PayloadReader, FirstFailureSticksAndIsReported) {
  const Bytes two = {0x01, 0x02};
  PayloadReader r(two);
  std::uint32_t u = 0;
  EXPECT_FALSE(r.u32(u));
  EXPECT_FALSE(r.ok());
  const std::string first = r.error();
  EXPECT_FALSE(first.empty());
  std::uint8_t b = 0;
  EXPECT_FALSE(r.u8(b)) << "a later read that would fit still fails";
  EXPECT_FALSE(r.finish());
  EXPECT_EQ(r.error(), first);
}

TEST(PayloadReader, CountRejectsItemsThatCannotFitInWhatRemains) {
  const Bytes payload = Raw().u32(3).u64(0).u32(0).bytes();  // 12 bytes after the count
  {
    PayloadReader r(payload);
    std::uint32_t n = 0;
    EXPECT_TRUE(r.count(n, 4));
    EXPECT_EQ(n, 3u);
  }
  {
    PayloadReader r(payload);
    std::uint32_t n = 0;
    EXPECT_FALSE(r.count(n, 5));
    EXPECT_FALSE(std::string(r.error()).empty());
  }
}

TEST(MalformedPayload, EveryTruncationOfEveryMessageIsRejected) {
  for (const Sample& s : valid_samples()) {
    SCOPED_TRACE(s.what);
    const auto payload = payload_of(s.wire);
    ASSERT_TRUE(accepted(s.layout, payload));
    for (std::size_t cut = 0; cut < payload.size(); ++cut) {
      ASSERT_TRUE(rejected(s.layout, payload.first(cut))) << "cut at " << cut;
    }
  }
}

TEST(MalformedPayload, TrailingBytesAreRejected) {
  for (const Sample& s : valid_samples()) {
    SCOPED_TRACE(s.what);
    for (const Bytes& extra : {Bytes{0x00}, Bytes{0xFF, 0xFF, 0xFF, 0xFF}}) {
      Bytes payload(payload_of(s.wire).begin(), payload_of(s.wire).end());
      payload.insert(payload.end(), extra.begin(), extra.end());
      EXPECT_TRUE(rejected(s.layout, payload));
    }
  }
}

TEST(MalformedPayload, UnknownValueTagIsRejected) {
  for (std::uint8_t tag : {5, 6, 0x7F, 0x80, 0xFF}) {
    SCOPED_TRACE(static_cast<int>(tag));
    // Each bad tag is followed by 8 bytes, so that only the tag is wrong.
    EXPECT_TRUE(
        rejected(Layout::kStatement, Raw().string("SELECT ?").u32(1).u8(tag).u64(0).bytes()));
    EXPECT_TRUE(rejected(Layout::kStatement,
                         Raw().string("SELECT ?, ?").u32(2).u8(0).u8(tag).u64(0).bytes()));
    EXPECT_TRUE(rejected(Layout::kMany, Raw().string("?").u32(1).u32(1).u8(tag).u64(0).bytes()));
    EXPECT_TRUE(rejected(Layout::kResult,
                         Raw().i64(0).i64(0).u32(1).string("a").u32(1).u8(tag).u64(0).bytes()));
  }
}

TEST(MalformedPayload, StringLongerThanThePayloadIsRejected) {
  for (std::uint32_t length : {5u, 1000u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    SCOPED_TRACE(length);
    // Four bytes follow each announced length, so length 5 is exactly one byte short.
    EXPECT_TRUE(rejected(Layout::kStatement, Raw().u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kScript, Raw().u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kMany, Raw().u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(
        rejected(Layout::kHelloOk, Raw().u16(1).u64(0).u32(64).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(
        rejected(Layout::kError, Raw().u8(0).i32(1).i32(1).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kStatement,
                         Raw().string("?").u32(1).u8(3).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kStatement,
                         Raw().string("?").u32(1).u8(4).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(
        rejected(Layout::kResult, Raw().i64(0).i64(0).u32(1).u32(length).chars("abcd").bytes()));
  }
}

TEST(MalformedPayload, ParamsCountBeyondTheRemainingBytesIsRejected) {
  for (std::uint32_t count : {4u, 1000u, 0x80000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(count);
    // Three NULLs follow: a count of 4 is one value short.
    EXPECT_TRUE(
        rejected(Layout::kStatement, Raw().string("x").u32(count).u8(0).u8(0).u8(0).bytes()));
    EXPECT_TRUE(
        rejected(Layout::kMany, Raw().string("x").u32(1).u32(count).u8(0).u8(0).u8(0).bytes()));
  }
}

TEST(MalformedPayload, ParamsCountOfExactlyTheRemainingBytesIsAccepted) {
  EXPECT_TRUE(accepted(Layout::kStatement, Raw().string("x").u32(3).u8(0).u8(0).u8(0).bytes()));
}

TEST(MalformedPayload, ExecuteManyAbsurdRowCountIsRejected) {
  for (std::uint32_t rows : {3u, 0x40000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(rows);
    // Two empty parameter lists follow: a row count of 3 is one list short.
    EXPECT_TRUE(rejected(Layout::kMany, Raw().string("x").u32(rows).u32(0).u32(0).bytes()));
  }
  EXPECT_TRUE(accepted(Layout::kMany, Raw().string("x").u32(2).u32(0).u32(0).bytes()));
}

TEST(MalformedPayload, ResultHugeColumnCountIsRejected) {
  for (std::uint32_t columns : {3u, 0x40000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(columns);
    // Two empty column names follow, then a zero row count.
    EXPECT_TRUE(rejected(Layout::kResult,
                         Raw().i64(1).i64(0).u32(columns).string("").string("").u32(0).bytes()));
  }
}

TEST(MalformedPayload, ResultHugeRowCountIsRejectedWithoutAllocatingForIt) {
  for (std::uint32_t rows : {3u, 0x10000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(rows);
    // One column, two NULL rows follow: a row count of 3 is one row short.
    EXPECT_TRUE(rejected(Layout::kResult,
                         Raw().i64(1).i64(0).u32(1).string("a").u32(rows).u8(0).u8(0).bytes()));
    // Two columns, one row of two NULLs.
    EXPECT_TRUE(
        rejected(Layout::kResult,
                 Raw().i64(1).i64(0).u32(2).string("a").string("b").u32(rows).u8(0).u8(0).bytes()));
  }
}

TEST(MalformedPayload, ResultRowsWithoutColumnsAreRejected) {
  for (std::uint32_t rows : {1u, 2u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(rows);
    EXPECT_TRUE(rejected(Layout::kResult, Raw().i64(1).i64(0).u32(0).u32(rows).bytes()));
  }
  EXPECT_TRUE(accepted(Layout::kResult, Raw().i64(1).i64(0).u32(0).u32(0).bytes()));
}

TEST(MalformedPayload, ErrorWithUnknownDomainIsRejected) {
  for (std::uint8_t domain : {2, 3, 0x7F, 0xFF}) {
    SCOPED_TRACE(static_cast<int>(domain));
    EXPECT_TRUE(rejected(Layout::kError, Raw().u8(domain).i32(1).i32(1).string("m").bytes()));
  }
  EXPECT_TRUE(accepted(Layout::kError, Raw().u8(0).i32(1).i32(1).string("m").bytes()));
  EXPECT_TRUE(accepted(Layout::kError, Raw().u8(1).i32(1).i32(1).string("m").bytes()));
}

TEST(MalformedPayload, EmptyMessageWithAPayloadIsRejected) {
  EXPECT_TRUE(rejected(Layout::kEmpty, Bytes{0x00}));
  EXPECT_TRUE(rejected(Layout::kEmpty, Bytes(100, 0xFF)));
}

// ---- Mutation
// ---------------------------------------------------------------------------------------

// SplitMix64: a fixed, portable sequence (std distributions differ between standard libraries).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::uint64_t state_;
};

void mutate(Bytes& b, SplitMix64& rng) {
  static constexpr std::uint8_t kBytes[] = {0x00, 0x01, 0x04, 0x05, 0x7F, 0x80, 0xFE, 0xFF};
  static constexpr std::uint32_t kWords[] = {
      0, 1, 2, 8, 9, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x00010000};
  switch (rng.below(6)) {
    case 0:  // flip a bit
      if (!b.empty()) b[rng.below(b.size())] ^= static_cast<std::uint8_t>(1u << rng.below(8));
      break;
    case 1:  // overwrite a byte
      if (!b.empty()) {
        b[rng.below(b.size())] = rng.below(2) != 0 ? kBytes[rng.below(std::size(kBytes))]
                                                   : static_cast<std::uint8_t>(rng.next());
      }
      break;
    case 2:  // insert a byte
      b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size() + 1)),
               static_cast<std::uint8_t>(rng.next()));
      break;
    case 3:  // delete a few bytes
      if (!b.empty()) {
        const std::size_t at = rng.below(b.size());
        const std::size_t n = std::min(b.size() - at, 1 + rng.below(4));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at),
                b.begin() + static_cast<std::ptrdiff_t>(at + n));
      }
      break;
    case 4:  // overwrite a would-be length or count
      if (b.size() >= 4)
        write_u32_le(b, rng.below(b.size() - 3), kWords[rng.below(std::size(kWords))]);
      break;
    case 5:  // truncate
      b.resize(rng.below(b.size() + 1));
      break;
  }
}

TEST(CodecFuzz, MutatedFramesAreDecodedOrRejectedWithAReasonAndNeverCrash) {
  constexpr int kIterations = 20000;
  constexpr std::uint32_t kSmallMaxFrame = 256;
  const std::vector<Sample> corpus = valid_samples();
  SplitMix64 rng(0x5053594E00000001);  // fixed seed: every run tests the same inputs

  std::size_t frames = 0;
  std::size_t stream_errors = 0;
  std::array<std::size_t, kAllLayouts.size()> accepted_by{};
  std::array<std::size_t, kAllLayouts.size()> rejected_by{};
  std::string failure;

  for (int iteration = 0; iteration < kIterations && failure.empty(); ++iteration) {
    Bytes wire = corpus[rng.below(corpus.size())].wire;
    if (rng.below(4) == 0) {
      const Bytes& more = corpus[rng.below(corpus.size())].wire;
      wire.insert(wire.end(), more.begin(), more.end());
    }
    const std::size_t mutations = 1 + rng.below(4);
    for (std::size_t i = 0; i < mutations; ++i) mutate(wire, rng);
    // Half the time make the length field agree with the mutated size, so that the damage
    // reaches the payload decoders instead of stopping at the framing.
    if (wire.size() >= kLengthFieldSize && rng.below(2) == 0) {
      write_u32_le(wire, 0, static_cast<std::uint32_t>(wire.size() - kLengthFieldSize));
    }

    auto fail = [&](const std::string& what) {
      if (failure.empty()) {
        failure = "iteration " + std::to_string(iteration) + ": " + what + "\ninput: " + hex(wire);
      }
    };

    FrameDecoder decoder(kSmallMaxFrame);
    std::size_t pos = 0;
    bool stopped = false;
    while (pos < wire.size() && !stopped && failure.empty()) {
      const std::size_t n = std::min(wire.size() - pos, 1 + rng.below(48));
      if (rng.below(2) == 0) {
        decoder.feed(std::span(wire).subspan(pos, n));
      } else {
        const auto space = decoder.prepare(n + rng.below(16));
        std::memcpy(space.data(), wire.data() + pos, n);
        decoder.commit(n);
      }
      pos += n;
      if (decoder.buffered() > wire.size()) fail("decoder buffers more than it was fed");

      FrameView view;
      for (;;) {
        const Status status = decoder.next(view);
        if (status == Status::kNeedMore) break;
        if (status == Status::kError) {
          ++stream_errors;
          if (decoder.error().empty()) fail("stream rejected without a reason");
          stopped = true;
          break;
        }
        ++frames;
        if (view.payload.size() + kHeaderSize > kSmallMaxFrame) fail("frame over max_frame");
        for (std::size_t i = 0; i < kAllLayouts.size(); ++i) {
          const Layout layout = kAllLayouts[i];
          const DecodeOutcome out = decode_as(layout, view.payload);
          if (out.threw) {
            fail(std::string(name(layout)) + " threw " + out.why + " on payload " +
                 hex(view.payload));
          } else if (!out.ok && out.why.empty()) {
            fail(std::string(name(layout)) + " rejected without a reason: " + hex(view.payload));
          } else if (out.ok && out.reencoded != Bytes(view.payload.begin(), view.payload.end())) {
            fail(std::string(name(layout)) + " accepted a payload that does not re-encode to " +
                 "itself: " + hex(view.payload));
          }
          ++(out.ok ? accepted_by : rejected_by)[i];
        }
      }
    }
  }

  ASSERT_TRUE(failure.empty()) << failure;
  // The loop must have exercised every path, not just the framing errors.
  EXPECT_GT(frames, std::size_t{kIterations / 2});
  EXPECT_GT(stream_errors, std::size_t{kIterations / 10});
  for (std::size_t i = 0; i < kAllLayouts.size(); ++i) {
    EXPECT_GT(accepted_by[i], 0u) << name(kAllLayouts[i]);
    EXPECT_GT(rejected_by[i], 0u) << name(kAllLayouts[i]);
  }
}

}  // namespace
}  // namespace pasyn::proto

namespace {

TEST(NamedParamsCodec, TypeBitCombinesWithOneModeAndNotWithScript) {
  using namespace pasyn::proto;
  EXPECT_EQ(base_type(0x13), 0x03);
  EXPECT_EQ(base_type(0x56), 0x06);
  EXPECT_EQ(base_type(0x34), 0x04);
  EXPECT_TRUE(has_named_params(0x53));
  EXPECT_TRUE(in_transaction(0x53));
  EXPECT_FALSE(has_named_params(0x43));
  EXPECT_EQ(base_type(0x17), 0x17);  // EXECUTE_SCRIPT has no parameters: unknown
  EXPECT_EQ(base_type(0x73), 0x73);  // transaction and key together: unknown
  EXPECT_EQ(base_type(0x12), 0x12);  // PING with the bit: unknown
}

TEST(NamedParamsCodec, NamedStatementRoundTripsAndRejectsTruncation) {
  using namespace pasyn::proto;
  std::vector<std::uint8_t> out;
  encode_statement_named(out, MsgType::kExecute, 5, "INSERT INTO t VALUES (:a)",
                         pasyn::NamedParams{{{"a", std::int64_t{1}}, {"b", std::string("x")}}});
  FrameDecoder d;
  d.feed(out);
  FrameView f;
  ASSERT_EQ(d.next(f), FrameDecoder::Status::kFrame);
  EXPECT_EQ(f.type, 0x13);
  StatementView v;
  std::string why;
  ASSERT_TRUE(decode_statement_view(f.payload, v, why, true)) << why;
  EXPECT_TRUE(v.params.named);
  EXPECT_EQ(v.params.count, 2u);
  PayloadReader r(v.params.bytes);
  std::string_view name;
  ValueView value;
  ASSERT_TRUE(r.string(name) && r.value_view(value));
  EXPECT_EQ(name, "a");
  EXPECT_EQ(value.integer, 1);
  // Read as a positional list, the same bytes are malformed.
  EXPECT_FALSE(decode_statement_view(f.payload, v, why, false));
  EXPECT_FALSE(decode_statement_view(f.payload.first(f.payload.size() - 1), v, why, true));
}

}  // namespace
