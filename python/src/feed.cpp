// pasyn_sqlite_core._core: ChangeFeed and Change (the change feed, PROTOCOL.md §8), returned by
// MultiplexedClient.subscribe(). Iterating a feed blocks until the next change (without the GIL,
// in slices of kSlice so that Ctrl-C and other signals are handled); next(timeout) returns None
// when nothing came in time. pasyn_sqlite.aio iterates it asynchronously.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <pasyn/pasyn.hpp>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"

namespace pasyn::python {
namespace {

using namespace nb::literals;

constexpr std::chrono::milliseconds kSlice{200};

const char* kind_name(ChangeKind k) {
  switch (k) {
    case ChangeKind::insert:
      return "insert";
    case ChangeKind::update:
      return "update";
    case ChangeKind::remove:
      return "delete";
    case ChangeKind::gap:
      return "gap";
    case ChangeKind::reset:
      break;
  }
  return "reset";
}

// A ChangeFeed is for one thread at a time; Python may call close() from one thread (or an
// asyncio task) while another waits in next() without the GIL: `mu` orders them, so close()
// waits for the next() in progress (at most its timeout) instead of closing under it.
struct PyFeed {
  std::optional<ChangeFeed> feed;
  std::mutex mu;

  ChangeFeed& get() {
    if (!feed) throw ConnectionClosedError("the change feed is closed");
    return *feed;
  }
  std::optional<Change> next(std::chrono::milliseconds timeout) {
    auto& f = get();
    nb::gil_scoped_release release;
    std::lock_guard lk(mu);
    return f.next(timeout);
  }
  template <typename F>
  auto locked(F&& f) {
    nb::gil_scoped_release release;
    std::lock_guard lk(mu);
    return f(get());
  }
  void close() {
    nb::gil_scoped_release release;
    std::lock_guard lk(mu);
    if (feed) feed->close();
  }
};

}  // namespace

nb::object subscribe(MultiplexedClient& client, nb::handle tables_arg,
                     const std::optional<nb::int_>& after_seq_arg,
                     const std::optional<nb::int_>& epoch_arg) {
  std::vector<std::string> tables;
  if (!tables_arg.is_none()) {
    if (nb::isinstance<nb::str>(tables_arg)) {
      throw nb::type_error("subscribe(): tables is a list of table names, not one str");
    }
    for (nb::handle t : nb::iter(tables_arg)) {
      if (!nb::isinstance<nb::str>(t)) throw nb::type_error("subscribe(): a table name is a str");
      tables.emplace_back(utf8(t));
    }
  }
  const auto u64 = [](const std::optional<nb::int_>& v) -> std::optional<std::uint64_t> {
    if (!v) return std::nullopt;
    return to_u64(*v);
  };
  const std::optional<std::uint64_t> after_seq = u64(after_seq_arg), epoch = u64(epoch_arg);
  // An epoch names the run an after_seq belongs to: alone it names no resume point.
  if (epoch && !after_seq)
    throw nb::value_error("subscribe(): epoch needs after_seq (a commit of that epoch)");
  auto feed = unlocked([&] {
    return epoch ? client.subscribe(std::move(tables), *epoch, *after_seq)
                 : client.subscribe(std::move(tables), after_seq);
  });
  auto* py = new PyFeed();
  py->feed.emplace(std::move(feed));
  return nb::cast(py, nb::rv_policy::take_ownership);
}

void bind_feed(nb::module_& m) {
  nb::class_<Change>(m, "Change")
      .def_ro("commit_seq", &Change::commit_seq)
      .def_ro("table", &Change::table)
      .def_prop_ro("kind", [](const Change& c) { return kind_name(c.kind); })
      .def_ro("rowid", &Change::rowid)
      .def("__repr__", [](const Change& c) {
        std::string s = "Change(commit_seq=" + std::to_string(c.commit_seq) + ", kind='" +
                        kind_name(c.kind) + "'";
        if (!c.table.empty()) {
          s += ", table=" + nb::cast<std::string>(nb::repr(nb::str(c.table.c_str()))) +
               ", rowid=" + std::to_string(c.rowid);
        }
        return s + ")";
      });

  nb::class_<PyFeed>(m, "ChangeFeed")
      .def(
          "next",
          [](PyFeed& self, double timeout) -> std::optional<Change> {
            return self.next(to_ms(timeout));
          },
          "timeout"_a)
      .def("__iter__", [](nb::object self) { return self; })
      .def("__next__",
           [](PyFeed& self) -> Change {
             for (;;) {
               auto c = self.next(kSlice);
               if (c) return std::move(*c);
               if (PyErr_CheckSignals() != 0) throw nb::python_error();
             }
           })
      .def_prop_ro("last_seq",
                   [](PyFeed& self) { return self.locked([](auto& f) { return f.last_seq(); }); })
      .def_prop_ro("epoch",
                   [](PyFeed& self) { return self.locked([](auto& f) { return f.epoch(); }); })
      .def("close", &PyFeed::close)
      .def("__enter__", [](nb::object self) { return self; })
      .def("__exit__", [](PyFeed& self, nb::args) {
        self.close();
        return false;
      });
}

}  // namespace pasyn::python
