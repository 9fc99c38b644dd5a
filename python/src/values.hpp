// Conversions between Python objects and pasyn values, rows and parameter lists, and of the
// bindings' arguments that need Python's own errors.
#pragma once

#include <nanobind/nanobind.h>

#include <pasyn/value.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pasyn::python {

namespace nb = nanobind;

/// Positional (list, tuple, one scalar) or named (dict) parameters.
using AnyParams = std::variant<Params, NamedParams>;

/// None, bool, int (64-bit; larger raises OverflowError), float, str, bytes/bytearray/memoryview.
Value to_value(nb::handle object);
/// None -> no parameters; dict -> named; list/tuple -> positional; anything else -> one value.
AnyParams to_params(nb::handle object);
/// A sequence of parameter sets, all positional or all named.
std::variant<std::vector<Params>, std::vector<NamedParams>> to_params_batch(nb::handle object);

nb::object to_python(const Value& value);
nb::tuple to_python(const Row& row);
nb::list to_python(const std::vector<Row>& rows);

// Arguments converted in the binding's body rather than by nanobind's casters, so that a value
// of the right type that cannot be converted raises what Python's own sqlite3 raises for it
// (a caster that fails makes nanobind raise a TypeError that lists the signatures instead).

/// The UTF-8 of a str (REQUIRES: `str` is one); UnicodeEncodeError for a str that has none (a
/// lone surrogate). The view lives as long as `str` (CPython keeps the UTF-8 in the object).
std::string_view utf8(nb::handle str);
/// A path argument (str, bytes or os.PathLike) as os.fsencode gives it: TypeError for another
/// type, ValueError for an embedded NUL, UnicodeEncodeError, as sqlite3.connect raises them.
std::string fs_path(nb::handle path);
/// An int argument within [lo, hi]; OverflowError outside it.
std::int64_t to_int(const nb::int_& value, std::int64_t lo, std::int64_t hi);
/// A non-negative int argument of 64 bits at most; OverflowError for a negative or larger one.
std::uint64_t to_u64(const nb::int_& value);

}  // namespace pasyn::python
