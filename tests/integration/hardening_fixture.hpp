// The fixtures of the hardening tests against the real pasyn-writerd (hardening_test.cpp: access
// control, the authorizer, idempotency keys; limits_test.cpp: size and connection limits,
// backpressure, the output bounds, the statement timeout).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "daemon_fixture.hpp"

namespace pasyn::itest::hardening {

namespace proto = pasyn::proto;

constexpr std::uint8_t kExecute = static_cast<std::uint8_t>(proto::MsgType::kExecute);
constexpr std::uint8_t kExecuteInTransaction = kExecute | proto::kInTransaction;  // 0x43

/// A query that never ends on its own.
constexpr const char* kEndless =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

// ---- Fixtures ---------------------------------------------------------------------------------

/// A daemon with a test's flags, a table probe (v TEXT), and `before_`, a client connected
/// before anything under test happens, which must still be served afterwards.
class HardeningTest : public DaemonTest {
 protected:
  void start_with_probe(const std::vector<std::string>& flags = {}) {
    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    before_.emplace(connect_client());
    before_->execute("CREATE TABLE probe (v TEXT)");
  }

  void TearDown() override {
    before_.reset();
    DaemonTest::TearDown();
  }

  /// The client connected before still gets a ping and a write answered, and the write is stored.
  void expect_still_served() {
    try {
      EXPECT_TRUE(before_->ping());
      const std::int64_t rows = query_int("SELECT count(*) FROM probe");
      EXPECT_EQ(before_->execute("INSERT INTO probe (v) VALUES ('served')"), 1);
      EXPECT_EQ(query_int("SELECT count(*) FROM probe"), rows + 1);
    } catch (const pasyn::Error& e) {
      ADD_FAILURE() << "the client connected before is no longer served: " << e.what();
    }
  }

  std::optional<pasyn::MultiplexedClient> before_;
};

class LimitTest : public HardeningTest {};
class AuthorizerTest : public HardeningTest {};
class IdempotencyTest : public HardeningTest {};

}  // namespace pasyn::itest::hardening
