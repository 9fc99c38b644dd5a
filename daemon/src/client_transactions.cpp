// Client transactions on the writer thread: BEGIN (exclusive: other requests wait), the
// requests inside, COMMIT/ROLLBACK, the idle timeout, and the end of a transaction whose client
// left. See writer.hpp ("Client transactions").
#include <algorithm>

#include "log.hpp"
#include "statement_kind.hpp"
#include "writer.hpp"

namespace pasyn::server {

void Writer::begin_transaction(Request& r) {
  if (!r.sink || !r.sink->alive()) return;  // its connection is gone: nobody to own it
  if (!exec_internal(begin_)) {
    capture_sqlite_error();
    fail_stop_unless_definite("BEGIN");
    std::vector<std::uint8_t> frame;
    proto::encode_error(frame, r.id, failure_);
    reply(r, std::move(frame));
    return;
  }
  tx_ = OpenTransaction{r.sink, Clock::now(), r.id};
  r.sink->had_transaction_ = true;
  tx_started_ns_.store(tx_->last_activity.time_since_epoch().count(), std::memory_order_relaxed);
  tx_owner_.store(r.sink.get(), std::memory_order_release);  // before the reply goes out
  std::vector<std::uint8_t> frame;
  proto::encode_empty(frame, proto::MsgType::kOk, r.id);
  reply(r, std::move(frame));
}

// A transaction request that names no transaction open on its connection: the connection's
// own earlier transaction (a stale handle), or none at all. Nothing in the answer depends on
// another connection.
void Writer::refuse_transaction_request(Request& r) {
  const bool owner = tx_ && tx_->owner.get() == r.sink.get();
  auto it = ended_.find(r.sink.get());
  if (!owner && it == ended_.end() && !(r.sink && r.sink->had_transaction_)) {
    reply_error(r, proto::PasynCode::kMisuse, "no transaction is open on this connection");
    return;
  }
  if (r.type == proto::MsgType::kRollback) {  // rolling back what has already ended
    std::vector<std::uint8_t> frame;
    proto::encode_empty(frame, proto::MsgType::kOk, r.id);
    reply(r, std::move(frame));
    return;
  }
  const bool known = it != ended_.end() && it->second.number == r.transaction;
  reply_error(r, proto::PasynCode::kTransactionEnded,
              known ? "the transaction was rolled back: " + it->second.reason
                    : std::string("the transaction has ended"));
}

void Writer::run_in_transaction(Request& r, RequestQueue& work) {
  tx_->last_activity = Clock::now();
  std::vector<std::uint8_t> frame;
  if (r.type == proto::MsgType::kCommit || r.type == proto::MsgType::kRollback) {
    const bool commit = r.type == proto::MsgType::kCommit;
    if (exec_internal(commit ? commit_ : rollback_)) {
      if (commit) check_files_in_place();
      proto::encode_empty(frame, proto::MsgType::kOk, r.id);
    } else {
      capture_sqlite_error();
      if (commit) fail_stop_unless_definite("COMMIT of a client transaction");
      failure_.message =
          (commit ? "commit failed, the transaction was rolled back: " : "rollback failed: ") +
          failure_.message;
      proto::encode_error(frame, r.id, failure_);
    }
    end_transaction(work, std::nullopt);  // rolls back if the commit failed
    reply(r, std::move(frame));
    publish_committed();
    return;
  }
  if (r.must_run_alone) {
    reply_error(r, proto::PasynCode::kMisuse,
                "this statement cannot run inside a transaction; send it outside one");
    return;
  }
  // Every request runs inside its own savepoint, so a failing one is undone whole, even a single
  // statement that fails half-way (OR FAIL, RAISE(FAIL), a RETURNING reply too large to send).
  // Only a client's own SAVEPOINT / RELEASE / ROLLBACK TO must not be wrapped, sent as a
  // statement or as a script of that one statement: releasing ours would release theirs.
  const bool own_savepoint_statement =
      r.type != proto::MsgType::kExecuteMany && is_savepoint_sql(r.sql) &&
      (r.type != proto::MsgType::kExecuteScript || is_single_statement(r.sql));
  const bool wrap = !own_savepoint_statement;
  if (wrap && !exec_internal(savepoint_)) {
    capture_sqlite_error();
    proto::encode_error(frame, r.id, failure_);
    reply(r, std::move(frame));
    return;
  }
  replies_.clear();
  in_tx_request_ = true;
  // The owner's own last_insert_rowid() (see ReplySink::last_rowid_): within its transaction
  // only its requests run, and a rollback leaves the value as SQLite does.
  sqlite3_set_last_insert_rowid(db_, r.sink->last_rowid_);
  const bool ok = run_request(r);
  r.sink->last_rowid_ = sqlite3_last_insert_rowid(db_);
  in_tx_request_ = false;
  if (!ok) {
    replies_.clear();
    proto::encode_error(replies_, r.id, failure_);
  }
  if (sqlite3_get_autocommit(db_) && !ok && r.timed_out) {
    // --statement-timeout interrupted a write: SQLite rolls back the whole transaction when it
    // interrupts a statement that writes, whatever savepoints are open. The request is told
    // TIMEOUT, as outside a transaction, and why the transaction is over; the transaction's
    // later requests get TRANSACTION_ENDED with that reason.
    const std::string why =
        "a write ran longer than --statement-timeout, and SQLite rolls back the whole "
        "transaction when it interrupts one";
    failure_.message += "; the transaction was rolled back (" + why + ")";
    replies_.clear();
    proto::encode_error(replies_, r.id, failure_);
    reply(r, std::move(replies_));
    replies_ = {};
    end_transaction(work, why);
    return;
  }
  if (sqlite3_get_autocommit(db_)) {
    // The statement ended the transaction (INSERT OR ROLLBACK, RAISE(ROLLBACK), I/O error).
    return fail_transaction(r, work,
                            "a statement ended it (" +
                                (ok ? std::string("no error reported") : failure_.message) + ")");
  }
  if (wrap && !((ok || exec_internal(rollback_to_)) && exec_internal(release_))) {
    // The request released our savepoint itself (RELEASE of a savepoint opened before it):
    // its effects can no longer be undone alone, so the transaction cannot go on.
    return fail_transaction(r, work, "a request released the savepoint that made it atomic");
  }
  tx_->last_activity = Clock::now();  // idle time counts from the end of the last request
  reply(r, std::move(replies_));
  replies_ = {};
}

void Writer::fail_transaction(Request& r, RequestQueue& work, const std::string& why) {
  std::vector<std::uint8_t> frame;
  proto::encode_pasyn_error(frame, r.id, proto::PasynCode::kTransactionEnded,
                            "the transaction was rolled back: " + why);
  reply(r, std::move(frame));
  end_transaction(work, why);
}

void Writer::end_transaction(RequestQueue& work, std::optional<std::string> reason) {
  rollback_all();
  if (reason) ended_[tx_->owner.get()] = EndedTransaction{tx_->number, *reason};
  tx_.reset();
  tx_started_ns_.store(0, std::memory_order_relaxed);
  tx_owner_.store(nullptr, std::memory_order_release);
  work.insert(work.begin(), std::make_move_iterator(deferred_.begin()),
              std::make_move_iterator(deferred_.end()));
  deferred_.clear();
  deferred_count_.store(0, std::memory_order_relaxed);
}

bool Writer::begin_waits(const ReplySink* sink) const {
  return std::any_of(deferred_.begin(), deferred_.end(), [&](const Request& d) {
    return d.sink.get() == sink && d.type == proto::MsgType::kBegin;
  });
}

void Writer::defer(Request& r) {
  if (config_.lock_wait.count() == 0) {
    reply_error(r, proto::PasynCode::kTimeout,
                "the database is locked by another connection's transaction and --lock-wait is "
                "0; the request was not executed");
    return;
  }
  deferred_.push_back(std::move(r));
  deferred_count_.store(deferred_.size(), std::memory_order_relaxed);
}

void Writer::expire(Clock::time_point now, RequestQueue& work) {
  while (!deferred_.empty() && deferred_.front().arrived + config_.lock_wait <= now) {
    Request r = std::move(deferred_.front());
    deferred_.pop_front();
    deferred_count_.store(deferred_.size(), std::memory_order_relaxed);
    if (r.type == proto::MsgType::kCheckpoint) {
      log().warn("CHECKPOINT waited {} ms (--lock-wait) for a client transaction; not run",
                 config_.lock_wait.count());
    }
    reply_error(r, proto::PasynCode::kTimeout,
                "waited " + std::to_string(config_.lock_wait.count()) +
                    " ms (--lock-wait) for another connection's transaction; the request was "
                    "not executed");
  }
  const auto owner_waiting = [&] {
    return std::any_of(work.begin(), work.end(),
                       [&](const Request& r) { return r.sink.get() == tx_->owner.get(); });
  };
  if (tx_ && tx_->last_activity + config_.transaction_idle_timeout <= now && !owner_waiting()) {
    log().warn("rolling back a transaction idle for {} ms",
               config_.transaction_idle_timeout.count());
    end_transaction(work, "it was idle for more than " +
                              std::to_string(config_.transaction_idle_timeout.count()) +
                              " ms (--transaction-idle-timeout)");
  }
}

std::optional<Clock::time_point> Writer::next_deadline() const {
  std::optional<Clock::time_point> next;
  if (!deferred_.empty()) next = deferred_.front().arrived + config_.lock_wait;
  if (tx_) {
    const auto idle = tx_->last_activity + config_.transaction_idle_timeout;
    if (!next || idle < *next) next = idle;
  }
  if (files_check_owed_ && (!next || next_files_check_ < *next)) next = next_files_check_;
  return next;
}

}  // namespace pasyn::server
