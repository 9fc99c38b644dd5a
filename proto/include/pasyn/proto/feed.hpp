// The change feed's messages (PROTOCOL.md §8): SUBSCRIBE, SUBSCRIBED and CHANGE. Encoders append
// one whole frame to `out`; decoders read a frame's payload and, on a malformed one, return
// false with the reason in `why`.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec.hpp"

namespace pasyn::proto {

/// The kind byte of one change in a CHANGE commit event.
enum class ChangeOp : std::uint8_t { kInsert = 1, kUpdate = 2, kDelete = 3 };

/// The event byte of a CHANGE frame: a commit's (last) frame, a gap, or a frame of a commit
/// whose changes continue in the next frame (same seq).
enum class FeedEvent : std::uint8_t { kCommit = 0, kGap = 1, kCommitPart = 2 };

/// SUBSCRIBE flags and SUBSCRIBED flags: bit 0.
inline constexpr std::uint8_t kFeedResume = 0x01;

/// A resume point: the commits after `after_seq` of `epoch` (0: the daemon's current epoch).
struct FeedPoint {
  std::uint64_t epoch = 0;
  std::uint64_t after_seq = 0;
};

struct Subscribe {
  std::vector<std::string_view> tables;  // empty: every table; views into the payload
  std::optional<FeedPoint> resume;
};

struct Subscribed {
  std::uint64_t epoch = 0;
  std::uint64_t last_seq = 0;
  bool resumed = false;  // the resume point was honoured
};

struct FeedChange {
  std::string_view table;  // a view into the payload
  ChangeOp op = ChangeOp::kInsert;
  std::int64_t rowid = 0;
};

struct FeedFrame {
  FeedEvent event = FeedEvent::kCommit;
  std::uint64_t seq = 0;
  std::vector<FeedChange> changes;  // commit events (and parts) only
};

void encode_subscribe(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                      const std::vector<std::string>& tables, std::optional<FeedPoint> resume);
bool decode_subscribe(std::span<const std::uint8_t> payload, Subscribe& m, std::string& why);

void encode_subscribed(std::vector<std::uint8_t>& out, std::uint64_t request_id,
                       const Subscribed& m);
bool decode_subscribed(std::span<const std::uint8_t> payload, Subscribed& m, std::string& why);

void encode_gap(std::vector<std::uint8_t>& out, std::uint64_t request_id, std::uint64_t seq);
bool decode_change(std::span<const std::uint8_t> payload, FeedFrame& m, std::string& why);

}  // namespace pasyn::proto
