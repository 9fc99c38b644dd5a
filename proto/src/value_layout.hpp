// The wire layout of one value (PROTOCOL.md §4): its type tag (u8), then nothing (NULL), the
// integer or real (8 bytes), or the text or blob (u32 length, then its bytes). One definition for
// every writer of values, so that they cannot drift apart: FrameWriter (which grows its vector
// field by field), messages.cpp's SizedFrame (which writes into a frame sized beforehand) and the
// size that SizedFrame is given (SizeCount). Internal to the proto library.
#pragma once

#include <pasyn/value.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

namespace pasyn::proto::detail {

// `W` has u8(std::uint8_t), i64(std::int64_t), f64(double) and bytes(const void*, std::size_t),
// the last writing the u32 length first.
template <typename W>
void write_value(W& w, const Value& v) {
  w.u8(static_cast<std::uint8_t>(type_of(v)));
  switch (type_of(v)) {
    case ValueType::kNull:
      break;
    case ValueType::kInteger:
      w.i64(std::get<std::int64_t>(v));
      break;
    case ValueType::kReal:
      w.f64(std::get<double>(v));
      break;
    case ValueType::kText: {
      const auto& t = std::get<std::string>(v);
      w.bytes(t.data(), t.size());
      break;
    }
    case ValueType::kBlob: {
      const auto& b = std::get<Blob>(v);
      w.bytes(b.data(), b.size());
      break;
    }
  }
}

// A writer that only counts the bytes the others would write.
struct SizeCount {
  std::size_t n = 0;
  void u8(std::uint8_t) noexcept { n += 1; }
  void i64(std::int64_t) noexcept { n += 8; }
  void f64(double) noexcept { n += 8; }
  void bytes(const void*, std::size_t size) noexcept { n += 4 + size; }
};

}  // namespace pasyn::proto::detail
