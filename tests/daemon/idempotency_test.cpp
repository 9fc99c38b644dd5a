// Unit tests of the request digest idempotency keys are bound to (daemon/src/idempotency.cpp).
#include "idempotency.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace {

using pasyn::proto::MsgType;
using pasyn::server::request_digest;

TEST(RequestDigest, SameRequestSameDigestAnyDifferenceAnother) {
  const std::vector<std::uint8_t> params = {1, 2, 3};
  const auto d = request_digest(MsgType::kExecute, "INSERT INTO t VALUES (?)", params, 0);
  EXPECT_EQ(d, request_digest(MsgType::kExecute, "INSERT INTO t VALUES (?)", params, 0));
  EXPECT_NE(d, request_digest(MsgType::kExecuteRowid, "INSERT INTO t VALUES (?)", params, 0));
  EXPECT_NE(d, request_digest(MsgType::kExecute, "INSERT INTO t VALUES (?) ", params, 0));
  EXPECT_NE(d, request_digest(MsgType::kExecute, "INSERT INTO t VALUES (?)",
                              std::vector<std::uint8_t>{1, 2, 4}, 0));
  EXPECT_NE(d, request_digest(MsgType::kExecute, "INSERT INTO t VALUES (?)", params, 1));
  // Where the SQL ends and the parameters begin is part of the request.
  const std::vector<std::uint8_t> x = {'x'};
  EXPECT_NE(request_digest(MsgType::kExecute, "ab", x, 0),
            request_digest(MsgType::kExecute, "abx", {}, 0));
}

}  // namespace
