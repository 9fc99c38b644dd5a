// The framing of proto/PROTOCOL.md: the frame decoder, the frame writer and the payload reader
// the message layouts (messages.cpp) are built with; and the message types' names.
#include <pasyn/proto/codec.hpp>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <new>

#include "value_layout.hpp"

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
    case MsgType::kSubscribe:
      return "SUBSCRIBE";
    case MsgType::kSubscribed:
      return "SUBSCRIBED";
    case MsgType::kChange:
      return "CHANGE";
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
  frame_alone_ = false;
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

void FrameDecoder::Free::operator()(std::uint8_t* p) const noexcept { std::free(p); }

void FrameDecoder::reallocate(std::size_t size) {
  // realloc, not a new buffer and a copy: a large buffer (glibc maps those of 128 KiB and more
  // on their own) then grows by moving its pages (mremap), so a large frame is neither copied
  // at each doubling nor faulted in again page by page. Measured on one EXECUTE_MANY of 4.8 MiB
  // into a fresh daemon: bench/RESULTS.md, "What the eleventh session measured".
  const std::size_t live = end_ - begin_;
  if (live > 0 && begin_ > 0) std::memmove(buf_.get(), buf_.get() + begin_, live);
  void* grown = std::realloc(buf_.get(), std::max<std::size_t>(size, 1));
  if (grown == nullptr) throw std::bad_alloc();  // buf_ is untouched, and still valid
  (void)buf_.release();
  buf_.reset(static_cast<std::uint8_t*>(grown));
  capacity_ = size;
  begin_ = 0;
  end_ = live;
}

void FrameDecoder::trim() noexcept {
  if (begin_ != end_ || capacity_ <= kKeepBuffer) return;
  buf_.reset();
  capacity_ = begin_ = end_ = partial_ = 0;
  frame_alone_ = false;
}

void FrameDecoder::commit(std::size_t n) {
  end_ += n;
  frame_alone_ = false;
}

void FrameDecoder::feed(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return;
  auto dst = prepare(bytes.size());
  std::memcpy(dst.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

bool FrameDecoder::frame_ready() const noexcept {
  if (!error_.empty()) return true;
  const std::size_t avail = end_ - begin_;
  if (avail < kLengthFieldSize) return false;
  const std::uint32_t length = load<std::uint32_t>(buf_.get() + begin_);
  return length < kMinLength || std::uint64_t{length} + kLengthFieldSize > max_frame_ ||
         avail >= kLengthFieldSize + length;
}

FrameDecoder::Status FrameDecoder::next(FrameView& out) {
  frame_alone_ = false;
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
  frame_alone_ = begin_ == 0 && avail == kLengthFieldSize + length;
  begin_ += kLengthFieldSize + length;
  return Status::kFrame;
}

FrameDecoder::Buffer FrameDecoder::take_frame_buffer(std::size_t& held) noexcept {
  // The frame started at 0 and ended at end_. Only a large frame in a buffer at most twice its
  // size (one grown for it) is handed over: whoever takes it accounts for the frame's bytes,
  // and must not be holding a large read buffer for a small frame.
  if (!frame_alone_ || end_ <= kKeepBuffer || capacity_ > 2 * end_) return nullptr;
  frame_alone_ = false;
  held = capacity_;
  capacity_ = begin_ = end_ = 0;
  return std::move(buf_);
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
  // As bytes: an insert from char iterators into this vector of std::uint8_t would copy
  // element by element (different types), a copy of bytes is one memmove.
  const auto* p = reinterpret_cast<const std::uint8_t*>(s.data());
  out_.insert(out_.end(), p, p + s.size());
}

void FrameWriter::bytes(std::span<const std::uint8_t> b) {
  put<std::uint32_t>(out_, static_cast<std::uint32_t>(b.size()));
  out_.insert(out_.end(), b.begin(), b.end());
}

void FrameWriter::value(const Value& v) {
  struct Fields {  // detail::write_value's writer, on this FrameWriter
    FrameWriter& w;
    void u8(std::uint8_t x) { w.u8(x); }
    void i64(std::int64_t x) { w.i64(x); }
    void f64(double x) { w.f64(x); }
    void bytes(const void* p, std::size_t n) { w.bytes({static_cast<const std::uint8_t*>(p), n}); }
  } fields{*this};
  detail::write_value(fields, v);
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

bool PayloadReader::finish(std::string& why) {
  if (finish()) return true;
  why = error();
  return false;
}

}  // namespace pasyn::proto
