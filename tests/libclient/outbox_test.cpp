// detail::Outbox (libclient/src/outbox.hpp): partial sends keep the stream's order and bytes,
// whatever the sends and appends interleave, and the sent prefix is dropped before an append,
// never while sending, so a large frame sent on its own moves no byte.
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
  auto& out = box.for_append();
  out.insert(out.end(), bytes.begin(), bytes.end());
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
  EXPECT_TRUE(box.bytes().empty());
}

TEST(Outbox, ASentPrefixIsDroppedBeforeAnAppendOnceItIsHalfTheBufferNeverWhileSending) {
  Outbox box;
  append(box, sequence(0, 1000));
  const std::uint8_t* const data = box.bytes().data();
  box.consume(100);  // a tenth sent: nothing moves
  box.consume(400);  // half sent, and still nothing moves: no request is being appended
  EXPECT_EQ(box.bytes().size(), 1000u);
  EXPECT_EQ(box.bytes().data(), data);
  EXPECT_EQ(std::vector<std::uint8_t>(box.unsent().begin(), box.unsent().end()),
            sequence(500, 500));
  // A request is appended: the sent half is dropped first, once.
  auto& out = box.for_append();
  EXPECT_EQ(out.size(), 500u);
  EXPECT_EQ(std::vector<std::uint8_t>(box.unsent().begin(), box.unsent().end()),
            sequence(500, 500));
  // A request cut again before anything else (an encode that failed) leaves the rest intact.
  const std::size_t before = out.size();
  const auto cut = sequence(7, 30);
  out.insert(out.end(), cut.begin(), cut.end());
  out.resize(before);
  EXPECT_EQ(std::vector<std::uint8_t>(box.unsent().begin(), box.unsent().end()),
            sequence(500, 500));
  box.consume(500);
  EXPECT_TRUE(box.empty());
  EXPECT_TRUE(box.unsent().empty());
}

TEST(Outbox, ALargeFrameSentInPiecesWithNothingAppendedMovesNoByte) {
  Outbox box;
  append(box, sequence(0, 64 * 1024));
  const std::uint8_t* const data = box.bytes().data();
  while (box.unsent().size() > 1000) {
    box.consume(1000);  // a socket taking a little at a time
    EXPECT_EQ(box.bytes().data(), data);
    EXPECT_EQ(box.bytes().size(), 64u * 1024);
  }
  EXPECT_EQ(std::vector<std::uint8_t>(box.unsent().begin(), box.unsent().end()),
            sequence(64 * 1024 - box.unsent().size(), box.unsent().size()));
  box.consume(box.unsent().size());
  EXPECT_TRUE(box.empty());
  EXPECT_TRUE(box.bytes().empty());
}

TEST(Outbox, ABufferGrownByALargeRequestIsFreedOnceSentASmallOneIsKept) {
  Outbox box;
  append(box, sequence(0, 4096));
  box.consume(4096);
  EXPECT_TRUE(box.empty());
  EXPECT_GE(box.bytes().capacity(), 4096u);  // kept for the next requests
  append(box, sequence(0, Outbox::kKeptCapacity + 1));
  box.consume(box.unsent().size() / 4);
  EXPECT_GT(box.bytes().capacity(), Outbox::kKeptCapacity);  // still being sent
  box.consume(box.unsent().size());
  EXPECT_TRUE(box.empty());
  EXPECT_EQ(box.bytes().capacity(), 0u);
  append(box, sequence(0, Outbox::kKeptCapacity + 1));
  box.clear();  // a lost connection drops the rest: freed the same way
  EXPECT_TRUE(box.empty());
  EXPECT_EQ(box.bytes().capacity(), 0u);
}

}  // namespace
}  // namespace pasyn::detail
