// Guarantees by construction, against the real pasyn-writerd binary: transaction numbers on the
// wire (PROTOCOL.md §6.2), protocol version 2, a BEGIN abandoned by a client-side timeout,
// close() racing a reconnect, and the client's in-flight limit.
#include <signal.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
namespace proto = pasyn::proto;

class GuaranteesTest : public DaemonTest {
 protected:
  void start_with_table(const std::vector<std::string>& flags = {}) {
    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    connect_client().execute("CREATE TABLE kv (k TEXT)");
  }
  std::int64_t rows_with_key(const std::string& k) const {
    return query_int("SELECT count(*) FROM kv WHERE k = ?", {k});
  }
  /// Waits (bounded) until `client` has noticed that its connection is gone.
  static bool wait_until_lost(const pasyn::MultiplexedClient& client) {
    const auto give_up = Clock::now() + 10s;
    while (client.connected() && Clock::now() < give_up) std::this_thread::sleep_for(10ms);
    return !client.connected();
  }
};

bool contains_digit(const std::string& s) {
  return s.find_first_of("0123456789") != std::string::npos;
}

TEST_F(GuaranteesTest, AVersion1HelloIsRefusedWithAClearError) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  RawPeer peer(sock_);
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{proto::kMagic, 1, 0});
  ASSERT_TRUE(peer.send(hello));
  const auto r = peer.read_until_closed(kReplyTimeout);
  expect_protocol_error_and_close(r);
  ASSERT_EQ(r.frames.size(), 1u);
  proto::ErrorReply e;
  std::string why;
  ASSERT_TRUE(proto::decode_error(r.frames[0].payload, e, why)) << why;
  EXPECT_NE(e.message.find("unsupported protocol version 1"), std::string::npos) << e.message;
}

TEST_F(GuaranteesTest, HelloOkAnnouncesVersion2AndTheDaemonsCapabilities) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  RawPeer peer(sock_);
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{proto::kMagic, 2, ~std::uint64_t{0}});  // wants all
  const auto reply = peer.request(hello);
  ASSERT_TRUE(reply.has_value());
  ASSERT_EQ(reply->type, static_cast<std::uint8_t>(proto::MsgType::kHelloOk));
  proto::HelloOk ok;
  std::string why;
  ASSERT_TRUE(proto::decode_hello_ok(reply->payload, ok, why)) << why;
  EXPECT_EQ(ok.version, 2);
  EXPECT_EQ(ok.capabilities, proto::kServerCapabilities);  // what it supports, no more
}

TEST_F(GuaranteesTest, AStaleTransactionNumberIsRefusedAndActsInNothing) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "20s"}));
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  const auto begun = peer.request(empty_frame(proto::MsgType::kBegin, 7));  // transaction 7
  ASSERT_TRUE(begun && begun->type == static_cast<std::uint8_t>(proto::MsgType::kOk));
  proto::ErrorReply e;
  EXPECT_TRUE(is_error(peer.request(tx_statement_frame(proto::MsgType::kExecute, 8, 3,
                                                       "INSERT INTO kv (k) VALUES ('stale')")),
                       8, proto::ErrorDomain::kPasyn, proto::PasynCode::kTransactionEnded, &e));
  EXPECT_FALSE(contains_digit(e.message)) << e.message;
  EXPECT_TRUE(is_error(peer.request(tx_end_frame(proto::MsgType::kCommit, 9, 3)), 9,
                       proto::ErrorDomain::kPasyn, proto::PasynCode::kTransactionEnded, &e));
  // A stale ROLLBACK has nothing left to roll back: OK, and transaction 7 goes on.
  const auto rolled = peer.request(tx_end_frame(proto::MsgType::kRollback, 10, 3));
  ASSERT_TRUE(rolled && rolled->type == static_cast<std::uint8_t>(proto::MsgType::kOk));
  const auto inserted = peer.request(
      tx_statement_frame(proto::MsgType::kExecute, 11, 7, "INSERT INTO kv (k) VALUES ('own')"));
  ASSERT_TRUE(inserted && inserted->type == static_cast<std::uint8_t>(proto::MsgType::kResult));
  const auto committed = peer.request(tx_end_frame(proto::MsgType::kCommit, 12, 7));
  ASSERT_TRUE(committed && committed->type == static_cast<std::uint8_t>(proto::MsgType::kOk));
  EXPECT_EQ(rows_with_key("own"), 1);
  EXPECT_EQ(rows_with_key("stale"), 0);
}

TEST_F(GuaranteesTest, ATransactionRequestWithoutItsNumberIsAProtocolError) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  ASSERT_TRUE(peer.request(empty_frame(proto::MsgType::kBegin, 1)).has_value());
  ASSERT_TRUE(peer.send(empty_frame(proto::MsgType::kCommit, 2)));  // the version-1 COMMIT
  expect_protocol_error_and_close(peer.read_until_closed(kReplyTimeout));
}

TEST_F(GuaranteesTest, ABeginThatTimedOutOnTheClientHoldsUpNoWriter) {
  // The idle timeout is far beyond the bound below: only the client's own rollback of the
  // abandoned BEGIN can release the third client's write in time.
  ASSERT_NO_FATAL_FAILURE(
      start_with_table({"--lock-wait", "2s", "--transaction-idle-timeout", "60s"}));
  auto holder = connect_client();
  auto held = holder.begin();
  held.execute("INSERT INTO kv (k) VALUES ('held')");

  auto impatient_options = bounded_options();
  impatient_options.request_timeout = 200ms;
  pasyn::MultiplexedClient impatient(sock_, impatient_options);
  EXPECT_THROW((void)impatient.begin(), pasyn::TimeoutError);

  std::this_thread::sleep_for(800ms);  // the holder keeps its transaction about a second
  held.commit();
  auto third = connect_client();
  auto write = third.execute_async("INSERT INTO kv (k) VALUES ('third')");
  ASSERT_EQ(write.wait_for(20s), std::future_status::ready)
      << "a BEGIN abandoned by its client still holds the database";
  EXPECT_EQ(write.get(), 1);
  EXPECT_TRUE(impatient.ping());
  auto again = impatient.begin();  // the abandoned transaction is gone from this connection too
  again.execute("INSERT INTO kv (k) VALUES ('again')");
  again.commit();
  EXPECT_EQ(rows_with_key("again"), 1);
}

// A synchronous call waits on its own stack; when it gives up (request_timeout), the reply that
// comes later must reach nobody: not the caller that left, and not the next call of the same
// thread, whose waiter may sit at the same address.
TEST_F(GuaranteesTest, ALateReplyToASynchronousCallThatTimedOutReachesNoLaterCall) {
  ASSERT_NO_FATAL_FAILURE(start_with_table({"--lock-wait", "20s"}));
  auto holder = connect_client();
  auto held = holder.begin();

  auto impatient_options = bounded_options();
  impatient_options.request_timeout = 200ms;
  pasyn::MultiplexedClient impatient(sock_, impatient_options);
  EXPECT_THROW(impatient.execute("INSERT INTO kv (k) VALUES ('late')"), pasyn::TimeoutError);
  held.commit();  // the daemon runs the late write now, and answers a caller that left

  // Requests of one connection are answered in order: each reply below comes after the late one.
  for (int i = 0; i < 20; ++i) {
    const std::string key = "next" + std::to_string(i);
    const auto rowid = impatient.execute_returning_rowid("INSERT INTO kv (k) VALUES (?)", {key});
    EXPECT_EQ(rowid, query_int("SELECT rowid FROM kv WHERE k = ?", {key})) << key;
  }
  EXPECT_EQ(rows_with_key("late"), 1);  // "the request may still be executed": it was
}

TEST_F(GuaranteesTest, CloseWhileAnotherThreadReconnectsReturnsAndSoDoesTheReconnect) {
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto options = bounded_options();
  options.connect_timeout = 10s;
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());

  daemon_.signal(SIGKILL);
  ASSERT_TRUE(daemon_.wait_exit(kStopTimeout).has_value());
  ASSERT_TRUE(wait_until_lost(client));
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  daemon_.signal(SIGSTOP);  // accepts into the backlog, answers the handshake only later

  auto reconnecting = std::async(std::launch::async, [&] {
    try {
      client.ping();
    } catch (const pasyn::Error&) {
    }
  });
  std::this_thread::sleep_for(300ms);  // the reconnect is waiting for HELLO_OK
  auto closing = std::async(std::launch::async, [&] { client.close(); });
  EXPECT_EQ(closing.wait_for(10s), std::future_status::ready) << "close() hangs";
  daemon_.signal(SIGCONT);  // the handshake completes after close()
  EXPECT_EQ(reconnecting.wait_for(15s), std::future_status::ready) << "the reconnect hangs";
  EXPECT_FALSE(client.connected());
  EXPECT_THROW(client.ping(), pasyn::ConnectionClosedError);
  if (reconnecting.wait_for(0s) != std::future_status::ready ||
      closing.wait_for(0s) != std::future_status::ready) {
    std::_Exit(1);  // a hung thread would hang the suite instead of failing it
  }
}

TEST_F(GuaranteesTest, AsyncCallsWaitAtTheInFlightLimitWhileTheDaemonIsStopped) {
  ASSERT_NO_FATAL_FAILURE(start_with_table());
  constexpr std::size_t kLimit = 64;
  constexpr int kCalls = 1000;
  auto options = bounded_options();
  options.request_timeout = 0ms;  // the slot wait is bounded by nothing but the limit
  options.max_in_flight = kLimit;
  pasyn::MultiplexedClient client(sock_, options);
  ASSERT_TRUE(client.ping());

  daemon_.signal(SIGSTOP);
  std::atomic<int> submitted{0};
  std::vector<std::future<std::int64_t>> futures;
  futures.reserve(kCalls);
  auto producer = std::async(std::launch::async, [&] {
    for (int i = 0; i < kCalls; ++i) {
      futures.push_back(client.execute_async("INSERT INTO kv (k) VALUES ('async')"));
      ++submitted;
    }
  });
  const auto give_up = Clock::now() + 10s;
  while (submitted < static_cast<int>(kLimit) && Clock::now() < give_up) {
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(300ms);  // time to run far past the limit, if it could
  EXPECT_EQ(submitted.load(), static_cast<int>(kLimit))
      << "the producer was not held at ClientOptions::max_in_flight";
  daemon_.signal(SIGCONT);
  ASSERT_EQ(producer.wait_for(30s), std::future_status::ready);
  for (auto& f : futures) EXPECT_EQ(f.get(), 1);
  EXPECT_EQ(rows_with_key("async"), kCalls);
}

}  // namespace
