// Batching: how the writer thread takes queued requests, waits for the writers it expects
// (fill_batch, the batching policy), and routes each request (process): into the open batch,
// a batch of its own, a client transaction, or work that runs alone. group_commit.cpp runs
// and answers the batches; see writer.hpp for the design.
#include <algorithm>
#include <new>

#include "access_control.hpp"
#include "log.hpp"
#include "statement_kind.hpp"
#include "writer.hpp"

namespace pasyn::server {
namespace {

// A batch closes at kMaxBatch requests or at kMaxBatchBytes of request payload, whichever comes
// first (a request larger than the byte cap runs in a batch of its own). 1 MiB: a batch of small
// requests reaches the count cap first (4,096 requests of ~100 bytes are ~400 KiB), so the byte cap
// only splits batches of large requests (blobs, execute_many), where the commit's fixed cost
// (~0.1-0.7 ms here) is already small beside the writing of 1 MiB, while one batch no longer
// holds every connection's replies behind many megabytes (and the WAL growing by them) at once.
constexpr std::size_t kMaxBatch = 4096;
constexpr std::size_t kMaxBatchBytes = 1u << 20;
// recycle_payloads() keeps at most this many payload buffers for the I/O thread, each of at most
// this capacity (a request of ~100 bytes is the common case): at most 2 MiB pooled per list.
constexpr std::size_t kPooledPayloads = 1024;
constexpr std::size_t kPooledPayloadCapacity = 2048;
// The batching policy's wait (fill_batch): at most this fraction of the last COMMIT's duration,
// and never longer than kMaxBatchWait.
constexpr int kBatchWaitDivisor = 2;
constexpr auto kMaxBatchWait = std::chrono::milliseconds(1);

}  // namespace

// Batching policy. The writer takes whatever is queued when it wakes; with N ack-waiting
// writers that alone splits them into small alternating groups: the requests of one group arrive
// while the other's batch commits, and wake the writer before the group just answered is back.
// So the writer expects each connection of the last batch to send again as many requests as it
// was answered; what it has taken already counts against that, a connection that closed is
// expected no more, and if then at least two connections of the last batch are still open and
// one of them still owes a request, it waits for them, at most 1/kBatchWaitDivisor of the last
// COMMIT's duration (and kMaxBatchWait): submit() wakes it once queue_ holds wake_at_ requests,
// not at the first. The alternating groups merge into one batch. A lone connection never waits
// (nor a pipelining client that was alone in the last batch), so the idle round trip pays
// nothing. (PostgreSQL's commit_delay/commit_siblings sleeps a fixed time whenever enough others
// are active; this waits for the expected requests only, bounded by what a commit costs.)
// Called by serve() with mu_ held (`lk`), the requests just taken from queue_ in `incoming`.
//
// Off by default (--batch-wait off; auto: at synchronous=full only; on: at both). The idea was
// that at full, where a COMMIT waits for an fsync, one commit saved per round pays for the
// wait. Measured otherwise once callers read their own replies (client_impl.hpp), alternating
// pasyn-bench runs, Release, 2 cores: at full, 16 writers 54.6/56.5/49.0k rows/s with the wait
// (auto) against 62.4/63.1/60.0k without, 64 writers 140.7/112.3k against 173.5/149.5k. Two
// alternating groups overlap: one group's requests travel while the other's commit waits for
// its fsync, and the CPU is free during an fsync. At normal a COMMIT costs about what the extra
// wake-up costs (tens of µs): the wait grew batches from ~7.5 to ~10.7 requests but not the
// throughput, and cost CPU (14.1 -> 16.4 ms per 1,000 rows).
void Writer::fill_batch(std::unique_lock<std::mutex>& lk, std::vector<Request>& incoming) {
  if (!config_.batch_wait_enabled() || last_batch_replies_.empty()) return;
  bool requests = false;
  for (const auto& r : incoming) {
    requests = requests || !r.disconnect;
    const auto it = last_batch_replies_.find(r.sink.get());
    if (it == last_batch_replies_.end()) continue;
    if (r.disconnect) {
      last_batch_replies_.erase(it);  // closed: it sends nothing more
    } else if (it->second > 0) {
      --it->second;
    }
  }
  if (!requests) return;  // only disconnect notices: the batch has not started yet
  std::size_t expected = 0;
  for (const auto& [sink, replies] : last_batch_replies_) expected += replies;
  const bool several = last_batch_replies_.size() >= 2;
  last_batch_replies_.clear();  // one wait per batch
  if (!several || expected == 0 || tx_ || aborted_ || last_commit_ <= Clock::duration::zero()) {
    return;
  }
  const auto wait = std::min<Clock::duration>(last_commit_ / kBatchWaitDivisor, kMaxBatchWait);
  wake_at_ = expected;
  if (drives_io()) {
    // The expected requests come from handlers this thread runs. It polls for them rather than
    // wait in epoll_wait, whose timeout is whole milliseconds (this wait is tens of µs).
    const auto until = Clock::now() + wait;
    while (queue_.size() < wake_at_ && !stopping_ && !io_ended_ && Clock::now() < until) {
      lk.unlock();
      io_ended_ = !baton_->writer_run(false, std::nullopt);
      lk.lock();
    }
  } else {
    waiting_ = true;
    cv_.wait_for(lk, wait, [&] { return queue_.size() >= wake_at_ || stopping_; });
    waiting_ = false;
  }
  wake_at_ = 1;
  for (auto& r : queue_) incoming.push_back(std::move(r));
  queue_.clear();
  std::lock_guard stats_lk(stats_mu_);
  ++stats_.batch_waits;
}

void Writer::process(RequestQueue& work) {
  std::vector<Request>& batch = batch_;
  struct Clear {  // whatever way process() ends, batch_ keeps no request (nor its connection)
    std::vector<Request>& batch;
    ~Clear() { batch.clear(); }
  } clear{batch};
  std::size_t batch_bytes = 0;
  auto flush = [&] {
    batch_bytes = 0;
    if (batch.empty()) return;
    run_batch(batch);
    recycle_payloads(batch);
    batch.clear();
  };
  // The checkpoints run between batches (serve() calls maintain_wal() after this) and also as
  // soon as a client transaction ended: with connections queueing one transaction after another,
  // the writer is otherwise inside one whenever a batch ends, and never checkpoints at all.
  bool had_tx = tx_.has_value();
  while (!work.empty()) {
    if (had_tx && !tx_ && !aborted_) maintain_wal();  // no batch is pending while tx_ is open
    had_tx = tx_.has_value();
    if (aborted_) {  // the drain timeout ran out: what has not run, does not run
      for (auto& r : work) batch.push_back(std::move(r));
      work.clear();
      std::erase_if(batch, [](const Request& r) { return r.disconnect; });
      finish_pending_with(batch, proto::PasynCode::kShuttingDown, kNotExecuted);
      work_count_.store(0, std::memory_order_relaxed);
      return;
    }
    Request r = work.take_front();
    const bool owner = tx_ && tx_->owner.get() == r.sink.get();
    if (r.disconnect) {
      if (owner) {
        log().info("rolling back the transaction of a closed connection");
        end_transaction(work, std::nullopt);
      }
      ended_.erase(r.sink.get());
      continue;
    }
    if (auto refusal = refuse_admin_request(r.type, r.role == Role::kAdmin)) {
      reply_error(r, proto::PasynCode::kPermission, *refusal);  // the session refused it already
      continue;
    }
    try {
      if (r.type == proto::MsgType::kBackup) {  // on its own thread: no need to wait for tx_
        flush();
        start_backup(r);
        continue;
      }
      if (r.type == proto::MsgType::kShutdown && tx_) {
        // As on SIGTERM: the open transaction is rolled back and the requests that waited for it
        // run (they came before the SHUTDOWN), then SHUTDOWN is answered and the daemon stops.
        log().info("SHUTDOWN requested: rolling back the open client transaction");
        const auto waited = static_cast<std::ptrdiff_t>(deferred_.size());
        end_transaction(work, "the daemon was shut down (SHUTDOWN)");
        work.insert(work.begin() + waited, std::move(r));
        continue;
      }
      const bool tx_request =
          r.in_tx || r.type == proto::MsgType::kCommit || r.type == proto::MsgType::kRollback;
      if (tx_request) {
        flush();
        if (owner && tx_->number == r.transaction) {
          run_in_transaction(r, work);
        } else if (tx_ && !owner && begin_waits(r.sink.get())) {
          // Its connection's BEGIN waits behind another connection's transaction: what the
          // connection sent after it waits too, in order, so that it runs in the transaction
          // that BEGIN opens (a client may pipeline BEGIN, statements and COMMIT: they ran
          // before it and were refused, and the transaction then stayed open, holding every
          // writer until its idle timeout; probe19).
          defer(r);
        } else {
          refuse_transaction_request(r);
        }
      } else if (tx_) {
        defer(r);
      } else if (r.type == proto::MsgType::kBegin) {
        flush();
        begin_transaction(r);
      } else if (r.type == proto::MsgType::kCheckpoint || r.type == proto::MsgType::kBackup) {
        flush();
        run_admin(r);
      } else if (r.type != proto::MsgType::kShutdown && r.type != proto::MsgType::kExecuteMany &&
                 r.must_run_alone && is_single_statement(r.sql)) {
        flush();
        run_alone(r);
      } else if (r.type == proto::MsgType::kExecuteMany && r.must_run_alone) {
        flush();  // answered after the requests before it
        reply_error(r, proto::PasynCode::kMisuse,
                    "VACUUM and pragmas such as journal_mode run alone, outside any transaction: "
                    "send them with execute(), not execute_many()");
      } else {
        const std::size_t bytes = r.bytes();
        if (batch_bytes + bytes > kMaxBatchBytes) flush();  // r starts the next batch
        batch_bytes += bytes;
        batch.push_back(std::move(r));
        if (batch.size() >= kMaxBatch || batch_bytes >= kMaxBatchBytes) {
          flush();
          work_count_.store(work.size(), std::memory_order_relaxed);  // backlog(), fair share
        }
      }
    } catch (const std::exception& e) {
      // An allocation failure outside a batch (which has its own barrier): this request's
      // outcome is unknown here, so its connection is closed unanswered (which also rolls back
      // its transaction, if it has one); the writer goes on. r is intact if it was not moved.
      log().error("request {} failed in pasyn-writerd: {}; closing its connection", r.id, e.what());
      if (r.sink) r.sink->abandon();
    }
  }
  flush();
  work_count_.store(0, std::memory_order_relaxed);
}

void Writer::recycle_payloads(std::vector<Request>& batch) noexcept {
  try {
    // Once per list (the lists change places with the I/O thread's, so each is reserved once).
    spent_payloads_.reserve(kPooledPayloads);
  } catch (const std::bad_alloc&) {
    return;  // the buffers are freed with their requests instead
  }
  for (auto& r : batch) {
    if (spent_payloads_.size() == kPooledPayloads) return;
    const std::size_t capacity = r.payload.capacity();
    if (capacity == 0 || capacity > kPooledPayloadCapacity) continue;
    r.sql = r.key = {};  // they point into the payload
    r.params = {};
    r.many = {};
    spent_payloads_.push_back(std::move(r.payload));  // within the reserved capacity
  }
}

}  // namespace pasyn::server
