// Bad input against the real pasyn-writerd: malformed and oversized frames, a wrong or missing
// HELLO, truncated or trailing bytes, unknown types and tags, silent and half-sent peers, a peer
// that shuts its sending side. Each is refused with a typed error (or closed) and the daemon
// keeps serving the client connected before the bad peer, and new ones.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "daemon_fixture.hpp"

namespace {

using namespace pasyn::itest;
namespace proto = pasyn::proto;

/// A daemon with a short handshake timeout and a well-behaved client connected before any bad
/// peer, which must still be served after it.
class BadInputTest : public DaemonTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_daemon({"--handshake-timeout", "300"}));
    before_.emplace(connect_client());
    before_->execute("CREATE TABLE probe (v TEXT)");
  }

  void TearDown() override {
    before_.reset();
    DaemonTest::TearDown();
  }

  /// The client connected before the bad peer still gets its writes and pings answered, and a
  /// new client can connect and write.
  void expect_still_serving() {
    try {
      EXPECT_EQ(before_->execute("INSERT INTO probe (v) VALUES (?)", {"before"}), 1);
      EXPECT_TRUE(before_->ping());
      auto fresh = connect_client();
      EXPECT_TRUE(fresh.ping());
      EXPECT_EQ(fresh.execute("INSERT INTO probe (v) VALUES (?)", {"fresh"}), 1);
    } catch (const pasyn::Error& e) {
      ADD_FAILURE() << "the daemon stopped serving other clients: " << e.what();
    }
  }

  std::optional<pasyn::MultiplexedClient> before_;
};

TEST_F(BadInputTest, FrameLengthBelowNineIsAProtocolErrorAndClosesOnlyThatConnection) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> bytes = little_endian_u32(8);  // type + 7 bytes of request id
  bytes.insert(bytes.end(), {0x02, 1, 0, 0, 0, 0, 0, 0});
  ASSERT_TRUE(peer.send(bytes));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, AbsurdFrameLengthIsRefusedBeforeTheBodyArrives) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  ASSERT_TRUE(peer.send(little_endian_u32(0xFFFFFFFF)));  // and no body at all
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

// The sum of the counts in the daemon's "N more WHAT in the last second were not logged" lines.
int left_out_count(const std::string& log, const std::string& what) {
  const std::string left_out = " more " + what + " in the last second were not logged";
  int counted = 0;
  for (std::size_t at = 0; (at = log.find(left_out, at)) != std::string::npos; ++at) {
    std::size_t digits = at;
    while (digits > 0 && std::isdigit(static_cast<unsigned char>(log[digits - 1]))) --digits;
    counted += std::stoi(log.substr(digits, at - digits));
  }
  return counted;
}

TEST_F(BadInputTest, AFloodOfProtocolErrorsIsLoggedAtMostTenTimesASecond) {
  constexpr int kPeers = 40;
  const auto flood_from = Clock::now();
  for (int i = 0; i < kPeers; ++i) {
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.send(little_endian_u32(0xFFFFFFFF)));
    expect_protocol_error_then_close(peer);  // every peer still gets its error frame
  }
  const auto flood_span = Clock::now() - flood_from;
  // The next one, more than a second after the flood's last window opened: logged, after the
  // count of the flood's errors that were left out.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  RawPeer last(sock_);
  ASSERT_TRUE(last.send(little_endian_u32(0xFFFFFFFF)));
  expect_protocol_error_then_close(last);
  expect_still_serving();

  const std::string log = read_file(log_);
  int logged = 0;
  for (std::size_t at = 0; (at = log.find("protocol error:", at)) != std::string::npos; ++at) {
    ++logged;
  }
  const int counted = left_out_count(log, "protocol errors");
  // Every error is either logged or counted, however long the flood took on this machine; the
  // flood's first second logs ten, and each one-second window it spans at most ten more.
  EXPECT_EQ(logged + counted, kPeers + 1) << log;
  EXPECT_GE(logged, 10 + 1) << log;
  const auto windows = static_cast<int>(flood_span / 1s) + 1;
  EXPECT_LE(logged, std::min(kPeers, 10 * windows) + 1) << windows << " one-second windows\n"
                                                        << log;
}

// A peer opening and closing connections in a loop must not flood the log (at info, every
// connection was two lines): at most 50 connections a second are logged, "closed" only for
// those whose "opened" was, and how many were left out is logged.
TEST_F(DaemonTest, AFloodOfConnectionsIsLoggedAtMostFiftyTimesASecond) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--log-level", "info"}));
  constexpr int kPeers = 300;
  const auto flood_from = Clock::now();
  for (int i = 0; i < kPeers; ++i) {
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.connected());
  }
  const auto flood_span = Clock::now() - flood_from;
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  auto client = connect_client();  // logged, after the count of those left out
  EXPECT_TRUE(client.ping());
  client.close();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // its "closed" line

  const std::string log = read_file(log_);
  const auto count = [&](const char* pattern) {
    const std::regex re(pattern);
    return static_cast<int>(
        std::distance(std::sregex_iterator(log.begin(), log.end(), re), std::sregex_iterator()));
  };
  const int counted = left_out_count(log, "connections opened");
  const int opened = count("connection [0-9]+ opened");
  // The daemon's own connections in the fixture's start (its readiness ping) are logged too.
  const int before = opened + counted - (kPeers + 1);
  EXPECT_GE(before, 0) << log;
  EXPECT_LE(before, 2) << log;
  EXPECT_EQ(count("connection [0-9]+ closed"), opened) << log;
  EXPECT_GT(counted, 0) << log;
  const auto windows = static_cast<int>(flood_span / 1s) + 1;
  EXPECT_LE(opened, 50 * windows + 1 + before) << windows << " one-second windows\n" << log;
}

TEST_F(BadInputTest, AbsurdFrameLengthInsteadOfHelloIsRefusedToo) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.send(little_endian_u32(0xFFFFFFFF)));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, HelloWithWrongMagicIsAProtocolError) {
  RawPeer peer(sock_);
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{0x12345678, proto::kVersion, 0});
  ASSERT_TRUE(peer.send(hello));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, HelloWithUnsupportedVersionIsAProtocolError) {
  RawPeer peer(sock_);
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{proto::kMagic, proto::kVersion + 1, 0});
  ASSERT_TRUE(peer.send(hello));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, FirstFrameOtherThanHelloIsAProtocolError) {
  RawPeer peer(sock_);
  std::vector<std::uint8_t> ping;
  proto::encode_empty(ping, proto::MsgType::kPing, 1);
  ASSERT_TRUE(peer.send(ping));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, UnknownMessageTypeAfterHandshakeIsAProtocolError) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  proto::FrameWriter(frame, static_cast<proto::MsgType>(0x42), 7).finish();
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, TruncatedExecutePayloadIsAProtocolErrorAndRunsNothing) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  {
    proto::FrameWriter w(frame, proto::MsgType::kExecute, 5);
    w.u32(1000);  // an SQL string of 1000 bytes, of which only a few follow
    for (char c : std::string("INSERT")) w.u8(static_cast<std::uint8_t>(c));
    w.finish();
  }
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, ExecuteWithTrailingGarbageIsAProtocolErrorAndRunsNothing) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  {
    proto::FrameWriter w(frame, proto::MsgType::kExecute, 5);
    w.string("INSERT INTO probe (v) VALUES ('garbage')");
    w.params({});
    w.u32(0xDEADBEEF);  // bytes the layout does not account for
    w.finish();
  }
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'garbage'"), 0);
}

TEST_F(BadInputTest, ExecuteWithAnUnknownValueTagIsAProtocolError) {
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> frame;
  {
    proto::FrameWriter w(frame, proto::MsgType::kExecute, 5);
    w.string("INSERT INTO probe (v) VALUES (?)");
    w.u32(1);  // one parameter...
    w.u8(9);   // ...whose tag names no type
    w.finish();
  }
  ASSERT_TRUE(peer.send(frame));
  expect_protocol_error_then_close(peer);
  expect_still_serving();
}

TEST_F(BadInputTest, SilentClientIsClosedWithAProtocolErrorAfterTheHandshakeTimeout) {
  // Timed from before our connect(): the daemon's timer (--handshake-timeout 300) starts at its
  // accept, after it, so no pause of this thread can make the wait look shorter.
  const auto connecting = std::chrono::steady_clock::now();
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.connected());
  const auto r = peer.read_until_closed(kReplyTimeout);
  expect_protocol_error_and_close(r);
  EXPECT_GE(std::chrono::steady_clock::now() - connecting, 300ms);
  EXPECT_LT(r.elapsed, 3s);
  expect_still_serving();
}

TEST_F(BadInputTest, HalfAFrameThenDisconnectRunsNothingAndHarmsNoOne) {
  {
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.handshake());
    std::vector<std::uint8_t> frame;
    proto::encode_statement(frame, proto::MsgType::kExecute, 1,
                            "INSERT INTO probe (v) VALUES ('half')", {});
    frame.resize(frame.size() / 2);
    ASSERT_TRUE(peer.send(frame));
  }  // disconnects
  expect_still_serving();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'half'"), 0);
}

TEST_F(BadInputTest, HalfAHelloThenDisconnectHarmsNoOne) {
  {
    RawPeer peer(sock_);
    std::vector<std::uint8_t> hello;
    proto::encode_hello(hello, proto::Hello{});
    hello.resize(hello.size() / 2);
    ASSERT_TRUE(peer.send(hello));
  }
  expect_still_serving();
}

// `n` bytes of `frame` from `at`.
std::vector<std::uint8_t> bytes_of(const std::vector<std::uint8_t>& frame, std::size_t at,
                                   std::size_t n) {
  return {frame.begin() + static_cast<std::ptrdiff_t>(at),
          frame.begin() + static_cast<std::ptrdiff_t>(at + n)};
}

// A frame begun after the handshake must be complete within the handshake timeout of its first
// byte (probe31: hundreds of connections each holding a frame of 16 MiB minus a byte were kept
// for ever): a frame that stalls, or trickles in a byte at a time past it, closes the
// connection with a protocol error; one sent in parts within it is served, also when its
// first part came in the read that carried HELLO (review20: that frame was cut at once).
TEST_F(BadInputTest, AFrameNotCompleteWithinTheTimeoutIsClosedOneSentInPartsIsServed) {
  std::vector<std::uint8_t> frame;
  proto::encode_statement(frame, proto::MsgType::kExecute, 1,
                          "INSERT INTO probe (v) VALUES ('in parts')", {});
  RawPeer parts(sock_), stalled(sock_), trickle(sock_), with_hello(sock_);
  ASSERT_TRUE(parts.handshake());
  ASSERT_TRUE(stalled.handshake());
  ASSERT_TRUE(trickle.handshake());
  ASSERT_TRUE(stalled.send(bytes_of(frame, 0, frame.size() / 2)));
  const auto stalled_from = std::chrono::steady_clock::now();
  // HELLO and the start of a frame in one write (the timeout is 300 ms).
  std::vector<std::uint8_t> hello;
  proto::encode_hello(hello, proto::Hello{});
  const std::size_t half = frame.size() / 2;
  auto first = hello;
  first.insert(first.end(), frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(half));
  ASSERT_TRUE(with_hello.send(first));
  // In three parts, 50 ms apart.
  const std::size_t third = frame.size() / 3;
  ASSERT_TRUE(parts.send(bytes_of(frame, 0, third)));
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(with_hello.send(bytes_of(frame, half, frame.size() - half)));
  ASSERT_TRUE(parts.send(bytes_of(frame, third, third)));
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(parts.send(bytes_of(frame, 2 * third, frame.size() - 2 * third)));
  for (RawPeer* peer : {&parts, &with_hello}) {
    std::optional<Frame> reply;
    while ((reply = peer->read_frame(kReplyTimeout)) &&
           reply->type == static_cast<std::uint8_t>(proto::MsgType::kHelloOk)) {
    }
    ASSERT_TRUE(reply) << "the frame sent in parts was not answered";
    EXPECT_EQ(reply->type, static_cast<std::uint8_t>(proto::MsgType::kResult));
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'in parts'"), 2);

  // A byte every 100 ms: cut once 300 ms have passed since its first byte.
  const std::size_t head = frame.size() - 20;
  ASSERT_TRUE(trickle.send(bytes_of(frame, 0, head)));
  for (std::size_t i = head; i < frame.size(); ++i) {
    std::this_thread::sleep_for(100ms);
    if (!trickle.send(bytes_of(frame, i, 1))) break;  // closed
  }
  for (RawPeer* peer : {&stalled, &trickle}) {
    const auto r = peer->read_until_closed(kReplyTimeout);
    expect_protocol_error_and_close(r);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - stalled_from, 300ms);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'in parts'"), 2);
  EXPECT_NE(read_file(log_).find("was not complete within"), std::string::npos) << read_file(log_);
  expect_still_serving();
}

// The bytes of frames in progress are held by the daemon (STATS partial_frame_bytes) until the
// frame is complete or its connection closed.
TEST_F(BadInputTest, TheBytesOfFramesInProgressAreCountedUntilTheirConnectionCloses) {
  constexpr std::size_t kPeers = 3, kSent = 300'000;
  std::vector<std::uint8_t> frame;
  proto::encode_statement(frame, proto::MsgType::kExecute, 1, "SELECT length(?)",
                          {pasyn::Blob(kSent * 2, 7)});
  const auto held = [&] { return stat_int(*before_, "partial_frame_bytes"); };
  const std::int64_t idle = held();
  {
    std::vector<std::unique_ptr<RawPeer>> peers;
    for (std::size_t i = 0; i < kPeers; ++i) {
      peers.push_back(std::make_unique<RawPeer>(sock_));
      ASSERT_TRUE(peers.back()->handshake());
      ASSERT_TRUE(peers.back()->send(bytes_of(frame, 0, kSent)));
    }
    // Read in pieces as they arrive: wait until the daemon has read them all.
    const auto deadline = std::chrono::steady_clock::now() + kReplyTimeout;
    while (held() < idle + static_cast<std::int64_t>(kPeers * kSent) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_GE(held(), idle + static_cast<std::int64_t>(kPeers * kSent));
  }  // the peers disconnect
  const auto deadline = std::chrono::steady_clock::now() + kReplyTimeout;
  while (held() > idle && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(held(), idle);
  expect_still_serving();
}

// A peer that shuts its sending side after its requests (shutdown(SHUT_WR), as a script piping
// requests in does) still gets every reply, in order, and then the close; its transaction's
// COMMIT, sent before the shutdown, commits.
TEST_F(BadInputTest, APeerThatShutsItsSendingSideGetsEveryReplyAndThenTheClose) {
  constexpr std::uint64_t kWrites = 200;
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> bytes;
  for (std::uint64_t id = 1; id <= kWrites; ++id) {
    const auto frame = statement_frame(static_cast<std::uint8_t>(proto::MsgType::kExecute), id,
                                       "INSERT INTO probe (v) VALUES ('half-closed')");
    bytes.insert(bytes.end(), frame.begin(), frame.end());
  }
  constexpr std::uint64_t kBegin = 1000;
  for (const auto& frame : {empty_frame(proto::MsgType::kBegin, kBegin),
                            tx_statement_frame(proto::MsgType::kExecute, kBegin + 1, kBegin,
                                               "INSERT INTO probe (v) VALUES ('half-closed tx')"),
                            tx_end_frame(proto::MsgType::kCommit, kBegin + 2, kBegin)}) {
    bytes.insert(bytes.end(), frame.begin(), frame.end());
  }
  ASSERT_TRUE(peer.send(bytes));
  peer.shutdown_send();

  const auto r = peer.read_until_closed(kReplyTimeout);
  EXPECT_TRUE(r.closed) << "the daemon kept the connection open after the last reply";
  EXPECT_TRUE(r.decode_error.empty()) << r.decode_error;
  ASSERT_EQ(r.frames.size(), kWrites + 3);
  for (std::size_t i = 0; i < r.frames.size(); ++i) {
    const auto& f = r.frames[i];
    EXPECT_EQ(f.request_id, i < kWrites ? i + 1 : kBegin + (i - kWrites)) << "reply " << i;
    EXPECT_NE(f.type, static_cast<std::uint8_t>(proto::MsgType::kError)) << "reply " << i;
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'half-closed'"),
            static_cast<std::int64_t>(kWrites));
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'half-closed tx'"), 1);
  expect_still_serving();
}

}  // namespace
