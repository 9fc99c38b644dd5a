// The change feed's messages (PROTOCOL.md §8). See proto/feed.hpp.
#include "pasyn/proto/feed.hpp"

namespace pasyn::proto {
namespace {

// A table name, a kind byte and a rowid: the smallest change is 4 + 1 + 8 bytes.
constexpr std::size_t kMinChangeSize = 4 + 1 + 8;

}  // namespace

void encode_subscribe(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                      const std::vector<std::string>& tables, std::optional<FeedPoint> resume) {
  FrameWriter w(out, MsgType::kSubscribe, request_id);
  w.u32(static_cast<std::uint32_t>(tables.size()));
  for (const auto& t : tables) w.string(t);
  w.u8(resume ? kFeedResume : 0);
  w.u64(resume ? resume->epoch : 0);
  w.u64(resume ? resume->after_seq : 0);
  w.finish();
}

bool decode_subscribe(std::span<const std::uint8_t> payload, Subscribe& m, std::string& why) {
  PayloadReader r(payload);
  std::uint32_t n = 0;
  m.tables.clear();
  m.resume.reset();
  if (!r.count(n, 4)) return r.finish(why);
  m.tables.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!r.string(m.tables.emplace_back())) return r.finish(why);
  }
  std::uint8_t flags = 0;
  FeedPoint point;
  if (!r.u8(flags) || !r.u64(point.epoch) || !r.u64(point.after_seq)) return r.finish(why);
  if ((flags & ~kFeedResume) != 0) {
    why = "unknown SUBSCRIBE flags";
    return false;
  }
  if (!(flags & kFeedResume) && (point.epoch != 0 || point.after_seq != 0)) {
    why = "a SUBSCRIBE without the resume flag has a resume point";  // one encoding per request
    return false;
  }
  if (flags & kFeedResume) m.resume = point;
  return r.finish(why);
}

void encode_subscribed(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                       const Subscribed& m) {
  FrameWriter w(out, MsgType::kSubscribed, request_id);
  w.u64(m.epoch);
  w.u64(m.last_seq);
  w.u8(m.resumed ? kFeedResume : 0);
  w.finish();
}

bool decode_subscribed(std::span<const std::uint8_t> payload, Subscribed& m, std::string& why) {
  PayloadReader r(payload);
  std::uint8_t flags = 0;
  if (r.u64(m.epoch) && r.u64(m.last_seq) && r.u8(flags)) {
    if ((flags & ~kFeedResume) != 0) {
      why = "unknown SUBSCRIBED flags";
      return false;
    }
    m.resumed = (flags & kFeedResume) != 0;
  }
  return r.finish(why);
}

void encode_gap(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::uint64_t seq) {
  FrameWriter w(out, MsgType::kChange, request_id);
  w.u8(static_cast<std::uint8_t>(FeedEvent::kGap));
  w.u64(seq);
  w.finish();
}

bool decode_change(std::span<const std::uint8_t> payload, FeedFrame& m, std::string& why) {
  PayloadReader r(payload);
  std::uint8_t event = 0;
  m.changes.clear();
  if (!r.u8(event) || !r.u64(m.seq)) return r.finish(why);
  if (event == static_cast<std::uint8_t>(FeedEvent::kGap)) {
    m.event = FeedEvent::kGap;
    return r.finish(why);
  }
  if (event != static_cast<std::uint8_t>(FeedEvent::kCommit) &&
      event != static_cast<std::uint8_t>(FeedEvent::kCommitPart)) {
    why = "unknown CHANGE event " + std::to_string(event);
    return false;
  }
  m.event = static_cast<FeedEvent>(event);
  std::uint32_t n = 0;
  if (!r.count(n, kMinChangeSize)) return r.finish(why);
  m.changes.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    FeedChange& c = m.changes.emplace_back();
    std::uint8_t op = 0;
    if (!r.string(c.table) || !r.u8(op) || !r.i64(c.rowid)) return r.finish(why);
    if (op < 1 || op > 3) {
      why = "unknown change kind " + std::to_string(op);
      return false;
    }
    c.op = static_cast<ChangeOp>(op);
  }
  return r.finish(why);
}

}  // namespace pasyn::proto
