// The change feed's messages (proto/feed.hpp, PROTOCOL.md §8): round trips, and every malformed
// payload rejected with a reason.
#include <pasyn/proto/feed.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace {

using namespace pasyn::proto;

// The payload of the one frame in `frame`.
std::span<const std::uint8_t> payload_of(const std::vector<std::uint8_t>& frame) {
  return std::span<const std::uint8_t>(frame).subspan(kHeaderSize);
}

TEST(FeedCodec, SubscribeRoundTripsWithAndWithoutAResumePoint) {
  std::vector<std::uint8_t> frame;
  encode_subscribe(frame, 7, {"users", "Events"}, FeedPoint{42, 9});
  EXPECT_EQ(frame[kLengthFieldSize], static_cast<std::uint8_t>(MsgType::kSubscribe));
  Subscribe m;
  std::string why;
  ASSERT_TRUE(decode_subscribe(payload_of(frame), m, why)) << why;
  ASSERT_EQ(m.tables.size(), 2u);
  EXPECT_EQ(m.tables[0], "users");
  EXPECT_EQ(m.tables[1], "Events");
  ASSERT_TRUE(m.resume);
  EXPECT_EQ(m.resume->epoch, 42u);
  EXPECT_EQ(m.resume->after_seq, 9u);

  frame.clear();
  encode_subscribe(frame, 7, {}, std::nullopt);
  ASSERT_TRUE(decode_subscribe(payload_of(frame), m, why)) << why;
  EXPECT_TRUE(m.tables.empty());
  EXPECT_FALSE(m.resume);
}

TEST(FeedCodec, SubscribeWithUnknownFlagsOrTrailingBytesIsRejected) {
  std::vector<std::uint8_t> frame;
  encode_subscribe(frame, 1, {}, std::nullopt);
  std::vector<std::uint8_t> payload(frame.begin() + kHeaderSize, frame.end());
  payload[4] = 0x02;  // flags: an unknown bit
  Subscribe m;
  std::string why;
  EXPECT_FALSE(decode_subscribe(payload, m, why));
  EXPECT_NE(why.find("flags"), std::string::npos) << why;
  payload[4] = 0;
  payload[5] = 1;  // an epoch without the resume flag: not the one encoding of this request
  EXPECT_FALSE(decode_subscribe(payload, m, why));
  payload[5] = 0;
  payload.push_back(0);
  EXPECT_FALSE(decode_subscribe(payload, m, why));
  payload.resize(payload.size() - 3);
  EXPECT_FALSE(decode_subscribe(payload, m, why));
  // A table count larger than the bytes that follow, before any allocation for it.
  std::vector<std::uint8_t> huge{0xFF, 0xFF, 0xFF, 0x7F};
  EXPECT_FALSE(decode_subscribe(huge, m, why));
}

TEST(FeedCodec, SubscribedRoundTrips) {
  std::vector<std::uint8_t> frame;
  encode_subscribed(frame, 3, Subscribed{11, 22, true});
  Subscribed m;
  std::string why;
  ASSERT_TRUE(decode_subscribed(payload_of(frame), m, why)) << why;
  EXPECT_EQ(m.epoch, 11u);
  EXPECT_EQ(m.last_seq, 22u);
  EXPECT_TRUE(m.resumed);
}

TEST(FeedCodec, ChangeFramesDecodeCommitsAndGaps) {
  std::vector<std::uint8_t> frame;
  {
    FrameWriter w(frame, MsgType::kChange, 5);
    w.u8(static_cast<std::uint8_t>(FeedEvent::kCommit));
    w.u64(8);
    w.u32(2);
    w.string("t");
    w.u8(static_cast<std::uint8_t>(ChangeOp::kInsert));
    w.i64(1);
    w.string("u");
    w.u8(static_cast<std::uint8_t>(ChangeOp::kDelete));
    w.i64(-3);
    w.finish();
  }
  FeedFrame m;
  std::string why;
  ASSERT_TRUE(decode_change(payload_of(frame), m, why)) << why;
  EXPECT_EQ(m.event, FeedEvent::kCommit);
  EXPECT_EQ(m.seq, 8u);
  ASSERT_EQ(m.changes.size(), 2u);
  EXPECT_EQ(m.changes[0].table, "t");
  EXPECT_EQ(m.changes[0].op, ChangeOp::kInsert);
  EXPECT_EQ(m.changes[1].rowid, -3);
  EXPECT_EQ(m.changes[1].op, ChangeOp::kDelete);

  // A part of a commit (more frames with the same seq follow).
  frame[kHeaderSize] = static_cast<std::uint8_t>(FeedEvent::kCommitPart);
  ASSERT_TRUE(decode_change(payload_of(frame), m, why)) << why;
  EXPECT_EQ(m.event, FeedEvent::kCommitPart);
  EXPECT_EQ(m.changes.size(), 2u);

  frame.clear();
  encode_gap(frame, 5, 12);
  ASSERT_TRUE(decode_change(payload_of(frame), m, why)) << why;
  EXPECT_EQ(m.event, FeedEvent::kGap);
  EXPECT_EQ(m.seq, 12u);
  EXPECT_TRUE(m.changes.empty());
}

TEST(FeedCodec, ChangeFramesWithUnknownEventsOrKindsAreRejected) {
  FeedFrame m;
  std::string why;
  std::vector<std::uint8_t> frame;
  {
    FrameWriter w(frame, MsgType::kChange, 5);
    w.u8(9);  // no such event
    w.u64(1);
    w.finish();
  }
  EXPECT_FALSE(decode_change(payload_of(frame), m, why));
  EXPECT_NE(why.find("event"), std::string::npos) << why;
  frame.clear();
  {
    FrameWriter w(frame, MsgType::kChange, 5);
    w.u8(static_cast<std::uint8_t>(FeedEvent::kCommit));
    w.u64(1);
    w.u32(1);
    w.string("t");
    w.u8(4);  // no such kind
    w.i64(1);
    w.finish();
  }
  EXPECT_FALSE(decode_change(payload_of(frame), m, why));
  EXPECT_NE(why.find("kind"), std::string::npos) << why;
  // A count of changes larger than the bytes that follow.
  std::vector<std::uint8_t> payload{0, 1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0};
  EXPECT_FALSE(decode_change(payload, m, why));
}

}  // namespace
