// How each call of MultiplexedClient and Transaction is encoded, sent and completed: the
// helpers client.cpp and transaction.cpp share. Every helper takes how its caller waits:
// kAsync returns a std::future (its shared state is the one allocation an asynchronous call
// inherently makes), kSync waits on a Waiter on the calling thread's stack and returns the
// value, so a synchronous call allocates nothing of its own.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <exception>
#include <future>
#include <memory>
#include <optional>
#include <pasyn/client.hpp>
#include <pasyn/proto/codec.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "client_impl.hpp"
#include "reply.hpp"
#include "waiter.hpp"

namespace pasyn::detail {

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
inline constexpr Mode kPlain{};
inline Mode in_tx(const TxRef& tx) { return Mode{&tx, {}}; }

inline Mode keyed(const WriteOptions& options) {
  if (options.idempotency_key.size() > proto::kMaxIdempotencyKey) {
    throw ProgrammingError(
        "an idempotency key is at most " + std::to_string(proto::kMaxIdempotencyKey) + " bytes",
        SQLITE_MISUSE, SQLITE_MISUSE);
  }
  return Mode{nullptr, options.idempotency_key};
}

// How a call waits (see the top of this file). A synchronous call may carry its own bound
// (pasyn::Timeout), else it waits at most ClientOptions::request_timeout.
struct Async {};
struct Sync {
  std::optional<std::chrono::milliseconds> timeout;
};
inline constexpr Async kAsync;
inline constexpr Sync kSync;
inline Sync within(Timeout timeout) { return Sync{timeout.bound()}; }

using Impl = MultiplexedClient::Impl;
using Kind = Completion::Kind;

// Sends one request whose frame `encode(out, id)` appends; its reply completes as `kind`.
// Returns std::future<T> (Async) or T (Sync). A request that belongs to a transaction
// (mode.tx, or `tx_connection` for COMMIT and ROLLBACK, whose frames carry it already) goes out
// on the connection that began the transaction.
template <typename T, typename Via, typename Encode>
auto send(Impl& impl, Mode mode, Encode encode, Kind kind, proto::MsgType reply, Via via,
          std::optional<std::uint64_t> tx_connection = std::nullopt) {
  const auto framed = [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
    const std::size_t start = out.size();
    encode(out, id);
    if (mode.tx) proto::add_transaction_number(out, start, mode.tx->number);
    if (!mode.key.empty()) proto::add_idempotency_key(out, start, mode.key);
  };
  // A transaction's requests go out on its own connection or not at all, and do not wait for
  // an in-flight slot: the transaction can always finish, and so release the writes waiting.
  const auto tx_generation = mode.tx ? std::optional(mode.tx->generation) : tx_connection;
  const bool bounded = !tx_generation;
  if constexpr (std::is_same_v<Via, Sync>) {
    const auto bound = impl.bound_of(via.timeout);
    Waiter<T> waiter;
    const auto sent =
        impl.submit(framed, Completion(kind, reply, waiter), tx_generation, bounded, bound);
    return impl.wait(waiter, sent, bound);
  } else {
    (void)via;
    std::promise<T> promise;
    auto future = promise.get_future();
    impl.submit(framed, Completion(kind, reply, std::move(promise)), tx_generation, bounded,
                impl.bound_of(std::nullopt));
    return future;
  }
}

template <typename Via>
auto send_statement(Impl& impl, Mode mode, proto::MsgType type, std::string_view sql,
                    const Params& params, Via via) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, type, id, sql, params);
      },
      type == proto::MsgType::kExecuteRowid ? Kind::kRowid : Kind::kChanges,
      proto::MsgType::kResult, via);
}

template <typename Via>
auto send_fetch(Impl& impl, Mode mode, std::string_view sql, const Params& params, Via via) {
  return send<std::vector<Row>>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      Kind::kRows, proto::MsgType::kResult, via);
}

template <typename Via>
auto send_fetch_columns(Impl& impl, Mode mode, std::string_view sql, const Params& params,
                        Via via) {
  return send<ResultSet>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      Kind::kColumns, proto::MsgType::kResult, via);
}

template <typename Via>
auto send_many(Impl& impl, Mode mode, std::string_view sql, const std::vector<Params>& rows,
               Via via) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_many(out, id, sql, rows);
      },
      Kind::kChanges, proto::MsgType::kResult, via);
}

template <typename Via>
auto send_script(Impl& impl, Mode mode, std::string_view sql, Via via) {
  return send<void>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) { proto::encode_script(out, id, sql); },
      Kind::kResult, proto::MsgType::kResult, via);
}

// COMMIT and ROLLBACK of transaction `tx`, answered by OK. Sent on the transaction's
// connection only, and never waiting for an in-flight slot.
template <typename Via>
auto send_transaction_end(Impl& impl, const TxRef& tx, proto::MsgType type, Via via) {
  return send<void>(
      impl, kPlain,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_transaction_end(out, type, id, tx.number);
      },
      Kind::kEmpty, proto::MsgType::kOk, via, tx.generation);
}

// PING and SHUTDOWN: an empty request answered by an empty reply.
template <typename Via>
auto send_empty(Impl& impl, proto::MsgType type, proto::MsgType reply, Via via) {
  return send<void>(
      impl, kPlain,
      [type](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_empty(out, type, id);
      },
      Kind::kEmpty, reply, via);
}

// STATS, CHECKPOINT, BACKUP: answered with a RESULT of (name, value) rows.
inline Report send_admin(Impl& impl, proto::MsgType type, std::optional<std::string_view> text,
                         Sync via = kSync) {
  auto rows = send<std::vector<Row>>(
      impl, kPlain,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        if (text) {
          proto::encode_text(out, type, id, *text);
        } else {
          proto::encode_empty(out, type, id);
        }
      },
      Kind::kRows, proto::MsgType::kResult, via);
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

// ---- Named parameters (PROTOCOL.md §4.1) -----------------------------------------------------

template <typename Via>
auto send_statement_named(Impl& impl, Mode mode, proto::MsgType type, std::string_view sql,
                          const NamedParams& params, Via via) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement_named(out, type, id, sql, params);
      },
      type == proto::MsgType::kExecuteRowid ? Kind::kRowid : Kind::kChanges,
      proto::MsgType::kResult, via);
}

template <typename Via>
auto send_fetch_named(Impl& impl, Mode mode, std::string_view sql, const NamedParams& params,
                      Via via) {
  return send<std::vector<Row>>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_statement_named(out, proto::MsgType::kExecuteFetch, id, sql, params);
      },
      Kind::kRows, proto::MsgType::kResult, via);
}

template <typename Via>
auto send_many_named(Impl& impl, Mode mode, std::string_view sql,
                     const std::vector<NamedParams>& rows, Via via) {
  return send<std::int64_t>(
      impl, mode,
      [&](std::vector<std::uint8_t>& out, std::uint64_t id) {
        proto::encode_many_named(out, id, sql, rows);
      },
      Kind::kChanges, proto::MsgType::kResult, via);
}

inline std::optional<Row> first_row(std::vector<Row> rows) {
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

}  // namespace pasyn::detail

namespace pasyn {

struct Transaction::Impl {
  std::shared_ptr<MultiplexedClient::Impl> client;
  detail::TxRef tx;  // the connection that began it, and its number there
  bool finished = false;
  // Why it finished when the daemon or the connection ended it (TRANSACTION_ENDED, connection
  // lost or closed): every later call throws this again; null when the caller committed or
  // rolled back (later calls: ProgrammingError).
  std::exception_ptr ended;
};

}  // namespace pasyn
