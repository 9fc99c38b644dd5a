// Implementation of the frame decoder, writer and message layouts of proto/PROTOCOL.md.
#include <pasyn/proto/codec.hpp>

#include <algorithm>
#include <bit>
#include <cstring>

namespace pasyn::proto {

static_assert(std::endian::native == std::endian::little,
              "the codec copies integers as little-endian; add byte swapping for this target");

const char* to_string(MsgType type) noexcept {
  switch (type) {
    case MsgType::kHello:
      return "HELLO";
    case MsgType::kPing:
      return "PING";
    case MsgType::kExecute:
      return "EXECUTE";
    case MsgType::kExecuteRowid:
      return "EXECUTE_ROWID";
    case MsgType::kExecuteFetch:
      return "EXECUTE_FETCH";
    case MsgType::kExecuteMany:
      return "EXECUTE_MANY";
    case MsgType::kExecuteScript:
      return "EXECUTE_SCRIPT";
    case MsgType::kShutdown:
      return "SHUTDOWN";
    case MsgType::kBegin:
      return "BEGIN";
    case MsgType::kCommit:
      return "COMMIT";
    case MsgType::kRollback:
      return "ROLLBACK";
    case MsgType::kStats:
      return "STATS";
    case MsgType::kCheckpoint:
      return "CHECKPOINT";
    case MsgType::kBackup:
      return "BACKUP";
    case MsgType::kOk:
      return "OK";
    case MsgType::kHelloOk:
      return "HELLO_OK";
    case MsgType::kPong:
      return "PONG";
    case MsgType::kResult:
      return "RESULT";
    case MsgType::kShutdownOk:
      return "SHUTDOWN_OK";
    case MsgType::kError:
      return "ERROR";
  }
  return "UNKNOWN";
}

namespace {

template <typename T>
void put(std::vector<std::uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

template <typename T>
T load(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

// ---- FrameDecoder -----------------------------------------------------------------------------

FrameDecoder::FrameDecoder(std::uint32_t max_frame) : max_frame_(max_frame) {}

std::span<std::uint8_t> FrameDecoder::prepare(std::size_t n) {
  if (begin_ == end_) {
    begin_ = end_ = 0;
    // Give back the buffer of a large frame once it is consumed: an idle connection keeps
    // only what a small read needs (1,000 connections must fit in tens of MiB).
    if (capacity_ > kKeepBuffer && n <= kKeepBuffer) reallocate(n);
  }
  if (capacity_ - end_ < n) {
    const std::size_t live = end_ - begin_;
    const std::size_t wanted = live + n;
    if (capacity_ >= wanted) {  // slide the unread tail to the front: that makes room
      std::memmove(buf_.get(), buf_.get() + begin_, live);
      end_ = live;
      begin_ = 0;
    } else {
      // Grow with the bytes received (doubling amortizes the copies), never towards the length
      // a peer merely announced: at most to the end of the partial frame, if `n` fits in it.
      std::size_t size = std::max(wanted, capacity_ * 2);
      if (partial_ > 0) size = std::max(wanted, std::min(size, partial_));
      reallocate(size);
    }
  }
  return {buf_.get() + end_, capacity_ - end_};
}

void FrameDecoder::reallocate(std::size_t size) {
  auto fresh = std::make_unique_for_overwrite<std::uint8_t[]>(size);
  const std::size_t live = end_ - begin_;
  if (live > 0) std::memcpy(fresh.get(), buf_.get() + begin_, live);
  buf_ = std::move(fresh);
  capacity_ = size;
  begin_ = 0;
  end_ = live;
}

void FrameDecoder::commit(std::size_t n) { end_ += n; }

void FrameDecoder::feed(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return;
  auto dst = prepare(bytes.size());
  std::memcpy(dst.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

FrameDecoder::Status FrameDecoder::next(FrameView& out) {
  if (!error_.empty()) return Status::kError;
  const std::size_t avail = end_ - begin_;
  if (avail < kLengthFieldSize) return Status::kNeedMore;
  const auto* p = buf_.get() + begin_;
  const std::uint32_t length = load<std::uint32_t>(p);
  if (length < kMinLength) {
    error_ = "frame length " + std::to_string(length) + " is below the minimum of 9";
    return Status::kError;
  }
  if (std::uint64_t{length} + kLengthFieldSize > max_frame_) {
    error_ = "frame of " + std::to_string(std::uint64_t{length} + kLengthFieldSize) +
             " bytes exceeds the maximum of " + std::to_string(max_frame_);
    return Status::kError;
  }
  if (avail < kLengthFieldSize + length) {
    partial_ = kLengthFieldSize + length;  // bounds the growth of the buffer, see prepare()
    return Status::kNeedMore;
  }
  partial_ = 0;
  out.type = p[4];
  out.request_id = load<std::uint64_t>(p + 5);
  out.payload = {p + kHeaderSize, length - kMinLength};
  begin_ += kLengthFieldSize + length;
  return Status::kFrame;
}

// ---- FrameWriter ------------------------------------------------------------------------------

FrameWriter::FrameWriter(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id)
    : out_(out), start_(out.size()) {
  put<std::uint32_t>(out_, 0);  // patched by finish()
  put<std::uint8_t>(out_, static_cast<std::uint8_t>(type));
  put<std::uint64_t>(out_, request_id);
}

void FrameWriter::u8(std::uint8_t v) { out_.push_back(v); }
void FrameWriter::u16(std::uint16_t v) { put(out_, v); }
void FrameWriter::u32(std::uint32_t v) { put(out_, v); }
void FrameWriter::u64(std::uint64_t v) { put(out_, v); }
void FrameWriter::f64(double v) { put(out_, v); }

void FrameWriter::string(std::string_view s) {
  put<std::uint32_t>(out_, static_cast<std::uint32_t>(s.size()));
  out_.insert(out_.end(), s.begin(), s.end());
}

void FrameWriter::bytes(std::span<const std::uint8_t> b) {
  put<std::uint32_t>(out_, static_cast<std::uint32_t>(b.size()));
  out_.insert(out_.end(), b.begin(), b.end());
}

void FrameWriter::value(const Value& v) {
  u8(static_cast<std::uint8_t>(v.index()));
  switch (type_of(v)) {
    case ValueType::kNull:
      break;
    case ValueType::kInteger:
      i64(std::get<std::int64_t>(v));
      break;
    case ValueType::kReal:
      f64(std::get<double>(v));
      break;
    case ValueType::kText:
      string(std::get<std::string>(v));
      break;
    case ValueType::kBlob:
      bytes(std::get<Blob>(v));
      break;
  }
}

void FrameWriter::params(const Params& p) {
  u32(static_cast<std::uint32_t>(p.size()));
  for (const auto& v : p) value(v);
}

void FrameWriter::named_params(const NamedParams& p) {
  u32(static_cast<std::uint32_t>(p.values.size()));
  for (const auto& [name, v] : p.values) {
    string(name);
    value(v);
  }
}

void FrameWriter::patch_u32(std::size_t offset, std::uint32_t v) {
  std::memcpy(out_.data() + offset, &v, sizeof v);
}

void FrameWriter::patch_u64(std::size_t offset, std::uint64_t v) {
  std::memcpy(out_.data() + offset, &v, sizeof v);
}

std::size_t FrameWriter::finish() {
  const std::size_t size = out_.size() - start_;
  patch_u32(start_, static_cast<std::uint32_t>(size - kLengthFieldSize));
  return size;
}

void FrameWriter::abandon() { out_.resize(start_); }

// ---- PayloadReader ----------------------------------------------------------------------------

bool PayloadReader::fail(const char* why) {
  if (!error_) error_ = why;
  return false;
}

bool PayloadReader::take(std::size_t n, const std::uint8_t*& p) {
  if (error_) return false;
  if (remaining() < n) return fail("payload truncated");
  p = data_.data() + pos_;
  pos_ += n;
  return true;
}

#define PASYN_READ_SCALAR(name, T)         \
  bool PayloadReader::name(T& v) {         \
    const std::uint8_t* p;                 \
    if (!take(sizeof(T), p)) return false; \
    v = load<T>(p);                        \
    return true;                           \
  }
PASYN_READ_SCALAR(u8, std::uint8_t)
PASYN_READ_SCALAR(u16, std::uint16_t)
PASYN_READ_SCALAR(u32, std::uint32_t)
PASYN_READ_SCALAR(u64, std::uint64_t)
PASYN_READ_SCALAR(i32, std::int32_t)
PASYN_READ_SCALAR(i64, std::int64_t)
PASYN_READ_SCALAR(f64, double)
#undef PASYN_READ_SCALAR

bool PayloadReader::string(std::string_view& v) {
  std::uint32_t n;
  const std::uint8_t* p;
  if (!u32(n)) return false;
  if (n > remaining()) return fail("string length exceeds the payload");
  if (!take(n, p)) return false;
  v = {reinterpret_cast<const char*>(p), n};
  return true;
}

bool PayloadReader::value(Value& v) {
  std::uint8_t tag;
  if (!u8(tag)) return false;
  switch (static_cast<ValueType>(tag)) {
    case ValueType::kNull:
      v = nullptr;
      return true;
    case ValueType::kInteger: {
      std::int64_t i;
      if (!i64(i)) return false;
      v = i;
      return true;
    }
    case ValueType::kReal: {
      double d;
      if (!f64(d)) return false;
      v = d;
      return true;
    }
    case ValueType::kText: {
      std::string_view s;
      if (!string(s)) return false;
      v = std::string(s);
      return true;
    }
    case ValueType::kBlob: {
      std::string_view s;
      if (!string(s)) return false;
      const auto* b = reinterpret_cast<const std::uint8_t*>(s.data());
      v = Blob(b, b + s.size());
      return true;
    }
  }
  return fail("unknown value tag");
}

bool PayloadReader::value_view(ValueView& v) {
  std::uint8_t tag;
  if (!u8(tag)) return false;
  v.type = static_cast<ValueType>(tag);
  switch (v.type) {
    case ValueType::kNull:
      return true;
    case ValueType::kInteger:
      return i64(v.integer);
    case ValueType::kReal:
      return f64(v.real);
    case ValueType::kText:
    case ValueType::kBlob: {
      std::string_view s;
      if (!string(s)) return false;
      v.bytes = {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
      return true;
    }
  }
  return fail("unknown value tag");
}

bool PayloadReader::params_view(ParamsView& p) {
  if (!count(p.count, 1)) return false;  // every value takes at least its tag byte
  const std::size_t start = pos_;
  ValueView v;
  for (std::uint32_t i = 0; i < p.count; ++i) {
    if (!value_view(v)) return false;
  }
  p.bytes = data_.subspan(start, pos_ - start);
  return true;
}

bool PayloadReader::named_params_view(ParamsView& p) {
  if (!count(p.count, 5)) return false;  // a name's length and a value's tag at least
  const std::size_t start = pos_;
  std::string_view name;
  ValueView v;
  for (std::uint32_t i = 0; i < p.count; ++i) {
    if (!string(name) || !value_view(v)) return false;
  }
  p.bytes = data_.subspan(start, pos_ - start);
  p.named = true;
  return true;
}

bool PayloadReader::count(std::uint32_t& n, std::size_t min_item_size) {
  if (!u32(n)) return false;
  if (min_item_size > 0 && n > remaining() / min_item_size) {
    return fail("count exceeds the payload");
  }
  return true;
}

bool PayloadReader::params(Params& p) {
  std::uint32_t n;
  if (!count(n, 1)) return false;  // every value takes at least its tag byte
  p.clear();
  p.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!value(p.emplace_back())) return false;
  }
  return true;
}

bool PayloadReader::finish() {
  if (error_) return false;
  if (remaining() != 0) return fail("trailing bytes after the payload");
  return true;
}

// ---- Messages ---------------------------------------------------------------------------------

namespace {

bool done(PayloadReader& r, std::string& why) {
  if (r.finish()) return true;
  why = r.error();
  return false;
}

}  // namespace

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
  return done(r, why);
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
  return done(r, why);
}

void encode_empty(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id) {
  FrameWriter(out, type, request_id).finish();
}

bool decode_empty(std::span<const std::uint8_t> payload, std::string& why) {
  PayloadReader r(payload);
  return done(r, why);
}

void encode_statement(std::vector<std::uint8_t>& out, MsgType type, std::uint64_t request_id,
                      std::string_view sql, const Params& params) {
  FrameWriter w(out, type, request_id);
  w.string(sql);
  w.params(params);
  w.finish();
}

bool decode_statement(std::span<const std::uint8_t> payload, Statement& m, std::string& why) {
  PayloadReader r(payload);
  std::string_view sql;
  if (r.string(sql)) {
    m.sql = sql;
    r.params(m.params);
  }
  return done(r, why);
}

namespace {

std::size_t encoded_size(const Params& params) {
  std::size_t n = 4;
  for (const auto& v : params) {
    switch (type_of(v)) {
      case ValueType::kNull:
        n += 1;
        break;
      case ValueType::kInteger:
      case ValueType::kReal:
        n += 9;
        break;
      case ValueType::kText:
        n += 5 + std::get<std::string>(v).size();
        break;
      case ValueType::kBlob:
        n += 5 + std::get<Blob>(v).size();
        break;
    }
  }
  return n;
}

}  // namespace

void encode_many(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::string_view sql,
                 const std::vector<Params>& rows) {
  // One allocation for the whole frame: a large batch would otherwise be copied by every
  // doubling of the vector.
  std::size_t size = kHeaderSize + 4 + sql.size() + 4;
  for (const auto& row : rows) size += encoded_size(row);
  out.reserve(out.size() + size);
  FrameWriter w(out, MsgType::kExecuteMany, request_id);
  w.string(sql);
  w.u32(static_cast<std::uint32_t>(rows.size()));
  for (const auto& row : rows) w.params(row);
  w.finish();
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
  return done(r, why);
}

bool decode_statement_view(std::span<const std::uint8_t> payload, StatementView& m,
                           std::string& why, bool named) {
  PayloadReader r(payload);
  r.string(m.sql) && (named ? r.named_params_view(m.params) : r.params_view(m.params));
  return done(r, why);
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
    for (std::uint32_t i = 0; i < m.rows && (named ? r.named_params_view(row) : r.params_view(row));
         ++i) {
    }
    m.bytes = payload.subspan(start, payload.size() - r.remaining() - start);
  }
  return done(r, why);
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
  return done(r, why);
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

void add_idempotency_key(std::vector<std::uint8_t>& out, std::size_t frame_start,
                         std::string_view key) {
  // Inserted in place, without a temporary buffer: a client's hot path allocates nothing here.
  std::uint8_t size[sizeof(std::uint32_t)];
  const auto n = static_cast<std::uint32_t>(key.size());
  std::memcpy(size, &n, sizeof n);
  const auto at = static_cast<std::ptrdiff_t>(frame_start + kHeaderSize);
  out.insert(out.begin() + at, key.begin(), key.end());
  out.insert(out.begin() + at, std::begin(size), std::end(size));
  std::uint32_t length;
  std::memcpy(&length, out.data() + frame_start, sizeof length);
  length += static_cast<std::uint32_t>(sizeof size + key.size());
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
  return done(r, why);
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
    if (!r.count(nrows, ncols)) return done(r, why);  // nrows unchecked: reserve nothing
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
  return done(r, why);
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
  return done(r, why);
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
