// Binding named parameters by name (PROTOCOL.md "named parameters"): the one rule shared by
// pasyn-writerd and pasyn::Connection. Header-only; include it only where SQLite is linked.
#pragma once

#include <sqlite3.h>

#include <string>
#include <string_view>

namespace pasyn::proto {

/// The SQLite index (1-based) of the parameter `name` of `stmt`, or 0 if it has none.
/// `name` is taken with its prefix (`:a`, `@a`, `$a`) as written, or without one: then `:`,
/// `@` and `$` are tried in that order (Python's sqlite3 spells dict keys without it).
/// A name holding a NUL byte names no parameter (SQLite would read it only up to the NUL).
inline int named_parameter_index(sqlite3_stmt* stmt, std::string_view name) {
  if (name.empty() || name.find('\0') != std::string_view::npos) return 0;
  std::string buffer;
  buffer.reserve(name.size() + 1);
  if (name.front() == ':' || name.front() == '@' || name.front() == '$') {
    buffer.assign(name);
    return sqlite3_bind_parameter_index(stmt, buffer.c_str());
  }
  for (const char prefix : {':', '@', '$'}) {
    buffer.assign(1, prefix);
    buffer.append(name);
    if (const int index = sqlite3_bind_parameter_index(stmt, buffer.c_str())) return index;
  }
  return 0;
}

}  // namespace pasyn::proto
