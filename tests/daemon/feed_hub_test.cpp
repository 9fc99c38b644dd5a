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

// The commits the history lets go come back for later ones (SpareCommits): a commit reuses a
// spare of its own size class only, the hub gives back every one it lets go (not one per
// publish), and the oldest spare goes first when kSpares are kept.
std::shared_ptr<CommittedChanges> commit_with(std::size_t rows) {
  auto c = std::make_shared<CommittedChanges>();
  c->tables.emplace_back("t");
  c->entries.reserve(server::ChangeLog::capacity_for(rows));
  for (std::size_t i = 0; i < rows; ++i) {
    c->entries.push_back({0, proto::ChangeOp::kInsert, static_cast<std::int64_t>(i)});
  }
  return c;
}

TEST(SpareCommitsTest, CapacityClassesArePowersOfTwoFromEightUpToTheSpareLimit) {
  using server::ChangeLog;
  EXPECT_EQ(ChangeLog::capacity_for(0), 8u);
  EXPECT_EQ(ChangeLog::capacity_for(1), 8u);
  EXPECT_EQ(ChangeLog::capacity_for(8), 8u);
  EXPECT_EQ(ChangeLog::capacity_for(9), 16u);
  EXPECT_EQ(ChangeLog::capacity_for(1000), 1024u);
  EXPECT_EQ(ChangeLog::capacity_for(1025), 1025u);  // not kept as a spare: no more than needed
}

TEST(SpareCommitsTest, ASpareIsTakenOnlyForItsOwnClass) {
  server::SpareCommits spares;
  spares.give(commit_with(16));
  EXPECT_EQ(spares.take(8), nullptr);
  const auto c = spares.take(16);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->entries.capacity(), 16u);
  EXPECT_EQ(spares.size(), 0u);
}

TEST(SpareCommitsTest, TheOldestSpareGoesFirstWhenThePoolIsFull) {
  server::SpareCommits spares;
  spares.give(commit_with(16));
  for (std::size_t i = 1; i < server::SpareCommits::kSpares; ++i) spares.give(commit_with(1));
  EXPECT_EQ(spares.size(), server::SpareCommits::kSpares);
  spares.give(commit_with(1));
  EXPECT_EQ(spares.size(), server::SpareCommits::kSpares);
  EXPECT_EQ(spares.take(16), nullptr);  // the class-16 one was the oldest
}

TEST(SpareCommitsTest, TheHubGivesBackEveryCommitItLetsGo) {
  FeedHub hub(1000, 1u << 20);  // bytes: a few one-row commits, less than one of 100 rows
  server::SpareCommits spares;
  std::size_t published = 0;
  while (spares.size() == 0 && published < 100) {
    hub.publish(commit_with(1), &spares);
    ++published;
  }
  ASSERT_EQ(spares.size(), 1u) << "the history never let go of a one-row commit";
  const std::size_t held = published - 1;
  ASSERT_GE(held, 2u);
  hub.publish(commit_with(100), &spares);  // larger than the bound: every other one goes
  EXPECT_EQ(spares.size(), 1 + held);
  // One that someone else still holds (a subscriber's resume, here the test) is not given back.
  const auto shared = commit_with(1);
  hub.publish(shared, &spares);            // lets the 100-row commit go: given back
  hub.publish(commit_with(100), &spares);  // lets `shared` go: not given back
  EXPECT_EQ(spares.size(), 2 + held);
  EXPECT_NE(spares.take(128), nullptr);
}

}  // namespace
