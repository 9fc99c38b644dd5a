// Conversions between Python objects and pasyn values, rows and parameter lists.
#pragma once

#include <nanobind/nanobind.h>

#include <pasyn/value.hpp>

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

}  // namespace pasyn::python
