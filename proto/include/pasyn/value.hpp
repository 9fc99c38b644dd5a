// SQLite values, rows and parameter lists as plain standard-library types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace pasyn {

/// A BLOB value: raw bytes. Distinct from text, which is `std::string` (UTF-8).
using Blob = std::vector<std::uint8_t>;

/// One SQLite value: NULL, 64-bit integer, double, text or blob.
/// The alternatives are chosen so that brace lists convert without surprise:
/// `nullptr` is NULL, a signed integer (up to 64 bits) or bool is an integer (unsigned 64-bit
/// values do not convert: cast them), a floating literal is a double,
/// a string literal or `std::string` is text, and a `Blob` is a blob.
using Value = std::variant<std::nullptr_t, std::int64_t, double, std::string, Blob>;

/// Positional parameters, bound to `?`, `?NNN`, `:name`, `@name` and `$name` in order of
/// their SQLite parameter index (1-based index i takes `params[i - 1]`).
using Params = std::vector<Value>;

/// Named parameters, bound by name to `:name`, `@name` and `$name` (with its prefix, or
/// without it: then `:`, `@` and `$` are tried in that order). A distinct type from Params, so
/// that `{}` and brace lists of values keep meaning positional parameters.
struct NamedParams {
  std::vector<std::pair<std::string, Value>> values;
};

/// One result row: the column values in select-list order.
using Row = std::vector<Value>;

/// Index of each alternative in `Value`, for switch statements.
enum class ValueType : std::uint8_t { kNull = 0, kInteger = 1, kReal = 2, kText = 3, kBlob = 4 };

inline ValueType type_of(const Value& v) noexcept { return static_cast<ValueType>(v.index()); }

}  // namespace pasyn
