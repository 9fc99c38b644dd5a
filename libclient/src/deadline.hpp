// Deadlines of the library's bounded waits, from a duration the caller gave.
#pragma once

#include <chrono>

namespace pasyn::detail {

/// True when `timeout` is so long that now() + timeout could overflow the clock (a century or
/// more, such as milliseconds::max()): such a wait has no deadline.
inline bool beyond_any_deadline(std::chrono::milliseconds timeout) {
  return timeout >= std::chrono::hours(24 * 365 * 100);
}

/// now() + `timeout`, or time_point::max() for a timeout beyond_any_deadline() (where the sum
/// would wrap into the past and the wait end at once). A negative timeout is a deadline passed.
inline std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  if (beyond_any_deadline(timeout)) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::now() + timeout;
}

}  // namespace pasyn::detail
