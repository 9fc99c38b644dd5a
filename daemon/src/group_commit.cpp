// Group commit: how the writer thread runs each batch (batching.cpp forms them) in one
// transaction (retrying with a savepoint per request when one fails), commits, and replies.
// See writer.hpp for the design; this file holds the invariants that make a reply truthful:
//
//  * A batch's replies go out only after its COMMIT succeeded, or when its COMMIT (or BEGIN)
//    definitely failed (commit_failure_is_definite). An unknown outcome stops the writer
//    (FailStop): no reply at all.
//  * After every statement of an attempt (ours and the client's) the writer checks that the
//    batch transaction is still open, and stops the attempt at once if not. No statement of a
//    batch ever runs in autocommit mode (a SAVEPOINT there would open a transaction of its own
//    that RELEASE commits alone), so a transaction that vanished committed nothing: the request
//    that ended it is told so, the others run again.
//  * A failed ROLLBACK TO fails the attempt (ROLLBACK of everything), so a failed request's
//    partial effects can never be committed.
#include <algorithm>
#include <new>
#include <stdexcept>

#include "access_control.hpp"
#include "log.hpp"
#include "statement_kind.hpp"
#include "writer.hpp"

namespace pasyn::server {
namespace {

// deliver() keeps the reply buffers for the next batch: the first kKeptLargeReplySlots up to
// kKeptLargeReplyCapacity each (large replies: RETURNING rows, fetches), every other up to
// kKeptReplyCapacity (a few small replies): at most ~3 MiB for 4,096 connections in a batch.
constexpr std::size_t kKeptLargeReplySlots = 16;
constexpr std::size_t kKeptLargeReplyCapacity = 64u << 10;
constexpr std::size_t kKeptReplyCapacity = 512;
// ...and the buffer all of a batch's replies are built in keeps at most this.
constexpr std::size_t kKeptRepliesCapacity = 1u << 20;
// Attempts of one batch that the writer's own statements may lose before the batch fails.
constexpr int kMaxLostAttempts = 3;

}  // namespace

void Writer::run_batch(std::vector<Request>& batch) {
  batch_committed_ = delivering_ = false;
  lost_attempts_ = 0;
  try {
    run_batch_attempts(batch);
  } catch (const std::exception& e) {  // bad_alloc, length_error: not FailStop, which passes
    fail_batch(batch, e);
  }
}

void Writer::run_batch_attempts(std::vector<Request>& batch) {
  // The key table is created once, here, outside any transaction, so no rollback undoes it.
  // (Made or not, the pasyn_* names are counted again before the next request: run_request.)
  const bool make_keys =
      !keys_->ready() &&
      std::any_of(batch.begin(), batch.end(), [](const Request& r) { return !r.key.empty(); });
  if (make_keys) recount_reserved_ = true;
  if (make_keys && !keys_->prepare()) {
    capture_sqlite_error();
    failure_.message = "cannot keep idempotency keys: " + failure_.message;
    std::vector<Request> keyed, rest;
    for (auto& r : batch) (r.key.empty() ? rest : keyed).push_back(std::move(r));
    batch.swap(rest);
    replies_.clear();
    std::vector<Outcome> failed;
    for (auto& r : keyed) {
      failed.push_back({replies_.size(), false});
      proto::encode_error(replies_, r.id, failure_);
    }
    deliver(keyed, failed);
    delivering_ = false;  // only the keyed requests were answered
    if (batch.empty()) return;
  }
  std::vector<Outcome>& outcomes = outcomes_;
  // First without savepoints: a batch in which nothing fails (the common case) then costs one
  // statement per request. If a request fails, the whole attempt is rolled back and the batch
  // runs again with a savepoint around each request, so that only the failing ones are undone.
  bool savepoints = false;
  for (;;) {
    replies_.clear();
    outcomes.assign(batch.size(), Outcome{});
    const AttemptEnd end = attempt(batch, outcomes, savepoints);
    if (end.kind == AttemptEnd::kDone) break;
    // Nothing of this attempt committed.
    if (end.kind == AttemptEnd::kAborted || aborted_) {  // no time left to run it again
      finish_pending_with(batch, proto::PasynCode::kShuttingDown, kNotExecuted);
      return;
    }
    if (end.kind == AttemptEnd::kRetryWithSavepoints) {
      savepoints = true;
      continue;
    }
    if (end.kind == AttemptEnd::kLost) {
      // Our own statement lost the transaction (an I/O or memory error): no request is to
      // blame, so all of them run again, but not for ever.
      if (++lost_attempts_ < kMaxLostAttempts) {
        log().warn("the batch transaction was lost ({}); running its {} requests again",
                   failure_.message, batch.size());
        savepoints = true;
        continue;
      }
      failure_.message =
          "pasyn-writerd lost its transaction " + std::to_string(kMaxLostAttempts) +
          " times running this batch; nothing of it was written: " + failure_.message;
      log().error("batch of {} requests not committed: {}", batch.size(), failure_.message);
      replies_.clear();
      for (std::size_t i = 0; i < batch.size(); ++i) {
        outcomes[i] = Outcome{replies_.size(), false};
        proto::encode_error(replies_, batch[i].id, failure_);
      }
      break;
    }
    // kEndedBy: request `end.index` ended the batch transaction (nothing committed). It gets
    // its error now; the others run again in a fresh transaction.
    const std::size_t broke = end.index;
    Request& r = batch[broke];
    std::vector<std::uint8_t> frame;
    if (outcomes[broke].ok) {
      proto::encode_pasyn_error(frame, r.id, proto::PasynCode::kMisuse,
                                "the statement ended the daemon's transaction; nothing of it "
                                "was committed");
    } else {
      const std::size_t off = outcomes[broke].offset;
      frame.assign(replies_.begin() + off, replies_.begin() + off + frame_size_at(replies_, off));
    }
    log().warn("request {} ended the batch transaction; re-running {} other requests", r.id,
               batch.size() - 1);
    reply(r, std::move(frame));
    batch.erase(batch.begin() + static_cast<std::ptrdiff_t>(broke));
    if (batch.empty()) return;
  }
  deliver(batch, outcomes);
}

Writer::Step Writer::step(const Stmt& stmt) {
  const bool ok = exec_internal(stmt);
  if (!in_write_transaction()) {
    if (ok) set_failure(proto::PasynCode::kMisuse, "the batch transaction ended unexpectedly");
    if (!ok) capture_sqlite_error();
    return Step::kLost;
  }
  if (!ok) capture_sqlite_error();
  return ok ? Step::kOk : Step::kFailed;
}

void Writer::rollback_all() {
  changes_.rollback();                      // whatever happens below, none of it is committed
  if (sqlite3_get_autocommit(db_)) return;  // SQLite rolled it back already
  const bool ok = exec_internal(rollback_);
  if (sqlite3_get_autocommit(db_)) return;
  // Still open: every later BEGIN would fail, and committing it is out of the question.
  const int code = ok ? SQLITE_ERROR : sqlite3_extended_errcode(db_);
  throw FailStop{{std::string("ROLLBACK failed and left the transaction open: ") +
                      (ok ? "no error reported" : sqlite3_errmsg(db_)),
                  code}};
}

void Writer::fail_stop_unless_definite(const char* what) {
  if (commit_failure_is_definite(failure_.extended_code)) return;
  throw FailStop{{std::string(what) + " failed with an error that leaves its outcome unknown (" +
                      failure_.message + ", SQLite code " + std::to_string(failure_.extended_code) +
                      ")",
                  failure_.extended_code}};
}

Writer::AttemptEnd Writer::attempt(std::vector<Request>& batch, std::vector<Outcome>& outcomes,
                                   bool savepoints) {
  ++attempt_;  // every sink's reply bytes start from 0 (run_batched)
  attempt_reply_bytes_ = 0;
  if (!exec_internal(begin_)) {
    capture_sqlite_error();
    fail_stop_unless_definite("BEGIN of a batch");
    rollback_all();  // (BEGIN IMMEDIATE that failed opened nothing; this only makes sure)
    for (std::size_t i = 0; i < batch.size(); ++i) {
      outcomes[i].offset = replies_.size();
      proto::encode_error(replies_, batch[i].id, failure_);
    }
    return {AttemptEnd::kDone};
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (aborted_) {  // the drain timeout ran out: what has not run, does not run
      rollback_all();
      return {AttemptEnd::kAborted};
    }
    Request& r = batch[i];
    Outcome& out = outcomes[i];
    out.offset = replies_.size();
    if (savepoints) {
      const Step s = step(savepoint_);
      if (s == Step::kLost) return {AttemptEnd::kLost};
      if (s == Step::kFailed) {  // nothing of r ran: it fails alone
        proto::encode_error(replies_, r.id, failure_);
        continue;
      }
    }
    const Lost lost = run_batched(r, out);
    if (lost == Lost::kByWriter) return {AttemptEnd::kLost};
    if (lost == Lost::kByRequest) return {AttemptEnd::kEndedBy, i};
    if (!savepoints) {
      if (out.ok) continue;
      // A failed statement may leave part of its work behind (OR FAIL, RAISE(FAIL), a script
      // or execute_many stopped half-way): undo everything. A batch of one is then done.
      rollback_all();
      if (batch.size() == 1) return {AttemptEnd::kDone};
      return {AttemptEnd::kRetryWithSavepoints};
    }
    if (!out.ok) {
      const Step s = step(rollback_to_);
      if (s != Step::kOk) {
        // r's partial effects could not be undone alone: undo the whole attempt. r keeps its
        // own error (nothing of it is written); the others run again.
        log().warn("ROLLBACK TO after request {} failed: {}", r.id, failure_.message);
        rollback_all();
        return {AttemptEnd::kEndedBy, i};
      }
    }
    const Step s = step(release_);
    if (s == Step::kLost) return {AttemptEnd::kLost};
    if (s == Step::kFailed) {  // our savepoint may still be there: start again, cleanly
      rollback_all();
      return {AttemptEnd::kLost};
    }
  }
  if (aborted_) {
    rollback_all();
    return {AttemptEnd::kAborted};
  }
  const auto commit_started = Clock::now();
  if (exec_internal(commit_)) {
    batch_committed_ = true;
    for (const auto& r : batch) {
      if (r.sink && r.sink->rowid_attempt_of_ == attempt_)
        r.sink->last_rowid_ = r.sink->attempt_rowid_;
    }
    std::size_t bytes = 0;
    for (const auto& r : batch) bytes += r.bytes();
    record_commit(Clock::now() - commit_started, batch.size(), bytes);
    check_files_in_place();
    return {AttemptEnd::kDone};
  }
  capture_sqlite_error();
  fail_stop_unless_definite("COMMIT of a batch");
  // Definitely not committed (see commit_failure_is_definite).
  failure_.message = "commit failed, nothing of this batch was written: " + failure_.message;
  rollback_all();
  log().error("batch of {} requests not committed: {}", batch.size(), failure_.message);
  replies_.clear();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    outcomes[i] = Outcome{replies_.size(), false};
    proto::encode_error(replies_, batch[i].id, failure_);
  }
  return {AttemptEnd::kDone};
}

Writer::Lost Writer::run_batched(Request& r, Outcome& out) {
  if (r.type == proto::MsgType::kShutdown) {
    proto::encode_empty(replies_, proto::MsgType::kShutdownOk, r.id);
    out.ok = true;
    return Lost::kNo;
  }
  const auto fail = [&] {
    replies_.resize(out.offset);  // drop a partly written RESULT
    proto::encode_error(replies_, r.id, failure_);
    out.ok = false;
  };
  RequestDigest digest{};
  if (!r.key.empty()) {
    digest = request_digest(r.type, r.sql,
                            r.type == proto::MsgType::kExecuteMany ? r.many.bytes : r.params.bytes,
                            r.type == proto::MsgType::kExecuteMany ? r.many.rows : 0);
    bool error = false;
    const bool replayed = answered_by_key(r, digest, error);  // seen before: nothing executed
    if (!in_write_transaction()) return Lost::kByWriter;
    if (replayed) {
      out.ok = true;
      return Lost::kNo;
    }
    if (error) {  // the lookup failed, or the key belongs to another request: not run
      fail();
      return Lost::kNo;
    }
  }
  bool ok;
  // The connection's own last_insert_rowid(), not the one another connection's request or the
  // daemon's own key record left on the shared writer connection.
  if (r.sink) sqlite3_set_last_insert_rowid(db_, own_rowid(*r.sink));
  if (r.timed_out) {  // it ran into --statement-timeout in an earlier attempt
    set_timeout_failure();
    ok = false;
  } else {
    ok = run_request(r);
  }
  const std::int64_t rowid_left = sqlite3_last_insert_rowid(db_);
  if (!in_write_transaction()) {  // the request's own statement ended the transaction
    if (ok) {
      out.ok = true;
    } else {
      fail();
    }
    return Lost::kByRequest;
  }
  // A request must leave no deferred foreign-key violation for the batch's COMMIT to find: that
  // COMMIT would fail every request of the batch for one request's orphan row, and a later
  // request that happened to add the missing parent would let an orphan commit that fails when
  // it runs alone. So each request is held to what a COMMIT right after it would say, as if it
  // ran in a transaction of its own (PROTOCOL.md §6.1). ROLLBACK TO restores SQLite's count.
  // Only with --foreign-keys on: clients cannot turn enforcement on (the pragma is query-only),
  // and without it there is nothing to count (the check takes the connection's mutex).
  if (ok && config_.foreign_keys && deferred_violations()) {
    failure_ = {proto::ErrorDomain::kSqlite, SQLITE_CONSTRAINT, SQLITE_CONSTRAINT_FOREIGNKEY,
                "FOREIGN KEY constraint failed (a deferred constraint this request leaves "
                "violated; nothing of it was written)"};
    ok = false;
  }
  // One connection's replies in one batch stay under --max-output: they are all built before
  // any is sent, so a client pipelining large results (or not reading them) would otherwise make
  // the daemon hold every one of them at once (a probe: 20 requests of 46 bytes, 320 MB of
  // replies). The request that would pass the bound is undone and answered TOO_LARGE instead.
  // All connections' replies in one batch stay under --max-total-bytes the same way (probe31:
  // 20 connections each under --max-output made one batch of 1.5 GB of replies).
  const std::size_t reply_bytes = replies_.size() - out.offset;
  const auto within = [&](std::size_t held, std::size_t bound, const char* whose,
                          const char* flag) {
    if (held + reply_bytes <= bound) return true;
    set_failure(proto::PasynCode::kTooLarge,
                std::string("the replies to ") + whose + " requests in one batch would pass " +
                    flag + " (" + std::to_string(bound) +
                    " bytes): nothing of this one was written; send fewer large queries at once");
    return false;
  };
  ok = ok && within(attempt_reply_bytes_, config_.max_total_bytes, "all connections'",
                    "--max-total-bytes");
  if (ok && r.sink) {
    ReplySink& sink = *r.sink;
    if (sink.attempt_of_ != attempt_) {
      sink.attempt_of_ = attempt_;
      sink.attempt_reply_bytes_ = 0;
    }
    ok = within(sink.attempt_reply_bytes_, config_.max_output, "this connection's", "--max-output");
    if (ok) sink.attempt_reply_bytes_ += reply_bytes;
  }
  if (ok) attempt_reply_bytes_ += reply_bytes;
  // The key is written in the same transaction as the request's effects: both or neither.
  if (ok && !r.key.empty() && !keys_->record(r.uid, r.key, digest, replies_, out.offset)) {
    if (!in_write_transaction()) return Lost::kByWriter;
    capture_sqlite_error();
    failure_.message = "cannot record the idempotency key: " + failure_.message;
    ok = false;
  }
  if (ok) {
    out.ok = true;
    if (r.sink) {
      r.sink->attempt_rowid_ = rowid_left;
      r.sink->rowid_attempt_of_ = attempt_;
    }
  } else {
    fail();
  }
  return Lost::kNo;
}

bool Writer::deferred_violations() {
  int current = 0, highwater = 0;
  return sqlite3_db_status(db_, SQLITE_DBSTATUS_DEFERRED_FKS, &current, &highwater, 0) ==
             SQLITE_OK &&
         current > 0;
}

void Writer::fail_batch(std::vector<Request>& batch, const std::exception& e) {
  log().error("a batch of {} requests failed in pasyn-writerd: {}", batch.size(), e.what());
  if (batch_committed_) {
    // Committed, but its replies could not be built: the clients must not be told it failed.
    abandon(batch);
    return;
  }
  if (delivering_) {  // some connections may have their replies already
    abandon(batch);
    return;
  }
  rollback_all();
  try {
    replies_.clear();
    replies_.shrink_to_fit();
    std::vector<Outcome> outcomes;
    outcomes.reserve(batch.size());
    failure_ = {proto::ErrorDomain::kSqlite, SQLITE_NOMEM, SQLITE_NOMEM,
                std::string("pasyn-writerd could not run this batch (") + e.what() +
                    "); nothing of it was written"};
    for (auto& r : batch) {
      outcomes.push_back({replies_.size(), false});
      proto::encode_error(replies_, r.id, failure_);
    }
    deliver(batch, outcomes);
  } catch (const std::exception&) {
    abandon(batch);
  }
}

void Writer::abandon(std::vector<Request>& batch) noexcept {
  for (auto& r : batch) {
    if (r.sink) r.sink->abandon();
  }
}

void Writer::deliver(std::vector<Request>& batch, const std::vector<Outcome>& outcomes) {
  // One buffer per sink, in request order, so each connection gets one coalesced write. The
  // buffers are per_sink_'s, kept from batch to batch; a sink finds its own through
  // batch_slot_.
  std::size_t used = 0;
  bool shutdown = false;
  count_answered(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Request& r = batch[i];
    shutdown = shutdown || (r.type == proto::MsgType::kShutdown && outcomes[i].ok);
    if (!r.sink) continue;
    ReplySink* sink = r.sink.get();
    if (sink->batch_slot_ >= used || per_sink_[sink->batch_slot_].sink != sink) {
      if (used == per_sink_.size()) per_sink_.emplace_back();
      per_sink_[used].sink = sink;
      per_sink_[used].bytes.clear();
      per_sink_[used].count = 0;
      sink->batch_slot_ = used++;
    }
    const std::size_t off = outcomes[i].offset;
    auto& out = per_sink_[sink->batch_slot_];
    out.bytes.insert(out.bytes.end(), replies_.begin() + off,
                     replies_.begin() + off + frame_size_at(replies_, off));
    ++out.count;
  }
  // Copied out: a batch of large replies does not pin its capacity for ever (probe31: 791 MB
  // kept after every client had closed).
  if (replies_.capacity() > kKeptRepliesCapacity) std::vector<std::uint8_t>().swap(replies_);
  delivering_ = true;
  // What fill_batch expects next; only kept when it waits (--batch-wait auto or on).
  if (config_.batch_wait_enabled()) {
    last_batch_replies_.clear();
    for (std::size_t k = 0; k < used; ++k) {
      last_batch_replies_.emplace(per_sink_[k].sink, per_sink_[k].count);
    }
  }
  for (std::size_t k = 0; k < used; ++k) {
    auto& out = per_sink_[k];
    out.sink->deliver(out.bytes, out.count);
    out.sink = nullptr;
    // A large reply (rows of a RETURNING, a big fetch) does not pin its capacity for ever.
    const std::size_t keep =
        k < kKeptLargeReplySlots ? kKeptLargeReplyCapacity : kKeptReplyCapacity;
    if (out.bytes.capacity() > keep) std::vector<std::uint8_t>().swap(out.bytes);
  }
  publish_committed();  // after the replies: the feed never delays an acknowledgement
  if (shutdown && on_shutdown_request_) on_shutdown_request_();
}

void Writer::finish_pending_with(std::vector<Request>& batch, proto::PasynCode code,
                                 std::string_view message) {
  replies_.clear();
  std::vector<Outcome> outcomes;
  for (auto& r : batch) {
    outcomes.push_back({replies_.size(), false});
    proto::encode_pasyn_error(replies_, r.id, code, message);
  }
  deliver(batch, outcomes);
}

}  // namespace pasyn::server
