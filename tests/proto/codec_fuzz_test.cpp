// Mutation testing of the codec: valid frames damaged at random (fixed seed) go through
// FrameDecoder and every payload decoder, which must decode or reject each with a reason, never
// crash, throw or over-allocate, and accept only what re-encodes to itself.
#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "codec_test_support.hpp"

namespace pasyn::proto::codec_test {
namespace {

void write_u32_le(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

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
}  // namespace pasyn::proto::codec_test
