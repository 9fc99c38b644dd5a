// detail::Outbox (libclient/src/outbox.hpp): partial sends keep the stream's order and bytes,
// whatever the sends and appends interleave, and the sent prefix is dropped without moving the
// rest on every send.
#include "outbox.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pasyn::detail {
namespace {

std::vector<std::uint8_t> sequence(std::size_t from, std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>((from + i) * 7 + 3);
  return v;
}

void append(Outbox& box, const std::vector<std::uint8_t>& bytes) {
  box.buffer().insert(box.buffer().end(), bytes.begin(), bytes.end());
}

TEST(Outbox, PartialSendsReturnTheStreamInOrderWhileRequestsAreAppended) {
  Outbox box;
  std::vector<std::uint8_t> appended, sent;
  std::size_t next = 0;
  // Appends of one size, sends of another: every interleaving of partial sends, compactions
  // and appends comes up.
  for (int round = 0; round < 200; ++round) {
    const std::size_t add = 1 + static_cast<std::size_t>(round * 37 % 101);
    const auto bytes = sequence(next, add);
    next += add;
    append(box, bytes);
    appended.insert(appended.end(), bytes.begin(), bytes.end());
    const auto unsent = box.unsent();
    const std::size_t take = std::min<std::size_t>(unsent.size(), 1 + round * 53 % 89);
    sent.insert(sent.end(), unsent.begin(), unsent.begin() + static_cast<std::ptrdiff_t>(take));
    box.consume(take);
  }
  while (!box.empty()) {
    const auto unsent = box.unsent();
    const std::size_t take = std::min<std::size_t>(unsent.size(), 13);
    sent.insert(sent.end(), unsent.begin(), unsent.begin() + static_cast<std::ptrdiff_t>(take));
    box.consume(take);
  }
  EXPECT_EQ(sent, appended);
  EXPECT_TRUE(box.buffer().empty());
}

TEST(Outbox, ASentPrefixIsDroppedOnceItIsHalfTheBufferNotOnEverySend) {
  Outbox box;
  append(box, sequence(0, 1000));
  const std::uint8_t* const data = box.buffer().data();
  box.consume(100);  // a tenth sent: nothing moves
  EXPECT_EQ(box.buffer().size(), 1000u);
  EXPECT_EQ(box.buffer().data(), data);
  EXPECT_EQ(box.unsent().size(), 900u);
  EXPECT_EQ(box.unsent().front(), sequence(100, 1).front());
  box.consume(400);  // half sent: the rest moves to the front, once
  EXPECT_EQ(box.buffer().size(), 500u);
  EXPECT_EQ(box.unsent().size(), 500u);
  EXPECT_EQ(std::vector<std::uint8_t>(box.unsent().begin(), box.unsent().end()),
            sequence(500, 500));
  // A request cut again before anything else (an encode that failed) leaves the rest intact.
  const std::size_t before = box.buffer().size();
  append(box, sequence(7, 30));
  box.buffer().resize(before);
  EXPECT_EQ(std::vector<std::uint8_t>(box.unsent().begin(), box.unsent().end()),
            sequence(500, 500));
  box.consume(500);
  EXPECT_TRUE(box.empty());
  EXPECT_TRUE(box.unsent().empty());
}

TEST(Outbox, ABufferGrownByALargeRequestIsFreedOnceSentASmallOneIsKept) {
  Outbox box;
  append(box, sequence(0, 4096));
  box.consume(4096);
  EXPECT_TRUE(box.empty());
  EXPECT_GE(box.buffer().capacity(), 4096u);  // kept for the next requests
  append(box, sequence(0, Outbox::kKeptCapacity + 1));
  box.consume(box.unsent().size() / 4);
  EXPECT_GT(box.buffer().capacity(), Outbox::kKeptCapacity);  // still being sent
  box.consume(box.unsent().size());
  EXPECT_TRUE(box.empty());
  EXPECT_EQ(box.buffer().capacity(), 0u);
  append(box, sequence(0, Outbox::kKeptCapacity + 1));
  box.clear();  // a lost connection drops the rest: freed the same way
  EXPECT_TRUE(box.empty());
  EXPECT_EQ(box.buffer().capacity(), 0u);
}

}  // namespace
}  // namespace pasyn::detail
