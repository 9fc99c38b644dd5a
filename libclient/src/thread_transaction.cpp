// pasyn::ThreadTransactions: a map from thread id to that thread's Transaction.
#include <pasyn/thread_transaction.hpp>

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

namespace pasyn {
namespace {

// The calling thread's key in ThreadTransactions: never reused, unlike std::thread::id (glibc
// reuses a finished thread's pthread_t), so a new thread never inherits a transaction that a
// finished thread left behind, open or ended.
std::uint64_t this_thread_token() {
  static std::atomic<std::uint64_t> next{0};
  thread_local const std::uint64_t token = ++next;
  return token;
}

}  // namespace

struct ThreadTransactions::Impl {
  explicit Impl(MultiplexedClient& c) : client(c) {}
  MultiplexedClient& client;
  mutable std::mutex mu;
  // Each entry is used only by its own thread; the map itself is guarded by mu. std::map keeps
  // the Transaction in place while other threads insert and erase theirs.
  std::map<std::uint64_t, Transaction> open;  // GUARDED_BY(mu)

  // The calling thread's transaction, or null. Only this thread erases its entry, so the
  // pointer stays valid after the lock is released.
  Transaction* mine() const {
    std::lock_guard lk(mu);
    auto it = open.find(this_thread_token());
    return it == open.end() ? nullptr : const_cast<Transaction*>(&it->second);
  }

  Transaction& mine_or_throw(const char* what) const {
    Transaction* tx = mine();
    if (tx == nullptr) {
      throw TransactionCommandError(std::string(what) + ": this thread has no open transaction",
                                    SQLITE_MISUSE, SQLITE_MISUSE);
    }
    return *tx;
  }

  // Ends the calling thread's transaction with `end`, removing it whatever the outcome (a
  // failed commit has rolled back).
  template <typename End>
  void finish(const char* what, End end) {
    mine_or_throw(what);
    std::optional<Transaction> taken;
    {
      std::lock_guard lk(mu);
      auto it = open.find(this_thread_token());
      taken.emplace(std::move(it->second));
      open.erase(it);
    }
    end(*taken);
  }

  template <typename Begin>
  void open_mine(Begin begin) {
    if (Transaction* tx = mine()) {
      if (!tx->finished()) {
        throw TransactionCommandError(
            "this thread already has an open transaction: commit() or rollback() it first (also "
            "one the daemon may have ended meanwhile, which only a call through it learns)",
            SQLITE_MISUSE, SQLITE_MISUSE);
      }
      drop();  // ended by the daemon or a lost connection, which its calls have reported
    }
    Transaction tx = begin(client);
    std::lock_guard lk(mu);
    open.emplace(this_thread_token(), std::move(tx));
  }

  // A transaction the daemon or a lost connection ended stays the thread's: the writes the
  // thread meant to run in it throw what ended it, never run outside it, until the thread calls
  // rollback(), commit() (which throws it too) or begin().
  template <typename InTx, typename Plain>
  auto route(InTx in_tx, Plain plain) {
    if (Transaction* tx = mine()) return in_tx(*tx);
    return plain(client);
  }

  void drop() {
    std::lock_guard lk(mu);
    open.erase(this_thread_token());
  }
};

ThreadTransactions::ThreadTransactions(MultiplexedClient& client)
    : impl_(std::make_unique<Impl>(client)) {}

ThreadTransactions::~ThreadTransactions() {
  std::map<std::uint64_t, Transaction> open;
  {
    std::lock_guard lk(impl_->mu);
    open = std::move(impl_->open);
  }
  // Each Transaction's destructor rolls it back, ignoring errors.
}

void ThreadTransactions::begin() {
  impl_->open_mine([](MultiplexedClient& c) { return c.begin(); });
}
void ThreadTransactions::begin(Timeout timeout) {
  impl_->open_mine([&](MultiplexedClient& c) { return c.begin(timeout); });
}

void ThreadTransactions::commit() {
  impl_->finish("commit", [](Transaction& tx) { tx.commit(); });
}

void ThreadTransactions::rollback() {
  impl_->finish("rollback", [](Transaction& tx) {
    if (!tx.finished()) tx.rollback();
  });
}

void ThreadTransactions::commit(Timeout timeout) {
  impl_->finish("commit", [&](Transaction& tx) { tx.commit(timeout); });
}

void ThreadTransactions::rollback(Timeout timeout) {
  impl_->finish("rollback", [&](Transaction& tx) {
    if (!tx.finished()) tx.rollback(timeout);
  });
}

bool ThreadTransactions::in_transaction() const {
  const Transaction* tx = impl_->mine();
  return tx != nullptr && !tx->finished();
}

std::int64_t ThreadTransactions::execute(std::string_view sql, const Params& params) {
  return impl_->route([&](Transaction& tx) { return tx.execute(sql, params); },
                      [&](MultiplexedClient& c) { return c.execute(sql, params); });
}
std::int64_t ThreadTransactions::execute_named(std::string_view sql, const NamedParams& params) {
  return impl_->route([&](Transaction& tx) { return tx.execute_named(sql, params); },
                      [&](MultiplexedClient& c) { return c.execute_named(sql, params); });
}
std::int64_t ThreadTransactions::execute_returning_rowid(std::string_view sql,
                                                         const Params& params) {
  return impl_->route([&](Transaction& tx) { return tx.execute_returning_rowid(sql, params); },
                      [&](MultiplexedClient& c) { return c.execute_returning_rowid(sql, params); });
}
std::int64_t ThreadTransactions::execute_returning_rowid_named(std::string_view sql,
                                                               const NamedParams& params) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_returning_rowid_named(sql, params); },
      [&](MultiplexedClient& c) { return c.execute_returning_rowid_named(sql, params); });
}
std::int64_t ThreadTransactions::execute_many(std::string_view sql,
                                              const std::vector<Params>& params_batch) {
  return impl_->route([&](Transaction& tx) { return tx.execute_many(sql, params_batch); },
                      [&](MultiplexedClient& c) { return c.execute_many(sql, params_batch); });
}
std::int64_t ThreadTransactions::execute_many_named(std::string_view sql,
                                                    const std::vector<NamedParams>& params_batch) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_many_named(sql, params_batch); },
      [&](MultiplexedClient& c) { return c.execute_many_named(sql, params_batch); });
}
void ThreadTransactions::executescript(std::string_view sql) {
  impl_->route(
      [&](Transaction& tx) {
        tx.executescript(sql);
        return 0;
      },
      [&](MultiplexedClient& c) {
        c.executescript(sql);
        return 0;
      });
}
std::vector<Row> ThreadTransactions::execute_fetchall(std::string_view sql, const Params& params) {
  return impl_->route([&](Transaction& tx) { return tx.execute_fetchall(sql, params); },
                      [&](MultiplexedClient& c) { return c.execute_fetchall(sql, params); });
}
std::vector<Row> ThreadTransactions::execute_fetchall_named(std::string_view sql,
                                                            const NamedParams& params) {
  return impl_->route([&](Transaction& tx) { return tx.execute_fetchall_named(sql, params); },
                      [&](MultiplexedClient& c) { return c.execute_fetchall_named(sql, params); });
}

std::int64_t ThreadTransactions::execute(std::string_view sql, const Params& params,
                                         Timeout timeout) {
  return impl_->route([&](Transaction& tx) { return tx.execute(sql, params, timeout); },
                      [&](MultiplexedClient& c) { return c.execute(sql, params, timeout); });
}
std::int64_t ThreadTransactions::execute_named(std::string_view sql, const NamedParams& params,
                                               Timeout timeout) {
  return impl_->route([&](Transaction& tx) { return tx.execute_named(sql, params, timeout); },
                      [&](MultiplexedClient& c) { return c.execute_named(sql, params, timeout); });
}
std::int64_t ThreadTransactions::execute_returning_rowid(std::string_view sql, const Params& params,
                                                         Timeout timeout) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_returning_rowid(sql, params, timeout); },
      [&](MultiplexedClient& c) { return c.execute_returning_rowid(sql, params, timeout); });
}
std::int64_t ThreadTransactions::execute_returning_rowid_named(std::string_view sql,
                                                               const NamedParams& params,
                                                               Timeout timeout) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_returning_rowid_named(sql, params, timeout); },
      [&](MultiplexedClient& c) { return c.execute_returning_rowid_named(sql, params, timeout); });
}
std::int64_t ThreadTransactions::execute_many(std::string_view sql,
                                              const std::vector<Params>& params_batch,
                                              Timeout timeout) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_many(sql, params_batch, timeout); },
      [&](MultiplexedClient& c) { return c.execute_many(sql, params_batch, timeout); });
}
std::int64_t ThreadTransactions::execute_many_named(std::string_view sql,
                                                    const std::vector<NamedParams>& params_batch,
                                                    Timeout timeout) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_many_named(sql, params_batch, timeout); },
      [&](MultiplexedClient& c) { return c.execute_many_named(sql, params_batch, timeout); });
}
void ThreadTransactions::executescript(std::string_view sql, Timeout timeout) {
  impl_->route(
      [&](Transaction& tx) {
        tx.executescript(sql, timeout);
        return 0;
      },
      [&](MultiplexedClient& c) {
        c.executescript(sql, timeout);
        return 0;
      });
}
std::vector<Row> ThreadTransactions::execute_fetchall(std::string_view sql, const Params& params,
                                                      Timeout timeout) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_fetchall(sql, params, timeout); },
      [&](MultiplexedClient& c) { return c.execute_fetchall(sql, params, timeout); });
}
std::vector<Row> ThreadTransactions::execute_fetchall_named(std::string_view sql,
                                                            const NamedParams& params,
                                                            Timeout timeout) {
  return impl_->route(
      [&](Transaction& tx) { return tx.execute_fetchall_named(sql, params, timeout); },
      [&](MultiplexedClient& c) { return c.execute_fetchall_named(sql, params, timeout); });
}

}  // namespace pasyn
