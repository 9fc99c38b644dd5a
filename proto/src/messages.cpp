// The message layouts of proto/PROTOCOL.md: each message's encoder and decoder, built on the
// framing in codec.cpp.
#include <pasyn/proto/codec.hpp>

#include <algorithm>
#include <cassert>
#include <cstring>

#include "value_layout.hpp"

namespace pasyn::proto {

void encode_hello(std::vector<std::uint8_t>& out, const Hello& m) {
  FrameWriter w(out, MsgType::kHello, 0);
  w.u32(m.magic);
  w.u16(m.version);
  w.u64(m.capabilities);
  w.finish();
}

bool decode_hello(std::span<const std::uint8_t> payload, Hello& m, std::string& why) {
  PayloadReader r(payload);
  r.u32(m.magic) && r.u16(m.version) && r.u64(m.capabilities);
  return r.finish(why);
}

void encode_hello_ok(std::vector<std::uint8_t>& out, const HelloOk& m) {
  FrameWriter w(out, MsgType::kHelloOk, 0);
  w.u16(m.version);
  w.u64(m.capabilities);
  w.u32(m.max_frame);
  w.string(m.server);
  w.finish();
}

bool decode_hello_ok(std::span<const std::uint8_t> payload, HelloOk& m, std::string& why) {
  PayloadReader r(payload);
  std::string_view server;
  if (r.u16(m.version) && r.u64(m.capabilities) && r.u32(m.max_frame) && r.string(server)) {
    m.server = server;
  }
  return r.finish(why);
}

void encode_empty(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id) {
  FrameWriter(out, type, request_id).finish();
}

bool decode_empty(std::span<const std::uint8_t> payload, std::string& why) {
  PayloadReader r(payload);
  return r.finish(why);
}

bool decode_statement(std::span<const std::uint8_t> payload, Statement& m, std::string& why) {
  PayloadReader r(payload);
  std::string_view sql;
  if (r.string(sql)) {
    m.sql = sql;
    r.params(m.params);
  }
  return r.finish(why);
}

namespace {

std::size_t encoded_size(const Params& params) {
  detail::SizeCount size{4};  // the count
  for (const auto& v : params) detail::write_value(size, v);
  return size.n;
}

// Writes a frame whose size is known before it starts, into bytes already added to the output
// (one resize per frame, where FrameWriter checks the capacity and grows the vector per field):
// the encoders of the requests that carry parameters, the client's hot path. Its layout is
// FrameWriter's, field for field.
class SizedFrame {
 public:
  SizedFrame(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
             std::size_t size) {
    const std::size_t start = out.size();
    out.resize(start + size);
    p_ = out.data() + start;
    end_ = p_ + size;
    put(static_cast<std::uint32_t>(size - kLengthFieldSize));
    put(static_cast<std::uint8_t>(type));
    put(request_id);
  }

  template <typename T>
  void put(T v) noexcept {
    std::memcpy(p_, &v, sizeof v);
    p_ += sizeof v;
  }
  void bytes(const void* b, std::size_t n) noexcept {
    put(static_cast<std::uint32_t>(n));
    if (n != 0) std::memcpy(p_, b, n);
    p_ += n;
  }
  void u8(std::uint8_t v) noexcept { put(v); }
  void i64(std::int64_t v) noexcept { put(v); }
  void f64(double v) noexcept { put(v); }
  void params(const Params& params) noexcept {
    put(static_cast<std::uint32_t>(params.size()));
    for (const auto& v : params) detail::write_value(*this, v);
  }
  // True when exactly the announced size was written (encoded_size and params agree).
  bool complete() const noexcept { return p_ == end_; }

 private:
  std::uint8_t* p_;
  std::uint8_t* end_;
};

}  // namespace

void encode_statement(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                      std::string_view sql, const Params& params) {
  SizedFrame w(out, type, request_id, kHeaderSize + 4 + sql.size() + encoded_size(params));
  w.bytes(sql.data(), sql.size());
  w.params(params);
  assert(w.complete());
}

void encode_many(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::string_view sql,
                 const std::vector<Params>& rows) {
  // One allocation for the whole frame: a large batch would otherwise be copied by every
  // doubling of the vector.
  std::size_t size = kHeaderSize + 4 + sql.size() + 4;
  for (const auto& row : rows) size += encoded_size(row);
  SizedFrame w(out, MsgType::kExecuteMany, request_id, size);
  w.bytes(sql.data(), sql.size());
  w.put(static_cast<std::uint32_t>(rows.size()));
  for (const auto& row : rows) w.params(row);
  assert(w.complete());
}

bool decode_many(std::span<const std::uint8_t> payload, Many& m, std::string& why) {
  PayloadReader r(payload);
  std::string_view sql;
  std::uint32_t n = 0;
  if (r.string(sql) && r.count(n, 4)) {  // every parameter list takes at least its count
    m.sql = sql;
    m.rows.clear();
    m.rows.reserve(n);
    for (std::uint32_t i = 0; i < n && r.params(m.rows.emplace_back()); ++i) {
    }
  }
  return r.finish(why);
}

bool decode_statement_view(std::span<const std::uint8_t> payload, StatementView& m,
                           std::string& why, bool named) {
  PayloadReader r(payload);
  r.string(m.sql) && (named ? r.named_params_view(m.params) : r.params_view(m.params));
  return r.finish(why);
}

void encode_statement_named(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                            std::string_view sql, const NamedParams& params) {
  const std::size_t start = out.size();
  FrameWriter w(out, type, request_id);
  w.string(sql);
  w.named_params(params);
  w.finish();
  out[start + kLengthFieldSize] |= kNamedParams;
}

void encode_many_named(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                       std::string_view sql, const std::vector<NamedParams>& rows) {
  const std::size_t start = out.size();
  FrameWriter w(out, MsgType::kExecuteMany, request_id);
  w.string(sql);
  w.u32(static_cast<std::uint32_t>(rows.size()));
  for (const auto& row : rows) w.named_params(row);
  w.finish();
  out[start + kLengthFieldSize] |= kNamedParams;
}

bool decode_many_view(std::span<const std::uint8_t> payload, ManyView& m, std::string& why,
                      bool named) {
  PayloadReader r(payload);
  m.named = named;
  if (r.string(m.sql) && r.count(m.rows, 4)) {  // every parameter list takes at least its count
    const std::size_t start = payload.size() - r.remaining();
    ParamsView row;
    m.max_params = 0;
    for (std::uint32_t i = 0; i < m.rows && (named ? r.named_params_view(row) : r.params_view(row));
         ++i) {
      m.max_params = std::max(m.max_params, row.count);
    }
    m.bytes = payload.subspan(start, payload.size() - r.remaining() - start);
  }
  return r.finish(why);
}

void encode_text(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                 std::string_view text) {
  FrameWriter w(out, type, request_id);
  w.string(text);
  w.finish();
}

bool decode_text(std::span<const std::uint8_t> payload, std::string& text, std::string& why) {
  PayloadReader r(payload);
  std::string_view s;
  if (r.string(s)) text = s;
  return r.finish(why);
}

void encode_script(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::string_view sql) {
  encode_text(out, MsgType::kExecuteScript, request_id, sql);
}

bool decode_script(std::span<const std::uint8_t> payload, std::string& sql, std::string& why) {
  return decode_text(payload, sql, why);
}

void encode_result(std::vector<std::uint8_t>& out, std::uint64_t request_id, const Result& m) {
  FrameWriter w(out, MsgType::kResult, request_id);
  w.i64(m.changes);
  w.i64(m.last_rowid);
  w.u32(static_cast<std::uint32_t>(m.columns.size()));
  for (const auto& c : m.columns) w.string(c);
  w.u32(static_cast<std::uint32_t>(m.rows.size()));
  for (const auto& row : m.rows) {
    for (const auto& v : row) w.value(v);
  }
  w.finish();
}

void encode_result_counts(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                          std::int64_t changes, std::int64_t last_rowid) {
  SizedFrame w(out, MsgType::kResult, request_id, kHeaderSize + 8 + 8 + 4 + 4);
  w.put(changes);
  w.put(last_rowid);
  w.put(std::uint32_t{0});  // no columns
  w.put(std::uint32_t{0});  // no rows
  assert(w.complete());
}

bool decode_result_counts(std::span<const std::uint8_t> payload, std::int64_t& changes,
                          std::int64_t& last_rowid) noexcept {
  std::uint32_t columns, rows;
  if (payload.size() != sizeof changes + sizeof last_rowid + sizeof columns + sizeof rows) {
    return false;
  }
  const std::uint8_t* p = payload.data();
  std::memcpy(&columns, p + 16, sizeof columns);
  std::memcpy(&rows, p + 20, sizeof rows);
  if (columns != 0 || rows != 0) return false;
  std::memcpy(&changes, p, sizeof changes);
  std::memcpy(&last_rowid, p + 8, sizeof last_rowid);
  return true;
}

void add_idempotency_key(std::vector<std::uint8_t>& out, std::size_t frame_start,
                         std::string_view key) {
  // Inserted in place, without a temporary buffer (a client's hot path allocates nothing here):
  // room for the size and the key in one move of the frame's tail, then both copied in.
  const auto n = static_cast<std::uint32_t>(key.size());
  const std::size_t at = frame_start + kHeaderSize;
  out.insert(out.begin() + static_cast<std::ptrdiff_t>(at), sizeof n + key.size(), 0);
  std::memcpy(out.data() + at, &n, sizeof n);
  if (!key.empty()) std::memcpy(out.data() + at + sizeof n, key.data(), key.size());
  std::uint32_t length;
  std::memcpy(&length, out.data() + frame_start, sizeof length);
  length += static_cast<std::uint32_t>(sizeof n + key.size());
  std::memcpy(out.data() + frame_start, &length, sizeof length);
  out[frame_start + kLengthFieldSize] |= kIdempotent;
}

void add_transaction_number(std::vector<std::uint8_t>& out, std::size_t frame_start,
                            std::uint64_t transaction) {
  std::uint8_t prefix[sizeof transaction];  // no temporary vector: see add_idempotency_key
  std::memcpy(prefix, &transaction, sizeof transaction);
  out.insert(out.begin() + static_cast<std::ptrdiff_t>(frame_start + kHeaderSize),
             std::begin(prefix), std::end(prefix));
  std::uint32_t length;
  std::memcpy(&length, out.data() + frame_start, sizeof length);
  length += static_cast<std::uint32_t>(sizeof prefix);
  std::memcpy(out.data() + frame_start, &length, sizeof length);
  out[frame_start + kLengthFieldSize] |= kInTransaction;
}

void encode_transaction_end(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                            std::uint64_t transaction) {
  FrameWriter w(out, type, request_id);
  w.u64(transaction);
  w.finish();
}

bool decode_transaction_end(std::span<const std::uint8_t> payload, std::uint64_t& transaction,
                            std::string& why) {
  PayloadReader r(payload);
  r.u64(transaction);
  return r.finish(why);
}

void encode_report(std::vector<std::uint8_t>& out, std::uint64_t request_id, const Report& m) {
  FrameWriter w(out, MsgType::kResult, request_id);
  w.i64(0);
  w.i64(0);
  w.u32(2);
  w.string("name");
  w.string("value");
  w.u32(static_cast<std::uint32_t>(m.size()));
  for (const auto& [name, value] : m) {
    w.u8(static_cast<std::uint8_t>(ValueType::kText));
    w.string(name);
    w.value(value);
  }
  w.finish();
}

bool decode_result(std::span<const std::uint8_t> payload, Result& m, std::string& why) {
  PayloadReader r(payload);
  std::uint32_t ncols = 0, nrows = 0;
  if (r.i64(m.changes) && r.i64(m.last_rowid) && r.count(ncols, 4)) {
    m.columns.clear();
    m.columns.reserve(ncols);
    std::string_view name;
    for (std::uint32_t i = 0; i < ncols && r.string(name); ++i) m.columns.emplace_back(name);
    // Each row takes at least one tag byte per column; a zero-column row takes nothing, so a
    // row count without columns must be zero.
    if (!r.count(nrows, ncols)) return r.finish(why);  // nrows unchecked: reserve nothing
    if (ncols == 0 && nrows != 0) {
      why = "rows without columns";
      return false;
    }
    m.rows.clear();
    m.rows.reserve(nrows);
    for (std::uint32_t i = 0; i < nrows && r.ok(); ++i) {
      auto& row = m.rows.emplace_back();
      row.resize(ncols);
      for (std::uint32_t c = 0; c < ncols && r.value(row[c]); ++c) {
      }
    }
  }
  return r.finish(why);
}

void encode_error(std::vector<std::uint8_t>& out, std::uint64_t request_id, const ErrorReply& m) {
  FrameWriter w(out, MsgType::kError, request_id);
  w.u8(static_cast<std::uint8_t>(m.domain));
  w.i32(m.code);
  w.i32(m.extended_code);
  w.string(m.message);
  w.finish();
}

bool decode_error(std::span<const std::uint8_t> payload, ErrorReply& m, std::string& why) {
  PayloadReader r(payload);
  std::uint8_t domain = 0;
  std::string_view message;
  if (r.u8(domain) && r.i32(m.code) && r.i32(m.extended_code) && r.string(message)) {
    if (domain > static_cast<std::uint8_t>(ErrorDomain::kPasyn)) {
      why = "unknown error domain";
      return false;
    }
    m.domain = static_cast<ErrorDomain>(domain);
    m.message = message;
  }
  return r.finish(why);
}

void encode_pasyn_error(std::vector<std::uint8_t>& out, std::uint64_t request_id, PasynCode code,
                        std::string_view message) {
  FrameWriter w(out, MsgType::kError, request_id);
  w.u8(static_cast<std::uint8_t>(ErrorDomain::kPasyn));
  w.i32(static_cast<std::int32_t>(code));
  w.i32(static_cast<std::int32_t>(code));
  w.string(message);
  w.finish();
}

}  // namespace pasyn::proto
