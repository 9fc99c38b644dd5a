// Unit tests of the change feed's hub (change_feed.hpp, FeedHub) without a daemon: subscribers
// that resume while the writer thread keeps publishing get every commit after their point once,
// in order, with no gap. A resume encodes the held commits without the hub's lock and then adds,
// under it, what was published meanwhile; these tests make publications land in that window
// (a publisher thread runs through many resumes of a few thousand commits each) and would see
// a commit missed or sent twice.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pasyn/proto/codec.hpp>
#include <pasyn/proto/feed.hpp>

#include "change_feed.hpp"

namespace {

using namespace pasyn;
using server::CommittedChanges;
using server::FeedHub;

// A connection that reads everything at once: it keeps the bytes pushed to it.
class CollectingSink : public server::FeedSink {
 public:
  void push(std::vector<std::uint8_t> frames) override {
    std::lock_guard lk(mu_);
    bytes_.insert(bytes_.end(), frames.begin(), frames.end());
  }
  std::size_t unsent() override { return 0; }
  std::vector<std::uint8_t> bytes() {
    std::lock_guard lk(mu_);
    return bytes_;
  }

 private:
  std::mutex mu_;
  std::vector<std::uint8_t> bytes_;
};

// Commit `seq` changes one row of table t, whose rowid is the commit's number.
std::shared_ptr<CommittedChanges> commit_of(std::int64_t seq) {
  auto c = std::make_shared<CommittedChanges>();
  c->tables.emplace_back("t");
  c->entries.push_back({0, proto::ChangeOp::kInsert, seq});
  return c;
}

struct Received {
  bool subscribed = false;
  bool resumed = false;
  std::vector<std::uint64_t> commits;  // seq of each commit event, in order
  int gaps = 0;
  std::string error;  // a malformed frame or a commit whose row is not its own
};

Received decode(const std::vector<std::uint8_t>& bytes) {
  Received out;
  proto::FrameDecoder decoder;
  decoder.feed(bytes);
  proto::FrameView f;
  std::string why;
  while (decoder.next(f) == proto::FrameDecoder::Status::kFrame) {
    if (f.type == static_cast<std::uint8_t>(proto::MsgType::kSubscribed)) {
      proto::Subscribed s;
      if (!proto::decode_subscribed(f.payload, s, why)) out.error = why;
      out.subscribed = true;
      out.resumed = s.resumed;
      continue;
    }
    proto::FeedFrame frame;
    if (!proto::decode_change(f.payload, frame, why)) {
      out.error = why;
      return out;
    }
    if (frame.event == proto::FeedEvent::kGap) {
      ++out.gaps;
    } else if (frame.changes.size() != 1 ||
               frame.changes[0].rowid != static_cast<std::int64_t>(frame.seq)) {
      out.error = "commit " + std::to_string(frame.seq) + " carries another commit's changes";
    } else {
      out.commits.push_back(frame.seq);
    }
  }
  return out;
}

TEST(FeedHubTest, ResumesWhilePublishingMissNothingAndRepeatNothing) {
  FeedHub hub(std::size_t{256} << 20, std::size_t{1} << 30);  // the whole run stays held
  constexpr std::int64_t kBefore = 5000;
  for (std::int64_t seq = 1; seq <= kBefore; ++seq) hub.publish(commit_of(seq));

  // Counted, not timed: the publisher goes on until the resumes are done, and the resumes go on
  // until kOverlaps of them saw the publisher publish during their subscribe() (the window under
  // test). A fixed number of commits raced the resumes instead, and a fast machine finished
  // publishing after 4 of them (CI, under ASan).
  constexpr std::size_t kResumes = 100, kOverlaps = 20, kMaxResumes = 1000;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> published{0};
  std::thread publisher([&] {
    std::int64_t seq = kBefore;
    while (!stop.load()) {
      hub.publish(commit_of(++seq));
      if (seq % 64 == 0) hub.flush_due();
    }
    published = seq;
  });

  struct Resumed {
    std::shared_ptr<CollectingSink> sink;
    std::uint64_t after;
  };
  std::vector<Resumed> resumed;
  std::size_t overlaps = 0;
  std::string refusal;  // asserted after the publisher has stopped
  std::mt19937_64 rng(7);
  std::uint64_t id = 1;
  while ((resumed.size() < kResumes || overlaps < kOverlaps) && resumed.size() < kMaxResumes) {
    const std::uint64_t last = hub.last_seq();
    const std::uint64_t back = rng() % 4000;  // a few thousand commits to encode unlocked
    const std::uint64_t after = last > back ? last - back : 0;
    auto sink = std::make_shared<CollectingSink>();
    proto::Subscribe m;
    m.resume = proto::FeedPoint{hub.epoch(), after};
    const std::uint64_t before = hub.last_seq();  // (`last` is older: the request was built since)
    if (const auto refused = hub.subscribe(sink, id++, m)) {
      refusal = "resume after " + std::to_string(after) + " refused: " + *refused;
      break;
    }
    if (hub.last_seq() != before) ++overlaps;
    resumed.push_back({std::move(sink), after});
  }
  stop = true;
  publisher.join();
  hub.flush_due(true);
  ASSERT_EQ(refusal, "");
  ASSERT_GE(overlaps, kOverlaps) << "of " << resumed.size() << " resumes, " << overlaps
                                 << " overlapped a publish";

  const auto last = static_cast<std::uint64_t>(published.load());
  for (const auto& [sink, after] : resumed) {
    const Received got = decode(sink->bytes());
    ASSERT_TRUE(got.error.empty()) << got.error;
    ASSERT_TRUE(got.subscribed);
    EXPECT_TRUE(got.resumed) << "after " << after;
    EXPECT_EQ(got.gaps, 0) << "after " << after;
    ASSERT_EQ(got.commits.size(), last - after) << "resumed after " << after;
    for (std::size_t i = 0; i < got.commits.size(); ++i) {
      ASSERT_EQ(got.commits[i], after + 1 + i) << "resumed after " << after;
    }
  }
}

}  // namespace
