// Unit tests of the writer's first-in first-out list (fifo.hpp).
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "fifo.hpp"

namespace {

using pasyn::server::Fifo;

std::vector<int> drain(Fifo<std::unique_ptr<int>>& f) {
  std::vector<int> out;
  while (!f.empty()) out.push_back(*f.take_front());
  return out;
}

std::vector<std::unique_ptr<int>> values(std::initializer_list<int> list) {
  std::vector<std::unique_ptr<int>> v;
  for (int i : list) v.push_back(std::make_unique<int>(i));
  return v;
}

TEST(FifoTest, AppendToAnEmptyListTakesTheVectorWhole) {
  Fifo<std::unique_ptr<int>> f;
  auto from = values({1, 2, 3});
  const int* first = from.front().get();
  f.append(from);
  EXPECT_TRUE(from.empty());
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f.front().get(), first);  // the same element, not a copy
  EXPECT_EQ(drain(f), (std::vector<int>{1, 2, 3}));
}

TEST(FifoTest, AppendBehindWhatIsLeftKeepsTheOrder) {
  Fifo<std::unique_ptr<int>> f;
  auto a = values({1, 2, 3});
  f.append(a);
  EXPECT_EQ(*f.take_front(), 1);
  auto b = values({4, 5});
  f.append(b);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(drain(f), (std::vector<int>{2, 3, 4, 5}));
}

TEST(FifoTest, AppendAfterEverythingWasTakenStartsAfresh) {
  Fifo<std::unique_ptr<int>> f;
  auto a = values({1, 2});
  f.append(a);
  EXPECT_EQ(drain(f), (std::vector<int>{1, 2}));
  auto b = values({7});
  f.append(b);
  EXPECT_EQ(f.size(), 1u);
  EXPECT_EQ(drain(f), (std::vector<int>{7}));
  auto none = values({});
  f.append(none);
  EXPECT_TRUE(f.empty());
}

TEST(FifoTest, ASlidingWindowStaysInOrderAcrossCompactions) {
  Fifo<std::unique_ptr<int>> f;
  int next = 0, expected = 0;
  for (int round = 0; round < 50; ++round) {
    std::vector<std::unique_ptr<int>> more;
    for (int i = 0; i < 37; ++i) more.push_back(std::make_unique<int>(next++));
    f.append(more);
    for (int i = 0; i < 30; ++i) ASSERT_EQ(*f.take_front(), expected++);
  }
  while (!f.empty()) ASSERT_EQ(*f.take_front(), expected++);
  EXPECT_EQ(expected, next);
}

// Counts the moves of its values (all instances together).
struct Counted {
  static inline int moves = 0;
  int value = 0;
  explicit Counted(int v = 0) : value(v) {}
  Counted(Counted&& o) noexcept : value(o.value) { ++moves; }
  Counted& operator=(Counted&& o) noexcept {
    value = o.value;
    ++moves;
    return *this;
  }
};

// The writer's work list is filled, then taken to the end: one move per element (its
// take_front), none to compact the list while it is taken.
TEST(FifoTest, AListTakenToTheEndMovesEachElementOnce) {
  Fifo<Counted> f;
  std::vector<Counted> from;
  from.reserve(1000);
  for (int i = 0; i < 1000; ++i) from.emplace_back(i);
  Counted::moves = 0;
  f.append(from);  // into an empty list: the buffer changes hands
  EXPECT_EQ(Counted::moves, 0);
  int expected = 0;
  while (!f.empty()) ASSERT_EQ(f.take_front().value, expected++);
  EXPECT_EQ(expected, 1000);
  EXPECT_EQ(Counted::moves, 1000);
}

}  // namespace
