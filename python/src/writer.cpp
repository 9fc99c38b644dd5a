// pasyn_sqlite_core._core: Transaction and MultiplexedClient (the writer side), with the
// asynchronous forms that pasyn_sqlite.aio completes through the client's Dispatcher. Every
// blocking call takes an optional `timeout=` (seconds; None: the client's): see to_timeout().
// The blocking and asynchronous statement calls the two classes share are defined once
// (def_statement_calls, def_async_statement_calls).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <sqlite3.h>
#include <unistd.h>

#include <pasyn/pasyn.hpp>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>

#include "common.hpp"
#include "dispatcher.hpp"
#include "values.hpp"

namespace pasyn::python {
namespace {

using namespace nb::literals;

struct PyTransaction {
  std::optional<Transaction> tx;
  std::uint64_t token = 0;
  nb::object client;  // the MultiplexedClient it came from (its Dispatcher, for _*_async calls)
  // Set while an asynchronous transaction is unfinished: the Dispatcher's count of them.
  std::shared_ptr<std::atomic<int>> counted;
  bool ended_by_call = false;  // commit() or rollback() was called (note_ended_by_call)

  PyTransaction() = default;
  PyTransaction(const PyTransaction&) = delete;
  PyTransaction& operator=(const PyTransaction&) = delete;
  ~PyTransaction() { uncount(); }

  void uncount() {
    if (counted) counted->fetch_sub(1, std::memory_order_release);
    counted.reset();
  }
  // A finished transaction is handed on all the same: its calls throw what finished it, the
  // cause again when the daemon or the connection ended it (so every later call says why, and
  // not "already finished" as if the program had committed), else TransactionError.
  Transaction& get() {
    if (!tx) {
      throw TransactionError("the transaction is already finished (committed or rolled back)",
                             SQLITE_MISUSE, SQLITE_MISUSE);
    }
    if (tx->finished()) uncount();
    return *tx;
  }
};

// A transaction's commit() or rollback() was called (whatever came of it): the end of a `with`
// block then has nothing to report (see __exit__). Nothing to note for a client.
template <typename Py>
void note_ended_by_call(Py& self) {
  if constexpr (std::is_same_v<Py, PyTransaction>) self.ended_by_call = true;
}

std::atomic<std::uint64_t> next_token{1};

nb::object int_result(std::int64_t v) { return nb::int_(v); }
nb::object rows_result(std::vector<Row> rows) { return to_python(rows); }
nb::object none_result() { return nb::none(); }
nb::object true_result() { return nb::bool_(true); }

struct PyClient {
  std::unique_ptr<MultiplexedClient> client;
  std::unique_ptr<ThreadTransactions> threads;
  std::unique_ptr<Dispatcher> dispatcher;  // created by the first asynchronous call
  pid_t dispatcher_pid = 0;                // the process whose thread it runs
  std::mutex dispatcher_mu;
  std::atomic<bool> closed{false};  // close() was called: the thread-transaction calls refuse

  PyClient() = default;
  PyClient(const PyClient&) = delete;
  PyClient& operator=(const PyClient&) = delete;
  // Dropping the last reference closes the client first, as close() does: the calls still
  // waiting fail at once (ConnectionLostError), so stopping the completion thread does not wait
  // for their replies while the loop that dropped it is blocked (probe21: as long as the daemon
  // held them back).
  ~PyClient() {
    close();
    // Stopped by a callback on the completion thread itself: that thread, detached by stop(),
    // may still run in the Dispatcher. Left alive (leaked), never freed under it (review19).
    if (dispatcher && dispatcher->detached()) (void)dispatcher.release();
  }

  // After fork() the child has the parent's Dispatcher but not its thread (nor the requests it
  // awaits, whose replies go to the parent): stopping it would join a thread that does not
  // exist here, and its requests would never complete. It is left untouched (leaked), and the
  // child's first asynchronous call starts one of its own (a probe's aio calls in a forked
  // child never completed, though their writes committed). REQUIRES: dispatcher_mu, or no
  // other thread (the destructor).
  void forget_parents_dispatcher() noexcept {
    if (dispatcher && dispatcher_pid != ::getpid()) (void)dispatcher.release();
  }

  MultiplexedClient& get() {
    if (!client) throw ConnectionClosedError("client is closed");
    return *client;
  }
  // `threads` lives as long as the client object: close() leaves it, since another thread may be
  // inside a call on its transaction (probe41: close() destroyed it under such a call, a
  // use-after-free under valgrind); its calls are refused from then on.
  ThreadTransactions& tx() {
    if (closed.load(std::memory_order_acquire)) throw ConnectionClosedError("client is closed");
    return *threads;
  }
  Dispatcher& async() {
    std::lock_guard lk(dispatcher_mu);
    forget_parents_dispatcher();
    if (!dispatcher) {
      dispatcher = std::make_unique<Dispatcher>(&make_error);
      dispatcher_pid = ::getpid();
    }
    return *dispatcher;
  }
  void close() {
    {
      nb::gil_scoped_release release;
      closed.store(true, std::memory_order_release);
      // The calls still waiting fail now (ConnectionLostError: their outcome is unknown), so
      // the completion thread below hands them to their loops and ends at once, instead of
      // waiting for their replies while the loop that called close() is blocked.
      if (client) client->close();
    }
    Dispatcher* d = nullptr;
    {
      std::lock_guard lk(dispatcher_mu);
      forget_parents_dispatcher();
      d = dispatcher.get();
    }
    if (d) d->stop();  // without dispatcher_mu: it joins the thread that runs the callbacks
  }
};

// One unit of a Dispatcher's count of open asynchronous transactions, given back when
// destroyed unless release()d to the transaction's handle.
class OpenCount {
 public:
  explicit OpenCount(std::shared_ptr<std::atomic<int>> count) : count_(std::move(count)) {
    count_->fetch_add(1, std::memory_order_acq_rel);
  }
  OpenCount(const OpenCount&) = delete;
  OpenCount& operator=(const OpenCount&) = delete;
  ~OpenCount() {
    if (count_) count_->fetch_sub(1, std::memory_order_release);
  }
  std::shared_ptr<std::atomic<int>> release() { return std::move(count_); }

 private:
  std::shared_ptr<std::atomic<int>> count_;
};

// The completion thread of the client a transaction came from.
Dispatcher& dispatcher_of(PyTransaction& t) {
  if (!t.client.is_valid()) throw ConnectionClosedError("client is closed");
  return nb::cast<PyClient&>(t.client).async();
}

// Queues an asynchronous request of transaction `t` in its own lane.
template <typename T, typename Convert>
void submit_in(PyTransaction& t, std::future<T> future, Convert convert, nb::object callback) {
  dispatcher_of(t).submit(t.token, make_pending(std::move(future), std::move(convert)),
                          std::move(callback));
}

// Queues an asynchronous request of the client itself (lane 0: no transaction's order to keep).
template <typename T, typename Convert>
void submit_in(PyClient& c, std::future<T> future, Convert convert, nb::object callback) {
  c.async().submit(0, make_pending(std::move(future), std::move(convert)), std::move(callback));
}

// Calls `f()` without the call's own Timeout (None: the client's request_timeout applies), or
// `f(timeout)` with it: `f` passes its arguments on to the C++ call.
template <typename F>
auto timed(const std::optional<Timeout>& timeout, F f) {
  if (timeout) return f(*timeout);
  return f();
}

// The asynchronous statement calls for pasyn_sqlite.aio that Transaction and MultiplexedClient
// share: `(self.*Get)()` is the C++ object they call, and submit_in(self, ...) queues the future
// in the object's lane; `callback(result, error)` is called (with the GIL, from the client's
// completion thread) once the reply arrives. (execute_many differs: the client has no named
// form, so each class defines its own.)
template <typename Py, auto Get>
void def_async_statement_calls(nb::class_<Py>& cls) {
  cls.def(
         "_execute_async",
         [](Py& self, const nb::str& sql_arg, nb::handle params, bool rowid, nb::object callback) {
           const std::string_view sql = utf8(sql_arg);
           AnyParams p = to_params(params);
           auto& c = (self.*Get)();
           auto future = unlocked([&] {
             return dispatch(
                 p,
                 [&](const Params& x) {
                   return rowid ? c.execute_returning_rowid_async(sql, x) : c.execute_async(sql, x);
                 },
                 [&](const NamedParams& x) {
                   return rowid ? c.execute_returning_rowid_named_async(sql, x)
                                : c.execute_named_async(sql, x);
                 });
           });
           submit_in(self, std::move(future), &int_result, std::move(callback));
         },
         "sql"_a, "params"_a.none(), "rowid"_a, "callback"_a)
      .def(
          "_execute_fetchall_async",
          [](Py& self, const nb::str& sql_arg, nb::handle params, nb::object callback) {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            auto& c = (self.*Get)();
            auto future = unlocked([&] {
              return dispatch(
                  p, [&](const Params& x) { return c.execute_fetchall_async(sql, x); },
                  [&](const NamedParams& x) { return c.execute_fetchall_named_async(sql, x); });
            });
            submit_in(self, std::move(future), &rows_result, std::move(callback));
          },
          "sql"_a, "params"_a.none(), "callback"_a)
      .def(
          "_executescript_async",
          [](Py& self, const nb::str& sql_arg, nb::object callback) {
            const std::string_view sql = utf8(sql_arg);
            auto& c = (self.*Get)();
            auto future = unlocked([&] { return c.executescript_async(sql); });
            submit_in(self, std::move(future), &none_result, std::move(callback));
          },
          "sql"_a, "callback"_a);
}

// The blocking statement calls, commit() and rollback() that Transaction and MultiplexedClient
// (through the calling thread's ThreadTransactions) share: `(self.*Get)()` is the C++ object
// they call, which has the same methods in both.
template <typename Py, auto Get>
void def_statement_calls(nb::class_<Py>& cls) {
  cls.def(
         "execute",
         [](Py& self, const nb::str& sql_arg, nb::handle params, std::optional<double> timeout) {
           const std::string_view sql = utf8(sql_arg);
           AnyParams p = to_params(params);
           const auto bound = to_timeout(timeout);
           auto& c = (self.*Get)();
           return unlocked([&] {
             return timed(bound, [&](auto... own) {
               return dispatch(
                   p, [&](const Params& x) { return c.execute(sql, x, own...); },
                   [&](const NamedParams& x) { return c.execute_named(sql, x, own...); });
             });
           });
         },
         "sql"_a, "params"_a.none() = nb::none(), nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "execute_returning_rowid",
          [](Py& self, const nb::str& sql_arg, nb::handle params, std::optional<double> timeout) {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            return unlocked([&] {
              return timed(bound, [&](auto... own) {
                return dispatch(
                    p, [&](const Params& x) { return c.execute_returning_rowid(sql, x, own...); },
                    [&](const NamedParams& x) {
                      return c.execute_returning_rowid_named(sql, x, own...);
                    });
              });
            });
          },
          "sql"_a, "params"_a.none() = nb::none(), nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "execute_many",
          [](Py& self, const nb::str& sql_arg, nb::handle batch, std::optional<double> timeout) {
            const std::string_view sql = utf8(sql_arg);
            auto b = to_params_batch(batch);
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            return unlocked([&] {
              return timed(bound, [&](auto... own) {
                if (auto* p = std::get_if<std::vector<Params>>(&b)) {
                  return c.execute_many(sql, *p, own...);
                }
                return c.execute_many_named(sql, std::get<std::vector<NamedParams>>(b), own...);
              });
            });
          },
          "sql"_a, "params_batch"_a, nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "executescript",
          [](Py& self, const nb::str& sql_arg, std::optional<double> timeout) {
            const std::string_view sql = utf8(sql_arg);
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            unlocked([&] {
              timed(bound, [&](auto... own) { c.executescript(sql, own...); });
              return 0;
            });
          },
          "sql"_a, nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "execute_fetchall",
          [](Py& self, const nb::str& sql_arg, nb::handle params, std::optional<double> timeout) {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            auto rows = unlocked([&] {
              return timed(bound, [&](auto... own) {
                return dispatch(
                    p, [&](const Params& x) { return c.execute_fetchall(sql, x, own...); },
                    [&](const NamedParams& x) { return c.execute_fetchall_named(sql, x, own...); });
              });
            });
            return to_python(rows);
          },
          "sql"_a, "params"_a.none() = nb::none(), nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "execute_fetchone",
          [](Py& self, const nb::str& sql_arg, nb::handle params,
             std::optional<double> timeout) -> nb::object {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            auto rows = unlocked([&] {
              return timed(bound, [&](auto... own) {
                return dispatch(
                    p, [&](const Params& x) { return c.execute_fetchall(sql, x, own...); },
                    [&](const NamedParams& x) { return c.execute_fetchall_named(sql, x, own...); });
              });
            });
            if (rows.empty()) return nb::none();
            return to_python(rows.front());
          },
          "sql"_a, "params"_a.none() = nb::none(), nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "commit",
          [](Py& self, std::optional<double> timeout) {
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            note_ended_by_call(self);
            unlocked([&] {
              timed(bound, [&](auto... own) { c.commit(own...); });
              return 0;
            });
          },
          nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "rollback",
          [](Py& self, std::optional<double> timeout) {
            const auto bound = to_timeout(timeout);
            auto& c = (self.*Get)();
            note_ended_by_call(self);
            unlocked([&] {
              timed(bound, [&](auto... own) { c.rollback(own...); });
              return 0;
            });
          },
          nb::kw_only(), "timeout"_a.none() = nb::none());
}

}  // namespace

void bind_writer(nb::module_& m) {
  // -- Transaction
  nb::class_<PyTransaction> transaction(m, "Transaction");
  def_statement_calls<PyTransaction, &PyTransaction::get>(transaction);
  def_async_statement_calls<PyTransaction, &PyTransaction::get>(transaction);
  transaction
      // The rest of the asynchronous forms (see def_async_statement_calls).
      .def(
          "_execute_many_async",
          [](PyTransaction& t, const nb::str& sql_arg, nb::handle batch, nb::object callback) {
            const std::string_view sql = utf8(sql_arg);
            auto b = to_params_batch(batch);
            Transaction& tx = t.get();
            auto future = unlocked([&] {
              if (auto* p = std::get_if<std::vector<Params>>(&b)) {
                return tx.execute_many_async(sql, *p);
              }
              return tx.execute_many_named_async(sql, std::get<std::vector<NamedParams>>(b));
            });
            submit_in(t, std::move(future), &int_result, std::move(callback));
          },
          "sql"_a, "params_batch"_a, "callback"_a)
      .def(
          "_commit_async",
          [](PyTransaction& t, nb::object callback) {
            Transaction& tx = t.get();
            t.ended_by_call = true;
            auto future = unlocked([&] { return tx.commit_async(); });
            submit_in(t, std::move(future), &none_result, std::move(callback));
            t.uncount();  // finished: nothing of it waits for Python any more
          },
          "callback"_a)
      .def(
          "_rollback_async",
          [](PyTransaction& t, nb::object callback) {
            Transaction& tx = t.get();
            t.ended_by_call = true;
            auto future = unlocked([&] { return tx.rollback_async(); });
            submit_in(t, std::move(future), &none_result, std::move(callback));
            t.uncount();
          },
          "callback"_a)
      .def_prop_ro("finished", [](PyTransaction& t) { return !t.tx || t.tx->finished(); })
      .def_prop_ro("_ended_by_call", [](PyTransaction& t) { return t.ended_by_call; })
      .def_prop_ro("token", [](PyTransaction& t) { return t.token; })
      .def("__enter__", [](nb::object self) { return self; })
      .def("__exit__", [](PyTransaction& t, nb::args args) {
        nb::handle type = args.size() > 0 ? args[0] : nb::none();
        if (!t.tx) return false;
        Transaction& tx = *t.tx;
        if (tx.finished()) {
          // A block that ends normally promised a commit: if the daemon or the connection ended
          // the transaction (and the block caught what said so), the commit throws that cause
          // again, instead of the block ending as if its writes were committed. After the
          // block's own commit() or rollback(), whatever came of it, there is nothing to say.
          if (!type.is_none() || t.ended_by_call) return false;
          tx.commit();
          return false;
        }
        if (type.is_none()) {
          unlocked([&] {
            tx.commit();
            return 0;
          });
        } else {
          try {
            unlocked([&] {
              tx.rollback();
              return 0;
            });
          } catch (const pasyn::Error&) {  // the block's own exception is the one to see
          }
        }
        return false;
      });

  // -- MultiplexedClient
  nb::class_<PyClient> client(m, "MultiplexedClient");
  def_statement_calls<PyClient, &PyClient::tx>(client);
  def_async_statement_calls<PyClient, &PyClient::get>(client);
  client
      .def(
          "__init__",
          [](PyClient* self, nb::handle socket_path_arg, std::optional<double> connect_timeout,
             std::optional<double> timeout) {
            const std::string socket_path = fs_path(socket_path_arg);
            ClientOptions options;
            if (connect_timeout) options.connect_timeout = to_ms(connect_timeout);
            if (timeout) options.request_timeout = to_ms(timeout);
            auto client =
                unlocked([&] { return std::make_unique<MultiplexedClient>(socket_path, options); });
            new (self) PyClient();
            self->client = std::move(client);
            self->threads = std::make_unique<ThreadTransactions>(*self->client);
          },
          "socket_path"_a, nb::kw_only(), "connect_timeout"_a = nb::none(),
          "timeout"_a = nb::none())
      .def(
          "begin",
          [](PyClient& self, std::optional<double> timeout) {
            const auto bound = to_timeout(timeout);
            auto& c = self.tx();
            unlocked([&] {
              timed(bound, [&](auto... own) { c.begin(own...); });
              return 0;
            });
          },
          nb::kw_only(), "timeout"_a.none() = nb::none())
      .def(
          "ping",
          [](PyClient& self, std::optional<double> timeout) {
            const auto bound = to_timeout(timeout);
            auto& c = self.get();
            return unlocked(
                [&] { return timed(bound, [&](auto... own) { return c.ping(own...); }); });
          },
          nb::kw_only(), "timeout"_a.none() = nb::none())
      .def("shutdown_server",
           [](PyClient& self) {
             auto& c = self.get();
             unlocked([&] {
               c.shutdown_server();
               return 0;
             });
           })
      .def_prop_ro("in_transaction", [](PyClient& self) { return self.tx().in_transaction(); })
      .def(
          "begin_exclusive",
          [](nb::object self, std::optional<double> timeout) {
            const auto bound = to_timeout(timeout);
            auto& client = nb::cast<PyClient&>(self);
            auto& c = client.get();
            // The daemon would queue this BEGIN behind the thread's own transaction, which only
            // this thread can end: it waited for itself until --lock-wait (probe41).
            if (client.tx().in_transaction()) {
              throw TransactionCommandError(
                  "this thread already has an open transaction (client.begin()): "
                  "begin_exclusive() would wait for it; commit() or rollback() it first",
                  SQLITE_MISUSE, SQLITE_MISUSE);
            }
            auto tx = unlocked(
                [&] { return timed(bound, [&](auto... own) { return c.begin(own...); }); });
            auto* t = new PyTransaction();
            t->tx.emplace(std::move(tx));
            t->token = next_token++;
            t->client = std::move(self);
            return t;
          },
          nb::kw_only(), "timeout"_a.none() = nb::none(), nb::rv_policy::take_ownership)
      .def("stats",
           [](PyClient& self) {
             auto& c = self.get();
             auto report = unlocked([&] { return c.stats(); });
             nb::dict d;
             for (const auto& [k, v] : report) d[nb::str(k.c_str())] = to_python(v);
             return d;
           })
      .def(
          "subscribe",
          [](PyClient& self, nb::handle tables, std::optional<nb::int_> after_seq,
             std::optional<nb::int_> epoch) {
            return subscribe(self.get(), tables, after_seq, epoch);
          },
          "tables"_a.none() = nb::none(), nb::kw_only(), "after_seq"_a = nb::none(),
          "epoch"_a = nb::none())
      .def_prop_ro("socket_path", [](PyClient& self) { return self.get().socket_path(); })
      .def("close", &PyClient::close)
      .def("__enter__", [](nb::object self) { return self; })
      .def("__exit__",
           [](PyClient& self, nb::args) {
             self.close();
             return false;
           })
      // The rest of the asynchronous forms (see def_async_statement_calls).
      .def(
          "_execute_many_async",
          [](PyClient& self, const nb::str& sql_arg, nb::handle batch, nb::object callback) {
            const std::string_view sql = utf8(sql_arg);
            auto b = to_params_batch(batch);
            auto& c = self.get();
            auto* p = std::get_if<std::vector<Params>>(&b);
            if (p == nullptr)
              throw nb::type_error("aio execute_many takes positional parameter sets");
            auto future = unlocked([&] { return c.execute_many_async(sql, *p); });
            submit_in(self, std::move(future), &int_result, std::move(callback));
          },
          "sql"_a, "params_batch"_a, "callback"_a)
      .def(
          "_ping_async",
          [](PyClient& self, nb::object callback) {
            auto& c = self.get();
            auto future = unlocked([&] { return c.ping_async(); });
            submit_in(self, std::move(future), &true_result, std::move(callback));
          },
          "callback"_a)
      // `callback(transaction, error)`: a Transaction whose _*_async calls complete the same way.
      // Should nobody take it (the await was cancelled, the loop closed), dropping it rolls the
      // transaction back.
      .def(
          "_begin_async",
          [](nb::object self_object, nb::object callback) {
            auto& self = nb::cast<PyClient&>(self_object);
            auto& c = self.get();
            auto& dispatcher = self.async();
            // Counted as open from now on: until the Transaction is made, or the BEGIN failed.
            auto count = std::make_shared<OpenCount>(dispatcher.open_transactions());
            auto future = unlocked([&] { return c.begin_async(); });
            auto make = [self_object, count](Transaction tx) -> nb::object {
              auto* t = new PyTransaction();
              t->tx.emplace(std::move(tx));
              t->token = next_token++;
              t->client = self_object;
              t->counted = count->release();
              return nb::cast(t, nb::rv_policy::take_ownership);
            };
            dispatcher.submit(0, make_pending(std::move(future), std::move(make)),
                              std::move(callback));
          },
          "callback"_a);
}

}  // namespace pasyn::python
