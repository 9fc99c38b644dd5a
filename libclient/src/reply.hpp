// Replies of pasyn-writerd as the client sees them: error frames mapped to pasyn exceptions, and
// Completion, what the client's pending table holds per request: the promise of an asynchronous
// call, the Waiter of a synchronous one, or a Notify.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <pasyn/client.hpp>
#include <pasyn/errors.hpp>
#include <pasyn/proto/codec.hpp>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "waiter.hpp"

namespace pasyn::detail {

/// The extended code of the OperationalError for a transaction the daemon rolled back.
inline constexpr int kTransactionEndedCode = SQLITE_ABORT_ROLLBACK;

inline std::exception_ptr error_from_reply(const proto::ErrorReply& e) {
  try {
    if (e.domain == proto::ErrorDomain::kSqlite) {
      throw_sqlite_error(e.message, e.code, e.extended_code);
    }
    switch (static_cast<proto::PasynCode>(e.code)) {
      case proto::PasynCode::kProtocol:
        throw ProtocolError("pasyn-writerd reported a protocol error: " + e.message);
      case proto::PasynCode::kMisuse:
        if (e.extended_code == proto::kMisuseTransactionCommand) {
          throw TransactionCommandError(e.message, SQLITE_MISUSE, SQLITE_MISUSE);
        }
        throw ProgrammingError(e.message, SQLITE_MISUSE, SQLITE_MISUSE);
      case proto::PasynCode::kShuttingDown:
        throw OperationalError(e.message, SQLITE_ABORT, SQLITE_ABORT);
      case proto::PasynCode::kTimeout:
        throw TimeoutError(e.message);
      case proto::PasynCode::kTooLarge:
        throw DataError(e.message, SQLITE_TOOBIG, SQLITE_TOOBIG);
      case proto::PasynCode::kTransactionEnded:
        throw OperationalError(e.message, SQLITE_ABORT, kTransactionEndedCode);
      case proto::PasynCode::kLimit:  // e.g. --max-connections: worth retrying later
        throw OperationalError(e.message, SQLITE_BUSY, SQLITE_BUSY);
      case proto::PasynCode::kPermission:
        throw OperationalError(e.message, SQLITE_PERM, SQLITE_PERM);
    }
    throw Error("pasyn-writerd error " + std::to_string(e.code) + ": " + e.message);
  } catch (...) {
    return std::current_exception();
  }
}

[[noreturn]] inline void throw_protocol(const std::string& why) {
  throw ProtocolError("malformed reply from pasyn-writerd: " + why);
}

// Reply decoders: turn a frame into the call's value, or throw the error it carries.
inline void expect(const proto::FrameView& f, proto::MsgType type) {
  const auto got = static_cast<proto::MsgType>(f.type);
  if (got == proto::MsgType::kError) {
    proto::ErrorReply e;
    std::string why;
    if (!proto::decode_error(f.payload, e, why)) throw_protocol(why);
    std::rethrow_exception(error_from_reply(e));
  }
  if (got != type) {
    throw_protocol(std::string("expected ") + proto::to_string(type) + ", got " +
                   proto::to_string(got));
  }
}

// The counts of a RESULT (rows changed, rowid inserted): read in place when it has no columns
// and no rows, as EXECUTE's and EXECUTE_ROWID's have; anything else is read whole.
struct ResultCounts {
  std::int64_t changes = 0;
  std::int64_t last_rowid = 0;
};

inline proto::Result decode_result(const proto::FrameView& f) {
  expect(f, proto::MsgType::kResult);
  proto::Result r;
  std::string why;
  if (!proto::decode_result(f.payload, r, why)) throw_protocol(why);
  return r;
}

inline ResultCounts decode_result_counts(const proto::FrameView& f) {
  ResultCounts c;
  if (f.type == static_cast<std::uint8_t>(proto::MsgType::kResult) &&
      proto::decode_result_counts(f.payload, c.changes, c.last_rowid)) {
    return c;
  }
  const proto::Result r = decode_result(f);  // any other frame: checked and read whole
  return {r.changes, r.last_rowid};
}

inline void decode_nothing(const proto::FrameView& f, proto::MsgType type) {
  expect(f, type);
  std::string why;
  if (!proto::decode_empty(f.payload, why)) throw_protocol(why);
}

/// Completes one request: turns its reply frame into the call's value, or fails it. Holds the
/// promise by value (no allocation beyond the promise's own state) or points at the Waiter of a
/// synchronous call (no allocation at all), and is what the pending table stores per request id.
/// A default-constructed or discard()ed Completion discards its reply: what a request becomes
/// whose synchronous caller gave up waiting (MultiplexedClient::Impl::wait).
class Completion {
 public:
  enum class Kind : std::uint8_t {
    kChanges,  // RESULT -> rows changed
    kRowid,    // RESULT -> rowid inserted
    kRows,     // RESULT -> rows
    kColumns,  // RESULT -> column names and rows (a ResultSet)
    kResult,   // RESULT -> nothing
    kEmpty,    // an empty reply of type `reply`
  };

  /// States of a BEGIN's claim: its caller still waits, gave up (wait_begin), or the reply
  /// was taken for it.
  static constexpr int kWaiting = 0;
  static constexpr int kAbandoned = 1;
  static constexpr int kDelivered = 2;

  /// Told the outcome of a kEmpty request instead of a promise: nullptr when it succeeded, else
  /// the error. Called on the thread that read the reply (or by close()); must not throw.
  using Notify = std::function<void(std::exception_ptr)>;

  Completion() = default;
  Completion(Kind kind, proto::MsgType reply, Notify notify)
      : kind_(kind), reply_(reply), promise_(std::move(notify)) {}
  template <typename T>
  Completion(Kind kind, proto::MsgType reply, std::promise<T> promise,
             std::shared_ptr<std::atomic<int>> claim = nullptr)
      : kind_(kind), reply_(reply), promise_(std::move(promise)), claim_(std::move(claim)) {}
  /// `waiter` must outlive the request's stay in the pending table.
  template <typename T>
  Completion(Kind kind, proto::MsgType reply, Waiter<T>& waiter)
      : kind_(kind), reply_(reply), promise_(&waiter) {}

  /// The Waiter of a synchronous call, nullptr for any other.
  WaitNode* waiter() const noexcept {
    return std::visit(
        [](const auto& p) -> WaitNode* {
          if constexpr (std::is_pointer_v<std::decay_t<decltype(p)>>) {
            return p;
          } else {
            return nullptr;
          }
        },
        promise_);
  }

  /// From now on the reply is discarded, and nobody is told of it (the caller has gone).
  void discard() noexcept {
    promise_.emplace<std::monostate>();
    claim_.reset();
  }

  /// Takes the reply for the caller; false if the caller has abandoned the request (only a
  /// BEGIN can be abandoned).
  bool claim() noexcept {
    if (!claim_) return true;
    int expected = kWaiting;
    return claim_->compare_exchange_strong(expected, kDelivered) || expected != kAbandoned;
  }

  void complete(const proto::FrameView& f) noexcept {
    if (std::holds_alternative<std::monostate>(promise_)) return;  // nobody waits for it
    std::exception_ptr error;
    try {
      switch (kind_) {
        case Kind::kChanges:
          return set<std::int64_t>(decode_result_counts(f).changes);
        case Kind::kRowid:
          return set<std::int64_t>(decode_result_counts(f).last_rowid);
        case Kind::kRows:
          return set<std::vector<Row>>(std::move(decode_result(f).rows));
        case Kind::kColumns: {
          auto r = decode_result(f);
          return set<ResultSet>(ResultSet{std::move(r.columns), std::move(r.rows)});
        }
        case Kind::kResult:
          decode_result(f);
          return set<void>();
        case Kind::kEmpty:
          decode_nothing(f, reply_);
          if (auto* notify = std::get_if<Notify>(&promise_)) return notify_of(*notify, nullptr);
          return set<void>();
      }
    } catch (...) {
      error = std::current_exception();
    }
    // Handed over outside the handler, and moved: once the caller can see the error, this
    // thread holds no reference to it, so the caller's thread is the one that destroys it
    // (libstdc++ counts the references where ThreadSanitizer cannot see; see tests/tsan.supp).
    if (error) fail(std::move(error));
  }

  /// Fails the request with `error` (moved to the caller).
  void fail(std::exception_ptr error) noexcept {
    std::visit(
        [&](auto& p) {
          using P = std::decay_t<decltype(p)>;
          if constexpr (std::is_same_v<P, Notify>) {
            notify_of(p, std::move(error));
          } else if constexpr (std::is_pointer_v<P>) {
            p->set_exception(std::move(error));
          } else if constexpr (!std::is_same_v<P, std::monostate>) {
            p.set_exception(std::move(error));
          }
        },
        promise_);
  }

 private:
  static void notify_of(Notify& notify, std::exception_ptr error) noexcept {
    if (!notify) return;
    Notify once = std::move(notify);  // told once, whatever happens next
    notify = nullptr;
    try {
      once(std::move(error));
    } catch (...) {  // a Notify must not throw; nothing sensible is left to tell
    }
  }

  // Hands the call its value: through its promise, or to its waiter. A Completion of the wrong
  // type throws (bad_variant_access), and the call fails with that.
  template <typename T, typename... V>
  void set(V&&... v) {
    if (auto* waiter = std::get_if<Waiter<T>*>(&promise_)) {
      (*waiter)->set_value(std::forward<V>(v)...);
    } else {
      std::get<std::promise<T>>(promise_).set_value(std::forward<V>(v)...);
    }
  }

  Kind kind_ = Kind::kResult;
  proto::MsgType reply_ = proto::MsgType::kResult;
  std::variant<std::monostate, std::promise<std::int64_t>, std::promise<std::vector<Row>>,
               std::promise<void>, Notify, std::promise<ResultSet>, Waiter<std::int64_t>*,
               Waiter<std::vector<Row>>*, Waiter<void>*, Waiter<ResultSet>*>
      promise_;
  std::shared_ptr<std::atomic<int>> claim_;  // BEGIN only
};

}  // namespace pasyn::detail
