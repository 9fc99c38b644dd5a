// MultiplexedClient: the public API over MultiplexedClient::Impl (client_impl.hpp). Each call
// is one request (requests.hpp); the synchronous forms wait on their own stack (kSync), the
// asynchronous ones return a std::future (kAsync).
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
#include "requests.hpp"

namespace pasyn {

using detail::first_row;
using detail::kAsync;
using detail::keyed;
using detail::kPlain;
using detail::kSync;
using detail::send_admin;
using detail::send_empty;
using detail::send_fetch;
using detail::send_fetch_columns;
using detail::send_fetch_named;
using detail::send_many;
using detail::send_many_named;
using detail::send_script;
using detail::send_statement;
using detail::send_statement_named;
using detail::TxRef;
using detail::within;

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
  return send_statement(impl(), kPlain, proto::MsgType::kExecute, sql, params, kAsync);
}

std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_async(std::string_view sql,
                                                                           const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params, kAsync);
}

std::future<std::int64_t> MultiplexedClient::execute_many_async(
    std::string_view sql, const std::vector<Params>& params_batch) {
  return send_many(impl(), kPlain, sql, params_batch, kAsync);
}

std::future<void> MultiplexedClient::executescript_async(std::string_view sql) {
  return send_script(impl(), kPlain, sql, kAsync);
}

std::future<std::vector<Row>> MultiplexedClient::execute_fetchall_async(std::string_view sql,
                                                                        const Params& params) {
  return send_fetch(impl(), kPlain, sql, params, kAsync);
}

std::future<std::int64_t> MultiplexedClient::execute_async(std::string_view sql,
                                                           const Params& params,
                                                           const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecute, sql, params, kAsync);
}

std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_async(
    std::string_view sql, const Params& params, const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecuteRowid, sql, params, kAsync);
}

std::future<std::int64_t> MultiplexedClient::execute_many_async(
    std::string_view sql, const std::vector<Params>& params_batch, const WriteOptions& options) {
  return send_many(impl(), keyed(options), sql, params_batch, kAsync);
}

std::future<void> MultiplexedClient::executescript_async(std::string_view sql,
                                                         const WriteOptions& options) {
  return send_script(impl(), keyed(options), sql, kAsync);
}

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params,
                                        const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecute, sql, params, kSync);
}

std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql, const Params& params,
                                                        const WriteOptions& options) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecuteRowid, sql, params, kSync);
}

std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch,
                                             const WriteOptions& options) {
  return send_many(impl(), keyed(options), sql, params_batch, kSync);
}

void MultiplexedClient::executescript(std::string_view sql, const WriteOptions& options) {
  send_script(impl(), keyed(options), sql, kSync);
}

std::future<void> MultiplexedClient::ping_async() {
  return send_empty(impl(), proto::MsgType::kPing, proto::MsgType::kPong, kAsync);
}

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecute, sql, params, kSync);
}

std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql,
                                                        const Params& params) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params, kSync);
}

std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch) {
  return send_many(impl(), kPlain, sql, params_batch, kSync);
}

void MultiplexedClient::executescript(std::string_view sql) {
  send_script(impl(), kPlain, sql, kSync);
}

std::vector<Row> MultiplexedClient::execute_fetchall(std::string_view sql, const Params& params) {
  return send_fetch(impl(), kPlain, sql, params, kSync);
}

std::optional<Row> MultiplexedClient::execute_fetchone(std::string_view sql, const Params& params) {
  return first_row(execute_fetchall(sql, params));
}

bool MultiplexedClient::ping() {
  send_empty(impl(), proto::MsgType::kPing, proto::MsgType::kPong, kSync);
  return true;
}

void MultiplexedClient::shutdown_server() {
  send_empty(impl(), proto::MsgType::kShutdown, proto::MsgType::kShutdownOk, kSync);
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

void MultiplexedClient::shutdown_server(Timeout timeout) {
  send_empty(impl(), proto::MsgType::kShutdown, proto::MsgType::kShutdownOk, within(timeout));
}

Report MultiplexedClient::stats(Timeout timeout) {
  return send_admin(impl(), proto::MsgType::kStats, std::nullopt, within(timeout));
}

Report MultiplexedClient::checkpoint(std::string_view mode, Timeout timeout) {
  return send_admin(impl(), proto::MsgType::kCheckpoint, mode, within(timeout));
}

Report MultiplexedClient::backup(std::string_view path, Timeout timeout) {
  return send_admin(impl(), proto::MsgType::kBackup, path, within(timeout));
}

Transaction MultiplexedClient::begin() {
  return begin(Timeout(impl().bound_of(std::nullopt).timeout));
}

Transaction MultiplexedClient::begin(Timeout timeout) {
  auto& i = impl();
  const auto bound = i.bound_of(timeout.bound());
  auto claim = std::make_shared<std::atomic<int>>(detail::Completion::kWaiting);
  std::promise<void> promise;
  auto granted = promise.get_future();
  const auto sent =
      i.submit([](std::vector<std::uint8_t>& out,
                  std::uint64_t id) { proto::encode_empty(out, proto::MsgType::kBegin, id); },
               detail::Completion(detail::Completion::Kind::kEmpty, proto::MsgType::kOk,
                                  std::move(promise), claim),
               std::nullopt, true, bound);
  i.wait_begin(std::move(granted), *claim, bound);
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
               std::nullopt, true, i.bound_of(std::nullopt));
  std::lock_guard lk(pending->mu);
  pending->tx = TxRef{sent.generation, sent.id};
  if (pending->granted) make(*pending);
  return future;
}

std::future<ResultSet> MultiplexedClient::execute_fetchall_columns_async(std::string_view sql,
                                                                         const Params& params) {
  return send_fetch_columns(impl(), kPlain, sql, params, kAsync);
}

ResultSet MultiplexedClient::execute_fetchall_columns(std::string_view sql, const Params& params) {
  return send_fetch_columns(impl(), kPlain, sql, params, kSync);
}

void MultiplexedClient::close() {
  if (impl_) impl_->close();
}

bool MultiplexedClient::connected() const noexcept { return impl_ && impl_->connected(); }

const std::string& MultiplexedClient::socket_path() const noexcept {
  static const std::string empty;
  return impl_ ? impl_->path() : empty;
}

std::future<std::int64_t> MultiplexedClient::execute_named_async(std::string_view sql,
                                                                 const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecute, sql, params, kAsync);
}
std::future<std::int64_t> MultiplexedClient::execute_returning_rowid_named_async(
    std::string_view sql, const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params, kAsync);
}
std::future<std::vector<Row>> MultiplexedClient::execute_fetchall_named_async(
    std::string_view sql, const NamedParams& params) {
  return send_fetch_named(impl(), kPlain, sql, params, kAsync);
}
std::int64_t MultiplexedClient::execute_named(std::string_view sql, const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecute, sql, params, kSync);
}
std::int64_t MultiplexedClient::execute_returning_rowid_named(std::string_view sql,
                                                              const NamedParams& params) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params, kSync);
}
std::int64_t MultiplexedClient::execute_many_named(std::string_view sql,
                                                   const std::vector<NamedParams>& params_batch) {
  return send_many_named(impl(), kPlain, sql, params_batch, kSync);
}
std::vector<Row> MultiplexedClient::execute_fetchall_named(std::string_view sql,
                                                           const NamedParams& params) {
  return send_fetch_named(impl(), kPlain, sql, params, kSync);
}
std::optional<Row> MultiplexedClient::execute_fetchone_named(std::string_view sql,
                                                             const NamedParams& params) {
  return first_row(execute_fetchall_named(sql, params));
}

// ---- With a Timeout of their own ------------------------------------------------------------

std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params,
                                        Timeout timeout) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecute, sql, params, within(timeout));
}
std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql, const Params& params,
                                                        Timeout timeout) {
  return send_statement(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params,
                        within(timeout));
}
std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch,
                                             Timeout timeout) {
  return send_many(impl(), kPlain, sql, params_batch, within(timeout));
}
void MultiplexedClient::executescript(std::string_view sql, Timeout timeout) {
  send_script(impl(), kPlain, sql, within(timeout));
}
std::int64_t MultiplexedClient::execute(std::string_view sql, const Params& params,
                                        const WriteOptions& options, Timeout timeout) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecute, sql, params,
                        within(timeout));
}
std::int64_t MultiplexedClient::execute_returning_rowid(std::string_view sql, const Params& params,
                                                        const WriteOptions& options,
                                                        Timeout timeout) {
  return send_statement(impl(), keyed(options), proto::MsgType::kExecuteRowid, sql, params,
                        within(timeout));
}
std::int64_t MultiplexedClient::execute_many(std::string_view sql,
                                             const std::vector<Params>& params_batch,
                                             const WriteOptions& options, Timeout timeout) {
  return send_many(impl(), keyed(options), sql, params_batch, within(timeout));
}
void MultiplexedClient::executescript(std::string_view sql, const WriteOptions& options,
                                      Timeout timeout) {
  send_script(impl(), keyed(options), sql, within(timeout));
}
std::vector<Row> MultiplexedClient::execute_fetchall(std::string_view sql, const Params& params,
                                                     Timeout timeout) {
  return send_fetch(impl(), kPlain, sql, params, within(timeout));
}
std::optional<Row> MultiplexedClient::execute_fetchone(std::string_view sql, const Params& params,
                                                       Timeout timeout) {
  return first_row(execute_fetchall(sql, params, timeout));
}
ResultSet MultiplexedClient::execute_fetchall_columns(std::string_view sql, const Params& params,
                                                      Timeout timeout) {
  return send_fetch_columns(impl(), kPlain, sql, params, within(timeout));
}
std::int64_t MultiplexedClient::execute_named(std::string_view sql, const NamedParams& params,
                                              Timeout timeout) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecute, sql, params,
                              within(timeout));
}
std::int64_t MultiplexedClient::execute_returning_rowid_named(std::string_view sql,
                                                              const NamedParams& params,
                                                              Timeout timeout) {
  return send_statement_named(impl(), kPlain, proto::MsgType::kExecuteRowid, sql, params,
                              within(timeout));
}
std::int64_t MultiplexedClient::execute_many_named(std::string_view sql,
                                                   const std::vector<NamedParams>& params_batch,
                                                   Timeout timeout) {
  return send_many_named(impl(), kPlain, sql, params_batch, within(timeout));
}
std::vector<Row> MultiplexedClient::execute_fetchall_named(std::string_view sql,
                                                           const NamedParams& params,
                                                           Timeout timeout) {
  return send_fetch_named(impl(), kPlain, sql, params, within(timeout));
}
std::optional<Row> MultiplexedClient::execute_fetchone_named(std::string_view sql,
                                                             const NamedParams& params,
                                                             Timeout timeout) {
  return first_row(execute_fetchall_named(sql, params, timeout));
}
bool MultiplexedClient::ping(Timeout timeout) {
  send_empty(impl(), proto::MsgType::kPing, proto::MsgType::kPong, within(timeout));
  return true;
}

}  // namespace pasyn
