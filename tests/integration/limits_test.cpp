// Integration tests of pasyn-writerd's limits against the real binary: the size and connection
// limits, backpressure (--max-inflight, --max-total-bytes), the output bounds (--max-output) and
// the statement timeout (PROTOCOL.md §7; README "Daemon flags"). Every test also shows that a
// client connected before the limit was hit is still served.
// Over 600 lines: PROTOCOL.md §7 has many limits, and every test here uses the LimitTest
// fixture and the hardening helpers (hardening_fixture.hpp); each test is short.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include "../sanitizers.hpp"
#include "hardening_fixture.hpp"

namespace {

using namespace pasyn::itest;
using namespace pasyn::itest::hardening;

// ---- Size limits ------------------------------------------------------------------------------

TEST_F(LimitTest, SqlLongerThanMaxSqlLengthIsADataErrorAndTheConnectionGoesOn) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-sql-length", "100"}));
  auto client = connect_client();
  const std::string head = "INSERT INTO probe (v) VALUES ('", tail = "')";
  const std::string at_limit = head + std::string(100 - head.size() - tail.size(), 'a') + tail;
  const std::string over_limit = head + std::string(101 - head.size() - tail.size(), 'o') + tail;
  ASSERT_EQ(at_limit.size(), 100u);
  ASSERT_EQ(over_limit.size(), 101u);

  try {
    client.execute(over_limit);
    ADD_FAILURE() << "101 bytes of SQL ran under --max-sql-length 100";
  } catch (const pasyn::DataError& e) {
    EXPECT_EQ(e.code(), SQLITE_TOOBIG);
    EXPECT_TRUE(contains(e.what(), "--max-sql-length")) << e.what();
  }
  const std::string long_script = "INSERT INTO probe (v) VALUES ('s1'); " + over_limit;
  EXPECT_THROW(client.executescript(long_script), pasyn::DataError);
  EXPECT_THROW(client.execute_fetchall("SELECT '" + std::string(120, 'f') + "'"), pasyn::DataError);

  // The same connection goes on, and SQL of exactly the limit runs.
  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute(at_limit), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'o%' OR v = 's1'"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'a%'"), 1);
  expect_still_served();
}

// Found by pasyn-fuzz-session: SQLite stops reading at a NUL byte, so a script with one made the
// writer loop forever on the same spot and every later write of every client hung.
TEST_F(LimitTest, SqlWithANulByteIsRefusedAndTheWriterGoesOn) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe());
  auto client = connect_client();
  using namespace std::string_view_literals;
  for (const auto sql : {"SELECT 1;\0"sv, "\0"sv, "INSERT INTO probe (v) VALUES ('x')\0; x"sv}) {
    EXPECT_THROW(client.executescript(sql), pasyn::ProgrammingError);
    EXPECT_THROW(client.execute(sql), pasyn::ProgrammingError);
  }
  {
    auto tx = client.begin();
    EXPECT_THROW(tx.executescript("SELECT 1;\0"sv), pasyn::ProgrammingError);
    tx.rollback();
  }
  // The writer still answers writes, on this connection and on the one connected before.
  EXPECT_EQ(client.execute("INSERT INTO probe (v) VALUES ('after')"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'x'"), 0);
  expect_still_served();
}

TEST_F(LimitTest, MoreParametersThanMaxParamsIsADataErrorAndTheConnectionGoesOn) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-params", "3"}));
  auto client = connect_client();
  client.execute("CREATE TABLE quad (a, b, c, d)");

  try {
    client.execute("INSERT INTO quad VALUES (?, ?, ?, ?)", {1, 2, 3, 4});
    ADD_FAILURE() << "4 parameters ran under --max-params 3";
  } catch (const pasyn::DataError& e) {
    EXPECT_EQ(e.code(), SQLITE_TOOBIG);
    EXPECT_TRUE(contains(e.what(), "--max-params")) << e.what();
  }
  EXPECT_THROW(client.execute_fetchall("SELECT ?, ?, ?, ?", {1, 2, 3, 4}), pasyn::DataError);
  // Each EXECUTE_MANY row is held to the same limit, with the same error (PROTOCOL.md §7)...
  try {
    client.execute_many("INSERT INTO quad VALUES (?, ?, ?, ?)", {{1, 2, 3}, {1, 2, 3, 4}});
    ADD_FAILURE() << "a row of 4 parameters ran under --max-params 3";
  } catch (const pasyn::DataError& e) {
    EXPECT_EQ(e.code(), SQLITE_TOOBIG);
    EXPECT_TRUE(contains(e.what(), "4 parameters in a row, more than --max-params 3")) << e.what();
  }
  // ...and a statement with more placeholders meets SQLite's variable limit, which the daemon
  // sets to the same value: refused by SQLite, with its error.
  EXPECT_THROW(client.execute_many("INSERT INTO quad VALUES (?, ?, ?, ?)", {{1, 2, 3}}),
               pasyn::SqliteError);
  EXPECT_EQ(query_int("SELECT count(*) FROM quad"), 0);

  EXPECT_TRUE(client.ping());
  EXPECT_EQ(client.execute("INSERT INTO quad VALUES (?, ?, ?, 0)", {1, 2, 3}), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM quad"), 1);
  expect_still_served();
}

// A result's column names count toward --max-frame, also with no row (a probe got a reply over
// the frame size the daemon announced, which the client took for a broken connection).
TEST_F(LimitTest, AResultsColumnNamesAloneAreHeldToMaxFrame) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-frame", "1024"}));
  auto client = connect_client();
  // Three 200-byte column names: each request fits in a frame, two copies of them do not.
  const std::string a(200, 'a'), b(200, 'b'), c(200, 'c');
  client.execute("CREATE TABLE wide (" + a + ", " + b + ", " + c + ")");
  for (const char* sql :
       {"SELECT * FROM wide, wide AS w2 WHERE 0", "SELECT * FROM wide, wide AS w2",
        "INSERT INTO wide VALUES (1, 2, 3) RETURNING *, *"}) {
    try {
      client.execute_fetchall(sql);
      ADD_FAILURE() << sql << ": 1,200 bytes of column names under --max-frame 1024";
    } catch (const pasyn::DataError& e) {
      EXPECT_TRUE(contains(e.what(), "does not fit in one frame")) << e.what();
    }
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM wide"), 0);
  EXPECT_TRUE(client.ping());
  expect_still_served();
}

// ---- Connections, backpressure, output --------------------------------------------------------

// 60 EXECUTE frames of a 20,000-byte INSERT into probe, ids 1 to 60: ~1.2 MB that two
// connections send at once to fill a 2 MiB --max-total-bytes.
std::vector<std::uint8_t> bulk_inserts() {
  std::vector<std::uint8_t> bulk;
  for (std::uint64_t id = 1; id <= 60; ++id) {
    const auto f = statement_frame(kExecute, id, "INSERT INTO probe (v) VALUES (?)",
                                   {pasyn::Blob(20000, 'y')});
    bulk.insert(bulk.end(), f.begin(), f.end());
  }
  return bulk;
}

// One connection's replies in one batch are held under --max-output: the request that would
// pass it is undone and answered TOO_LARGE, the others of the batch (its own smaller ones too)
// are served, and the daemon never holds more than the bound for it.
TEST_F(LimitTest, OneConnectionsRepliesInABatchStayUnderMaxOutput) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-frame", "524288", "--max-output", "1048576", "--lock-wait", "30s"}));
  auto holder = connect_client();
  auto tx = holder.begin();  // everything below queues behind it and runs as one batch
  auto client = connect_client();
  std::vector<std::future<std::vector<pasyn::Row>>> big;
  for (int i = 0; i < 6; ++i) {
    big.push_back(client.execute_fetchall_async(
        "INSERT INTO probe (v) VALUES (zeroblob(300000)) RETURNING v"));
  }
  auto small = client.execute_async("INSERT INTO probe (v) VALUES ('small')");
  ASSERT_TRUE(
      eventually([&] { return stat_int(holder, "waiting_for_transaction") == 7; }, kReplyTimeout));
  tx.commit();
  for (int i = 0; i < 6; ++i) {
    if (i < 3) {  // 3 x 300,000 bytes fit in 1 MiB; a fourth does not
      EXPECT_EQ(big[i].get().size(), 1u) << i;
      continue;
    }
    try {
      big[i].get();
      ADD_FAILURE() << "reply " << i << " passed --max-output";
    } catch (const pasyn::DataError& e) {
      EXPECT_TRUE(contains(e.what(), "--max-output")) << e.what();
    }
  }
  EXPECT_EQ(small.get(), 1);
  // The refused ones wrote nothing: 3 large rows and the small one.
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE length(v) = 300000"), 3);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'small'"), 1);
  expect_still_served();
}

// All connections' replies in one batch are held under --max-total-bytes the same way
// (probe31: 20 connections each under --max-output made one batch of 1.5 GB of replies).
TEST_F(LimitTest, AllConnectionsRepliesInABatchStayUnderMaxTotalBytes) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-frame", "524288", "--max-output", "1048576", "--max-queued-bytes",
                        "1048576", "--max-total-bytes", "2097152", "--lock-wait", "30s"}));
  auto holder = connect_client();
  auto tx = holder.begin();  // everything below queues behind it and runs as one batch
  std::vector<pasyn::MultiplexedClient> clients;
  std::vector<std::future<std::vector<pasyn::Row>>> replies;
  for (int c = 0; c < 4; ++c) {
    clients.push_back(connect_client());
    for (int i = 0; i < 3; ++i) {  // 900,000 bytes a connection: under its --max-output
      replies.push_back(clients.back().execute_fetchall_async("SELECT zeroblob(300000)"));
    }
  }
  ASSERT_TRUE(
      eventually([&] { return stat_int(holder, "waiting_for_transaction") == 12; }, kReplyTimeout));
  tx.commit();
  int served = 0, refused = 0;
  for (auto& f : replies) {
    try {
      EXPECT_EQ(f.get().size(), 1u);
      ++served;
    } catch (const pasyn::DataError& e) {
      EXPECT_TRUE(contains(e.what(), "--max-total-bytes")) << e.what();
      ++refused;
    }
  }
  EXPECT_EQ(served, 6);  // 6 x 300,000 bytes fit in 2 MiB; a seventh does not
  EXPECT_EQ(refused, 6);
  expect_still_served();
}

// A connection finishes the frame it began: the bytes of a frame in progress are not counted in
// the byte limits. (review20: counted, they paused a client mid-frame behind its own unread
// reply, which it reads only after writing its next request whole: each waited for the other
// for ever; and several clients uploading at once filled --max-total-bytes with frames none of
// them could finish, so nobody was served again.)
TEST_F(LimitTest, AFrameInProgressIsAlwaysReadToItsEnd) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-frame", "1048576", "--max-queued-bytes", "1048576", "--max-output",
                        "4194304", "--max-total-bytes", "4194304"}));
  const auto insert = [](std::uint64_t id) {
    return statement_frame(kExecute, id, "INSERT INTO probe (v) VALUES (?)",
                           {pasyn::Blob(900000, 'z')});
  };
  {
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.handshake());
    // Two queries whose replies (1.4 MB, unread) pass --max-queued-bytes while the frame that
    // follows them is in progress (review21: the frame's first bytes were not parsed once the
    // limit was reached, and the whole frame waited; sent in one write with the queries, so
    // that the daemon has begun it when their replies come).
    std::vector<std::uint8_t> head;
    for (std::uint64_t id : {1, 2}) {
      const auto q = statement_frame(static_cast<std::uint8_t>(proto::MsgType::kExecuteFetch), id,
                                     "SELECT zeroblob(700000)");
      head.insert(head.end(), q.begin(), q.end());
    }
    const auto frame = insert(3);
    head.insert(head.end(), frame.begin(), frame.begin() + 1000);
    ASSERT_TRUE(peer.send(head));
    auto sent = std::async(std::launch::async, [&] {
      return peer.send(std::vector<std::uint8_t>(frame.begin() + 1000, frame.end()));
    });
    const bool whole = sent.wait_for(kReplyTimeout) == std::future_status::ready;
    EXPECT_TRUE(whole) << "the daemon stopped reading in the middle of the frame";
    if (!whole) peer.shutdown_send();  // ends the blocked send
    EXPECT_TRUE(sent.get());
    for (int i = 0; i < 3 && whole; ++i) {
      const auto reply = peer.read_frame(kReplyTimeout);
      ASSERT_TRUE(reply) << "reply " << i + 1 << " did not come";
      EXPECT_EQ(reply->type, static_cast<std::uint8_t>(proto::MsgType::kResult));
    }
  }
  // Five uploads at once, together past --max-total-bytes.
  std::vector<std::unique_ptr<RawPeer>> peers;
  std::vector<std::future<bool>> sends;
  for (std::uint64_t i = 0; i < 5; ++i) {
    peers.push_back(std::make_unique<RawPeer>(sock_));
    ASSERT_TRUE(peers.back()->handshake());
  }
  for (std::uint64_t i = 0; i < 5; ++i) {
    sends.push_back(
        std::async(std::launch::async, [&, i] { return peers[i]->send(insert(10 + i)); }));
  }
  for (std::uint64_t i = 0; i < 5; ++i) {
    const bool whole = sends[i].wait_for(kReplyTimeout) == std::future_status::ready;
    EXPECT_TRUE(whole) << "upload " << i << " was not read whole";
    if (!whole) peers[i]->shutdown_send();
    EXPECT_TRUE(sends[i].get());
    if (!whole) continue;
    const auto reply = peers[i]->read_frame(kReplyTimeout);
    ASSERT_TRUE(reply) << "upload " << i << " was not answered";
    EXPECT_EQ(reply->type, static_cast<std::uint8_t>(proto::MsgType::kResult));
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE length(v) = 900000"), 6);
  expect_still_served();
}

// A connection whose reading pauses because --max-total-bytes is reached (by other connections'
// requests waiting behind a transaction) while it has nothing in the writer stays open, and is
// read again once the bytes are released: it is neither closed unannounced nor lost from the
// connection count. (While the budget is full nobody is read, the transaction's owner neither:
// the waiting requests' --lock-wait releases it.)
TEST_F(LimitTest, AConnectionPausedByTheTotalBudgetIsKeptAndReadAgain) {
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-frame", "65536", "--max-output", "1048576", "--max-queued-bytes",
                        "1048576", "--max-total-bytes", "2097152", "--lock-wait", "1s"}));
  auto holder = connect_client();
  auto tx = holder.begin();  // the big senders' requests wait behind it and fill the budget
  RawPeer big1(sock_), big2(sock_), paused(sock_);
  ASSERT_TRUE(big1.handshake());
  ASSERT_TRUE(big2.handshake());
  ASSERT_TRUE(paused.handshake());
  const auto bulk = bulk_inserts();
  auto send1 = std::async(std::launch::async, [&] { return big1.send(bulk); });
  auto send2 = std::async(std::launch::async, [&] { return big2.send(bulk); });
  std::this_thread::sleep_for(300ms);  // ~2 MiB of requests wait: the budget is full
  const auto request =
      statement_frame(kExecute, 7, "INSERT INTO probe (v) VALUES ('paused, then read')");
  const std::size_t half = request.size() / 2;
  ASSERT_TRUE(paused.send({request.begin(), request.begin() + half}));  // read, then paused
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(paused.send({request.begin() + half, request.end()}));
  // Answered once the budget has room again: TIMEOUT (it waits for the holder's transaction
  // too) or a RESULT, but an answer, on the same connection.
  const auto reply = paused.read_frame(20s);
  ASSERT_TRUE(reply.has_value()) << "the paused connection was dropped";
  EXPECT_EQ(reply->request_id, 7u);
  EXPECT_TRUE(send1.get());
  EXPECT_TRUE(send2.get());
  tx.commit();
  // Every bulk request is answered (TIMEOUT, or run after the commit) before the rows are
  // counted below.
  for (RawPeer* peer : {&big1, &big2}) {
    for (int i = 0; i < 60; ++i) ASSERT_TRUE(peer->read_frame(kReplyTimeout).has_value()) << i;
  }
  big1.close();
  big2.close();
  paused.close();
  // Every raw connection's slot is given back: the holder and before_ are what is left.
  EXPECT_TRUE(eventually([&] { return stat_int(holder, "connections") == 2; }, kReplyTimeout))
      << stat_int(holder, "connections");
  expect_still_served();
}

// Requests waiting behind a client transaction can fill --max-total-bytes; the transaction's
// owner is still read (its own --max-queued-bytes bounds it), so its COMMIT ends the wait
// instead of waiting for --lock-wait to fail the others.
TEST_F(LimitTest, TheTransactionOwnerIsReadWhileOthersFillTheTotalBudget) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-frame", "65536", "--max-queued-bytes", "1572864",
                                            "--max-total-bytes", "2097152", "--lock-wait", "60s",
                                            "--handshake-timeout", "2s"}));
  auto holder = connect_client();
  auto tx = holder.begin();
  tx.execute("INSERT INTO probe (v) VALUES ('in the transaction')");
  RawPeer big1(sock_), big2(sock_);
  ASSERT_TRUE(big1.handshake());
  ASSERT_TRUE(big2.handshake());
  const auto bulk = bulk_inserts();
  auto send1 = std::async(std::launch::async, [&] { return big1.send(bulk); });
  auto send2 = std::async(std::launch::async, [&] { return big2.send(bulk); });
  // ~2 MiB of requests (~104 of 120) wait behind the transaction: the total budget, not
  // either sender's own, is full.
  ASSERT_TRUE(eventually([&] { return stat_int(holder, "waiting_for_transaction") >= 100; }, 10s))
      << stat_int(holder, "waiting_for_transaction");
  std::this_thread::sleep_for(100ms);
  EXPECT_LT(stat_int(holder, "waiting_for_transaction"), 120);
  // A new connection's HELLO is read too: it queues nothing (probe24: it was not read, and the
  // client, which sent HELLO at once, was closed for not sending one within the handshake
  // timeout). Its requests then wait for room like everyone else's.
  EXPECT_NO_THROW(connect_client());
  // Sent while the budget is full; without the owner's exemption it is read only after
  // --lock-wait (60 s) has failed every waiting request.
  tx.execute("INSERT INTO probe (v) VALUES ('read while the budget is full')");
  tx.commit();
  EXPECT_TRUE(send1.get());
  EXPECT_TRUE(send2.get());
  for (RawPeer* peer : {&big1, &big2}) {
    for (int i = 0; i < 60; ++i) {
      const auto reply = peer->read_frame(kReplyTimeout);
      ASSERT_TRUE(reply.has_value()) << i;
      EXPECT_EQ(reply->type, static_cast<std::uint8_t>(proto::MsgType::kResult)) << i;
    }
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE length(v) = 20000"), 120);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE '%budget is full'"), 1);
  expect_still_served();
}

// The same for --max-inflight: the owner's own writes sent without the handle wait behind its
// transaction and count toward it (a probe's 1,100 with the default 1,024 stopped the
// transaction's next statement from being read: it ran into --lock-wait, and the writes failed).
TEST_F(LimitTest, TheTransactionOwnerIsReadPastMaxInflight) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-inflight", "32", "--lock-wait", "60s"}));
  auto holder = connect_client();
  auto tx = holder.begin();
  tx.execute("INSERT INTO probe (v) VALUES ('in the transaction')");
  std::vector<std::future<std::int64_t>> waiting;
  for (int i = 0; i < 40; ++i)
    waiting.push_back(holder.execute_async("INSERT INTO probe (v) VALUES ('after')"));
  auto observer = connect_client();
  ASSERT_TRUE(eventually([&] { return stat_int(observer, "waiting_for_transaction") >= 32; },
                         kReplyTimeout));
  const auto started = std::chrono::steady_clock::now();
  tx.execute("INSERT INTO probe (v) VALUES ('read past --max-inflight')", {}, pasyn::Timeout{10s});
  tx.commit();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  for (auto& w : waiting) EXPECT_EQ(w.get(), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'after'"), 40);
  expect_still_served();
}

// --max-inflight is backpressure: every request parsed later is answered, also the frames that
// arrived while the limit stopped the parsing, and also after the client shut its sending side.
// (A probe pipelining 3,000 requests under --max-inflight 8 got 616 replies: when the writer
// answered between the parse and the check after it, the daemon read the socket again and the
// frames already in its buffer waited for bytes that never came, or were dropped at the EOF.)
TEST_F(LimitTest, EveryRequestPipelinedPastMaxInflightIsAnswered) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--max-inflight", "8"}));
  for (int round = 0; round < 6; ++round) {
    const bool half_close = round % 2 == 1;
    constexpr int kRequests = 3000;
    std::vector<std::uint8_t> commits;  // no transaction is open: each is answered MISUSE
    for (int i = 1; i <= kRequests; ++i) {
      const auto f = tx_end_frame(proto::MsgType::kCommit, static_cast<std::uint64_t>(i), 1);
      commits.insert(commits.end(), f.begin(), f.end());
    }
    RawPeer peer(sock_);
    ASSERT_TRUE(peer.handshake());
    auto sent = std::async(std::launch::async, [&] {
      const bool ok = peer.send(commits);
      if (half_close) peer.shutdown_send();
      return ok;
    });
    int answered = 0;
    while (answered < kRequests) {
      const auto reply = peer.read_frame(kReplyTimeout);
      if (!reply) break;
      EXPECT_EQ(reply->request_id, static_cast<std::uint64_t>(answered + 1));
      ++answered;
    }
    EXPECT_TRUE(sent.get());
    EXPECT_EQ(answered, kRequests) << "round " << round << (half_close ? " (half-closed)" : "");
  }
  expect_still_served();
}

TEST_F(LimitTest, AConnectionOverMaxConnectionsIsRefusedAsBusyAndAFreedSlotIsReused) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--max-connections", "2"}));
  auto first = connect_client();
  // start_daemon()'s probe connection counts until the daemon has seen it close.
  ASSERT_TRUE(eventually([&] { return stat_int(first, "connections") == 1; }, kReplyTimeout));
  std::optional<pasyn::MultiplexedClient> second(connect_client());
  first.execute("CREATE TABLE t (who TEXT)");

  try {
    pasyn::MultiplexedClient third(sock_, bounded_options());
    ADD_FAILURE() << "a third connection was admitted under --max-connections 2";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_EQ(e.code(), SQLITE_BUSY) << e.what();
    EXPECT_TRUE(contains(e.what(), "connection limit")) << e.what();
  }
  EXPECT_TRUE(first.ping());
  EXPECT_TRUE(second->ping());
  EXPECT_EQ(first.execute("INSERT INTO t VALUES ('first')"), 1);
  EXPECT_EQ(second->execute("INSERT INTO t VALUES ('second')"), 1);

  // Closing is asynchronous: the daemon frees the slot once it has seen the close.
  second.reset();
  std::optional<pasyn::MultiplexedClient> fourth;
  std::string refusal;
  const auto deadline = Clock::now() + kReplyTimeout;
  while (!fourth && Clock::now() < deadline) {
    try {
      fourth.emplace(sock_, bounded_options());
    } catch (const pasyn::OperationalError& e) {
      if (e.code() != SQLITE_BUSY) throw;
      refusal = e.what();
      std::this_thread::sleep_for(10ms);
    }
  }
  ASSERT_TRUE(fourth.has_value()) << "no slot after a client closed; last refusal: " << refusal;
  EXPECT_EQ(fourth->execute("INSERT INTO t VALUES ('fourth')"), 1);
  EXPECT_TRUE(first.ping());
  EXPECT_EQ(first.execute("INSERT INTO t VALUES ('first again')"), 1);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 4);
}

TEST_F(LimitTest, MaxInflightStopsReadingFromAConnectionAndLosesNoRequest) {
  constexpr int kRequests = 200;
  constexpr std::int64_t kMaxInflight = 8;
  // Long waits: the requests wait behind a transaction on purpose, for as long as the test says.
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-inflight", std::to_string(kMaxInflight), "--lock-wait", "60s",
                        "--transaction-idle-timeout", "60s"}));
  before_->execute("CREATE TABLE seq (id INTEGER PRIMARY KEY, n INTEGER)");
  auto holder = connect_client();
  auto tx = holder.begin();
  tx.execute("INSERT INTO probe (v) VALUES ('holder')");

  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  std::vector<std::uint8_t> bytes;
  for (int i = 1; i <= kRequests; ++i) {
    proto::encode_statement(bytes, proto::MsgType::kExecute, i, "INSERT INTO seq (n) VALUES (?)",
                            {i});
  }
  ASSERT_TRUE(peer.send(bytes));

  // Requests the daemon has read and not answered: none can be answered while the transaction
  // is open, so this is what it took from the socket.
  const auto taken = [&] {
    const auto report = before_->stats();
    return as_int(figure(report, "queue_depth")) +
           as_int(figure(report, "waiting_for_transaction"));
  };
  // First until the requests taken wait for the transaction: the daemon reads the two figures
  // one after the other, and a request moving from the queue to the waiting list in between
  // would be counted twice.
  std::int64_t waiting = 0;
  ASSERT_TRUE(eventually(
      [&] {
        waiting = stat_int(*before_, "waiting_for_transaction");
        return waiting >= kMaxInflight;
      },
      kReplyTimeout))
      << "only " << waiting << " requests wait for the transaction";
  // Watch for a while: a daemon that kept reading would take all 200 meanwhile.
  std::int64_t most = taken();
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(10ms);
    most = std::max(most, taken());
  }
  EXPECT_EQ(most, kMaxInflight) << "requests taken from a connection over --max-inflight";
  EXPECT_TRUE(before_->ping()) << "the client connected before is not served while paused";

  tx.commit();
  for (int i = 1; i <= kRequests; ++i) {
    const auto frame = peer.read_frame(kReplyTimeout);
    ASSERT_TRUE(frame.has_value()) << "no reply to request " << i;
    ASSERT_EQ(frame->type, static_cast<std::uint8_t>(proto::MsgType::kResult)) << "request " << i;
    EXPECT_EQ(frame->request_id, static_cast<std::uint64_t>(i));
    proto::Result result;
    std::string why;
    ASSERT_TRUE(proto::decode_result(frame->payload, result, why)) << why;
    EXPECT_EQ(result.changes, 1) << "request " << i;
  }
  auto conn = pasyn::connect(db_, pasyn::OpenFlags::readonly());
  const auto rows = conn.execute_fetchall("SELECT n FROM seq ORDER BY id");
  ASSERT_EQ(rows.size(), std::size_t{kRequests});
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(as_int(rows[i][0]), i + 1) << "row " << i;
  expect_still_served();
}

TEST_F(LimitTest, AClientThatDoesNotReadItsRepliesIsDisconnectedAndItsTransactionRolledBack) {
  constexpr int kFetches = 100;  // 30 KB replies: 3 MB, far beyond socket buffer + --max-output
  ASSERT_NO_FATAL_FAILURE(
      start_with_probe({"--max-output", "65536", "--max-frame", "65536", "--lock-wait", "30s"}));
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.handshake());
  const auto begun = peer.request(empty_frame(proto::MsgType::kBegin, 1));
  ASSERT_TRUE(begun && begun->type == static_cast<std::uint8_t>(proto::MsgType::kOk));
  const auto inserted = peer.request(tx_statement_frame(proto::MsgType::kExecute, 2, 1,
                                                        "INSERT INTO probe (v) VALUES ('unread')"));
  ASSERT_TRUE(inserted && inserted->type == static_cast<std::uint8_t>(proto::MsgType::kResult));

  // From here on the peer only sends.
  std::vector<std::uint8_t> bytes;
  for (int i = 0; i < kFetches; ++i) {
    const auto f =
        tx_statement_frame(proto::MsgType::kExecuteFetch, 100 + i, 1, "SELECT zeroblob(30000)");
    bytes.insert(bytes.end(), f.begin(), f.end());
  }
  ASSERT_TRUE(peer.send(bytes));
  // Queued behind the peer's transaction; runs once the daemon has rolled it back.
  auto queued = before_->execute_async("INSERT INTO probe (v) VALUES ('queued')");

  EXPECT_TRUE(wait_for_file_content(log_, "does not read its replies", 10s));
  EXPECT_TRUE(contains(read_file(log_), "more than --max-output"));
  EXPECT_TRUE(before_->ping());
  ASSERT_EQ(queued.wait_for(10s), std::future_status::ready)
      << "the peer's transaction still blocks other writers";
  EXPECT_EQ(queued.get(), 1);
  EXPECT_EQ(stat_int(*before_, "transaction_age_ms"), -1) << "the transaction is still open";

  const auto r = peer.read_until_closed(kReplyTimeout);
  EXPECT_TRUE(r.closed) << "the daemon did not close the connection of a peer that never read";
  EXPECT_LT(r.frames.size(), std::size_t{kFetches}) << "every reply was kept for the peer";
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'unread'"), 0)
      << "the disconnected peer's transaction was committed";

  auto other = connect_client();
  auto tx = other.begin();
  EXPECT_EQ(tx.execute("INSERT INTO probe (v) VALUES ('next transaction')"), 1);
  tx.commit();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v = 'next transaction'"), 1);
  expect_still_served();
}

// ---- Statement timeout ------------------------------------------------------------------------

/// "w<i>", appended: g++ 12 at -O3 warns falsely (-Wrestrict) on "w" + std::to_string(i).
std::string probe_value(int i) {
  std::string v = "w";
  v += std::to_string(i);
  return v;
}

TEST_F(LimitTest, StatementTimeoutInterruptsARunawayQueryAndTheRestOfItsBatchCommits) {
  constexpr int kWritesAround = 20;  // before and after the runaway query
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--statement-timeout", "200", "--lock-wait", "30s"}));
  auto client = connect_client();
  try {
    client.execute_fetchall(kEndless);
    ADD_FAILURE() << "an endless query returned";
  } catch (const pasyn::TimeoutError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
  }

  // A transaction on another connection holds every request back until all are queued, so
  // that they run as one batch when it commits.
  auto holder = connect_client();
  auto tx = holder.begin();
  const std::int64_t batches_before = stat_int(client, "batches");
  std::vector<std::future<std::int64_t>> writes;
  for (int i = 0; i < kWritesAround; ++i) {
    writes.push_back(client.execute_async("INSERT INTO probe (v) VALUES (?)", {probe_value(i)}));
  }
  auto runaway = client.execute_fetchall_async(kEndless);
  for (int i = kWritesAround; i < 2 * kWritesAround; ++i) {
    writes.push_back(client.execute_async("INSERT INTO probe (v) VALUES (?)", {probe_value(i)}));
  }
  ASSERT_TRUE(eventually(
      [&] { return stat_int(client, "waiting_for_transaction") == 2 * kWritesAround + 1; },
      kReplyTimeout));
  tx.commit();

  ASSERT_EQ(runaway.wait_for(20s), std::future_status::ready);
  try {
    runaway.get();
    ADD_FAILURE() << "an endless query returned";
  } catch (const pasyn::TimeoutError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
  }
  for (std::size_t i = 0; i < writes.size(); ++i) {
    ASSERT_EQ(writes[i].wait_for(20s), std::future_status::ready) << "write " << i;
    EXPECT_EQ(writes[i].get(), 1) << "write " << i;
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'w%'"), 2 * kWritesAround);
  // One group commit for all of them: the runaway query was undone alone, not the batch.
  EXPECT_EQ(stat_int(client, "batches") - batches_before, 1);
  expect_still_served();
}

// Inside a client transaction a runaway read is undone alone and the transaction goes on; a
// runaway write ends the transaction, because SQLite rolls back the whole transaction when it
// interrupts a statement that writes. Both are answered TIMEOUT; what the transaction wrote
// before is gone in the second case, and its next request says why.
TEST_F(LimitTest, StatementTimeoutInsideATransactionIsATimeoutAndAWriteEndsTheTransaction) {
  ASSERT_NO_FATAL_FAILURE(start_with_probe({"--statement-timeout", "200"}));
  auto client = connect_client();
  auto tx = client.begin();
  tx.execute("INSERT INTO probe (v) VALUES ('kept')");
  EXPECT_THROW(tx.execute_fetchall(kEndless), pasyn::TimeoutError);
  tx.execute("INSERT INTO probe (v) VALUES ('kept too')");
  tx.commit();
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v LIKE 'kept%'"), 2);

  auto lost = client.begin();
  lost.execute("INSERT INTO probe (v) VALUES ('lost')");
  try {
    lost.execute(
        "INSERT INTO probe (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
        "SELECT 'runaway' FROM c");
    ADD_FAILURE() << "an endless INSERT returned";
  } catch (const pasyn::TimeoutError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
    EXPECT_TRUE(contains(e.what(), "the transaction was rolled back")) << e.what();
  }
  try {
    lost.execute("INSERT INTO probe (v) VALUES ('after')");
    ADD_FAILURE() << "the transaction went on after SQLite rolled it back";
  } catch (const pasyn::OperationalError& e) {
    EXPECT_TRUE(contains(e.what(), "--statement-timeout")) << e.what();
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM probe WHERE v IN ('lost', 'runaway', 'after')"), 0);
  EXPECT_EQ(client.execute("INSERT INTO probe (v) VALUES ('served')"), 1);
  expect_still_served();
}

}  // namespace
