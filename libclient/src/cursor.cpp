// pasyn::Cursor: the rows of one statement, fetched as the caller asks (opened by
// Connection::cursor in connection.cpp).
#include <pasyn/connection.hpp>

#include <optional>
#include <utility>
#include <vector>

#include "cursor_impl.hpp"

namespace pasyn {

Cursor::Cursor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cursor::Cursor(Cursor&&) noexcept = default;
Cursor& Cursor::operator=(Cursor&&) noexcept = default;
Cursor::~Cursor() = default;

void Cursor::execute() {
  if (!impl_) throw ConnectionClosedError("cursor is closed");
  impl_->run();
}

std::optional<Row> Cursor::fetchone() {
  if (!impl_) throw ConnectionClosedError("cursor is closed");
  return impl_->next();
}

std::vector<Row> Cursor::fetchmany(std::size_t size) {
  std::vector<Row> rows;
  while (rows.size() < size) {
    auto row = fetchone();
    if (!row) break;
    rows.push_back(std::move(*row));
  }
  return rows;
}

std::vector<Row> Cursor::fetchall() {
  std::vector<Row> rows;
  while (auto row = fetchone()) rows.push_back(std::move(*row));
  return rows;
}

const std::vector<std::string>& Cursor::column_names() const noexcept {
  static const std::vector<std::string> kNone;
  return impl_ ? impl_->columns : kNone;
}

void Cursor::close() noexcept {
  if (!impl_) return;
  impl_->release();
  impl_->open_token.reset();
  impl_->closed = true;
  impl_->has_row = false;
  impl_->done = true;
}

}  // namespace pasyn
