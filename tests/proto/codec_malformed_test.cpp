// Malformed payloads: every decoder of proto/src/codec.cpp refuses truncated, overlong or
// inconsistent input with a reason, without throwing and without allocating on the strength of an
// unchecked length or count.
#include <pasyn/proto/codec.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "codec_test_support.hpp"

namespace pasyn::proto::codec_test {
namespace {

TEST(PayloadReader, FirstFailureSticksAndIsReported) {
  const Bytes two = {0x01, 0x02};
  PayloadReader r(two);
  std::uint32_t u = 0;
  EXPECT_FALSE(r.u32(u));
  EXPECT_FALSE(r.ok());
  const std::string first = r.error();
  EXPECT_FALSE(first.empty());
  std::uint8_t b = 0;
  EXPECT_FALSE(r.u8(b)) << "a later read that would fit still fails";
  EXPECT_FALSE(r.finish());
  EXPECT_EQ(r.error(), first);
}

TEST(PayloadReader, CountRejectsItemsThatCannotFitInWhatRemains) {
  const Bytes payload = Raw().u32(3).u64(0).u32(0).bytes();  // 12 bytes after the count
  {
    PayloadReader r(payload);
    std::uint32_t n = 0;
    EXPECT_TRUE(r.count(n, 4));
    EXPECT_EQ(n, 3u);
  }
  {
    PayloadReader r(payload);
    std::uint32_t n = 0;
    EXPECT_FALSE(r.count(n, 5));
    EXPECT_FALSE(std::string(r.error()).empty());
  }
}

TEST(MalformedPayload, EveryTruncationOfEveryMessageIsRejected) {
  for (const Sample& s : valid_samples()) {
    SCOPED_TRACE(s.what);
    const auto payload = payload_of(s.wire);
    ASSERT_TRUE(accepted(s.layout, payload));
    for (std::size_t cut = 0; cut < payload.size(); ++cut) {
      ASSERT_TRUE(rejected(s.layout, payload.first(cut))) << "cut at " << cut;
    }
  }
}

TEST(MalformedPayload, TrailingBytesAreRejected) {
  for (const Sample& s : valid_samples()) {
    SCOPED_TRACE(s.what);
    for (const Bytes& extra : {Bytes{0x00}, Bytes{0xFF, 0xFF, 0xFF, 0xFF}}) {
      Bytes payload(payload_of(s.wire).begin(), payload_of(s.wire).end());
      payload.insert(payload.end(), extra.begin(), extra.end());
      EXPECT_TRUE(rejected(s.layout, payload));
    }
  }
}

TEST(MalformedPayload, UnknownValueTagIsRejected) {
  for (std::uint8_t tag : {5, 6, 0x7F, 0x80, 0xFF}) {
    SCOPED_TRACE(static_cast<int>(tag));
    // Each bad tag is followed by 8 bytes, so that only the tag is wrong.
    EXPECT_TRUE(
        rejected(Layout::kStatement, Raw().string("SELECT ?").u32(1).u8(tag).u64(0).bytes()));
    EXPECT_TRUE(rejected(Layout::kStatement,
                         Raw().string("SELECT ?, ?").u32(2).u8(0).u8(tag).u64(0).bytes()));
    EXPECT_TRUE(rejected(Layout::kMany, Raw().string("?").u32(1).u32(1).u8(tag).u64(0).bytes()));
    EXPECT_TRUE(rejected(Layout::kResult,
                         Raw().i64(0).i64(0).u32(1).string("a").u32(1).u8(tag).u64(0).bytes()));
  }
}

TEST(MalformedPayload, StringLongerThanThePayloadIsRejected) {
  for (std::uint32_t length : {5u, 1000u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    SCOPED_TRACE(length);
    // Four bytes follow each announced length, so length 5 is exactly one byte short.
    EXPECT_TRUE(rejected(Layout::kStatement, Raw().u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kScript, Raw().u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kMany, Raw().u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(
        rejected(Layout::kHelloOk, Raw().u16(1).u64(0).u32(64).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(
        rejected(Layout::kError, Raw().u8(0).i32(1).i32(1).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kStatement,
                         Raw().string("?").u32(1).u8(3).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(rejected(Layout::kStatement,
                         Raw().string("?").u32(1).u8(4).u32(length).chars("abcd").bytes()));
    EXPECT_TRUE(
        rejected(Layout::kResult, Raw().i64(0).i64(0).u32(1).u32(length).chars("abcd").bytes()));
  }
}

TEST(MalformedPayload, ParamsCountBeyondTheRemainingBytesIsRejected) {
  for (std::uint32_t count : {4u, 1000u, 0x80000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(count);
    // Three NULLs follow: a count of 4 is one value short.
    EXPECT_TRUE(
        rejected(Layout::kStatement, Raw().string("x").u32(count).u8(0).u8(0).u8(0).bytes()));
    EXPECT_TRUE(
        rejected(Layout::kMany, Raw().string("x").u32(1).u32(count).u8(0).u8(0).u8(0).bytes()));
  }
}

TEST(MalformedPayload, ParamsCountOfExactlyTheRemainingBytesIsAccepted) {
  EXPECT_TRUE(accepted(Layout::kStatement, Raw().string("x").u32(3).u8(0).u8(0).u8(0).bytes()));
}

TEST(MalformedPayload, ExecuteManyAbsurdRowCountIsRejected) {
  for (std::uint32_t rows : {3u, 0x40000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(rows);
    // Two empty parameter lists follow: a row count of 3 is one list short.
    EXPECT_TRUE(rejected(Layout::kMany, Raw().string("x").u32(rows).u32(0).u32(0).bytes()));
  }
  EXPECT_TRUE(accepted(Layout::kMany, Raw().string("x").u32(2).u32(0).u32(0).bytes()));
}

TEST(MalformedPayload, ResultHugeColumnCountIsRejected) {
  for (std::uint32_t columns : {3u, 0x40000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(columns);
    // Two empty column names follow, then a zero row count.
    EXPECT_TRUE(rejected(Layout::kResult,
                         Raw().i64(1).i64(0).u32(columns).string("").string("").u32(0).bytes()));
  }
}

TEST(MalformedPayload, ResultHugeRowCountIsRejectedWithoutAllocatingForIt) {
  for (std::uint32_t rows : {3u, 0x10000000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(rows);
    // One column, two NULL rows follow: a row count of 3 is one row short.
    EXPECT_TRUE(rejected(Layout::kResult,
                         Raw().i64(1).i64(0).u32(1).string("a").u32(rows).u8(0).u8(0).bytes()));
    // Two columns, one row of two NULLs.
    EXPECT_TRUE(
        rejected(Layout::kResult,
                 Raw().i64(1).i64(0).u32(2).string("a").string("b").u32(rows).u8(0).u8(0).bytes()));
  }
}

TEST(MalformedPayload, ResultRowsWithoutColumnsAreRejected) {
  for (std::uint32_t rows : {1u, 2u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(rows);
    EXPECT_TRUE(rejected(Layout::kResult, Raw().i64(1).i64(0).u32(0).u32(rows).bytes()));
  }
  EXPECT_TRUE(accepted(Layout::kResult, Raw().i64(1).i64(0).u32(0).u32(0).bytes()));
}

TEST(MalformedPayload, ErrorWithUnknownDomainIsRejected) {
  for (std::uint8_t domain : {2, 3, 0x7F, 0xFF}) {
    SCOPED_TRACE(static_cast<int>(domain));
    EXPECT_TRUE(rejected(Layout::kError, Raw().u8(domain).i32(1).i32(1).string("m").bytes()));
  }
  EXPECT_TRUE(accepted(Layout::kError, Raw().u8(0).i32(1).i32(1).string("m").bytes()));
  EXPECT_TRUE(accepted(Layout::kError, Raw().u8(1).i32(1).i32(1).string("m").bytes()));
}

TEST(MalformedPayload, EmptyMessageWithAPayloadIsRejected) {
  EXPECT_TRUE(rejected(Layout::kEmpty, Bytes{0x00}));
  EXPECT_TRUE(rejected(Layout::kEmpty, Bytes(100, 0xFF)));
}

}  // namespace
}  // namespace pasyn::proto::codec_test
