// pasyn_sqlite_core._core: the seed's pasyn_sqlite_core API on libpasyn-client (nanobind).
//
// Every call that can block (a socket wait, an SQLite step, a pool wait) releases the GIL after
// its arguments are converted and takes it back before building the result. Exceptions of the
// C++ library become the Python classes pasyn_sqlite_core/__init__.py defines: it hands them
// to _set_error_factory, which builds an exception instance from (kind, message, code,
// extended code).
// The writer side (Transaction, MultiplexedClient) is bound in writer.cpp, the asyncio
// completion thread lives in dispatcher.{hpp,cpp}, value conversions in values.{hpp,cpp}.
// Over 600 lines: the module's errors and Ctrl-C handling, which every binding file uses, and
// the read side's classes (server handle, OpenFlags, Cursor, Connection, ReadPool), each
// short, with the NB_MODULE that registers them all.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <sqlite3.h>

#include <pasyn/pasyn.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "common.hpp"
#include "dispatcher.hpp"
#include "values.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace pasyn::python {
namespace {

nb::object& error_factory() {
  static nb::object* factory = new nb::object();  // leaked: outlives interpreter shutdown
  return *factory;
}

}  // namespace

namespace {
unsigned long main_thread_ident = 0;  // NOLINT: set once at import, under the GIL
}  // namespace

void note_main_thread() {
  main_thread_ident = nb::cast<unsigned long>(
      nb::module_::import_("threading").attr("main_thread")().attr("ident"));
}

SignalWatch::SignalWatch() {
  if (PyThread_get_thread_ident() == main_thread_ident) {
    scope_.emplace(&SignalWatch::check, this, std::chrono::milliseconds(50));
  }
}

// Called by the library's wait, without the GIL, on the main thread. Runs no Python code.
bool SignalWatch::check(void*) {
  nb::gil_scoped_acquire gil;
  if (PyOS_InterruptOccurred() == 0) return false;
  PyErr_SetInterrupt();  // the handler still runs, once the call has unwound (translator)
  return true;
}

// The Python exception instance for the C++ exception in flight. REQUIRES: the GIL.
nb::object make_error(std::exception_ptr error) {
  const char* kind = "Error";
  std::string message;
  int code = 0, extended = 0;
  try {
    std::rethrow_exception(error);
  } catch (const SqliteError& e) {
    message = e.what();
    code = e.code();
    extended = e.extended_code();
    if (dynamic_cast<const IntegrityError*>(&e))
      kind = "IntegrityError";
    else if (dynamic_cast<const OperationalError*>(&e))
      kind = "OperationalError";
    else if (dynamic_cast<const TransactionCommandError*>(&e))
      kind = "TransactionCommandError";
    else if (dynamic_cast<const TransactionError*>(&e))
      kind = "TransactionError";
    else if (dynamic_cast<const ProgrammingError*>(&e))
      kind = "ProgrammingError";
    else if (dynamic_cast<const DataError*>(&e))
      kind = "DataError";
    else if (dynamic_cast<const InternalError*>(&e))
      kind = "InternalError";
    else if (dynamic_cast<const NotSupportedError*>(&e))
      kind = "NotSupportedError";
    else
      kind = "OperationalError";  // every pasyn error is also a sqlite3.Error
  } catch (const ConnectionClosedError& e) {
    kind = "ConnectionClosedError", message = e.what();
  } catch (const ConnectionLostError& e) {
    kind = "ConnectionLostError", message = e.what();
  } catch (const TimeoutError& e) {
    kind = "TimeoutError", message = e.what();
  } catch (const ProtocolError& e) {
    kind = "ProtocolError", message = e.what();
  } catch (const PoolClosedError& e) {
    kind = "PoolClosedError", message = e.what();
  } catch (const PoolError& e) {
    kind = "PoolError", message = e.what();
  } catch (const Error& e) {
    // Any other error of the library (a server that cannot start, ...): still an instance of
    // sqlite3.Error, as PYTHON-API.md promises of pasyn's errors.
    kind = "OperationalError", message = e.what();
  } catch (const std::exception& e) {
    kind = "OperationalError", message = e.what();
  }
  return error_factory()(kind, message, code, extended);
}

std::chrono::milliseconds to_ms(std::optional<double> seconds) {
  // Ten years: "forever" for every duration option, and far from the clocks' overflow (a
  // larger double, or inf, converted as it is would not even fit the integer).
  constexpr double kLongest = 10 * 365.25 * 24 * 3600;
  if (!seconds) return std::chrono::milliseconds(0);
  if (std::isnan(*seconds) || *seconds < 0) {
    throw nb::value_error("a timeout is a number of seconds, 0 or more");
  }
  const double s = std::min(*seconds, kLongest);
  // A positive duration under half a millisecond is 1 ms, not 0, which means "no bound" (or
  // "at once") to most of the options it goes to.
  const auto ms = static_cast<std::int64_t>(s * 1000.0 + 0.5);
  return std::chrono::milliseconds(s > 0 && ms == 0 ? 1 : ms);
}

std::optional<Timeout> to_timeout(std::optional<double> seconds) {
  if (!seconds) return std::nullopt;
  if (std::isnan(*seconds) || *seconds < 0) {
    throw nb::value_error("a timeout is a number of seconds, 0 or more");
  }
  if (*seconds >= 1e12) return Timeout(std::chrono::milliseconds(0));  // infinity, or as good
  return Timeout(to_ms(seconds));
}

namespace {

void raise(nb::handle exc) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
}

// ---- OpenFlags, Connection, Cursor ------------------------------------------------------------

// A Python Connection may be shared by threads (the GIL is released in every call), but the
// C++ Connection and its cursors are one thread at a time: Turns::mu serializes every use of
// them, and is taken without the GIL (a call holding it never needs the GIL). Without it, two
// threads sharing one Connection crashed the interpreter (probe15, probe17). interrupt() does
// not take it (it is the one call that may run beside another): it takes interrupt_mu, which
// close() holds while it lets go of the connection.
//
// After fork() the child's copy of mu may be held for good by a thread that does not exist
// there: a child never takes it. Its calls raise ProgrammingError, as the C++ Connection's do.
struct Turns {
  std::mutex mu;
  const pid_t pid = ::getpid();
  bool forked() const noexcept { return pid != ::getpid(); }
};

[[noreturn]] void throw_forked(const char* what) {
  throw ProgrammingError(std::string("this ") + what +
                             " was opened before fork(); SQLite connections must not cross "
                             "fork(): connect() again in the child",
                         SQLITE_MISUSE, SQLITE_MISUSE);
}

struct PyConnection {
  std::shared_ptr<Turns> turns = std::make_shared<Turns>();
  std::mutex interrupt_mu;  // see Turns
  std::unique_ptr<Connection> owned;
  std::optional<ReadPool::Lease> lease;  // when the connection came from a ReadPool
  // Null once closed; set and cleared under turns->mu and interrupt_mu both.
  std::atomic<Connection*> conn{nullptr};

  // Runs f(connection) without the GIL, holding turns->mu.
  template <typename F>
  auto with(F&& f) {
    if (turns->forked()) throw_forked("Connection");
    nb::gil_scoped_release release;
    std::lock_guard lk(turns->mu);
    Connection* c = conn.load();
    if (c == nullptr) throw ConnectionClosedError("connection is closed");
    return f(*c);
  }
  void close() {
    if (turns->forked()) {  // the C++ connection forgets the parent's handle untouched
      if (Connection* c = conn.exchange(nullptr); c != nullptr && owned) owned->close();
      return;
    }
    nb::gil_scoped_release release;
    std::lock_guard lk(turns->mu);  // waits for the call in progress
    std::lock_guard interrupting(interrupt_mu);
    conn.store(nullptr);
    if (lease) {
      lease.reset();  // back to the pool
    } else if (owned) {
      owned->close();
    }
  }
  void interrupt() {
    if (turns->forked()) return;
    std::lock_guard lk(interrupt_mu);  // held by close() only while it lets go
    if (Connection* c = conn.load()) c->interrupt();
  }
  bool closed() {
    if (turns->forked()) return conn.load() == nullptr;
    std::lock_guard lk(interrupt_mu);
    Connection* c = conn.load();
    return c == nullptr || c->closed();
  }
};

PyConnection* make_connection(Connection c) {
  auto* p = new PyConnection();
  p->owned = std::make_unique<Connection>(std::move(c));
  p->conn.store(p->owned.get());
  return p;
}

struct PyCursor {
  Cursor cursor;
  nb::object connection;         // keeps the Python connection alive
  std::shared_ptr<Turns> turns;  // its connection's
  std::int64_t arraysize = 1;

  PyCursor(Cursor c, nb::object conn, std::shared_ptr<Turns> t)
      : cursor(std::move(c)), connection(std::move(conn)), turns(std::move(t)) {}
  PyCursor(const PyCursor&) = delete;
  PyCursor& operator=(const PyCursor&) = delete;
  // Finalizing the statement uses the connection: not while another thread's call does. Called
  // with the GIL, which it lets go of if it has to wait (that call's thread may need another
  // Python thread, e.g. one that interrupts it, to end).
  ~PyCursor() {
    if (turns->forked()) {
      cursor.close();  // forgets the statement untouched
      return;
    }
    if (!turns->mu.try_lock()) {
      nb::gil_scoped_release release;
      turns->mu.lock();
    }
    std::lock_guard lk(turns->mu, std::adopt_lock);
    cursor.close();
  }

  // Runs f(cursor) without the GIL, holding the connection's turns->mu.
  template <typename F>
  auto with(F&& f) {
    if (turns->forked()) throw_forked("Cursor");
    nb::gil_scoped_release release;
    std::lock_guard lk(turns->mu);
    return f(cursor);
  }
};

}  // namespace
}  // namespace pasyn::python

using namespace pasyn;
using namespace pasyn::python;

NB_MODULE(_core, m) {
  m.doc() = "pasyn_sqlite_core native core (libpasyn-client)";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const pasyn::Error& e) {
      // Ctrl-C ended the wait (SignalWatch): the call has unwound, so Python's handlers run
      // now; what the SIGINT handler raises (KeyboardInterrupt) is the call's exception. A
      // handler that does not raise leaves the library's InterruptedError (outcome unknown).
      if (dynamic_cast<const pasyn::InterruptedError*>(&e) && PyErr_CheckSignals() != 0) return;
      try {
        raise(make_error(p));
      } catch (nb::python_error& e) {
        // Building the exception ran Python code, which raised instead: a KeyboardInterrupt
        // whose signal came during the call, most often. That one is what the caller sees (not
        // a RuntimeError holding its traceback).
        e.restore();
      }
    }
  });

  note_main_thread();
  m.def("_set_error_factory", [](nb::object f) { error_factory() = std::move(f); });
  m.def("_note_main_thread", &note_main_thread);
  m.def("_set_completion_hook",
        [](nb::object hook) { Dispatcher::set_batch_hook(std::move(hook)); });

  // -- utilities
  m.def("sqlite_version", [] { return std::string(sqlite3_libversion()); });
  m.def("sqlite_version_number", [] { return sqlite3_libversion_number(); });
  m.def("sqlite_threadsafe", [] { return sqlite3_threadsafe() != 0; });
  m.def("memory_used", [] { return static_cast<std::int64_t>(sqlite3_memory_used()); });
  m.def(
      "memory_highwater",
      [](bool reset) { return static_cast<std::int64_t>(sqlite3_memory_highwater(reset ? 1 : 0)); },
      "reset"_a = false);
  m.def(
      "default_socket_path",
      [](nb::handle database_path) { return pasyn::default_socket_path(fs_path(database_path)); },
      "database_path"_a);

  // -- writer server
  nb::class_<WriterServerHandle>(m, "WriterServerHandle")
      .def_prop_ro("socket_path", [](WriterServerHandle& h) { return h.socket_path(); })
      .def("shutdown", &WriterServerHandle::shutdown)
      .def("join",
           [](WriterServerHandle& h) {
             // In slices, so that Ctrl-C (a signal the interpreter handles between them)
             // interrupts the wait (probe30: it ignored SIGINT); join() then rethrows how the
             // server stopped.
             while (h.running()) {
               {
                 nb::gil_scoped_release release;
                 std::this_thread::sleep_for(std::chrono::milliseconds(20));
               }
               if (PyErr_CheckSignals() != 0) throw nb::python_error();
             }
             nb::gil_scoped_release release;
             h.join();
           })
      .def("stop", &WriterServerHandle::stop, nb::call_guard<nb::gil_scoped_release>())
      .def_prop_ro("running", &WriterServerHandle::running)
      .def("__enter__", [](nb::object self) { return self; })
      .def("__exit__", [](WriterServerHandle& h, nb::args) {
        nb::gil_scoped_release release;
        h.stop();
        return false;
      });

  m.def(
      "start_writer_server",
      [](nb::handle database_path, nb::handle socket_path, std::optional<double> lock_wait,
         std::optional<double> transaction_idle_timeout, std::optional<std::string> synchronous,
         std::optional<double> busy_timeout) {
        ServerOptions options;
        const std::string database = fs_path(database_path);
        if (!socket_path.is_none()) options.socket_path = fs_path(socket_path);
        if (lock_wait) options.lock_wait = to_ms(lock_wait);
        if (transaction_idle_timeout) {
          options.transaction_idle_timeout = to_ms(transaction_idle_timeout);
        }
        if (busy_timeout) options.busy_timeout = to_ms(busy_timeout);
        if (synchronous) {
          if (*synchronous == "full" || *synchronous == "FULL") {
            options.synchronous = Synchronous::kFull;
          } else if (*synchronous == "normal" || *synchronous == "NORMAL") {
            options.synchronous = Synchronous::kNormal;
          } else {
            throw nb::value_error("synchronous must be 'full' or 'normal'");
          }
        }
        nb::gil_scoped_release release;
        return start_writer_server(database, options);
      },
      "database_path"_a, "socket_path"_a.none() = nb::none(), nb::kw_only(),
      "lock_wait"_a = nb::none(), "transaction_idle_timeout"_a = nb::none(),
      "synchronous"_a = nb::none(), "busy_timeout"_a = nb::none());

  // -- OpenFlags
  nb::class_<OpenFlags>(m, "OpenFlags")
      .def_static("readonly", &OpenFlags::readonly)
      .def_static("readwrite", &OpenFlags::readwrite)
      .def_static("create", &OpenFlags::create)
      .def("uri", &OpenFlags::uri)
      .def("memory", &OpenFlags::memory)
      .def("shared_cache", &OpenFlags::shared_cache)
      .def("__or__", [](const OpenFlags& a, const OpenFlags& b) { return a | b; })
      .def("__eq__", [](const OpenFlags& a, const OpenFlags& b) { return a.bits() == b.bits(); })
      // Anything else: not equal, as Python's own types answer (probe41: `flags == None` raised
      // TypeError). NotImplemented lets the other operand answer, then `is` decides.
      .def(
          "__eq__",
          [](const OpenFlags&, nb::handle) { return nb::borrow<nb::object>(Py_NotImplemented); },
          "other"_a.none())
      .def("__hash__", [](const OpenFlags& a) { return a.bits(); })
      .def_prop_ro("bits", &OpenFlags::bits)
      .def("__repr__",
           [](const OpenFlags& f) { return "OpenFlags(" + std::to_string(f.bits()) + ")"; });

  // -- Cursor
  nb::class_<PyCursor>(m, "Cursor")
      .def("execute",
           [](nb::object self) {
             nb::cast<PyCursor&>(self).with([](Cursor& c) {
               c.execute();
               return 0;
             });
             return self;
           })
      .def("fetchone",
           [](PyCursor& c) -> nb::object {
             auto row = c.with([](Cursor& cur) { return cur.fetchone(); });
             if (!row) return nb::none();
             return to_python(*row);
           })
      .def(
          "fetchmany",
          [](PyCursor& c, std::optional<nb::int_> size) {
            const std::int64_t want = size ? to_int(*size, INT64_MIN, INT64_MAX) : c.arraysize;
            const auto n = static_cast<std::size_t>(std::max<std::int64_t>(0, want));
            auto rows = c.with([&](Cursor& cur) { return cur.fetchmany(n); });
            return to_python(rows);
          },
          "size"_a = nb::none())
      .def("fetchall",
           [](PyCursor& c) {
             auto rows = c.with([](Cursor& cur) { return cur.fetchall(); });
             return to_python(rows);
           })
      .def_prop_rw(
          "arraysize", [](PyCursor& c) { return c.arraysize; },
          [](PyCursor& c, const nb::int_& n) { c.arraysize = to_int(n, INT64_MIN, INT64_MAX); })
      .def_prop_ro("description",
                   [](PyCursor& c) -> nb::object {
                     const auto names = c.with([](Cursor& cur) { return cur.column_names(); });
                     if (names.empty()) return nb::none();
                     nb::list out;
                     for (const auto& n : names) {
                       out.append(nb::make_tuple(n, nb::none(), nb::none(), nb::none(), nb::none(),
                                                 nb::none(), nb::none()));
                     }
                     return nb::tuple(out);
                   })
      .def("close",
           [](PyCursor& c) {
             c.with([](Cursor& cur) {
               cur.close();
               return 0;
             });
           })
      .def("__iter__", [](nb::object self) { return self; })
      .def("__next__", [](PyCursor& c) -> nb::object {
        auto row = c.with([](Cursor& cur) { return cur.fetchone(); });
        if (!row) throw nb::stop_iteration();
        return to_python(*row);
      });

  // -- Connection
  nb::class_<PyConnection>(m, "Connection")
      .def(
          "__init__",
          [](PyConnection* self, nb::handle path_arg, std::optional<OpenFlags> flags) {
            const std::string path = fs_path(path_arg);
            auto c = unlocked([&] {
              return connect(path, flags.value_or(OpenFlags::readwrite() | OpenFlags::create()));
            });
            new (self) PyConnection();
            self->owned = std::make_unique<Connection>(std::move(c));
            self->conn.store(self->owned.get());
          },
          "path"_a, "flags"_a = nb::none())
      .def_static(
          "memory", [] { return make_connection(Connection::memory()); },
          nb::rv_policy::take_ownership)
      .def_static(
          "shared_memory",
          [](const nb::str& name) {
            return make_connection(Connection::shared_memory(std::string(utf8(name))));
          },
          "name"_a, nb::rv_policy::take_ownership)
      .def(
          "execute",
          [](PyConnection& self, const nb::str& sql_arg, nb::handle params) {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            return self.with([&](Connection& c) {
              return dispatch(
                  p, [&](const Params& x) { return c.execute(sql, x); },
                  [&](const NamedParams& x) { return c.execute_named(sql, x); });
            });
          },
          "sql"_a, "params"_a.none() = nb::none())
      .def(
          "execute_fetchall",
          [](PyConnection& self, const nb::str& sql_arg, nb::handle params) {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            auto rows = self.with([&](Connection& c) {
              return dispatch(
                  p, [&](const Params& x) { return c.execute_fetchall(sql, x); },
                  [&](const NamedParams& x) { return c.execute_fetchall_named(sql, x); });
            });
            return to_python(rows);
          },
          "sql"_a, "params"_a.none() = nb::none())
      .def(
          "execute_fetchone",
          [](PyConnection& self, const nb::str& sql_arg, nb::handle params) -> nb::object {
            const std::string_view sql = utf8(sql_arg);
            AnyParams p = to_params(params);
            auto row = self.with([&](Connection& c) {
              return dispatch(
                  p, [&](const Params& x) { return c.execute_fetchone(sql, x); },
                  [&](const NamedParams& x) { return c.execute_fetchone_named(sql, x); });
            });
            if (!row) return nb::none();
            return to_python(*row);
          },
          "sql"_a, "params"_a.none() = nb::none())
      .def(
          "executescript",
          [](PyConnection& self, const nb::str& sql_arg) {
            const std::string_view sql = utf8(sql_arg);
            self.with([&](Connection& c) {
              c.executescript(sql);
              return 0;
            });
          },
          "sql"_a)
      .def(
          "cursor",
          [](nb::object self, const nb::str& sql_arg, nb::handle params) {
            const std::string_view sql = utf8(sql_arg);
            auto& conn = nb::cast<PyConnection&>(self);
            AnyParams p = to_params(params);
            auto cursor = conn.with([&](Connection& c) {
              return dispatch(
                  p, [&](const Params& x) { return c.cursor(sql, x); },
                  [&](const NamedParams& x) { return c.cursor_named(sql, x); });
            });
            return new PyCursor(std::move(cursor), self, conn.turns);
          },
          "sql"_a, "params"_a.none() = nb::none(), nb::rv_policy::take_ownership)
      .def("begin",
           [](PyConnection& self) {
             self.with([](Connection& c) {
               c.begin();
               return 0;
             });
           })
      .def("commit",
           [](PyConnection& self) {
             self.with([](Connection& c) {
               c.commit();
               return 0;
             });
           })
      .def("rollback",
           [](PyConnection& self) {
             self.with([](Connection& c) {
               c.rollback();
               return 0;
             });
           })
      .def(
          "set_busy_timeout",
          [](PyConnection& self, const nb::int_& ms_arg) {
            const int ms = static_cast<int>(to_int(ms_arg, INT_MIN, INT_MAX));
            self.with([&](Connection& c) {
              c.set_busy_timeout(ms);
              return 0;
            });
          },
          "ms"_a)
      .def("interrupt", [](PyConnection& self) { self.interrupt(); })
      .def(
          "get_column_names",
          [](PyConnection& self, const nb::str& sql_arg) {
            const std::string_view sql = utf8(sql_arg);
            return self.with([&](Connection& c) { return c.column_names(sql); });
          },
          "sql"_a)
      .def("close", &PyConnection::close)
      .def_prop_ro("closed", [](PyConnection& self) { return self.closed(); })
      .def_prop_ro("in_transaction",
                   [](PyConnection& self) {
                     return self.with([](Connection& c) { return c.in_transaction(); });
                   })
      .def_prop_ro("last_insert_rowid",
                   [](PyConnection& self) {
                     return self.with([](Connection& c) { return c.last_insert_rowid(); });
                   })
      .def_prop_ro(
          "changes",
          [](PyConnection& self) { return self.with([](Connection& c) { return c.changes(); }); })
      .def_prop_ro("total_changes",
                   [](PyConnection& self) {
                     return self.with([](Connection& c) { return c.total_changes(); });
                   })
      .def("__enter__", [](nb::object self) { return self; })
      .def("__exit__", [](PyConnection& self, nb::args) {
        self.close();
        return false;
      });

  m.def(
      "connect",
      [](nb::handle path_arg, std::optional<OpenFlags> flags) {
        const std::string path = fs_path(path_arg);
        auto c = unlocked([&] {
          return connect(path, flags.value_or(OpenFlags::readwrite() | OpenFlags::create()));
        });
        return make_connection(std::move(c));
      },
      "path"_a, "flags"_a = nb::none(), nb::rv_policy::take_ownership);

  // -- ReadPool
  nb::class_<ReadPool>(m, "ReadPool")
      .def(
          "__init__",
          [](ReadPool* self, nb::handle path, const nb::int_& size,
             std::optional<OpenFlags> flags) {
            const auto n = static_cast<std::size_t>(to_int(size, 0, INT64_MAX));
            new (self) ReadPool(fs_path(path), n, flags.value_or(OpenFlags::readonly()));
          },
          "path"_a, "size"_a = 4, "flags"_a = nb::none())
      .def(
          "acquire",
          [](ReadPool& pool, std::optional<double> timeout) {
            // None: as long as it takes, in slices, so that Ctrl-C is seen between them; 0:
            // no wait (1 ms: PoolError when no connection is free), as timeout=0 means in
            // Python; else that many seconds.
            const auto slice = std::chrono::milliseconds(100);
            const auto bound = !timeout        ? slice
                               : *timeout == 0 ? std::chrono::milliseconds(1)
                                               : to_ms(timeout);
            std::optional<ReadPool::Lease> lease;
            while (!lease) {
              try {
                lease.emplace(unlocked([&] { return pool.acquire(bound); }));
              } catch (const PoolClosedError&) {
                throw;
              } catch (const PoolError&) {
                if (timeout) throw;
                if (PyErr_CheckSignals() != 0) throw nb::python_error();
              }
            }
            auto* p = new PyConnection();
            p->lease.emplace(std::move(*lease));
            p->conn.store(&**p->lease);
            return p;
          },
          "timeout"_a = nb::none(), nb::rv_policy::take_ownership)
      .def("close",
           [](ReadPool& pool) {
             nb::gil_scoped_release r;
             pool.close();
           })
      .def_prop_ro("closed", &ReadPool::closed)
      .def_prop_ro("size", &ReadPool::size)
      .def_prop_ro("open_connections", &ReadPool::open_connections);

  bind_feed(m);
  bind_writer(m);
}
