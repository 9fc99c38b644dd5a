// What the binding files of pasyn_sqlite_core._core share: errors, the GIL, timeouts, params.
#pragma once

#include <nanobind/nanobind.h>

#include <pasyn/client.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "values.hpp"

namespace pasyn::python {

namespace nb = nanobind;

/// The Python exception instance for a C++ exception (module.cpp). REQUIRES: the GIL.
nb::object make_error(std::exception_ptr error);

/// Lets Ctrl-C end a blocking call made on the interpreter's main thread, where Python runs its
/// signal handlers: while a SignalWatch lives there, the library's waits (pasyn::InterruptScope)
/// take the GIL every 50 ms to ask whether SIGINT came (PyOS_InterruptOccurred, which reads the
/// flag Python's own C handler sets, then sets it again: PyErr_SetInterrupt). No Python code runs
/// inside the wait: the call gives up (InterruptedError, outcome unknown as after a timeout) and
/// the handler runs once the call has unwound, in the exception translator (module.cpp), whose
/// exception (KeyboardInterrupt) is then the call's. If the reply was being delivered as the
/// signal came, the call completes and the handler runs right after it, at the interpreter's
/// next instruction. Other signals, and SIGINT set to SIG_IGN/SIG_DFL, never end a wait (their
/// handlers run after the call, as before). Elsewhere it does nothing. Neither construction nor
/// destruction needs the GIL (the check takes it); one lives on the calling thread's stack.
class SignalWatch {
 public:
  SignalWatch();
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

 private:
  static bool check(void* self);
  std::optional<InterruptScope> scope_;
};

/// Records the interpreter's main thread (module init, and in a forked child: the forking
/// thread is its main thread).
void note_main_thread();

/// Runs `f` without the GIL (and, on the main thread, interruptible by Ctrl-C: SignalWatch).
template <typename F>
auto unlocked(F&& f) {
  SignalWatch watch;
  nb::gil_scoped_release release;
  return f();
}

/// Seconds (None: 0) as milliseconds, rounded to the nearest, at most ten years; ValueError when
/// negative or NaN.
std::chrono::milliseconds to_ms(std::optional<double> seconds);

/// A call's `timeout=` keyword: None keeps the client's timeout (no Timeout); otherwise the
/// call's own bound in seconds, where 0 and infinity mean no bound and a positive value below
/// 1 ms is 1 ms (never rounded down to "no bound"). ValueError when negative or NaN.
std::optional<Timeout> to_timeout(std::optional<double> seconds);

/// Calls `positional` or `named` with the parameters it holds.
template <typename Positional, typename Named>
auto dispatch(const AnyParams& params, Positional positional, Named named) {
  if (const auto* p = std::get_if<Params>(&params)) return positional(*p);
  return named(std::get<NamedParams>(params));
}

/// Binds Transaction and MultiplexedClient (writer.cpp).
void bind_writer(nb::module_& m);

/// Binds ChangeFeed and Change (feed.cpp).
void bind_feed(nb::module_& m);
/// MultiplexedClient.subscribe(): a ChangeFeed object (feed.cpp); with `epoch`, resuming after
/// `after_seq` of that daemon run only (ValueError without `after_seq`).
/// `tables`: None (every table) or an iterable of str; the integers as to_u64 takes them.
nb::object subscribe(MultiplexedClient& client, nb::handle tables,
                     const std::optional<nb::int_>& after_seq,
                     const std::optional<nb::int_>& epoch);

}  // namespace pasyn::python
