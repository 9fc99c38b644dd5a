// MultiplexedClient and Transaction: the public API over MultiplexedClient::Impl
// (client_impl.hpp), and how each call is encoded and completed.
#include <sqlite3.h>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "client_impl.hpp"
#include "reply.hpp"

namespace pasyn {
namespace {

// Which transaction a request belongs to: the connection that began it and its number (the
// request id of its BEGIN, PROTOCOL.md §6.2).
struct TxRef {
  std::uint64_t generation = 0;
  std::uint64_t number = 0;
};

// How an execute-family request is sent: inside a transaction, or with an idempotency key
// (PROTOCOL.md §6), or plainly.
struct Mode {
  const TxRef* tx = nullptr;
  std::string_view key;
};
constexpr Mode kPlain{};
Mode in_tx(const TxRef& tx) { return Mode{&tx, {}}; }

Mode keyed(const WriteOptions& options) {
  if (options.idempotency_key.size() > proto::kMaxIdempotencyKey) {
    throw ProgrammingError(
        "an idempotency key is at most " + std::to_string(proto::kMaxIdempotencyKey) + " bytes",
        SQLITE_MISUSE, SQLITE_MISUSE);
  }
  return Mode{nullptr, options.idempotency_key};
}

// Sends one request whose frame `encode(out, id)` appends; its reply completes as `kind`.
template <typename T, typename Encode>
std::future<T> send(MultiplexedClient::Impl& impl, Mode mode, Encode encode,
                    detail::Completion::Kind kind, proto::MsgType reply = proto::MsgType::kResult) {
  std::promise<T> promise;
  auto future = promise.get_future();
  // A transaction's requests go out on its own connection or not at all, and do not wait for
  // an in-flight slot: the transaction can always finish, and so release the writes waiting.
  impl.submit(
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        const std::size_t start = out.size();
        encode(out, id);
        if (mode.tx) proto::add_transaction_number(out, start, mode.tx->number);
        if (!mode.key.empty()) proto::add_idempotency_key(out, start, mode.key);
      },
      detail::Completion(kind, reply, std::move(promise)),
      mode.tx ? std::optional(mode.tx->generation) : std::nullopt, mode.tx == nullptr);
  return future;
}

std::future<std::int64_t> send_statement(MultiplexedClient::Impl& impl, Mode mode,
                                         proto::MsgType type, std::string_view sql,
                                         const Params& params) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, type, id, sql, params);
      },
      type == proto::MsgType::kExecuteRowid ? detail::Completion::Kind::kRowid
                                            : detail::Completion::Kind::kChanges);
}

std::future<std::vector<Row>> send_fetch(MultiplexedClient::Impl& impl, Mode mode,
                                         std::string_view sql, const Params& params) {
  return send<std::vector<Row>>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      detail::Completion::Kind::kRows);
}

std::future<ResultSet> send_fetch_columns(MultiplexedClient::Impl& impl, Mode mode,
                                          std::string_view sql, const Params& params) {
  return send<ResultSet>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      detail::Completion::Kind::kColumns);
}

std::future<std::int64_t> send_many(MultiplexedClient::Impl& impl, Mode mode, std::string_view sql,
                                    const std::vector<Params>& rows) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_many(out, id, sql, rows);
      },
      detail::Completion::Kind::kChanges);
}

std::future<void> send_script(MultiplexedClient::Impl& impl, Mode mode, std::string_view sql) {
  return send<void>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) { proto::encode_script(out, id, sql); },
      detail::Completion::Kind::kResult);
}

// COMMIT and ROLLBACK of transaction `tx`, answered by OK.
std::future<void> send_transaction_end(MultiplexedClient::Impl& impl, const TxRef& tx,
                                       proto::MsgType type) {
  std::promise<void> promise;
  auto future = promise.get_future();
  impl.submit(
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_transaction_end(out, type, id, tx.number);
      },
      detail::Completion(detail::Completion::Kind::kEmpty, proto::MsgType::kOk, std::move(promise)),
      tx.generation, false);
  return future;
}

// PING and SHUTDOWN: an empty request answered by an empty reply.
std::future<void> send_empty(MultiplexedClient::Impl& impl, proto::MsgType type,
                             proto::MsgType reply) {
  return send<void>(
      impl, kPlain,
      [type](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_empty(out, type, id);
      },
      detail::Completion::Kind::kEmpty, reply);
}

// STATS, CHECKPOINT, BACKUP: answered with a RESULT of (name, value) rows.
Report send_admin(MultiplexedClient::Impl& impl, proto::MsgType type,
                  std::optional<std::string_view> text) {
  auto rows = impl.wait(send<std::vector<Row>>(
      impl, kPlain,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        if (text) {
          proto::encode_text(out, type, id, *text);
        } else {
          proto::encode_empty(out, type, id);
        }
      },
      detail::Completion::Kind::kRows));
  Report report;
  report.reserve(rows.size());
  for (auto& row : rows) {
    if (row.size() != 2 || type_of(row[0]) != ValueType::kText) {
      throw ProtocolError("malformed report from the daemon");
    }
    report.emplace_back(std::move(std::get<std::string>(row[0])), std::move(row[1]));
  }
  return report;
}

std::optional<Row> first_row(std::vector<Row> rows) {
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

}  // namespace

// ---- MultiplexedClient ------------------------------------------------------------------------

struct Transaction::Impl {
  std::shared_ptr<MultiplexedClient::Impl> client;
  TxRef tx;  // the connection that began it, and its number there
  bool finished = false;
};

MultiplexedClient::MultiplexedClient(const std::string& socket_path, ClientOptions options)
    : impl_(std::make_shared<Impl>(socket_path, options)) {
  impl_->connect();
}

MultiplexedClient::MultiplexedClient(MultiplexedClient&&) noexcept = default;
MultiplexedClient& MultiplexedClient::operator=(MultiplexedClient&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
MultiplexedClient::~MultiplexedClient() {
  if (impl_) impl_->close();
}

MultiplexedClient::Impl& MultiplexedClient::impl() const {
  if (!impl_) throw ConnectionClosedError("the client was moved from");
  return *impl_;
}

std::future<std::int64_t> MultiplexedClient::execute_async(std::string_view sql,
                                                           const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecute, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_async(std::string_view sql,
                                                                           const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_many_async(
    std::string_view sql, const std::vector<Params>& params_batch) {
  return send_many(impl(), kPlain, sql, params_batch);
}

std::future<void> MultiplexedClient::executescript_async(std::string_view sql) {
  return send_script(impl(), kPlain, sql);
}

std::future<std::vector<Row>> MultiplexedClient::execute_fetchall_async(std::string_view sql,
                                                                        const Params& params) {
  return send_fetch(impl(), kPlain, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_async(std::string_view sql,
                                                           const Params& params,
                                                           const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecute, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_async(
    std::string_view sql, const Params& params, const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecuteRowid, sql, params);
}

std::future<std::int64_t> MultiplexedClient::execute_many_async(
    std::string_view sql, const std::vector<Params>& params_batch, const WriteOptions& options) {
  return send_many(impl(), keyed(options), sql, params_batch);
}

std::future<void> MultiplexedClient::executescript_async(std::string_view sql,
                                                         const WriteOptions& options) {
  return send_script(impl(), keyed(options), sql);
}

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params,
                                        const WriteOptions& options) {
  return impl().wait(execute_async(sql, params, options));
}

std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql, const Params& params,
                                                        const WriteOptions& options) {
  return impl().wait(execute_returning_rowid_async(sql, params, options));
}

std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch,
                                             const WriteOptions& options) {
  return impl().wait(execute_many_async(sql, params_batch, options));
}

void MultiplexedClient::executescript(std::string_view sql, const WriteOptions& options) {
  impl().wait(executescript_async(sql, options));
}

std::future<void> MultiplexedClient::ping_async() {
  return send_empty(impl(), proto::MsgType::kPing, proto::MsgType::kPong);
}

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params) {
  return impl().wait(execute_async(sql, params));
}

std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql,
                                                        const Params& params) {
  return impl().wait(execute_returning_rowid_async(sql, params));
}

std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch) {
  return impl().wait(execute_many_async(sql, params_batch));
}

void MultiplexedClient::executescript(std::string_view sql) {
  impl().wait(executescript_async(sql));
}

std::vector<Row> MultiplexedClient::execute_fetchall(std::string_view sql, const Params& params) {
  return impl().wait(execute_fetchall_async(sql, params));
}

std::optional<Row> MultiplexedClient::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

bool MultiplexedClient::ping() {
  impl().wait(ping_async());
  return true;
}

void MultiplexedClient::shutdown_server() {
  impl().wait(send_empty(impl(), proto::MsgType::kShutdown, proto::MsgType::kShutdownOk));
}

Report MultiplexedClient::stats() {
  return send_admin(impl(), proto::MsgType::kStats, std::nullopt);
}

Report MultiplexedClient::checkpoint(std::string_view mode) {
  return send_admin(impl(), proto::MsgType::kCheckpoint, mode);
}

Report MultiplexedClient::backup(std::string_view path) {
  return send_admin(impl(), proto::MsgType::kBackup, path);
}

Transaction MultiplexedClient::begin() {
  auto& i = impl();
  auto claim = std::make_shared<std::atomic<int>>(detail::Completion::kWaiting);
  std::promise<void> promise;
  auto granted = promise.get_future();
  const auto sent =
      i.submit([](std::vector<std::uint8_t>& out,
                  std::uint64_t id) { proto::encode_empty(out, proto::MsgType::kBegin, id); },
               detail::Completion(detail::Completion::Kind::kEmpty, proto::MsgType::kOk,
                                  std::move(promise), claim),
               std::nullopt, true);
  i.wait_begin(std::move(granted), *claim);
  auto tx = std::make_unique<Transaction::Impl>();
  tx->client = impl_;
  tx->tx = TxRef{sent.generation, sent.id};
  return Transaction(std::move(tx));
}

std::future<Transaction> MultiplexedClient::begin_async() {
  auto& i = impl();
  // The daemon's grant may arrive before submit() has returned the transaction's number:
  // whichever of the two comes second makes the Transaction. Should the caller drop the future
  // first, the Transaction dies with the promise's shared state and its destructor rolls the
  // transaction back (abandon(): no round trip), so none is left without an owner.
  struct Pending {
    std::mutex mu;
    std::promise<Transaction> promise;
    std::shared_ptr<Impl> client;
    std::optional<TxRef> tx;  // GUARDED_BY(mu)
    bool granted = false;     // GUARDED_BY(mu)
  };
  auto pending = std::make_shared<Pending>();
  pending->client = impl_;
  auto future = pending->promise.get_future();
  const auto make = [](Pending& p) {  // REQUIRES: p.mu held, tx known, granted
    auto tx = std::make_unique<Transaction::Impl>();
    tx->client = p.client;
    tx->tx = *p.tx;
    p.promise.set_value(Transaction(std::move(tx)));
  };
  const auto sent =
      i.submit([](std::vector<std::uint8_t>& out,
                  std::uint64_t id) { proto::encode_empty(out, proto::MsgType::kBegin, id); },
               detail::Completion(detail::Completion::Kind::kEmpty, proto::MsgType::kOk,
                                  [pending, make](std::exception_ptr error) {
                                    std::lock_guard lk(pending->mu);
                                    if (error) return pending->promise.set_exception(error);
                                    pending->granted = true;
                                    if (pending->tx) make(*pending);
                                  }),
               std::nullopt, true);
  std::lock_guard lk(pending->mu);
  pending->tx = TxRef{sent.generation, sent.id};
  if (pending->granted) make(*pending);
  return future;
}

std::future<ResultSet> MultiplexedClient::execute_fetchall_columns_async(std::string_view sql,
                                                                         const Params& params) {
  return send_fetch_columns(impl(), kPlain, sql, params);
}

ResultSet MultiplexedClient::execute_fetchall_columns(std::string_view sql, const Params& params) {
  return impl().wait(execute_fetchall_columns_async(sql, params));
}

void MultiplexedClient::close() {
  if (impl_) impl_->close();
}

bool MultiplexedClient::connected() const noexcept { return impl_ && impl_->connected(); }

const std::string& MultiplexedClient::socket_path() const noexcept {
  static const std::string empty;
  return impl_ ? impl_->path() : empty;
}

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
    (void)send_transaction_end(*impl_->client, impl_->tx, proto::MsgType::kRollback);
  } catch (...) {  // the daemon rolls back anyway when the connection or the transaction ends
  }
}

bool Transaction::finished() const noexcept { return !impl_ || impl_->finished; }

MultiplexedClient::Impl& Transaction::open() const {
  if (!impl_)
    throw ProgrammingError("the transaction was moved from", SQLITE_MISUSE, SQLITE_MISUSE);
  if (impl_->finished) {
    throw ProgrammingError("the transaction is finished (committed or rolled back)", SQLITE_MISUSE,
                           SQLITE_MISUSE);
  }
  return *impl_->client;
}

template <typename Send>
auto Transaction::call(Send send) {
  auto& client = open();
  try {
    return client.wait(send(client, impl_->tx));
  } catch (const OperationalError& e) {
    // The daemon rolled the transaction back (idle timeout, a statement that ended it, ...).
    if (e.extended_code() == detail::kTransactionEndedCode) impl_->finished = true;
    throw;
  } catch (const ConnectionLostError&) {
    impl_->finished = true;  // the daemon rolls back the transaction of a lost connection
    throw;
  } catch (const ConnectionClosedError&) {
    impl_->finished = true;
    throw;
  }
}

std::int64_t Transaction::execute(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecute, sql, params);
  });
}

std::int64_t Transaction::execute_returning_rowid(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params);
  });
}

std::int64_t Transaction::execute_many(std::string_view sql,
                                       const std::vector<Params>& params_batch) {
  return call([&](auto& c, const TxRef& tx) { return send_many(c, in_tx(tx), sql, params_batch); });
}

void Transaction::executescript(std::string_view sql) {
  call([&](auto& c, const TxRef& tx) { return send_script(c, in_tx(tx), sql); });
}

std::vector<Row> Transaction::execute_fetchall(std::string_view sql, const Params& params) {
  return call([&](auto& c, const TxRef& tx) { return send_fetch(c, in_tx(tx), sql, params); });
}

std::optional<Row> Transaction::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

void Transaction::commit() {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_transaction_end(c, tx, proto::MsgType::kCommit);
  });
}

void Transaction::rollback() {
  call([&](auto& c, const TxRef& tx) {
    impl_->finished = true;
    return send_transaction_end(c, tx, proto::MsgType::kRollback);
  });
}

// ---- Named parameters (PROTOCOL.md §4.1) -----------------------------------------------------

namespace {

std::future<std::int64_t> send_statement_named(MultiplexedClient::Impl& impl, Mode mode,
                                               proto::MsgType type, std::string_view sql,
                                               const NamedParams& params) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement_named(out, type, id, sql, params);
      },
      type == proto::MsgType::kExecuteRowid ? detail::Completion::Kind::kRowid
                                            : detail::Completion::Kind::kChanges);
}

std::future<std::vector<Row>> send_fetch_named(MultiplexedClient::Impl& impl, Mode mode,
                                               std::string_view sql, const NamedParams& params) {
  return send<std::vector<Row>>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement_named(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      detail::Completion::Kind::kRows);
}

std::future<std::int64_t> send_many_named(MultiplexedClient::Impl& impl, Mode mode,
                                          std::string_view sql,
                                          const std::vector<NamedParams>& rows) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_many_named(out, id, sql, rows);
      },
      detail::Completion::Kind::kChanges);
}

}  // namespace

std::future<std::int64_t> MultiplexedClient::execute_named_async(std::string_view sql,
                                                                 const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecute, sql, params);
}
std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_named_async(
    std::string_view sql, const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params);
}
std::future<std::vector<Row>> MultiplexedClient::execute_fetchall_named_async(
    std::string_view sql, const NamedParams& params) {
  return send_fetch_named(impl(), kPlain, sql, params);
}
std::int64_t MultiplexedClient::execute_named(std::string_view sql, const NamedParams& params) {
  return impl().wait(execute_named_async(sql, params));
}
std::int64_t MultiplexedClient::execute_returning_rowid_named(std::string_view sql,
                                                              const NamedParams& params) {
  return impl().wait(execute_returning_rowid_named_async(sql, params));
}
std::int64_t MultiplexedClient::execute_many_named(std::string_view sql,
                                                   const std::vector<NamedParams>& params_batch) {
  return impl().wait(send_many_named(impl(), kPlain, sql, params_batch));
}
std::vector<Row> MultiplexedClient::execute_fetchall_named(std::string_view sql,
                                                           const NamedParams& params) {
  return impl().wait(execute_fetchall_named_async(sql, params));
}
std::optional<Row> MultiplexedClient::execute_fetchone_named(std::string_view sql,
                                                             const NamedParams& params) {
  return first_row(execute_fetchall_named(sql, params));
}

std::int64_t Transaction::execute_named(std::string_view sql, const NamedParams& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecute, sql, params);
  });
}
std::int64_t Transaction::execute_returning_rowid_named(std::string_view sql,
                                                        const NamedParams& params) {
  return call([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params);
  });
}
std::int64_t Transaction::execute_many_named(std::string_view sql,
                                             const std::vector<NamedParams>& params_batch) {
  return call(
      [&](auto& c, const TxRef& tx) { return send_many_named(c, in_tx(tx), sql, params_batch); });
}
std::vector<Row> Transaction::execute_fetchall_named(std::string_view sql,
                                                     const NamedParams& params) {
  return call(
      [&](auto& c, const TxRef& tx) { return send_fetch_named(c, in_tx(tx), sql, params); });
}
std::optional<Row> Transaction::execute_fetchone_named(std::string_view sql,
                                                       const NamedParams& params) {
  return first_row(execute_fetchall_named(sql, params));
}

// ---- Transaction: asynchronous forms --------------------------------------------------------

template <typename Send>
auto Transaction::call_async(Send send) {
  auto& client = open();
  try {
    return send(client, impl_->tx);
  } catch (const ConnectionLostError&) {
    impl_->finished = true;  // the daemon rolls back the transaction of a lost connection
    throw;
  } catch (const ConnectionClosedError&) {
    impl_->finished = true;
    throw;
  }
}

std::future<std::int64_t> Transaction::execute_async(std::string_view sql, const Params& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecute, sql, params);
  });
}
std::future<std::int64_t> Transaction::execute_returning_rowid_async(std::string_view sql,
                                                                     const Params& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params);
  });
}
std::future<std::int64_t> Transaction::execute_many_async(std::string_view sql,
                                                          const std::vector<Params>& params_batch) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_many(c, in_tx(tx), sql, params_batch); });
}
std::future<void> Transaction::executescript_async(std::string_view sql) {
  return call_async([&](auto& c, const TxRef& tx) { return send_script(c, in_tx(tx), sql); });
}
std::future<std::vector<Row>> Transaction::execute_fetchall_async(std::string_view sql,
                                                                  const Params& params) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_fetch(c, in_tx(tx), sql, params); });
}
std::future<std::int64_t> Transaction::execute_named_async(std::string_view sql,
                                                           const NamedParams& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecute, sql, params);
  });
}
std::future<std::int64_t> Transaction::execute_returning_rowid_named_async(
    std::string_view sql, const NamedParams& params) {
  return call_async([&](auto& c, const TxRef& tx) {
    return send_statement_named(c, in_tx(tx), proto::MsgType::kExecuteRowid, sql, params);
  });
}
std::future<std::int64_t> Transaction::execute_many_named_async(
    std::string_view sql, const std::vector<NamedParams>& params_batch) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_many_named(c, in_tx(tx), sql, params_batch); });
}
std::future<std::vector<Row>> Transaction::execute_fetchall_named_async(std::string_view sql,
                                                                        const NamedParams& params) {
  return call_async(
      [&](auto& c, const TxRef& tx) { return send_fetch_named(c, in_tx(tx), sql, params); });
}
std::future<void> Transaction::commit_async() {
  return call_async([&](auto& c, const TxRef& tx) {
    impl_->finished = true;  // whatever the outcome, the daemon ends the transaction
    return send_transaction_end(c, tx, proto::MsgType::kCommit);
  });
}
std::future<void> Transaction::rollback_async() {
  return call_async([&](auto& c, const TxRef& tx) {
    impl_->finished = true;
    return send_transaction_end(c, tx, proto::MsgType::kRollback);
  });
}

ResultSet Transaction::execute_fetchall_columns(std::string_view sql, const Params& params) {
  return call(
      [&](auto& c, const TxRef& tx) { return send_fetch_columns(c, in_tx(tx), sql, params); });
}

}  // namespace pasyn
