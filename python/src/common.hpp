// What the binding files of pasyn_sqlite_core._core share: errors, the GIL, timeouts, params.
#pragma once

#include <nanobind/nanobind.h>

#include <pasyn/client.hpp>

#include <chrono>
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

/// Runs `f` without the GIL.
template <typename F>
auto unlocked(F&& f) {
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
nb::object subscribe(MultiplexedClient& client, std::vector<std::string> tables,
                     std::optional<std::uint64_t> after_seq, std::optional<std::uint64_t> epoch);

}  // namespace pasyn::python
