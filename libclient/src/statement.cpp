// The statement helpers Connection and Cursor share (see statement.hpp).
#include "statement.hpp"

#include <pasyn/proto/named_params.hpp>

#include <climits>
#include <variant>
#include <vector>

namespace pasyn::detail {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

struct Binder {
  sqlite3_stmt* stmt;
  int index;
  int operator()(std::nullptr_t) const { return sqlite3_bind_null(stmt, index); }
  int operator()(std::int64_t v) const { return sqlite3_bind_int64(stmt, index, v); }
  int operator()(double v) const { return sqlite3_bind_double(stmt, index, v); }
  // SQLITE_STATIC: the value outlives the statement's use of it (ResetGuard clears bindings).
  int operator()(const std::string& v) const {
    return sqlite3_bind_text64(stmt, index, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8);
  }
  int operator()(const Blob& v) const {
    // An empty vector may have a null data(), which SQLite would bind as NULL, not as a blob.
    if (v.empty()) return sqlite3_bind_zeroblob(stmt, index, 0);
    return sqlite3_bind_blob64(stmt, index, v.data(), v.size(), SQLITE_STATIC);
  }
};

}  // namespace

[[noreturn]] void throw_db_error(sqlite3* db) {
  const int extended = sqlite3_extended_errcode(db);
  throw_sqlite_error(sqlite3_errmsg(db), extended & 0xff, extended);
}

[[noreturn]] void throw_misuse(const std::string& message) {
  throw ProgrammingError(message, SQLITE_MISUSE, SQLITE_MISUSE);
}

void check_sql_text(std::string_view sql) {
  if (sql.size() > static_cast<std::size_t>(INT_MAX)) {
    throw DataError("SQL text is too long", SQLITE_TOOBIG, SQLITE_TOOBIG);
  }
  if (sql.find('\0') != std::string_view::npos) throw_misuse("SQL text contains a NUL character");
}

bool holds_no_statement(std::string_view rest) {
  std::size_t i = 0;
  while (i < rest.size()) {
    if (is_space(rest[i]) || rest[i] == ';') {
      ++i;
    } else if (rest.substr(i, 2) == "--") {
      const std::size_t end = rest.find('\n', i + 2);
      if (end == std::string_view::npos) return true;
      i = end + 1;
    } else if (rest.substr(i, 2) == "/*") {
      // SQLite accepts a comment left open at the end of the input; so do we.
      const std::size_t end = rest.find("*/", i + 2);
      if (end == std::string_view::npos) return true;
      i = end + 2;
    } else {
      return false;
    }
  }
  return true;
}

void check_param_count(int expected, std::size_t given) {
  if (given != static_cast<std::size_t>(expected)) {
    throw ProgrammingError("incorrect number of parameters: the statement uses " +
                               std::to_string(expected) + ", " + std::to_string(given) +
                               " were given",
                           SQLITE_RANGE, SQLITE_RANGE);
  }
}

void bind_params(sqlite3* db, sqlite3_stmt* stmt, const Params& params) {
  const int count = sqlite3_bind_parameter_count(stmt);
  check_param_count(count, params.size());
  for (int i = 0; i < count; ++i) {
    const int rc = std::visit(Binder{stmt, i + 1}, params[static_cast<std::size_t>(i)]);
    if (rc != SQLITE_OK) {
      throw_sqlite_error(
          "cannot bind parameter " + std::to_string(i + 1) + ": " + sqlite3_errmsg(db), rc & 0xff,
          rc);
    }
  }
}

void bind_named(sqlite3* db, sqlite3_stmt* stmt, const NamedParams& params) {
  const int count = sqlite3_bind_parameter_count(stmt);
  check_param_count(count, params.values.size());
  std::vector<bool> bound(static_cast<std::size_t>(count) + 1, false);
  for (const auto& [name, value] : params.values) {
    const int index = proto::named_parameter_index(stmt, name);
    if (index == 0) {
      throw ProgrammingError("the statement has no parameter named '" + name + "'", SQLITE_RANGE,
                             SQLITE_RANGE);
    }
    if (bound[static_cast<std::size_t>(index)]) {
      throw ProgrammingError("parameter '" + name + "' is given twice", SQLITE_RANGE, SQLITE_RANGE);
    }
    bound[static_cast<std::size_t>(index)] = true;
    const int rc = std::visit(Binder{stmt, index}, value);
    if (rc != SQLITE_OK) {
      throw_sqlite_error("cannot bind parameter " + name + ": " + sqlite3_errmsg(db), rc & 0xff,
                         rc);
    }
  }
}

bool step(sqlite3* db, sqlite3_stmt* stmt) {
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw_db_error(db);
}

[[noreturn]] static void throw_out_of_memory(sqlite3* db) {
  check_not_out_of_memory(db);  // SQLite's own message and codes, when it recorded them
  throw_sqlite_error("out of memory", SQLITE_NOMEM, SQLITE_NOMEM);
}

void check_not_out_of_memory(sqlite3* db) {
  if (sqlite3_errcode(db) == SQLITE_NOMEM) throw_db_error(db);
}

Row read_row(sqlite3* db, sqlite3_stmt* stmt) {
  const int count = sqlite3_column_count(stmt);
  Row row;
  row.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    // One sqlite3_column_value() per column and the sqlite3_value_*() readers on it: each
    // sqlite3_column_*() call repeats the statement's bookkeeping (about a sixth of a point
    // SELECT's cost outside SQLite, by callgrind). The value is "unprotected", which only
    // matters to a connection shared by threads; ours are NOMUTEX, used by one thread at a time.
    sqlite3_value* value = sqlite3_column_value(stmt, i);
    switch (sqlite3_value_type(value)) {
      case SQLITE_INTEGER:
        row.emplace_back(static_cast<std::int64_t>(sqlite3_value_int64(value)));
        break;
      case SQLITE_FLOAT:
        row.emplace_back(sqlite3_value_double(value));
        break;
      case SQLITE_TEXT: {
        // Pointer first, then size: the documented order that avoids a second conversion.
        const auto* text = reinterpret_cast<const char*>(sqlite3_value_text(value));
        const auto size = static_cast<std::size_t>(sqlite3_value_bytes(value));
        // (A text value reads as null only when SQLite ran out of memory converting it; the
        // value readers do not record that on the connection, so it is reported here.)
        if (text == nullptr) throw_out_of_memory(db);
        row.emplace_back(std::string(text, size));
        break;
      }
      case SQLITE_BLOB: {
        const auto* data = static_cast<const std::uint8_t*>(sqlite3_value_blob(value));
        const auto size = static_cast<std::size_t>(sqlite3_value_bytes(value));
        // An empty blob reads as null; a non-empty one only when out of memory.
        if (data == nullptr && size > 0) throw_out_of_memory(db);
        row.emplace_back(data == nullptr ? Blob() : Blob(data, data + size));
        break;
      }
      default:
        row.emplace_back(nullptr);
        break;
    }
  }
  return row;
}

}  // namespace pasyn::detail
