// Helpers shared by the codec tests (codec_*_test.cpp, frame_decoder_test.cpp): hand-written
// payload bytes, frames copied out of the decoder, bit-exact value comparison, one valid sample
// of every message, a decoder per payload layout, and the allocation watch.
//
// The allocation watch rests on a replacement of the global operator new (tests/replaced_new.hpp),
// which must be defined in exactly one source of the executable: codec_test_support.cpp, with
// these helpers' definitions. No other source of pasyn_unit_tests may include replaced_new.hpp.
#pragma once

#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pasyn::proto::codec_test {

using Bytes = std::vector<std::uint8_t>;
using Status = FrameDecoder::Status;

// ---- Allocation watch ---------------------------------------------------------------------------
// The codec promises never to allocate on the strength of an unchecked length. Asking the machine
// for a huge block does not reliably fail (overcommit and the sanitizers' allocators may grant it
// without touching it), so this binary replaces the global operator new (replaced_new.hpp): while
// an AllocationWatch is alive it records the largest single request and refuses, with
// std::bad_alloc, any request above the watch's limit. Outside a watch it is plain malloc.

// Far above what any payload in these tests justifies, far below what an unchecked u32 count
// would ask for.
inline constexpr std::size_t kSaneAllocation = 1 << 20;

class AllocationWatch {
 public:
  explicit AllocationWatch(std::size_t limit);
  ~AllocationWatch();
  AllocationWatch(const AllocationWatch&) = delete;
  AllocationWatch& operator=(const AllocationWatch&) = delete;

  std::size_t largest() const;
};

// ---- Bytes and frames ---------------------------------------------------------------------------

// Up to `max` bytes in hex, space-separated, then the total size if there were more.
std::string hex(std::span<const std::uint8_t> b, std::size_t max = 128);

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

// A frame copied out of the decoder, so that it outlives the decoder's buffer.
struct Frame {
  std::uint8_t type = 0;
  std::uint64_t request_id = 0;
  Bytes payload;

  bool operator==(const Frame&) const = default;
};

// How gtest prints a Frame (found by argument-dependent lookup).
void PrintTo(const Frame& f, std::ostream* os);

Frame copy_frame(const FrameView& v);

// Calls next() until it stops returning frames; returns the status that stopped it.
Status drain(FrameDecoder& decoder, std::vector<Frame>& frames);

// Splits a byte string made of whole frames.
std::vector<Frame> split(std::span<const std::uint8_t> wire);

// The one frame `wire` holds (a test failure if it holds another number of frames).
Frame only_frame(const Bytes& wire);

// The payload of a frame that starts at the beginning of `wire`.
std::span<const std::uint8_t> payload_of(const Bytes& wire);

std::uint8_t byte(MsgType type);

// ---- Values -------------------------------------------------------------------------------------

// Equal values, with doubles compared bit for bit (so -0.0 is not 0.0).
bool identical(const Value& a, const Value& b);

::testing::AssertionResult identical(const std::vector<Value>& got, const std::vector<Value>& want);

// One of each kind of value, with the edge cases of each.
Params every_value_type();

// ---- Decoding by payload layout -----------------------------------------------------------------

// The payload layouts of PROTOCOL.md §3–5, one decoder each.
enum class Layout { kHello, kHelloOk, kEmpty, kStatement, kMany, kScript, kResult, kError };

inline constexpr std::array kAllLayouts = {Layout::kHello,     Layout::kHelloOk, Layout::kEmpty,
                                           Layout::kStatement, Layout::kMany,    Layout::kScript,
                                           Layout::kResult,    Layout::kError};

// The name of the layout's decoder ("decode_hello", ...).
const char* name(Layout layout);

struct DecodeOutcome {
  bool ok = false;
  bool threw = false;
  std::string why;
  Bytes reencoded;  // the payload that encoding the decoded message gives back, if ok
};

// Decodes `payload` with one decoder under an allocation watch, and re-encodes what it accepted.
DecodeOutcome decode_as(Layout layout, std::span<const std::uint8_t> payload);

// The decoder of `layout` refuses `payload`, says why, does not throw and does not allocate more
// than kSaneAllocation in one request.
::testing::AssertionResult rejected(Layout layout, std::span<const std::uint8_t> payload);

::testing::AssertionResult accepted(Layout layout, std::span<const std::uint8_t> payload);

// One valid frame of every message, for the truncation, trailing-byte and mutation tests.
struct Sample {
  Layout layout;
  std::string what;
  Bytes wire;
};

std::vector<Sample> valid_samples();

}  // namespace pasyn::proto::codec_test
