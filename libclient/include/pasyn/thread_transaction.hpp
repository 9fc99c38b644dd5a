// The seed's client-level begin()/commit()/rollback(), with an owner: the calling thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include <pasyn/client.hpp>
#include <pasyn/export.hpp>
#include <pasyn/value.hpp>

namespace pasyn {

/// Transactions of a MultiplexedClient that belong to threads.
///
/// `begin()` opens a transaction (MultiplexedClient::begin) owned by the calling thread. While
/// that thread has one open, the writes it sends through this object run inside it; the writes
/// of other threads (through this object or the client directly) are not part of it and wait in
/// the daemon's queue like any other writer's, until the owner's commit() or rollback() (or the
/// daemon's `--lock-wait`: TimeoutError). commit() and rollback() act on the calling thread's
/// transaction only. A thread that ends with its transaction open leaves it to be rolled back
/// when this object is destroyed, or by the daemon's idle timeout.
///
/// When the daemon ends a thread's transaction (idle timeout, a statement that ended it) or its
/// connection is lost, the call that learns it throws why (OperationalError TRANSACTION_ENDED,
/// ConnectionLostError), and so does every later write of that thread through this object:
/// what it meant to run inside the transaction never runs outside it. rollback() then returns
/// the thread to plain writes, commit() throws the reason and does the same, and begin() opens a
/// new transaction; in_transaction() is false from the call that learnt it.
///
/// Thread-safety: every method may be called from any thread concurrently. Ownership: refers to
/// `client`, which must outlive this object; owns the open transactions and rolls them back on
/// destruction.
class PASYN_EXPORT ThreadTransactions {
 public:
  explicit ThreadTransactions(MultiplexedClient& client);
  ThreadTransactions(const ThreadTransactions&) = delete;
  ThreadTransactions& operator=(const ThreadTransactions&) = delete;
  ~ThreadTransactions();

  /// Opens the calling thread's transaction. ProgrammingError if it already has one open (not
  /// one the daemon ended: that one is dropped).
  void begin();
  /// Commits / rolls back the calling thread's transaction. ProgrammingError if it has none.
  void commit();
  void rollback();
  /// True while the calling thread has a transaction open (not ended by the daemon).
  bool in_transaction() const;

  /// The client's writes, run inside the calling thread's transaction when it has one.
  std::int64_t execute(std::string_view sql, const Params& params = {});
  std::int64_t execute_named(std::string_view sql, const NamedParams& params);
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params = {});
  std::int64_t execute_returning_rowid_named(std::string_view sql, const NamedParams& params);
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch);
  std::int64_t execute_many_named(std::string_view sql,
                                  const std::vector<NamedParams>& params_batch);
  void executescript(std::string_view sql);
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params = {});
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params);

  /// The calls above with a bound of their own, in place of the client's `request_timeout`
  /// (see pasyn::Timeout).
  void begin(Timeout timeout);
  void commit(Timeout timeout);
  void rollback(Timeout timeout);
  std::int64_t execute(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_named(std::string_view sql, const NamedParams& params, Timeout timeout);
  std::int64_t execute_returning_rowid(std::string_view sql, const Params& params, Timeout timeout);
  std::int64_t execute_returning_rowid_named(std::string_view sql, const NamedParams& params,
                                             Timeout timeout);
  std::int64_t execute_many(std::string_view sql, const std::vector<Params>& params_batch,
                            Timeout timeout);
  std::int64_t execute_many_named(std::string_view sql,
                                  const std::vector<NamedParams>& params_batch, Timeout timeout);
  void executescript(std::string_view sql, Timeout timeout);
  std::vector<Row> execute_fetchall(std::string_view sql, const Params& params, Timeout timeout);
  std::vector<Row> execute_fetchall_named(std::string_view sql, const NamedParams& params,
                                          Timeout timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pasyn
