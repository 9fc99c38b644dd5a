// Transaction: a client transaction's calls (PROTOCOL.md §6.2), all on the connection that
// began it. Synchronous calls wait on their own stack (kSync), as MultiplexedClient's do.
#include <future>
#include <memory>
#include <optional>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <string_view>
#include <vector>

#include "client_impl.hpp"
#include "reply.hpp"
#include "requests.hpp"

namespace pasyn {

using detail::first_row;
using detail::in_tx;
using detail::kAsync;
using detail::kSync;
using detail::send_fetch;
using detail::send_fetch_columns;
using detail::send_fetch_named;
using detail::send_many;
using detail::send_many_named;
using detail::send_script;
using detail::send_statement;
using detail::send_statement_named;
using detail::send_transaction_end;
using detail::TxRef;
using detail::within;

// ---- Transaction ------------------------------------------------------------------------------

Transaction::Transaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transaction::Transaction(Transaction&&) noexcept = default;
Transaction& Transaction::operator=(Transaction&& other) noexcept {
  if (this != &other) {
    abandon();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
Transaction::~Transaction() { abandon(); }

// Sends ROLLBACK without waiting for its reply (requests of one connection run in order, so
// nothing sent later can run inside this transaction), on the transaction's own connection
// only: never a round trip, never a reconnect, whatever the state of the connection.
void Transaction::abandon() noexcept {
  if (!impl_ || impl_->finished) return;
  impl_->finished = true;
  try {
    (void)send_transaction_end(*impl_->client, impl_->tx, proto::MsgType::kRollback, kAsync);
  } catch (...) {  // the daemon rolls back anyway when the connection or the transaction ends
  }
}

bool Transaction::finished() const noexcept { return !impl_ || impl_->finished; }

MultiplexedClient::Impl& Transaction::open() const {
  if (!impl_)
    throw ProgrammingError("the transaction was moved from", SQLITE_MISUSE, SQLITE_MISUSE);
  if (impl_->finished) {
    if (impl_->ended) std::rethrow_exception(impl_->ended);  // the daemon ended it: say why
    throw TransactionError("the transaction is already finished (committed or rolled back)",
                           SQLITE_MISUSE, SQLITE_MISUSE);
  }
  return *impl_->client;
}

template <typename Send>
auto Transaction::call(Send send) {
  auto& client = open();
  // The daemon or the connection ended the transaction: finished, and every later call through
  // the handle throws the same error again, saying why (open()).
  const auto ended_by = [this](std::exception_ptr why) {
    impl_->finished = true;
    impl_->ended = std::move(why);
  };
  try {
    return send(client, impl_->tx);
  } catch (const OperationalError& e) {
    // The daemon rolled the transaction back (idle timeout, a statement that ended it, ...).
    if (e.extended_code() == detail::kTransactionEndedCode) ended_by(std::current_exception());
    throw;
  } catch (const ConnectionLostError&) {
    ended_by(std::current_exception());  // the daemon rolls back a lost connection's transaction
    throw;
  } catch (const ConnectionClosedError&) {
    ended_by(std::current_exception());
    throw;
  }
}

std::int64_t Transaction::execute(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecute, sql, params, kSync);
  });
}

std::int64_t Transaction::execute_returning_rowid(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params, kSync);
  });
}

std::int64_t Transaction::execute_many(std::string_view sql,
                                       const std::vector<Params>& params_batch) {
  return call(
      [&](auto& c, const TxRef& tx) { return send_many(c, in_tx(tx), sql, params_batch, kSync); });
}

void Transaction::executescript(std::string_view sql) {
  call([&](auto& c, const TxRef& tx) { return send_script(c, in_tx(tx), sql, kSync); });
}

std::vector<Row> Transaction::execute_fetchall(std::string_view sql, const Params& params) {
  return call(
      [&](auto& c, const TxRef& tx) { return send_fetch(c, in_tx(tx), sql, params, kSync); });
}

std::optional<Row> Transaction::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

void Transaction::commit() {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_transaction_end(c, tx, proto::MsgType::kCommit, kSync);
  });
}

void Transaction::rollback() {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;
    return send_transaction_end(c, tx, proto::MsgType::kRollback, kSync);
  });
}

std::int64_t Transaction::execute_named(std::string_view sql, const NamedParams& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecute, sql, params, kSync);
  });
}
std::int64_t Transaction::execute_returning_rowid_named(std::string_view sql,
                                                        const NamedParams& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params, kSync);
  });
}
std::int64_t Transaction::execute_many_named(std::string_view sql,
                                             const std::vector<NamedParams>& params_batch) {
  return call([&](auto& c, const TxRef& tx) {
    return send_many_named(c, in_tx(tx), sql, params_batch, kSync);
  });
}
std::vector<Row> Transaction::execute_fetchall_named(std::string_view sql,
                                                     const NamedParams& params) {
  return call(
      [&](auto& c, const TxRef& tx) { return send_fetch_named(c, in_tx(tx), sql, params, kSync); });
}
std::optional<Row> Transaction::execute_fetchone_named(std::string_view sql,
                                                       const NamedParams& params) {
  return first_row(execute_fetchall_named(sql, params));
}

// ---- Transaction: asynchronous forms --------------------------------------------------------

template <typename Send>
auto Transaction::call_async(Send send) {
  auto& client = open();
  // As call(): a call that fails at once because the connection is gone ends the handle, and
  // every later call throws the same error (open()). (The daemon's TRANSACTION_ENDED comes
  // through the future; the handle learns it on its next blocking call.)
  try {
    return send(client, impl_->tx);
  } catch (const ConnectionLostError&) {
    impl_->finished = true;  // the daemon rolls back the transaction of a lost connection
    impl_->ended = std::current_exception();
    throw;
  } catch (const ConnectionClosedError&) {
    impl_->finished = true;
    impl_->ended = std::current_exception();
    throw;
  }
}

std::future<std::int64_t> Transaction::execute_async(std::string_view sql, const Params& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecute, sql, params, kAsync);
  });
}
std::future<std::int64_t> Transaction::execute_returning_rowid_async(std::string_view sql,
                                                                     const Params& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params, kAsync);
  });
}
std::future<std::int64_t> Transaction::execute_many_async(std::string_view sql,
                                                          const std::vector<Params>& params_batch) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_many(c, in_tx(tx), sql, params_batch, kAsync); });
}
std::future<void> Transaction::executescript_async(std::string_view sql) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_script(c, in_tx(tx), sql, kAsync); });
}
std::future<std::vector<Row>> Transaction::execute_fetchall_async(std::string_view sql,
                                                                  const Params& params) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_fetch(c, in_tx(tx), sql, params, kAsync); });
}
std::future<std::int64_t> Transaction::execute_named_async(std::string_view sql,
                                                           const NamedParams& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecute, sql, params, kAsync);
  });
}
std::future<std::int64_t> Transaction::execute_returning_rowid_named_async(
    std::string_view sql, const NamedParams& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params, kAsync);
  });
}
std::future<std::int64_t> Transaction::execute_many_named_async(
    std::string_view sql, const std::vector<NamedParams>& params_batch) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_many_named(c, in_tx(tx), sql, params_batch, kAsync);
  });
}
std::future<std::vector<Row>> Transaction::execute_fetchall_named_async(std::string_view sql,
                                                                        const NamedParams& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_fetch_named(c, in_tx(tx), sql, params, kAsync);
  });
}
std::future<void> Transaction::commit_async() {
  return call_async([&](auto& c, const TxRef& tx) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_transaction_end(c, tx, proto::MsgType::kCommit, kAsync);
  });
}
std::future<void> Transaction::rollback_async() {
  return call_async([&](auto& c, const TxRef& tx) {
    impl_->finished = true;
    return send_transaction_end(c, tx, proto::MsgType::kRollback, kAsync);
  });
}

ResultSet Transaction::execute_fetchall_columns(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_fetch_columns(c, in_tx(tx), sql, params, kSync);
  });
}

// ---- Transaction: with a Timeout of their own ------------------------------------------------

std::int64_t Transaction::execute(std::string_view sql, const Params& params, Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecute, sql, params, within(timeout));
  });
}
std::int64_t Transaction::execute_returning_rowid(std::string_view sql, const Params& params,
                                                  Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params,
                          within(timeout));
  });
}
std::int64_t Transaction::execute_many(std::string_view sql,
                                       const std::vector<Params>& params_batch, Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_many(c, in_tx(tx), sql, params_batch, within(timeout));
  });
}
void Transaction::executescript(std::string_view sql, Timeout timeout) {
  call([&](auto& c, const TxRef& tx) { return send_script(c, in_tx(tx), sql, within(timeout)); });
}
std::vector<Row> Transaction::execute_fetchall(std::string_view sql, const Params& params,
                                               Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_fetch(c, in_tx(tx), sql, params, within(timeout));
  });
}
std::optional<Row> Transaction::execute_fetchone(std::string_view sql, const Params& params,
                                                 Timeout timeout) {
  return first_row(execute_fetchall(sql, params, timeout));
}
ResultSet Transaction::execute_fetchall_columns(std::string_view sql, const Params& params,
                                                Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_fetch_columns(c, in_tx(tx), sql, params, within(timeout));
  });
}
std::int64_t Transaction::execute_named(std::string_view sql, const NamedParams& params,
                                        Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecute, sql, params,
                                within(timeout));
  });
}
std::int64_t Transaction::execute_returning_rowid_named(std::string_view sql,
                                                        const NamedParams& params,
                                                        Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params,
                                within(timeout));
  });
}
std::int64_t Transaction::execute_many_named(std::string_view sql,
                                             const std::vector<NamedParams>& params_batch,
                                             Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_many_named(c, in_tx(tx), sql, params_batch, within(timeout));
  });
}
std::vector<Row> Transaction::execute_fetchall_named(std::string_view sql,
                                                     const NamedParams& params, Timeout timeout) {
  return call([&](auto& c, const TxRef& tx) {
    return send_fetch_named(c, in_tx(tx), sql, params, within(timeout));
  });
}
std::optional<Row> Transaction::execute_fetchone_named(std::string_view sql,
                                                       const NamedParams& params, Timeout timeout) {
  return first_row(execute_fetchall_named(sql, params, timeout));
}
void Transaction::commit(Timeout timeout) {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_transaction_end(c, tx, proto::MsgType::kCommit, within(timeout));
  });
}
void Transaction::rollback(Timeout timeout) {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;
    return send_transaction_end(c, tx, proto::MsgType::kRollback, within(timeout));
  });
}

}  // namespace pasyn
