// The writer's batching policy and reply path against the real pasyn-writerd (batching.cpp,
// group_commit.cpp, server.cpp; PROTOCOL.md "The path of a request"): the byte cap of a batch, the
// bounded wait for the connections of the last batch (never for a lone connection), and the order
// of one connection's replies when the writer's direct send meets a full socket and the rest goes
// through the I/O thread. Behaviour only, read from STATS and the replies; no timing thresholds.
//
// Batches are formed deterministically the way batch_integrity_test.cpp does: a holder opens a
// transaction, the requests of the batch queue behind it, and the holder's COMMIT releases them
// at once.
#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../sanitizers.hpp"
#include "daemon_fixture.hpp"

namespace pasyn::itest {
namespace {

// group_commit.cpp's kMaxBatchBytes (PROTOCOL.md "Reports": batch_bytes_max).
constexpr std::int64_t kMaxBatchBytes = 1 << 20;

class BatchingTest : public DaemonTest {};

TEST_F(BatchingTest, ABatchNeverHoldsMoreRequestBytesThanTheCap) {
  constexpr int kPerClient = 6;
  constexpr std::size_t kBlob = 200 * 1024;  // 12 of them: 2.4 MiB, more than two caps
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto holder = connect_client();
  holder.execute("CREATE TABLE b (v BLOB)");
  auto first = connect_client();
  auto second = connect_client();
  const std::int64_t batches_before = stat_int(holder, "batches");
  auto tx = holder.begin();
  std::vector<std::future<std::int64_t>> writes;
  for (int i = 0; i < kPerClient; ++i) {
    for (auto* c : {&first, &second}) {
      writes.push_back(c->execute_async("INSERT INTO b (v) VALUES (?)",
                                        {Blob(kBlob, static_cast<std::uint8_t>(i))}));
    }
  }
  ASSERT_TRUE(stat_reaches(holder, "waiting_for_transaction", 2 * kPerClient));
  tx.commit();  // the 12 queued requests are taken at once: only the cap splits them
  for (auto& w : writes) {
    ASSERT_EQ(w.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(w.get(), 1);
  }
  EXPECT_EQ(query_int("SELECT count(*) FROM b"), 2 * kPerClient);
  const std::int64_t largest = stat_int(holder, "batch_bytes_max");
  EXPECT_LE(largest, kMaxBatchBytes);
  EXPECT_GT(largest, 4 * static_cast<std::int64_t>(kBlob));  // they were batched, up to the cap
  // 2.4 MiB in batches of at most 1 MiB: at least three.
  EXPECT_GE(stat_int(holder, "batches") - batches_before, 3);
}

// A daemon started with `flags`, and one batch of two connections (first, second) released at
// once by the holder's COMMIT.
class BatchWaitTest : public DaemonTest {
 protected:
  void batch_of_two(const std::vector<std::string>& flags) {
    ASSERT_NO_FATAL_FAILURE(start_daemon(flags));
    holder_.emplace(connect_client());
    holder_->execute("CREATE TABLE t (v INTEGER)");
    first_.emplace(connect_client());
    second_.emplace(connect_client());
    auto tx = holder_->begin();
    auto a = first_->execute_async("INSERT INTO t (v) VALUES (1)");
    auto b = second_->execute_async("INSERT INTO t (v) VALUES (2)");
    ASSERT_TRUE(stat_reaches(*holder_, "waiting_for_transaction", 2));
    tx.commit();  // one batch of two connections
    EXPECT_EQ(a.get(), 1);
    EXPECT_EQ(b.get(), 1);
  }
  // The batch waits counted while `first` alone runs `sql`.
  std::int64_t waits_for(const std::string& sql) {
    const std::int64_t waits = stat_int(*holder_, "batch_waits");
    first_->execute(sql);
    return stat_int(*holder_, "batch_waits") - waits;
  }
  // After batch_of_two(flags), one request of the first connection alone: 1 when the writer
  // waited for the second connection, else 0.
  std::int64_t waits_for_a_lone_request(const std::vector<std::string>& flags) {
    batch_of_two(flags);
    if (HasFatalFailure()) return -1;
    const std::int64_t waits = waits_for("INSERT INTO t (v) VALUES (3)");
    EXPECT_EQ(query_int("SELECT count(*) FROM t"), 3);
    return waits;
  }
  void TearDown() override {
    first_.reset();
    second_.reset();
    holder_.reset();
    DaemonTest::TearDown();
  }
  std::optional<MultiplexedClient> holder_, first_, second_;
};

// After a batch of two connections, the writer that wakes with one request waits (bounded) for
// the other, once; after a batch of one connection it does not wait again.
TEST_F(BatchWaitTest, TheWriterWaitsForTheConnectionsOfTheLastBatchOnceThenAdapts) {
  ASSERT_NO_FATAL_FAILURE(batch_of_two({"--batch-wait", "auto"}));
  // Alone, expecting two: waits, then runs.
  EXPECT_EQ(waits_for("INSERT INTO t (v) VALUES (3)"), 1);
  // The last batch had one connection.
  EXPECT_EQ(waits_for("INSERT INTO t (v) VALUES (4)"), 0);
  EXPECT_EQ(waits_for("INSERT INTO t (v) VALUES (5)"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 5);
}

// The default is --batch-wait off: the writer never waits to fill a batch (group_commit.cpp,
// fill_batch), at either setting.
TEST_F(BatchWaitTest, ByDefaultTheWriterDoesNotWaitToFillABatch) {
  EXPECT_EQ(waits_for_a_lone_request({}), 0);
}

// --batch-wait auto waits at synchronous=full only; on waits at both settings.
TEST_F(BatchWaitTest, BatchWaitAutoWaitsAtSynchronousFull) {
  EXPECT_EQ(waits_for_a_lone_request({"--batch-wait", "auto"}), 1);
}

TEST_F(BatchWaitTest, BatchWaitAutoDoesNotWaitAtSynchronousNormal) {
  EXPECT_EQ(waits_for_a_lone_request({"--synchronous", "normal", "--batch-wait", "auto"}), 0);
}

TEST_F(BatchWaitTest, BatchWaitOnWaitsAtSynchronousNormal) {
  EXPECT_EQ(waits_for_a_lone_request({"--synchronous", "normal", "--batch-wait", "on"}), 1);
}

// The idle round trip never pays for the batching policy: once the others of the last batch
// have closed, the writer does not wait for them, neither when their disconnect notices arrive
// nor for the lone connection's requests.
TEST_F(BatchingTest, ALoneConnectionIsNeverHeldForABatchToFill) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--batch-wait", "auto"}));
  auto lone = connect_client();
  lone.execute("CREATE TABLE t (v INTEGER)");
  std::int64_t waits = 0;
  {
    auto first = connect_client();
    auto second = connect_client();
    auto tx = lone.begin();
    auto a = first.execute_async("INSERT INTO t (v) VALUES (1)");
    auto b = second.execute_async("INSERT INTO t (v) VALUES (2)");
    ASSERT_TRUE(stat_reaches(lone, "waiting_for_transaction", 2));
    tx.commit();  // one batch of two connections, which then close
    EXPECT_EQ(a.get(), 1);
    EXPECT_EQ(b.get(), 1);
    waits = stat_int(lone, "batch_waits");
  }
  ASSERT_TRUE(stat_reaches(lone, "connections", 1));
  for (int i = 0; i < 20; ++i) lone.execute("INSERT INTO t (v) VALUES (?)", {i});
  EXPECT_EQ(stat_int(lone, "batch_waits"), waits);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 22);
}

// A connection that was alone in the last batch is not waited for, even when it had more
// requests in it than it sends now (a pipelining client): only others could fill the batch.
TEST_F(BatchingTest, AConnectionAloneInTheLastBatchIsNotHeldForItsOwnRequests) {
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--batch-wait", "auto"}));
  auto holder = connect_client();
  holder.execute("CREATE TABLE t (v INTEGER)");
  auto pipelining = connect_client();
  auto tx = holder.begin();
  auto a = pipelining.execute_async("INSERT INTO t (v) VALUES (1)");
  auto b = pipelining.execute_async("INSERT INTO t (v) VALUES (2)");
  auto c = pipelining.execute_async("INSERT INTO t (v) VALUES (3)");
  ASSERT_TRUE(stat_reaches(holder, "waiting_for_transaction", 3));
  tx.commit();  // one batch of three requests, all of one connection
  EXPECT_EQ(a.get() + b.get() + c.get(), 3);
  const std::int64_t waits = stat_int(holder, "batch_waits");
  pipelining.execute("INSERT INTO t (v) VALUES (4)");  // one of the three it had: no wait
  EXPECT_EQ(stat_int(holder, "batch_waits"), waits);
  EXPECT_EQ(query_int("SELECT count(*) FROM t"), 4);
}

// The writer thread sends a batch's replies itself while no write of the connection is in
// flight; what the socket refuses goes to the I/O thread, and later replies queue behind it. A
// client that reads nothing until every reply is out forces that fallback (the replies are far
// larger than the socket's buffer); it must still get every reply, whole and in order.
TEST_F(BatchingTest, RepliesStayInOrderWhenASlowReaderForcesTheFallbackToTheIoThread) {
  constexpr std::uint64_t kRequests = 100;
  constexpr std::int64_t kReplyBlob = 64 * 1024;  // ~6.3 MiB of replies in all
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  auto observer = connect_client();
  RawPeer peer(sock_);
  ASSERT_TRUE(peer.connected());
  ASSERT_TRUE(peer.handshake());
  // One request at a time, each sent once the writer has answered the one before: every
  // reply is a batch of its own and a send of its own, and from the third or so on the socket
  // is full, so they queue behind the I/O thread's write.
  const std::int64_t answered_before = stat_int(observer, "requests");
  for (std::uint64_t id = 1; id <= kRequests; ++id) {
    ASSERT_TRUE(peer.send(statement_frame(static_cast<std::uint8_t>(proto::MsgType::kExecuteFetch),
                                          id, "SELECT zeroblob(?), ?",
                                          {kReplyBlob, static_cast<std::int64_t>(id)})));
    ASSERT_TRUE(
        stat_reaches(observer, "requests", answered_before + static_cast<std::int64_t>(id)));
  }
  std::size_t first_size = 0;
  for (std::uint64_t id = 1; id <= kRequests; ++id) {
    const auto reply = peer.read_frame(kReplyTimeout);
    ASSERT_TRUE(reply) << "no reply " << id;
    ASSERT_EQ(reply->type, static_cast<std::uint8_t>(proto::MsgType::kResult)) << "reply " << id;
    ASSERT_EQ(reply->request_id, id);
    if (id == 1) first_size = reply->payload.size();
    EXPECT_EQ(reply->payload.size(), first_size) << "reply " << id;
    EXPECT_GT(reply->payload.size(), static_cast<std::size_t>(kReplyBlob));
  }
  // The connection is still served.
  const auto ping = peer.request(empty_frame(proto::MsgType::kPing, kRequests + 1));
  ASSERT_TRUE(ping);
  EXPECT_EQ(ping->type, static_cast<std::uint8_t>(proto::MsgType::kPong));
}

// The fair share (PROTOCOL.md §7, Writer::kFairBacklog): while pipelining connections keep
// more than four batches waiting for the writer, each of them is read no further past 64
// unanswered requests, so a connection that sends one request at a time waits behind about
// that backlog, not behind all that the pipelining ones sent (here 48 × 1,000). Measured by
// rowids: how many rows were committed between the quiet request's send and its own row.
TEST_F(BatchingTest, AQuietConnectionWaitsBehindTheFairShareNotBehindEveryPipeliner) {
#if PASYN_TEST_TSAN
  // Rows committed while the quiet request waits measure TSan's slowed I/O thread there, not
  // the share (two CI runs: 36,541 and 45,306 rows ahead). ASan and Release runs measure it.
  GTEST_SKIP() << "timing of the I/O thread under TSan";
#endif
  constexpr int kPipeliners = 48;
  constexpr std::size_t kWindow = 1000;  // each one's requests in flight (--max-inflight 1,024)
  constexpr std::int64_t kFairBacklog = 4 * 4096;
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--synchronous", "normal"}));
  auto setup = connect_client();
  setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> flood_rows{0};
  std::atomic<int> failures{0};
  // Connected here, one after the other: 48 handshakes at once can take longer than the
  // connect timeout on a slow (sanitizer) build.
  std::vector<MultiplexedClient> clients;
  for (int p = 0; p < kPipeliners; ++p) clients.push_back(connect_client());
  std::vector<std::thread> pipeliners;
  for (auto& c : clients) {
    pipeliners.emplace_back([&] {
      try {
        std::deque<std::future<std::int64_t>> window;
        while (!stop.load()) {
          while (window.size() < kWindow) {
            window.push_back(c.execute_async("INSERT INTO t (who) VALUES ('p')"));
          }
          window.front().get();
          window.pop_front();
          ++flood_rows;
        }
        for (auto& w : window) w.get();
      } catch (const std::exception&) {
        ++failures;
      }
    });
  }
  auto quiet = connect_client();
  auto observer = connect_client();
  const bool flooded =
      eventually([&] { return stat_int(observer, "writer_backlog") >= kFairBacklog; }, 20s);
  std::int64_t worst = 0;
  if (flooded) {
    for (int i = 0; i < 5; ++i) {
      const std::int64_t before = query_int("SELECT coalesce(max(id), 0) FROM t");
      const std::int64_t id = quiet.execute_returning_rowid("INSERT INTO t (who) VALUES ('q')");
      worst = std::max(worst, id - before);
    }
  }
  stop = true;
  for (auto& t : pipeliners) t.join();
  EXPECT_EQ(failures.load(), 0) << "pipelining clients that failed";
  if (!flooded) {
    GTEST_SKIP() << "the pipeliners never kept " << kFairBacklog
                 << " requests waiting on this machine (a sanitizer build?): nothing to measure";
  }
  RecordProperty("rows_ahead_worst", static_cast<int>(worst));
  EXPECT_GT(flood_rows.load(), 0);
  // Without the fair share the quiet request waited behind ~47,000 (three runs: 47,002-47,999);
  // with it, behind the fair backlog and what each pipeliner had sent past it when it paused
  // (16,385-18,305 in four runs; TSan saw 36,541 before a read's parsed requests counted).
  EXPECT_LE(worst, 2 * kFairBacklog) << "rows committed ahead of a quiet request";
  EXPECT_EQ(query_int("SELECT count(*) FROM t WHERE who = 'q'"), 5);
}

// --writer-io (io_baton.hpp): the writer thread runs the connections' I/O between batches; while
// it runs a long statement, the I/O thread takes them over, so that another connection's PING and
// a new connection's handshake are answered before that statement ends (without the take-over,
// they waited for it: here, for its --statement-timeout).
TEST_F(BatchingTest, WhileTheWriterRunsALongStatementOtherConnectionsAreAnswered) {
  ASSERT_NO_FATAL_FAILURE(
      start_daemon({"--synchronous", "normal", "--writer-io", "on", "--statement-timeout", "4s"}));
  auto busy = connect_client();
  busy.execute("CREATE TABLE t (n INTEGER)");
  auto other = connect_client();
  auto endless = busy.execute_async(
      "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
      "SELECT x + 1 FROM c) SELECT x FROM c)");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the writer is in it by now
  EXPECT_TRUE(other.ping());
  auto late = connect_client();  // accepted and greeted by the I/O thread
  EXPECT_TRUE(late.ping());
  EXPECT_EQ(endless.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the PING was answered only after the long statement ended";
  EXPECT_THROW(endless.get(), TimeoutError);
  // And the writer drives the I/O again afterwards: requests are answered as before.
  EXPECT_EQ(other.execute("INSERT INTO t VALUES (1)"), 1);
  EXPECT_EQ(late.execute("INSERT INTO t VALUES (2)"), 1);
}

// With --writer-io the writer runs a bounded number of I/O handlers before each batch: a client
// flooding PINGs (answered without the writer) does not keep another connection's write from
// running (review24: io_context::poll() went on for as long as the flood did).
TEST_F(BatchingTest, APingFloodDoesNotKeepTheWriterFromItsBatches) {
  constexpr int kFlooders = 4;
  ASSERT_NO_FATAL_FAILURE(start_daemon({"--synchronous", "normal", "--writer-io", "on"}));
  auto client = connect_client();
  client.execute("CREATE TABLE t (n INTEGER)");
  std::vector<std::uint8_t> pings;
  for (std::uint64_t id = 1; id <= 4096; ++id) {
    const auto frame = empty_frame(proto::MsgType::kPing, id);
    pings.insert(pings.end(), frame.begin(), frame.end());
  }
  std::deque<RawPeer> flooders;
  std::atomic<bool> stop_sending{false}, stop_reading{false};
  std::atomic<std::uint64_t> pongs{0};
  std::vector<std::thread> senders, readers;
  for (int i = 0; i < kFlooders; ++i) {
    auto& peer = flooders.emplace_back(sock_);
    ASSERT_TRUE(peer.handshake());
  }
  for (auto& peer : flooders) {
    senders.emplace_back([&] {
      while (!stop_sending && peer.send(pings)) {
      }
    });
    readers.emplace_back([&] {
      while (!stop_reading) {
        if (peer.read_frame(std::chrono::milliseconds(100))) ++pongs;
      }
    });
  }
  while (pongs < 20000) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // flooding
  auto insert = client.execute_async("INSERT INTO t VALUES (1)");
  const auto status = insert.wait_for(std::chrono::seconds(20));
  stop_sending = true;
  for (auto& t : senders) t.join();  // their last sends complete: the readers still read
  stop_reading = true;
  for (auto& t : readers) t.join();
  ASSERT_EQ(status, std::future_status::ready) << "the write waited for the PING flood to end";
  EXPECT_EQ(insert.get(), 1);
}

}  // namespace
}  // namespace pasyn::itest
