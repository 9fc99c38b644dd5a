// The layout of a fuzz input, shared by the fuzz targets and the seed corpus generator.
//
// Every input is one flag byte followed by the bytes a peer sends on the wire. The flag byte
// steers what the fuzzer cannot express in the stream itself:
//  * pasyn-fuzz-frames: bits 0-5 seed the sizes of the chunks the stream is fed in (0: all at
//    once), bits 6-7 pick the decoder's maximum frame size (kFrameLimits).
//  * pasyn-fuzz-session: bit 0 (kSkipHello) set means the harness sends no HELLO of its own
//    before the stream, so the handshake itself is fuzzed.
#pragma once

#include <array>
#include <cstdint>

#include <pasyn/proto/codec.hpp>

namespace pasyn::fuzz {

inline constexpr std::uint8_t kSkipHello = 0x01;

inline constexpr std::uint8_t kChunkSeedMask = 0x3F;
inline constexpr int kFrameLimitShift = 6;
inline constexpr std::array<std::uint32_t, 4> kFrameLimits = {proto::kDefaultMaxFrame,
                                                              proto::kMinMaxFrame, 4096, 64 * 1024};

/// The flag byte of pasyn-fuzz-frames for a chunk seed and an index into kFrameLimits.
constexpr std::uint8_t frames_flags(std::uint8_t chunk_seed, std::uint8_t limit_index) {
  return static_cast<std::uint8_t>((chunk_seed & kChunkSeedMask) |
                                   (limit_index << kFrameLimitShift));
}

}  // namespace pasyn::fuzz
