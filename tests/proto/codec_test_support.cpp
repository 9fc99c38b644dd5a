// The definitions of codec_test_support.hpp's helpers, and the one replacement of the global
// operator new in pasyn_unit_tests (replaced_new.hpp) that the allocation watch rests on.
#include "codec_test_support.hpp"

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../replaced_new.hpp"

// ---- Allocation watch ---------------------------------------------------------------------------
// Outside an AllocationWatch every allocation is allowed; inside one, the largest request is
// recorded and any above the watch's limit refused (codec_test_support.hpp).

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

namespace pasyn::proto::codec_test {
namespace {

Blob every_byte() {
  Blob b(256);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i);
  return b;
}

}  // namespace

AllocationWatch::AllocationWatch(std::size_t limit) {
  g_largest_request.store(0);
  g_request_limit.store(limit);
  g_watching.store(true);
}

AllocationWatch::~AllocationWatch() { g_watching.store(false); }

std::size_t AllocationWatch::largest() const { return g_largest_request.load(); }

// ---- Helpers ------------------------------------------------------------------------------------

std::string hex(std::span<const std::uint8_t> b, std::size_t max) {
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

void PrintTo(const Frame& f, std::ostream* os) {
  *os << "{type 0x" << hex(std::span(&f.type, 1)) << ", id " << f.request_id << ", payload ["
      << hex(f.payload) << "]}";
}

Frame copy_frame(const FrameView& v) {
  return {v.type, v.request_id, Bytes(v.payload.begin(), v.payload.end())};
}

Status drain(FrameDecoder& decoder, std::vector<Frame>& frames) {
  FrameView view;
  for (;;) {
    const Status status = decoder.next(view);
    if (status != Status::kFrame) return status;
    frames.push_back(copy_frame(view));
  }
}

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

}  // namespace pasyn::proto::codec_test
