// FrameDecoder (proto/src/codec.cpp): splitting a byte stream into frames however it arrives, the
// frame size limits, and memory that follows the bytes received, never an announced length.
#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "codec_test_support.hpp"

namespace pasyn::proto::codec_test {
namespace {

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
    ASSERT_FALSE(decoder.frame_ready()) << "after byte " << i;
    ASSERT_EQ(decoder.next(view), Status::kNeedMore) << "after byte " << i;
    ASSERT_EQ(decoder.buffered(), i + 1);
  }
  decoder.feed(std::span(&wire.back(), 1));
  ASSERT_TRUE(decoder.frame_ready());
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  EXPECT_EQ(view.type, byte(MsgType::kExecuteFetch));
  EXPECT_EQ(view.request_id, 0xABCDEFu);
  EXPECT_EQ(hex(view.payload), hex(payload_of(wire)));
  EXPECT_EQ(decoder.buffered(), 0u);
  EXPECT_FALSE(decoder.frame_ready());
  EXPECT_EQ(decoder.next(view), Status::kNeedMore);
  // A length that next() refuses is ready too: next() has its error to tell.
  const Bytes bad = {0xFF, 0xFF, 0xFF, 0xFF};
  decoder.feed(bad);
  EXPECT_TRUE(decoder.frame_ready());
  EXPECT_EQ(decoder.next(view), Status::kError);
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

// An idle client kept the buffer of its largest reply for as long as it lived (probe22: 8 MB
// per client after one 8 MB fetch): trim() gives it back once every frame was taken, and keeps
// a small buffer and one holding a partial frame.
TEST(FrameDecoder, TrimGivesBackALargeBufferOnceEveryFrameWasTaken) {
  FrameDecoder decoder(16 << 20);
  Bytes wire;
  encode_script(wire, 7, std::string(3 << 20, 'g'));
  decoder.feed(wire);
  FrameView view;
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  decoder.feed({wire.data(), 100});  // the start of the next frame
  ASSERT_EQ(decoder.next(view), Status::kNeedMore);
  const std::size_t held = decoder.capacity();
  decoder.trim();
  EXPECT_EQ(decoder.capacity(), held) << "a partial frame's buffer was freed";
  decoder.feed({wire.data() + 100, wire.size() - 100});
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  ASSERT_EQ(decoder.next(view), Status::kNeedMore);
  decoder.trim();
  EXPECT_EQ(decoder.capacity(), 0u);
  // Small buffers stay, and a trimmed decoder reads on.
  Bytes small;
  encode_script(small, 8, "SELECT 1");
  decoder.feed(small);
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  EXPECT_EQ(view.request_id, 8u);
  const std::size_t kept = decoder.capacity();
  decoder.trim();
  EXPECT_EQ(decoder.capacity(), kept);
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

// Feeds `wire` to `decoder` in reads of at most `chunk` bytes until a frame (or an error) comes.
Status read_until_frame(FrameDecoder& decoder, const Bytes& wire, std::size_t& pos, FrameView& view,
                        std::size_t chunk = 64 * 1024) {
  Status status = decoder.next(view);
  while (status == Status::kNeedMore && pos < wire.size()) {
    const auto space = decoder.prepare(chunk);
    const std::size_t n = std::min({space.size(), chunk, wire.size() - pos});
    std::memcpy(space.data(), wire.data() + pos, n);
    decoder.commit(n);
    pos += n;
    status = decoder.next(view);
  }
  return status;
}

TEST(FrameDecoder, HandsOverTheBufferOfALargeFrameThatFillsItAlone) {
  Bytes wire;
  encode_script(wire, 7, std::string(1 << 20, 's'));
  encode_script(wire, 8, std::string(100, 'n'));  // the next frame arrives after the large one
  const std::size_t first = wire.size() - (kHeaderSize + 4 + 100);
  FrameDecoder decoder;
  std::size_t pos = 0;
  FrameView view;
  // Reads end exactly where the large frame ends: nothing of the next one is buffered.
  const Bytes large(wire.begin(), wire.begin() + static_cast<std::ptrdiff_t>(first));
  ASSERT_EQ(read_until_frame(decoder, large, pos, view), Status::kFrame) << decoder.error();
  const std::span<const std::uint8_t> payload = view.payload;
  std::size_t held = 0;
  FrameDecoder::Buffer taken = decoder.take_frame_buffer(held);
  ASSERT_NE(taken, nullptr);
  EXPECT_GE(held, first);  // the whole frame, header included
  EXPECT_LE(held, 2 * first);
  EXPECT_EQ(decoder.capacity(), 0u);
  EXPECT_EQ(decoder.buffered(), 0u);
  EXPECT_EQ(decoder.take_frame_buffer(held), nullptr);  // once

  // The decoder goes on with a buffer of its own (the next frame would overwrite the taken one's
  // payload otherwise); the taken one still holds the frame.
  decoder.feed(std::span<const std::uint8_t>(wire).subspan(first));
  FrameView next;
  ASSERT_EQ(decoder.next(next), Status::kFrame);
  EXPECT_EQ(next.request_id, 8u);
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), wire.begin() + kHeaderSize));
  EXPECT_GE(payload.data(), taken.get());
}

TEST(FrameDecoder, KeepsItsBufferWhenTheFrameIsSmallOrNotAlone) {
  // A small frame: copied out by the caller, the buffer stays.
  Bytes small;
  encode_empty(small, MsgType::kPing, 1);
  FrameDecoder decoder;
  FrameView view;
  std::size_t held = 0;
  EXPECT_EQ(decoder.take_frame_buffer(held), nullptr);  // no frame yet
  decoder.feed(small);
  ASSERT_EQ(decoder.next(view), Status::kFrame);
  EXPECT_EQ(decoder.take_frame_buffer(held), nullptr);
  EXPECT_GT(decoder.capacity(), 0u);

  // A small frame alone in a large read buffer (a connection reading 64 KiB at a time): the
  // request would hold the whole buffer for a few bytes.
  FrameDecoder reading;
  const auto space = reading.prepare(64 * 1024);
  std::copy(small.begin(), small.end(), space.begin());
  reading.commit(small.size());
  ASSERT_EQ(reading.next(view), Status::kFrame);
  EXPECT_GE(reading.capacity(), 64u * 1024);
  EXPECT_EQ(reading.take_frame_buffer(held), nullptr);

  // A frame just over the kept size in a buffer more than twice as large.
  Bytes medium;
  encode_script(medium, 5, std::string(20 << 10, 'm'));
  FrameDecoder roomy;
  const auto room = roomy.prepare(256 * 1024);
  std::copy(medium.begin(), medium.end(), room.begin());
  roomy.commit(medium.size());
  ASSERT_EQ(roomy.next(view), Status::kFrame);
  EXPECT_EQ(roomy.take_frame_buffer(held), nullptr);

  // A large frame with the start of the next one behind it in the same buffer.
  Bytes wire;
  encode_script(wire, 2, std::string(256 << 10, 'x'));
  encode_empty(wire, MsgType::kPing, 3);
  FrameDecoder mixed;
  std::size_t pos = 0;
  ASSERT_EQ(read_until_frame(mixed, wire, pos, view, wire.size()), Status::kFrame);
  EXPECT_EQ(mixed.take_frame_buffer(held), nullptr);
  ASSERT_EQ(mixed.next(view), Status::kFrame);  // the ping is still there
  EXPECT_EQ(view.request_id, 3u);

  // A large frame, then a read: what next() returned before is no longer the last thing.
  Bytes alone;
  encode_script(alone, 4, std::string(256 << 10, 'y'));
  FrameDecoder later;
  pos = 0;
  ASSERT_EQ(read_until_frame(later, alone, pos, view), Status::kFrame);
  ASSERT_EQ(later.next(view), Status::kNeedMore);
  EXPECT_EQ(later.take_frame_buffer(held), nullptr);
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

}  // namespace
}  // namespace pasyn::proto::codec_test
