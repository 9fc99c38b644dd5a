// detail::ReplyPoll (libclient/src/reply_poll.hpp): a lone synchronous caller polls for its reply
// only after kLoneStreak lone calls, and a miss or a preemption stops it polling for a number of
// lone calls that doubles up to kMaxBackoff and starts again from kFirstBackoff after a hit.
#include "reply_poll.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace pasyn::detail {
namespace {

// The lone calls until the next one that polls (choose() true), each finished lone.
unsigned calls_until_poll(ReplyPoll& p) {
  for (unsigned n = 0; n < 100'000; ++n) {
    if (p.choose()) return n;
    p.finished(true);
  }
  return 100'000;
}

ReplyPoll polling() {
  ReplyPoll p;
  for (unsigned i = 0; i < ReplyPoll::kLoneStreak; ++i) p.finished(true);
  return p;
}

TEST(ReplyPoll, PollsOnlyAfterAStreakOfLoneCalls) {
  ReplyPoll p;
  for (unsigned i = 0; i < ReplyPoll::kLoneStreak; ++i) {
    EXPECT_FALSE(p.choose()) << "after " << i << " lone calls";
    p.finished(true);
  }
  EXPECT_TRUE(p.choose());
  p.finished(true);
  // One call that shared the client (another request sent meanwhile) starts the streak again.
  p.finished(false);
  for (unsigned i = 0; i < ReplyPoll::kLoneStreak; ++i) {
    EXPECT_FALSE(p.choose());
    p.finished(true);
  }
  EXPECT_TRUE(p.choose());
}

TEST(ReplyPoll, KeepsPollingWhileEveryPollIsAHit) {
  ReplyPoll p = polling();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(p.choose()) << "call " << i;
    p.polled(true, false);
    p.finished(true);
  }
}

TEST(ReplyPoll, AMissOrAPreemptionBacksOffDoublingUntilAHit) {
  ReplyPoll p = polling();
  ASSERT_TRUE(p.choose());
  p.polled(false, false);  // a miss
  p.finished(true);
  EXPECT_EQ(calls_until_poll(p), ReplyPoll::kFirstBackoff);
  p.polled(true, true);  // the reply came, but another thread wanted the CPU: as bad
  p.finished(true);
  EXPECT_EQ(calls_until_poll(p), 2 * ReplyPoll::kFirstBackoff);
  p.polled(false, false);
  p.finished(true);
  EXPECT_EQ(calls_until_poll(p), 4 * ReplyPoll::kFirstBackoff);
  p.polled(true, false);  // a hit: the next miss backs off from the start again
  p.finished(true);
  ASSERT_TRUE(p.choose());
  p.polled(false, false);
  p.finished(true);
  EXPECT_EQ(calls_until_poll(p), ReplyPoll::kFirstBackoff);
}

TEST(ReplyPoll, TheBackoffStopsGrowingAtItsCap) {
  ReplyPoll p = polling();
  unsigned last = 0;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(calls_until_poll(p), last);
    p.polled(false, false);
    p.finished(true);
    last = std::min(last == 0 ? ReplyPoll::kFirstBackoff : last * 2, ReplyPoll::kMaxBackoff);
  }
  EXPECT_EQ(last, ReplyPoll::kMaxBackoff);
  EXPECT_EQ(calls_until_poll(p), ReplyPoll::kMaxBackoff);
}

}  // namespace
}  // namespace pasyn::detail
